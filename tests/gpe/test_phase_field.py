import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.data.targets import phase_differences, velocity
from bec_jax.gpe.observables import vortex_cores
from bec_jax.gpe.phase_field import (plaquette_winding, positions_from_winding, refine_vortices, uniform_flow,
                                     zero_momentum)

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


@pytest.fixture(scope="module")
def lattice():
    """(grid, ground state) of g = 200, Ω = 0.8 at 48²: a lattice of vortices."""
    g, omega = 200.0, 0.8
    grid = bj.Grid(48, float(bj.box_length(g, omega)))
    return grid, bj.ground_state(grid, g, omega, key=jax.random.key(0), n_starts=1)


def test_refined_positions_match_the_cores_of_a_ground_state(lattice):
    """In a lattice the neighbours and the density dip bend the flow around a core away from the model; the
    estimate still lands within a few hundredths of a healing length of the zeros of ψ (worst near the
    cloud's edge, where the density falls across the patch)."""
    grid, res = lattice
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


@pytest.mark.parametrize("target", ["phase_diff", "velocity"])
def test_a_ground_state_carries_no_momentum_and_zero_momentum_removes_a_boost(lattice, target):
    """Ehrenfest in the rotating frame: ⟨p⟩ = ∫ n ∇θ = 0 for a stationary state (|Ω| < 1), to the solver's
    convergence. Boosting it by e^{ik·r} adds ⟨p⟩ = k, the uniform flow k, which zero_momentum takes off again."""
    grid, res = lattice
    X, Y = grid.mesh()
    k = 2 * np.pi * np.array([2, -1]) / grid.length  # a⊥⁻¹, periodic on the box (the spectral velocity's FFT)

    def field(psi):
        return velocity(grid, psi) if target == "velocity" else phase_differences(psi)

    n = jnp.abs(res.psi) ** 2
    f = field(res.psi)
    rms = float(jnp.sqrt(jnp.sum(n[..., None] * f**2) / jnp.sum(n)))
    scale = 1.0 if target == "velocity" else grid.dx
    residual = np.asarray(f - zero_momentum(f, n, target))[0, 0]  # the density-weighted mean flow
    assert np.abs(residual).max() < 2e-3 * rms, (residual, rms)
    boosted = field(res.psi * jnp.exp(1j * (k[0] * X + k[1] * Y)).astype(res.psi.dtype))
    mod = bj.gpe.phase_field.wrap if target == "phase_diff" else (lambda a: a)  # differences modulo 2π

    def weighted_rms(a):  # where the atoms are (J/n is noise at the cores and outside the cloud)
        return float(jnp.sqrt(jnp.sum(n[..., None] * mod(a) ** 2) / jnp.sum(n)))

    # not exact: the spectral velocity drops the Nyquist mode, across which the boost moves some of ψ; and
    # the boost wraps a few differences next to the cores by 2π, which move the weighted mean a little
    assert weighted_rms(boosted - f - k * scale) < 1e-2 * rms
    assert weighted_rms(zero_momentum(boosted, n, target) - f) < 1e-2 * rms


def test_zero_momentum_is_a_projection_that_keeps_vortices_and_batches():
    rng = np.random.default_rng(1)
    d = jnp.asarray(rng.normal(0, 0.3, (3, 16, 16, 2)), jnp.float32)
    n = jnp.asarray(rng.uniform(0, 1, (3, 16, 16)), jnp.float32)
    once = jax.jit(zero_momentum)(d, n)
    np.testing.assert_allclose(np.asarray(zero_momentum(once, n)), np.asarray(once), atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(zero_momentum)(d, n)), np.asarray(once), atol=1e-6)
    circ = bj.gpe.phase_field.plaquette_circulation
    np.testing.assert_allclose(np.asarray(circ(once)), np.asarray(circ(d)), atol=1e-5)
    shift = np.asarray(d - once)
    assert np.ptp(shift, axis=(1, 2)).max() < 1e-6  # one uniform flow per image


