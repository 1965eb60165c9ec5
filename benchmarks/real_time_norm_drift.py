"""Where the float32 norm drift of `real_time` comes from, on this backend (JSON on stdout).

The test case of tests/gpe/test_splitstep.py (32², g 30, Ω 0.5, dt 1e-3) run 100/500/1000
steps; 1000 bare FFT/inverse-FFT round trips of its initial state; and the modulus of
exp(iθ) for 65,536 θ in [-50, 50]. On XLA:CPU the round trips keep the norm to 6e-6; on
an H200 (cuFFT) they lose 2.0e-4, as much as 500 real-time steps (2 round trips each).

    python benchmarks/real_time_norm_drift.py > benchmarks/results/real_time_norm_drift_cpu.json
"""
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import bec_jax as bj

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/ holds the test case
from tests.gpe.test_splitstep import GRID, gaussian  # noqa: E402


def main() -> dict:
    out = {"backend": jax.default_backend()}
    g, omega, psi0 = 30.0, 0.5, gaussian(GRID)
    e0 = float(bj.energy(GRID, psi0, g, omega))
    for steps in (100, 500, 1000):
        psi = bj.real_time(GRID, psi0, g, omega, dt=1e-3, steps=steps)
        out[f"real_time_norm_minus_1_{steps}"] = float(bj.norm(GRID, psi)) - 1
        # relative energy change of the state as it is, and of the normalised state (the test's check)
        out[f"real_time_energy_rel_change_{steps}"] = float(bj.energy(GRID, psi, g, omega)) / e0 - 1
        out[f"real_time_normalised_energy_rel_change_{steps}"] = (
            float(bj.energy(GRID, bj.normalize(GRID, psi), g, omega)) / e0 - 1)
    out["fft_roundtrip_1000_norm_minus_1"] = float(bj.norm(GRID, _roundtrips(psi0))) - 1
    theta = jnp.linspace(-50.0, 50.0, 1 << 16, dtype=jnp.float32)
    m = np.abs(np.asarray(jax.jit(lambda t: jnp.exp(1j * t))(theta), np.complex128)) - 1
    out["exp_i_theta_modulus_minus_1"] = dict(mean=float(m.mean()), max_abs=float(np.abs(m).max()))
    return out


@jax.jit
def _roundtrips(p):
    """1000 FFT/inverse-FFT pairs, alternately along each axis."""
    def body(p, _):
        return jnp.swapaxes(jnp.fft.ifft(jnp.fft.fft(p, axis=-1), axis=-1), -1, -2), None
    return jax.lax.scan(body, p, None, length=1000)[0]


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
