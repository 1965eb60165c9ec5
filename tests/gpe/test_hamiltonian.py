"""Observables against closed forms (harmonic-oscillator states, g = 0)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from tests.conftest import tol

GRID = bj.Grid(48, 14.0)


def ho_states(grid):
    """Normalised HO ground state and the m = +1 state (x + iy) e^{-r²/2}/√π."""
    X, Y = (jnp.asarray(a) for a in grid.mesh())
    g0 = jnp.exp(-(X**2 + Y**2) / 2) / jnp.sqrt(jnp.pi)
    return g0.astype(bj.gpe.grid.complex_dtype()), ((X + 1j * Y) * g0).astype(bj.gpe.grid.complex_dtype())


@pytest.mark.parametrize("omega", [0.0, 0.5, -0.7])
def test_harmonic_ground_state_closed_form(precision, omega):
    psi, _ = ho_states(GRID)
    t = tol(precision, 2e-5, 1e-10)
    assert abs(float(bj.norm(GRID, psi)) - 1) < t
    assert abs(float(bj.energy(GRID, psi, 0.0, omega)) - 1) < t
    assert abs(float(bj.chemical_potential(GRID, psi, 0.0, omega)) - 1) < t
    assert abs(float(bj.angular_momentum(GRID, psi))) < t
    assert float(bj.residual(GRID, psi, 0.0, omega)) < tol(precision, 1e-4, 1e-9)


@pytest.mark.parametrize("omega", [0.0, 0.3, -0.6])
def test_vortex_state_angular_momentum_and_sign(precision, omega):
    # (x+iy)e^{-r²/2}: L_z = +1 (phase increases counter-clockwise), E = 2 - Ω, eigenstate of H.
    _, psi = ho_states(GRID)
    t = tol(precision, 2e-5, 1e-10)
    assert abs(float(bj.angular_momentum(GRID, psi)) - 1) < t
    assert abs(float(bj.energy(GRID, psi, 0.0, omega)) - (2 - omega)) < t
    assert float(bj.residual(GRID, psi, 0.0, omega)) < tol(precision, 1e-4, 1e-8)


def test_energy_terms_sum_and_mu(precision):
    _, psi = ho_states(GRID)
    psi = bj.normalize(GRID, psi + 0.3 * jnp.roll(psi, 3, axis=-1))
    g, om = 40.0, 0.4
    terms = bj.energy_terms(GRID, psi, g, om)
    total = sum(terms.values())
    t = tol(precision, 1e-5, 1e-12)
    np.testing.assert_allclose(float(total), float(bj.energy(GRID, psi, g, om)), rtol=t)
    np.testing.assert_allclose(float(terms["rotation"]), -om * float(bj.angular_momentum(GRID, psi)), rtol=10 * t)
    h = bj.apply_hamiltonian(GRID, psi, g, om)
    lam = jnp.real(jnp.vdot(psi, h)) * GRID.cell_area
    np.testing.assert_allclose(float(bj.chemical_potential(GRID, psi, g, om)), float(lam), rtol=t)


def test_batched_vmap_and_jit_agree():
    g0, v = ho_states(GRID)
    psi = jnp.stack([g0, v, bj.normalize(GRID, g0 + v)])  # (3, n, n)
    g = jnp.array([0.0, 10.0, 50.0])
    om = jnp.array([0.1, 0.5, 0.7])
    batched = bj.energy(GRID, psi, g, om)
    assert batched.shape == (3,)
    single = jnp.stack([bj.energy(GRID, psi[i], g[i], om[i]) for i in range(3)])
    vm = jax.vmap(lambda p, a, b: bj.energy(GRID, p, a, b))(psi, g, om)
    jt = jax.jit(bj.residual, static_argnums=0)(GRID, psi, g, om)
    np.testing.assert_allclose(batched, single, rtol=1e-6)
    np.testing.assert_allclose(vm, single, rtol=1e-6)
    assert jt.shape == (3,)
    # Leading batch axes of any rank broadcast against g, omega.
    assert bj.energy(GRID, psi.reshape(3, 1, 48, 48), g[:, None], 0.3).shape == (3, 1)
