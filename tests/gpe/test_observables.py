import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj

GRID = bj.Grid(64, 12.0)


def vortex_state(positions, windings):
    X, Y = (jnp.asarray(a) for a in GRID.mesh())
    psi = jnp.exp(-(X**2 + Y**2) / 4).astype(jnp.complex64)
    for (x0, y0), w in zip(positions, windings):
        z = (X - x0) + 1j * (Y - y0)
        z = z if w > 0 else jnp.conj(z)
        psi = psi * z / jnp.sqrt(jnp.abs(z) ** 2 + 0.1)  # unit-modulus away from the core
    return bj.normalize(GRID, psi)


def test_vortex_positions_and_signs():
    pos = [(1.03, 0.51), (-1.22, -0.97), (0.3, -1.52)]
    psi = vortex_state(pos, [1, 1, -1])
    v = bj.vortex_positions(GRID, psi)
    assert len(v) == 3 and int(bj.vortex_count(GRID, psi)) == 3
    for (x0, y0), w in zip(pos, [1, 1, -1]):
        d = np.hypot(v[:, 0] - x0, v[:, 1] - y0)
        i = np.argmin(d)
        assert d[i] < GRID.dx and v[i, 2] == w


def test_ghost_vortices_outside_the_cloud_are_not_counted():
    psi = vortex_state([(0.41, 0.13), (5.0, 5.0)], [1, 1])  # second one far outside the cloud
    assert int(bj.vortex_count(GRID, psi)) == 1


def test_envelope_of_a_gaussian_cloud_is_the_wider_gaussian():
    from bec_jax.gpe.observables import RegionConfig, envelope, vortex_mask

    psi = vortex_state([], [])  # |ψ|² ∝ exp(−r²/2): variance 1, blurred to 1 + σ²
    env = np.asarray(envelope(GRID, psi))
    x = np.asarray(GRID.x)
    g = np.exp(-(x[None, :] ** 2 + x[:, None] ** 2) / (2 * (1 + RegionConfig.sigma**2)))
    expected = 0.25 * (g[:-1, :-1] + g[:-1, 1:] + g[1:, :-1] + g[1:, 1:])  # a plaquette's corners
    np.testing.assert_allclose(env, expected / expected.max(), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(vortex_mask(GRID, psi)), env > RegionConfig.threshold)


def test_phase_gradient_of_plane_wave_and_vortex():
    X, Y = (jnp.asarray(a) for a in GRID.mesh())
    k = 2 * np.pi / GRID.length * 3
    psi = jnp.exp(1j * k * Y).astype(jnp.complex64)
    grad = bj.phase_gradient(GRID, psi)
    assert grad.shape == (2, 64, 64)
    np.testing.assert_allclose(grad[0], 0, atol=1e-4)
    np.testing.assert_allclose(grad[1], k, rtol=1e-4)
    # Counter-clockwise vortex: ∇θ = (-y, x)/r².
    X, Y = (jnp.asarray(a) for a in GRID.mesh())
    psi = (((X - 0.11) + 1j * (Y - 0.07)) * jnp.exp(-(X**2 + Y**2) / 2)).astype(jnp.complex64)
    gx, gy = np.asarray(bj.phase_gradient(GRID, psi))
    j, i = 40, 45
    x, y = GRID.x[i] - 0.11, GRID.x[j] - 0.07
    np.testing.assert_allclose([gx[j, i], gy[j, i]], [-y / (x * x + y * y), x / (x * x + y * y)], rtol=1e-3)


def test_thomas_fermi_and_box_length():
    mu, R = bj.thomas_fermi(500.0, 0.85)
    assert abs(mu - 6.64) < 0.01 and abs(R - 6.92) < 0.02  # DESIGN.md §2 numbers
    assert 20 < bj.box_length(500.0, 0.85) < 22
    with pytest.raises(ValueError):
        bj.vortex_positions(GRID, jnp.ones((2, 64, 64)))
