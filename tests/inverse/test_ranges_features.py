import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.inverse import FeatureConfig, ParamBox, azimuthal_features, check_in_box, density_minima
from bec_jax.inverse.features import closed_form_guess, ring_basis, seed_state_from_density


def test_sigmoid_map_stays_in_box_and_round_trips():
    box = ParamBox((50.0, 250.0), (0.3, 0.75))
    u = jnp.array([[-1e4, -1e4], [0.0, 0.0], [1e4, 1e4], [0.3, -2.0]])
    p = np.asarray(box.to_physical(u))
    assert np.all(p[:, 0] >= 50) and np.all(p[:, 0] <= 250)
    assert np.all(p[:, 1] >= 0.3) and np.all(p[:, 1] <= 0.75)
    np.testing.assert_allclose(p[1], [150.0, 0.525], rtol=1e-6)
    q = np.array([[80.0, 0.4], [240.0, 0.7]])
    np.testing.assert_allclose(box.to_physical(box.to_unconstrained(q)), q, rtol=1e-5)


@pytest.mark.parametrize("p, match", [([300.0, 0.5], r"g=300.0 is outside the allowed range \[50.0, 250.0\]"),
                                      ([100.0, 0.9], r"omega=0.9 is outside the allowed range \[0.3, 0.75\]")])
def test_out_of_range_raises_naming_value_and_range(p, match):
    box = ParamBox((50.0, 250.0), (0.3, 0.75))
    with pytest.raises(ValueError, match=match):
        check_in_box(box, p)
    with pytest.raises(ValueError, match=match):
        box.to_unconstrained(np.array(p))


@pytest.mark.parametrize("kw", [dict(g_range=(10.0, 5.0)), dict(g_range=(-1.0, 5.0)), dict(omega_range=(0.2, 1.0))])
def test_bad_box_raises(kw):
    with pytest.raises(ValueError, match="range"):
        ParamBox(**kw)


def _lattice_density(grid, angle, n_v=6, ring=2.0, core=0.35):
    """Gaussian cloud with n_v Gaussian dips on a ring, rotated by angle."""
    X, Y = grid.mesh()
    n = np.exp(-(X**2 + Y**2) / 8.0)
    for k in range(n_v):
        a = angle + 2 * np.pi * k / n_v
        n = n * (1 - np.exp(-((X - ring * np.cos(a)) ** 2 + (Y - ring * np.sin(a)) ** 2) / (2 * core**2)))
    return n / (n.sum() * grid.cell_area)


def test_features_rotation_invariant_but_see_the_lattice():
    grid = bj.Grid(64, 12.0)
    fc = FeatureConfig(n_rings=16)
    f0, f1 = (np.asarray(azimuthal_features(grid, jnp.asarray(_lattice_density(grid, a)), fc)) for a in (0.0, 0.37))
    scale = np.abs(f0).max()
    assert np.abs(f0 - f1).max() < 2e-2 * scale  # a non-grid rotation: invariant up to pixelisation
    f_round = np.asarray(azimuthal_features(grid, jnp.asarray(_lattice_density(grid, 0.0, n_v=0)), fc))
    assert f0[6].max() > 10 * f_round[6].max()  # the 6-fold ring shows up in |c_6| only with the lattice
    # the ring weights partition unity inside r_max = L/2: Σ_b c_0(r_b) is the mass there
    X, Y = grid.mesh()
    _, basis = ring_basis(grid, fc)
    w = np.real(basis[0]).sum(0) / grid.cell_area
    np.testing.assert_allclose(w[np.hypot(X, Y) <= 6.0], 1.0, atol=1e-9)


def test_density_minima_and_seed_find_the_cores():
    grid = bj.Grid(64, 12.0)
    n = _lattice_density(grid, 0.2, n_v=5)
    z = density_minima(grid, n)
    assert len(z) == 5
    np.testing.assert_allclose(np.hypot(z[:, 0], z[:, 1]), 2.0, atol=0.6 * grid.dx)
    psi, k = seed_state_from_density(grid, n)
    assert k == 5
    assert int(bj.vortex_count(grid, jnp.asarray(psi))) == 5
    g, om = closed_form_guess(grid, n, 5)
    assert np.isfinite(g) and 0 < om < 1
