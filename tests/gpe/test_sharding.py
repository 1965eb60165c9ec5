"""Batch sharding over local devices (``bec_jax.gpe.sharding``)."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.gpe.sharding import batch_mesh, shard_batch, use_cpu_cores


def test_one_device_runs_unsharded():
    if jax.local_device_count() != 1:
        pytest.skip("needs the default single CPU device")
    assert batch_mesh(8) is None
    fn = lambda x: x
    assert shard_batch(fn, None) is fn


def test_use_cpu_cores_rejects_bad_counts_and_late_calls(monkeypatch):
    with pytest.raises(ValueError, match="int >= 1"):
        use_cpu_cores(0)
    with pytest.raises(ValueError, match="int >= 1"):
        use_cpu_cores(True)
    jax.devices()  # the backend now exists: too late to split the host
    with pytest.raises(RuntimeError, match="before JAX runs its first computation"):
        use_cpu_cores(2)
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "3")
    assert use_cpu_cores() == 0  # the environment's count is kept, nothing changes


def _run_with_devices(code: str, devices: int = 4):
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_sharded_integrators_match_unsharded_without_cross_device_traffic():
    """4 CPU devices: each runs its slice of the batch; results, gradients agree.

    The compiled program must hold no collective: a plain jit of sharded
    inputs all-gathers the batch before every FFT (XLA does not partition FFTs
    along batch dimensions), which is what shard_batch avoids.
    """
    _run_with_devices(
        """
        import jax, jax.numpy as jnp, numpy as np, bec_jax as bj
        assert jax.device_count() == 4
        grid = bj.Grid(32, 10.0)
        rng = np.random.default_rng(0)
        psi = (rng.standard_normal((8, 32, 32)) + 1j * rng.standard_normal((8, 32, 32))).astype(np.complex64)
        g = np.linspace(0.0, 70.0, 8)
        for integrate in (bj.imaginary_time, bj.real_time):
            a = integrate(grid, psi, g, 0.6, dt=0.01, steps=7)
            b = integrate(grid, psi, g, 0.6, dt=0.01, steps=7, shard=False)
            assert len(a.sharding.device_set) == 4, a.sharding
            assert len(b.sharding.device_set) == 1, b.sharding
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)
            hlo = jax.jit(lambda p: integrate(grid, p, g, 0.6, dt=0.01, steps=7)).lower(psi).compile().as_text()
            for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute"):
                assert op not in hlo, op
        # Inputs committed to one device are moved onto the mesh, not rejected.
        d0 = jax.devices()[0]
        c = bj.imaginary_time(grid, jax.device_put(psi, d0), jax.device_put(g, d0), 0.6,
                              dt=jax.device_put(0.01, d0), steps=7)
        np.testing.assert_allclose(np.asarray(c), np.asarray(bj.imaginary_time(grid, psi, g, 0.6, dt=0.01, steps=7)))
        # Odd batch: not divisible by 4 devices, runs on one.
        c = bj.imaginary_time(grid, psi[:3], g[:3], 0.6, dt=0.01, steps=3)
        assert len(c.sharding.device_set) == 1
        # Gradients through the split program (dt is passed whole to every device).
        def loss(g, dt, shard):
            out = bj.imaginary_time(grid, psi, g, 0.6, dt=dt, steps=4, shard=shard)
            return jnp.sum(jnp.abs(out[:, 8:20, 10:22]) ** 2 * jnp.arange(8.0)[:, None, None])
        ga = jax.grad(loss, argnums=(0, 1))(jnp.asarray(g, jnp.float32), 0.01, True)
        gb = jax.grad(loss, argnums=(0, 1))(jnp.asarray(g, jnp.float32), 0.01, False)
        for x, y in zip(ga, gb):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-7)
        print("OK")
        """
    )
