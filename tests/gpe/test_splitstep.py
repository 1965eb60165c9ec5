"""Split-step integrators: convergence order, conservation laws, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.gpe.hamiltonian import rotation_symbols
from tests.conftest import tol

GRID = bj.Grid(32, 12.0)


def gaussian(grid, x0=0.7, y0=-0.4, width=1.3):
    X, Y = (jnp.asarray(a) for a in grid.mesh())
    psi = jnp.exp(-((X - x0) ** 2 + (Y - y0) ** 2) / (2 * width**2)) * jnp.exp(0.3j * X)
    return bj.normalize(grid, psi.astype(bj.gpe.grid.complex_dtype()))


def test_imaginary_time_g0_reaches_oscillator_ground_state(precision):
    psi = bj.imaginary_time(GRID, gaussian(GRID), 0.0, 0.5, dt=0.05, steps=400)
    assert psi.dtype == (jnp.complex64 if precision == "float32" else jnp.complex128)
    assert abs(float(bj.norm(GRID, psi)) - 1) < tol(precision, 1e-6, 1e-13)
    # The split-step fixed point is O(dt²) away: ≈ 5e-7 in energy at dt = 0.05.
    assert abs(float(bj.energy(GRID, psi, 0.0, 0.5)) - 1) < tol(precision, 2e-5, 2e-6)


def test_imaginary_time_fixed_point_is_second_order_in_dt():
    """Residual of the split-step fixed point scales as dt² (Strang pairs)."""
    with jax.enable_x64(True):
        g, om = 20.0, 0.4
        res = []
        psi = gaussian(GRID, 0, 0)
        for dt in (0.04, 0.02):
            p = bj.imaginary_time(GRID, psi, g, om, dt=dt, steps=int(40 / dt))
            res.append(float(bj.residual(GRID, p, g, om)))
        assert 3.3 < res[0] / res[1] < 4.7, res


def test_real_time_conserves_norm_and_energy(precision):
    g, om = 30.0, 0.5
    psi0 = gaussian(GRID)
    e0 = bj.energy(GRID, psi0, g, om)
    steps = 500
    psi = bj.real_time(GRID, psi0, g, om, dt=1e-3, steps=steps)
    # Unitary up to round-off accumulated over the steps: float32 loses about 1 ulp of norm per step on
    # XLA:CPU (5.1e-5 in all) and 3.5 on an H200 GPU (2.1e-4; README, "On a GPU").
    assert abs(float(bj.norm(GRID, psi)) - 1) < tol(precision, 8 * steps * np.finfo(np.float32).eps, 1e-12)
    # The energy of the normalised state: the norm's round-off is checked above, this checks the dynamics.
    e = bj.energy(GRID, bj.normalize(GRID, psi), g, om)
    assert abs(float(e - e0)) / float(e0) < tol(precision, 2e-4, 1e-6)
    # The state moved: this is not a trivial identity map.
    assert float(jnp.abs(jnp.vdot(psi, psi0)) * GRID.cell_area) < 0.999


def test_real_time_stationary_state_only_gains_phase():
    with jax.enable_x64(True):
        g, om = 10.0, 0.3
        gs = bj.imaginary_time(GRID, gaussian(GRID, 0, 0), g, om, dt=0.01, steps=3000)
        mu = float(bj.chemical_potential(GRID, gs, g, om))
        t = 0.5
        psi = bj.real_time(GRID, gs, g, om, dt=0.005, steps=100)
        overlap = jnp.vdot(gs, psi) * GRID.cell_area
        assert abs(abs(complex(overlap)) - 1) < 1e-6
        assert abs(np.angle(complex(overlap)) - np.angle(np.exp(-1j * mu * t))) < 1e-4


def test_per_state_parameters_broadcast():
    psi = jnp.stack([gaussian(GRID), gaussian(GRID, 0, 0)])
    g, om = jnp.array([5.0, 50.0]), jnp.array([0.2, -0.6])
    both = bj.imaginary_time(GRID, psi, g, om, dt=0.02, steps=20)
    for i in range(2):
        one = bj.imaginary_time(GRID, psi[i], g[i], om[i], dt=0.02, steps=20)
        np.testing.assert_allclose(np.asarray(both[i]), np.asarray(one), atol=1e-6)


def one_step(psi, g, omega, dt, imaginary):
    """One A-then-B split step written out with FFTs along x (axis -1) and y (axis -2)."""
    a, b = rotation_symbols(GRID, omega)
    tau = dt if imaginary else 1j * dt
    V = jnp.asarray(GRID.potential())
    half_w = lambda p: jnp.exp(-0.5 * tau * (V + g * jnp.abs(p) ** 2))
    ew = half_w(psi)
    p = ew * psi
    p = jnp.fft.ifft(jnp.exp(-tau * a) * jnp.fft.fft(p, axis=-1), axis=-1)
    p = jnp.fft.ifft(jnp.exp(-tau * b) * jnp.fft.fft(p, axis=-2), axis=-2)
    if not imaginary:
        return half_w(p) * p
    return bj.normalize(GRID, ew * p)  # frozen nonlinearity: W of the step's start


@pytest.mark.parametrize("integrator", [bj.imaginary_time, bj.real_time])
def test_odd_step_count_and_zero_steps(integrator):
    psi = gaussian(GRID)  # off-centre and moving: not symmetric under x <-> y
    kw = dict(g=1.0, omega=0.3, dt=0.1)
    np.testing.assert_allclose(integrator(GRID, psi, **kw, steps=0), psi, atol=1e-6)
    # Steps alternate A·B, B·A and the memory layout with them; an odd count
    # ends with an A·B step and must come back in the [y, x] layout.
    one = integrator(GRID, psi, **kw, steps=1)
    np.testing.assert_allclose(one, one_step(psi, imaginary=integrator is bj.imaginary_time, **kw), atol=2e-6)
    assert float(jnp.max(jnp.abs(one - jnp.swapaxes(one, -1, -2)))) > 1e-2
    three = integrator(GRID, psi, **kw, steps=3)
    np.testing.assert_allclose(three, integrator(GRID, integrator(GRID, psi, **kw, steps=2), **kw, steps=1), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(g=1.0, omega=1.0), r"\|omega\| < 1"),
        (dict(g=1.0, omega=-1.2), r"\|omega\| < 1"),
        (dict(g=-1.0, omega=0.1), "g must be"),
        (dict(g=float("nan"), omega=0.1), "g must be"),
        (dict(g=1.0, omega=0.1, dt=0.0), "dt must be"),
        (dict(g=1.0, omega=0.1, steps=-1), "steps must be"),
        (dict(g=1.0, omega=jnp.array([0.1, 1.5])), r"\|omega\| < 1"),
    ],
)
def test_bad_input_is_a_clear_value_error(kwargs, match):
    kw = dict(dt=0.01, steps=2) | kwargs
    with pytest.raises(ValueError, match=match):
        bj.imaginary_time(GRID, gaussian(GRID), kw.pop("g"), kw.pop("omega"), **kw)


def test_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        bj.real_time(GRID, jnp.ones((16, 16), jnp.complex64), 1.0, 0.0, dt=0.01, steps=1)
