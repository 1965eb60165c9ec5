"""Time of flight: exact rotations, norm-conserving magnification, and the lens-transform law
checked against ``real_time`` with the trap switched off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax import imaging as im
from tests.conftest import tol

GRID = bj.Grid(64, 12.0)


def gauss(grid, x0, y0, s):
    X, Y = grid.mesh()
    return np.exp(-((X - x0) ** 2 + (Y - y0) ** 2) / (2 * s**2)) / (2 * np.pi * s**2)


def centroid(grid, n):
    X, Y = grid.mesh()
    m = float(np.sum(n))
    return float(np.sum(X * n)) / m, float(np.sum(Y * n)) / m


@pytest.mark.parametrize("angle", [0.3, -0.7, np.pi / 2, 2.5, -3.0])
def test_rotate_moves_a_blob_counter_clockwise_and_keeps_its_mass(precision, angle):
    n = gauss(GRID, 2.0, 0.5, 0.6).astype(GRID.x.dtype)
    r = np.asarray(im.rotate(GRID, n, angle))
    c, s = np.cos(angle), np.sin(angle)
    x, y = centroid(GRID, r)
    assert np.hypot(x - (2.0 * c - 0.5 * s), y - (2.0 * s + 0.5 * c)) < tol(precision, 1e-4, 1e-6)
    assert abs(r.sum() / n.sum() - 1) < tol(precision, 1e-5, 1e-12)
    # the rotated blob is the blob at the rotated centre
    ref = gauss(GRID, 2.0 * c - 0.5 * s, 2.0 * s + 0.5 * c, 0.6)
    assert np.max(np.abs(r - ref)) < tol(precision, 1e-5, 1e-8) * ref.max() + 1e-6 * ref.max()


def test_rotate_by_quarter_turns_is_exact_and_complex_states_rotate_with_their_phase():
    psi = jnp.asarray(gauss(GRID, 1.0, -1.5, 0.8) * np.exp(1j * GRID.mesh()[0]), jnp.complex64)
    assert np.allclose(np.asarray(im.rotate(GRID, psi, 2 * np.pi)), np.asarray(psi), atol=1e-6)
    four = psi
    for _ in range(4):
        four = im.rotate(GRID, four, np.pi / 2)
    assert np.allclose(np.asarray(four), np.asarray(psi), atol=1e-6)
    # a plane wave e^{ix} rotated by 90° is e^{iy}: the phase gradient rotates with the state
    r = np.asarray(im.rotate(GRID, psi, np.pi / 2))
    v = np.asarray(bj.phase_gradient(GRID, r))[:, 32, 32 - 8]  # at the rotated centre (1.5, 1.0)
    assert np.allclose(v, [0.0, 1.0], atol=1e-3)


@pytest.mark.parametrize("factor", [0.6, 1.0, 1.4])
def test_magnification_conserves_the_norm_and_scales_the_width(precision, factor):
    s = 0.7
    n = gauss(GRID, 0.3, -0.2, s).astype(GRID.x.dtype)
    m = np.asarray(im.magnify(GRID, n, factor))
    # exact up to the Gaussian tail that leaves the box (~1e-8 at factor 1.4)
    assert abs(m.sum() * GRID.cell_area - n.sum() * GRID.cell_area) < tol(precision, 1e-5, 1e-7)
    X, Y = GRID.mesh()
    x, y = centroid(GRID, m)
    assert abs(x - 0.3 * factor) < 1e-3 and abs(y + 0.2 * factor) < 1e-3
    var = float(np.sum(((X - x) ** 2 + (Y - y) ** 2) * m) / m.sum()) / 2
    # piecewise-constant cells add dx²/12 per axis to the variance, before and after the dilation
    dx2 = GRID.dx**2 / 12
    assert abs(var - (s**2 + dx2) * factor**2 - dx2) < 0.02 * s**2 * factor**2


def test_expand_density_is_a_dilation_by_lambda_and_a_rotation_by_omega_arctan_t():
    t, om = 1.3, 0.6
    lam, ang = float(np.sqrt(1 + t * t)), om * np.arctan(t)
    n = gauss(GRID, 1.0, 0.0, 0.5)
    e = np.asarray(im.expand_density(GRID, n, t, om))
    x, y = centroid(GRID, e)
    assert np.hypot(x - lam * np.cos(ang), y - lam * np.sin(ang)) < 2e-3
    assert float(im.expansion_factor(t)) == pytest.approx(lam) and float(im.expansion_angle(t, om)) == pytest.approx(ang)


@pytest.mark.slow
def test_time_of_flight_law_matches_free_real_time_evolution():
    """A rotating ground state released from the trap (real_time, trap off, lab frame) expands as
    n₀(R(−Ω arctan t) r/λ)/λ²: compared on camera pixels (pixel integration on both sides)."""
    g, om, t = 100.0, 0.7, 1.0
    small = bj.Grid(64, 12.0)
    res = bj.ground_state(small, g, om, key=jax.random.key(0), n_starts=1, max_steps=4000)
    assert bool(np.all(res.converged)) and int(np.ravel(res.vortices)[0]) >= 3
    big = bj.Grid(128, 24.0)  # same spacing, twice the box: holds the expanded cloud (λ R ≈ 5.6)
    psi = jnp.zeros((128, 128), res.psi.dtype).at[32:96, 32:96].set(jnp.reshape(res.psi, (64, 64)))
    steps = 400
    free = bj.real_time(big, psi, g, 0.0, dt=t / steps, steps=steps, trap=False)
    assert float(bj.edge_density(free)) < 1e-6
    cfg = im.ImagingConfig(rows=48, cols=48, psf="none", shot_noise=False, n_fringes=0)
    p = 0.4 * float(np.sqrt(1 + t * t))
    seen = np.asarray(im.expected_image(big, free, im.ImagingParams(pixel_size=p, atom_number=1.0), cfg))

    def law(omega):
        return np.asarray(im.expected_image(big, psi, im.ImagingParams(tof=t, omega=omega, pixel_size=p,
                                                                        atom_number=1.0), cfg))

    assert abs(seen.sum() - 1) < 1e-4
    err = np.abs(seen - law(om)).sum()  # fraction of the atoms misplaced
    assert err < 0.01, err  # measured 0.003
    # the test can fail: no rotation, or the opposite rotation, misplaces ~20 % of the atoms
    assert np.abs(seen - law(0.0)).sum() > 10 * err
    assert np.abs(seen - law(-om)).sum() > 10 * err
