"""Preconditioned NLCG on the unit sphere: preconditioners and convergence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.gpe.groundstate import initial_guess
from bec_jax.gpe.minimize import kinetic_preconditioner, make_pcg, pcg_minimize, rotating_preconditioner
from tests.conftest import tol


def _inner(grid, a, b):
    return float(jnp.real(jnp.vdot(a, b))) * grid.cell_area


@pytest.mark.parametrize("factory", [kinetic_preconditioner, rotating_preconditioner])
def test_preconditioner_is_symmetric_positive_on_the_tangent_space(factory):
    """CG needs P symmetric positive definite: ⟨a, Pb⟩ = ⟨Pa, b⟩, ⟨a, Pa⟩ > 0 for a ⟂ ψ."""
    with jax.enable_x64(True):
        grid = bj.Grid(32, 12.0)
        g, om = 80.0, 0.7
        psi = initial_guess(grid, g, om, jax.random.key(0), 3)
        lam = float(bj.chemical_potential(grid, psi, g, om))
        P = lambda v: factory(grid, g, om)(v, lam, psi)
        tangent = lambda v: v - _inner(grid, psi, v) * psi
        k1, k2 = jax.random.split(jax.random.key(1))
        a, b = (tangent(jax.random.normal(k, psi.shape, complex)) for k in (k1, k2))
        np.testing.assert_allclose(_inner(grid, a, P(b)), _inner(grid, P(a), b), rtol=1e-10)
        assert _inner(grid, a, P(a)) > 0 and _inner(grid, b, P(b)) > 0
        assert abs(_inner(grid, psi, P(a))) < 1e-12  # stays on the tangent space


def test_both_preconditioners_reach_the_same_stationary_state(precision):
    grid = bj.Grid(32, float(bj.box_length(50.0, 0.6)))
    g, om = 50.0, 0.6
    psi0 = initial_guess(grid, g, om, jax.random.key(3), 2)
    tr = tol(precision, 1e-4, 1e-8)
    out = {}
    for pre in ("kinetic", "rotating"):
        psi, res, it, conv = pcg_minimize(grid, psi0, g, om, max_iter=4000, tol_residual=tr,
                                          tol_energy=tol(precision, 1e-7, 1e-13), preconditioner=pre)
        assert bool(conv) and float(res) <= tr
        out[pre] = (float(bj.energy(grid, psi, g, om)), int(it), int(bj.vortex_count(grid, psi)))
    assert abs(out["kinetic"][0] - out["rotating"][0]) < tol(precision, 5e-5, 1e-9)
    assert out["kinetic"][2] == out["rotating"][2]


def test_rotating_preconditioner_needs_fewer_iterations_at_fast_rotation():
    """The reason it is the default: at Ω = 0.8 the lab-frame kinetic preconditioner
    damps the momenta k ≈ Ωr of the rotating lattice."""
    with jax.enable_x64(True):
        grid = bj.Grid(64, float(bj.box_length(100.0, 0.8)))
        psi0 = bj.imaginary_time(grid, initial_guess(grid, 100.0, 0.8, jax.random.key(2), 7), 100.0, 0.8,
                                 dt=0.05, steps=200)
        its = {}
        for pre in ("kinetic", "rotating"):
            _, _, it, conv = pcg_minimize(grid, psi0, 100.0, 0.8, max_iter=5000, tol_residual=1e-6,
                                          tol_energy=1e-12, preconditioner=pre)
            assert bool(conv)
            its[pre] = int(it)
    assert its["rotating"] < 0.6 * its["kinetic"], its


def test_step_lowers_the_energy_and_keeps_the_norm():
    with jax.enable_x64(True):
        grid = bj.Grid(32, 12.0)
        psi = initial_guess(grid, 50.0, 0.5, jax.random.key(0), 1)
        init, step = make_pcg(grid, 50.0, 0.5)
        c = init(psi)
        energies = []
        for _ in range(20):
            c = step(c)
            energies.append(float(bj.energy(grid, c["psi"], 50.0, 0.5)))
            assert abs(float(bj.norm(grid, c["psi"])) - 1) < 1e-12
        assert np.all(np.diff(energies) <= 1e-12)


def test_unknown_preconditioner_raises():
    with pytest.raises(ValueError, match=r"preconditioner must be one of \['kinetic', 'rotating'\], got 'jacobi'"):
        make_pcg(bj.Grid(16, 8.0), 1.0, 0.1, preconditioner="jacobi")


def test_a_preconditioner_factory_of_one_s_own_is_called_as_the_named_ones():
    grid, calls = bj.Grid(16, 8.0), []

    def factory(grid_, g, omega):
        calls.append((grid_, g, omega))
        return rotating_preconditioner(grid_, g, omega)

    psi = initial_guess(grid, 1.0, 0.1, jax.random.key(0), 1)
    mine = make_pcg(grid, 1.0, 0.1, preconditioner=factory)
    named = make_pcg(grid, 1.0, 0.1, preconditioner="rotating")
    assert calls == [(grid, 1.0, 0.1)]
    np.testing.assert_array_equal(mine[1](mine[0](psi))["psi"], named[1](named[0](psi))["psi"])


def test_rotating_is_the_default_preconditioner_everywhere():
    import inspect

    defaults = [inspect.signature(f).parameters["preconditioner"].default
                for f in (make_pcg, pcg_minimize)]
    assert defaults + [bj.PCG().preconditioner] == ["rotating"] * 3
