import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.data.targets import phase_differences
from bec_jax.gpe.observables import vortex_cores
from bec_jax.gpe.phase_field import plaquette_winding, positions_from_winding, refine_vortices

GRID = bj.Grid(32, 8.0)


@pytest.mark.parametrize("x0, y0, w", [(0.37, -0.81, 1), (-1.12, 0.23, -1), (0.1 * GRID.dx, 1.07, 1)])
def test_refined_position_is_exact_for_a_point_vortex_in_a_uniform_flow(x0, y0, w):
    X, Y = GRID.mesh()
    psi = ((X - x0) + 1j * w * (Y - y0)) * np.exp(-(X**2 + Y**2) / 8 + 1j * (0.7 * X - 0.4 * Y))
    psi = jnp.asarray(psi, jnp.complex64)
    d, wind = phase_differences(psi), plaquette_winding(psi)
    rows = positions_from_winding(GRID, wind, d)
    assert rows.shape == (1, 3) and rows[0, 2] == w
    np.testing.assert_allclose(rows[0, :2], [x0, y0], atol=1e-4 * GRID.dx)
    centre = positions_from_winding(GRID, wind)
    assert np.hypot(*(centre[0, :2] - [x0, y0])) > 0.1 * GRID.dx  # the plaquette centre alone is off


def test_refined_rows_are_padded_and_jit_vmappable():
    X, Y = GRID.mesh()
    psis = jnp.asarray(np.stack([(X - a) + 1j * (Y + a) for a in (0.3, -0.6)]) * np.exp(-(X**2 + Y**2) / 8),
                       jnp.complex64)
    rows = jax.vmap(lambda p: refine_vortices(phase_differences(p), plaquette_winding(p), max_vortices=3))(psis)
    assert rows.shape == (2, 3, 3)
    np.testing.assert_array_equal(rows[:, :, 2], [[1, 0, 0], [1, 0, 0]])
    x0 = float(GRID.x[0])
    np.testing.assert_allclose(x0 + rows[:, 0, 0] * GRID.dx, [0.3, -0.6], atol=1e-4)


def test_refined_positions_match_the_cores_of_a_ground_state():
    """In a lattice the neighbours and the density dip bend the flow around a core away from the model; the
    estimate still lands within a few hundredths of a healing length of the zeros of ψ (worst near the
    cloud's edge, where the density falls across the patch)."""
    g, omega = 200.0, 0.8
    grid = bj.Grid(48, float(bj.box_length(g, omega)))
    res = bj.ground_state(grid, g, omega, key=jax.random.key(0), n_starts=1)
    psi = res.psi
    xi = 1.0 / np.sqrt(2.0 * float(res.mu))
    wind = plaquette_winding(psi) * bj.gpe.observables.vortex_mask(grid, psi)
    rows = positions_from_winding(grid, wind, phase_differences(psi))
    assert len(rows) >= 5
    cores = np.asarray(vortex_cores(grid, psi, jnp.asarray(rows[:, :2])))
    err = np.hypot(*(cores - rows[:, :2]).T) / xi
    centre_err = np.hypot(*(cores - positions_from_winding(grid, wind)[:, :2]).T) / xi
    assert np.median(err) < 0.02 and np.percentile(err, 90) < 0.05 and err.max() < 0.3, err
    assert np.median(centre_err) > 5 * np.median(err)


def test_refined_positions_stay_finite_inside_their_plaquettes_on_noise():
    """A model shown an image it cannot read predicts noise: every position stays finite, in its plaquette."""
    rng = np.random.default_rng(0)
    d = jnp.asarray(rng.uniform(-np.pi, np.pi, (40, 16, 16, 2)), jnp.float32)
    w = jax.vmap(lambda f: jnp.round(bj.gpe.phase_field.plaquette_circulation(f) / (2 * np.pi)).astype(jnp.int32))(d)
    rows = np.asarray(jax.vmap(lambda f, k: refine_vortices(f, k, max_vortices=128))(d, w))
    used = rows[..., 2] != 0
    assert used.sum() > 1000 and np.isfinite(rows).all()
    for b in range(len(d)):
        j, i = np.nonzero(np.asarray(w[b]))
        col, row = rows[b, : len(j), 0], rows[b, : len(j), 1]
        assert np.all((col > i) & (col < i + 1) & (row > j) & (row < j + 1))


@pytest.mark.parametrize("n", [32, 64])
def test_to_velocity_is_the_centred_gradient_of_a_periodic_phase(n):
    from bec_jax.gpe.phase_field import forward_differences, to_velocity

    length = 8.0
    dx = length / n
    x = (jnp.arange(n) - n // 2) * dx
    X, Y = jnp.meshgrid(x, x)  # rows are y, as on a Grid
    k = 2 * np.pi / length
    theta = jnp.sin(k * X) + 0.5 * jnp.cos(2 * k * Y)
    v = to_velocity(forward_differences(theta), "phase_diff", dx)
    exact = jnp.stack([k * jnp.cos(k * X), -k * jnp.sin(2 * k * Y)], axis=-1)
    # centred differences: sin(kh)/h = k(1 − (kh)²/6); the y wave (amplitude 1/2, wavenumber 2k) dominates
    err = float(jnp.max(jnp.abs(v - exact)))
    assert err <= 1.05 * k * (2 * k * dx) ** 2 / 6, err
    assert to_velocity(exact, "velocity", dx) is exact
    with pytest.raises(ValueError, match="target"):
        to_velocity(exact, "phase", dx)
