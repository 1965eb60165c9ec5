import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.inverse import FeatureConfig, ParamBox, SurrogateConfig, azimuthal_features
from bec_jax.inverse import invert_with_surrogate, load_surrogate, save_surrogate, train_surrogate

BOX = ParamBox((50.0, 250.0), (0.3, 0.75))
FC = FeatureConfig(n_rings=10, max_m=2)


def _toy_density(grid, g, om):
    """Cheap stand-in: width set by g, a dip ring whose radius is set by Ω."""
    X, Y = grid.mesh()
    r2 = X**2 + Y**2
    w2 = 2.0 * (g / 100.0) ** 0.5
    n = np.exp(-r2 / w2) * (1 - 0.6 * np.exp(-(np.sqrt(r2) - 4 * om) ** 2 / 0.3))
    return n / (n.sum() * grid.cell_area)


def test_surrogate_fits_and_inverts_toy_map(tmp_path):
    grid = bj.Grid(16, 10.0)
    rng = np.random.default_rng(0)
    P = np.stack([rng.uniform(50, 250, 64), rng.uniform(0.3, 0.75, 64)], 1)
    F = np.asarray(azimuthal_features(grid, jnp.asarray(np.stack([_toy_density(grid, *p) for p in P])), FC))
    cfg = SurrogateConfig(width=32, depth=2, steps=600, lr=1e-2, inv_steps=150, inv_starts=2)
    model, info = train_surrogate(grid, P, F, BOX, FC, cfg)
    assert info["train_loss"][-1] < 0.05 * info["train_loss"][0]
    Pt = np.array([[120.0, 0.5], [200.0, 0.65]])
    Ft = np.asarray(azimuthal_features(grid, jnp.asarray(np.stack([_toy_density(grid, *p) for p in Pt])), FC))
    p, loss = invert_with_surrogate(model, info, Ft, BOX, FC, cfg)
    p = np.asarray(p)
    assert np.all(np.abs(p / Pt - 1) < 0.15), p
    assert np.all((p[:, 0] >= 50) & (p[:, 0] <= 250) & (p[:, 1] >= 0.3) & (p[:, 1] <= 0.75))
    save_surrogate(tmp_path / "s.h5", model, info, cfg, FC, BOX)
    m2, i2, cfg2, fc2, box2 = load_surrogate(tmp_path / "s.h5", grid)
    assert (cfg2, fc2, box2) == (cfg, FC, BOX)
    np.testing.assert_allclose(np.asarray(invert_with_surrogate(m2, i2, Ft, BOX, FC, cfg)[0]), p, rtol=1e-4)


def test_surrogate_rejects_bad_shapes():
    with pytest.raises(ValueError, match="f_obs"):
        invert_with_surrogate(None, {}, np.zeros((3, 4)), BOX, FC, SurrogateConfig())
    with pytest.raises(ValueError, match="inv_starts"):
        SurrogateConfig(inv_starts=0)
