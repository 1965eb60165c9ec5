"""Batch sharding over local devices (``bec_jax.gpe.sharding``)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.gpe.sharding import (backend_of, batch_mesh, cpu_chunk, loop_chunk, map_batch, resolve_chunk,
                                  shard_batch, use_cpu_cores)


def test_one_device_runs_unsharded():
    if jax.local_device_count() != 1:
        pytest.skip("needs the default single CPU device")
    assert batch_mesh(8) is None
    fn = lambda x: x
    assert shard_batch(fn, None) is fn


def test_use_cpu_cores_rejects_bad_counts_and_late_calls(monkeypatch):
    for bad in (0, True, 100_000):
        with pytest.raises(ValueError, match=r"integer in \[1, 256\]"):
            use_cpu_cores(bad)
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


@pytest.mark.slow  # 18–55 s on 2 cores: runs in `make test-slow`
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
            # each device's 2 states in chunks of 1 (the lax.map path), split
            c = integrate(grid, psi, g, 0.6, dt=0.01, steps=7, chunk=1)
            assert len(c.sharding.device_set) == 4, c.sharding
            np.testing.assert_allclose(np.asarray(c), np.asarray(b), atol=2e-6)
            for chunk in ("auto", 1):
                hlo = jax.jit(lambda p: integrate(grid, p, g, 0.6, dt=0.01, steps=7, chunk=chunk)).lower(
                    psi).compile().as_text()
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


def test_cpu_chunk_and_bad_chunk_values():
    c64, c128 = np.complex64, np.complex128
    assert cpu_chunk(64, c64, "cpu") == 4 and cpu_chunk(32, c128, "cpu") == 8
    assert cpu_chunk(200, c64, "cpu") == 1 and cpu_chunk(512, c64, "cpu") == 1  # never 0
    assert cpu_chunk(64, c64, "gpu") is None and cpu_chunk(64, c64, "tpu") is None
    assert loop_chunk("cpu") == 1 and loop_chunk("gpu") is None
    assert backend_of(jnp.ones(2)) == jax.devices()[0].platform and backend_of(None) == jax.default_backend()
    assert resolve_chunk(None, 4) is None and resolve_chunk(3, 4) == 3 and resolve_chunk("auto", 4) == 4
    assert resolve_chunk(np.int64(2), 4) == 2 and type(resolve_chunk(np.int64(2), 4)) is int
    grid = bj.Grid(32, 10.0)
    psi = np.ones((2, 32, 32), np.complex64)
    for bad in (0, -1, True, np.bool_(True), 1.5, "big"):
        with pytest.raises(ValueError, match="chunk must be"):
            resolve_chunk(bad, 4)
        with pytest.raises(ValueError, match="chunk must be"):
            bj.imaginary_time(grid, psi, 10.0, 0.5, dt=0.01, steps=2, chunk=bad)
        with pytest.raises(ValueError, match="chunk must be"):
            bj.ground_state(grid, 10.0, 0.5, key=jax.random.key(0), chunk=bad)


def test_map_batch_over_pytrees_with_remainders():
    fn = lambda x, d: dict(s=x.sum() + d["a"], v=x * d["a"])
    x, d = jnp.arange(15.0).reshape(5, 3), dict(a=jnp.arange(5.0))
    want = jax.vmap(fn)(x, d)
    for chunk in (None, 1, 2, 5, 8):  # 2: a remainder of 1; 8: more than the batch
        got = map_batch(fn, chunk)(x, d)
        for k in want:
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]))


@pytest.mark.slow  # 18–55 s on 2 cores: runs in `make test-slow`
def test_chunked_batches_match_the_whole_batch():
    """map_batch over chunks (the CPU default) = one vmap over the batch: integrators with a
    remainder chunk and a 2-D batch shape, their gradients, and ground states start by start."""
    grid = bj.Grid(32, 10.0)
    rng = np.random.default_rng(1)
    # 24 states at 32²: "auto" is 16 a chunk on a CPU, so 2 chunks, the second a remainder
    psi = (rng.standard_normal((2, 12, 32, 32)) + 1j * rng.standard_normal((2, 12, 32, 32))).astype(np.complex64)
    g = np.linspace(0.0, 70.0, 24).reshape(2, 12)
    cases = [(bj.imaginary_time, 0.6, 5), (bj.imaginary_time, np.linspace(0.0, 0.7, 24).reshape(2, 12), "auto"),
             (bj.real_time, 0.6, "auto")]  # shared and per-state omega
    for integrate, om, chunk in cases:
        whole = np.asarray(integrate(grid, psi, g, om, dt=0.01, steps=7, shard=False, chunk=None))
        out = integrate(grid, psi, g, om, dt=0.01, steps=7, shard=False, chunk=chunk)
        assert out.shape == psi.shape
        np.testing.assert_allclose(np.asarray(out), whole, atol=2e-6)
    # a dt per state runs unchunked (it broadcasts against the whole batch)
    dts = np.array([0.01, 0.02]).reshape(2, 1, 1)
    np.testing.assert_allclose(
        np.asarray(bj.imaginary_time(grid, psi[0, :2], g[0, :2], 0.6, dt=dts, steps=4, shard=False, chunk=1)),
        np.asarray(bj.imaginary_time(grid, psi[0, :2], g[0, :2], 0.6, dt=dts, steps=4, shard=False, chunk=None)))

    def loss(g, chunk):
        out = bj.imaginary_time(grid, psi[0, :4], g, 0.6, dt=0.01, steps=4, shard=False, chunk=chunk)
        return jnp.sum(jnp.abs(out[:, 8:20, 10:22]) ** 2 * jnp.arange(4.0)[:, None, None])

    ga, gb = (jax.grad(loss)(jnp.asarray(g[0, :4], jnp.float32), c) for c in (3, None))
    np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-4, atol=1e-7)

    kw = dict(key=jax.random.key(3), n_starts=2, shard=False, max_iter=300)
    a = bj.ground_state(grid, np.array([20.0, 60.0, 40.0]), np.array([0.3, 0.6, 0.0]), chunk=1, **kw)
    b = bj.ground_state(grid, np.array([20.0, 60.0, 40.0]), np.array([0.3, 0.6, 0.0]), chunk=None, **kw)
    # each start runs its own loop either way: the same iteration counts (up to round-off) and energies
    np.testing.assert_allclose(np.asarray(a.start_steps), np.asarray(b.start_steps), rtol=0.02)
    np.testing.assert_allclose(np.asarray(a.start_energies), np.asarray(b.start_energies), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(a.converged), np.asarray(b.converged))


@pytest.mark.slow
def test_chunked_imaginary_time_method_from_given_states():
    """ground_state(method="imaginary_time", psi0=...) one state at a time = all at once."""
    grid = bj.Grid(32, 10.0)
    rng = np.random.default_rng(2)
    psi0 = (rng.standard_normal((3, 32, 32)) + 1j * rng.standard_normal((3, 32, 32))).astype(np.complex64)
    kw = dict(key=jax.random.key(0), psi0=psi0, method="imaginary_time", max_steps=400, shard=False)
    a = bj.ground_state(grid, np.array([20.0, 60.0, 40.0]), 0.3, chunk=1, **kw)
    b = bj.ground_state(grid, np.array([20.0, 60.0, 40.0]), 0.3, chunk=None, **kw)
    np.testing.assert_allclose(np.asarray(a.energy), np.asarray(b.energy), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(a.steps), np.asarray(b.steps), rtol=0.02)