@pytest.mark.parametrize("target", ["phase_diff", "velocity"])
def test_zero_momentum_weighs_each_value_by_the_density_where_it_sits(target):
    """A difference d[j, i, 0] lives on the edge (j, i)→(j, i+1), d[j, i, 1] on (j, i)→(j+1, i); a velocity on
    its pixel: the weighted sums vanish exactly, with those weights written out."""
    rng = np.random.default_rng(2)
    f = rng.normal(0, 0.3, (12, 12, 2)).astype(np.float32)
    n = rng.uniform(0, 1, (12, 12)).astype(np.float32)
    w = (np.stack([n, n], -1) if target == "velocity" else
         np.stack([(n + np.roll(n, -1, 1)) / 2, (n + np.roll(n, -1, 0)) / 2], -1))
    out = np.asarray(zero_momentum(jnp.asarray(f), jnp.asarray(n), target))
    np.testing.assert_allclose((w * out).sum((0, 1)), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(uniform_flow(jnp.asarray(f), jnp.asarray(n), target)),
                               (w * f).sum((0, 1)) / w.sum((0, 1)), rtol=1e-5)
    # as a velocity: a uniform difference c is the flow c/dx
    v = np.asarray(uniform_flow(jnp.asarray(f), jnp.asarray(n), target, dx=0.5))
    np.testing.assert_allclose(v, (w * f).sum((0, 1)) / w.sum((0, 1)) / (0.5 if target == "phase_diff" else 1),
                               rtol=1e-5)


def test_zero_momentum_of_an_empty_image_is_the_field_and_negative_density_counts_as_none():
    f = jnp.full((8, 8, 2), 0.3, jnp.float32)
    np.testing.assert_array_equal(np.asarray(zero_momentum(f, jnp.zeros((8, 8)))), np.asarray(f))
    noisy = jnp.asarray(np.where(np.arange(64).reshape(8, 8) % 2, -5.0, 1.0), jnp.float32)
    np.testing.assert_allclose(np.asarray(uniform_flow(f, noisy, "velocity")), [0.3, 0.3], rtol=1e-6)


@pytest.mark.parametrize("args, match", [
    ((jnp.zeros((8, 8, 2)), jnp.ones((8, 8)), "phase"), "target must be"),
    ((jnp.zeros((8, 8, 2)), jnp.ones((8, 9))), "do not match"),
    ((jnp.zeros((8, 8, 3)), jnp.ones((8, 8))), "do not match"),
    ((jnp.zeros((8, 8, 2)), jnp.ones((8, 8), jnp.complex64)), "must be real"),
])
def test_zero_momentum_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        zero_momentum(*args)


def test_vortex_phase_sums_the_first_max_vortices_windings_of_each_map_in_a_batch():
    from bec_jax.gpe.phase_field import vortex_phase

    n, rng = 24, np.random.default_rng(3)
    maps = np.zeros((4, n - 1, n - 1), np.int32)
    for m, k in zip(maps, (0, 1, 5, 9)):  # vmapped, each map loops over its own count
        m.flat[rng.choice((n - 1) ** 2, k, replace=False)] = rng.choice([-2, -1, 1, 2], k)
    y, x = np.mgrid[:n, :n].astype(np.float64)
    for cap in (4, 64):
        got = np.asarray(jax.jit(jax.vmap(lambda w: vortex_phase(w, n, cap)))(jnp.asarray(maps)))
        for m, theta in zip(maps, got):
            want = np.zeros((n, n))
            for i in np.flatnonzero(m)[:cap]:  # row-major order, as documented
                yv, xv = divmod(i, n - 1)
                want += m.flat[i] * np.arctan2(y - yv - 0.5, x - xv - 0.5)
            np.testing.assert_allclose(theta, want, atol=2e-5 * max(1, np.count_nonzero(m)))
