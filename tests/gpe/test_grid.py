import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj


def test_grid_coordinates_and_spacing():
    grid = bj.Grid(32, 8.0)
    assert grid.dx == 0.25
    assert grid.x[0] == -4.0 and np.isclose(grid.x[-1], 4.0 - 0.25)
    np.testing.assert_allclose(grid.k[:3], 2 * np.pi / 8.0 * np.arange(3), rtol=1e-6)
    X, Y = grid.mesh()
    assert X.shape == (32, 32) and X[0, 1] > X[0, 0] and Y[1, 0] > Y[0, 0]  # [y, x] indexing
    np.testing.assert_allclose(grid.potential(), 0.5 * (X**2 + Y**2))


def test_grid_is_hashable_static_argument():
    a, b = bj.Grid(16, 4.0), bj.Grid(16, 4)
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    f = jax.jit(lambda grid, x: x * grid.dx, static_argnums=0)
    assert float(f(a, jnp.ones(()))) == 0.25
    with pytest.raises(dataclasses_error()):
        a.n = 32


def dataclasses_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


@pytest.mark.parametrize(
    "n, length, match",
    [(15, 8.0, "even"), (14, 8.0, ">= 16"), (33, 8.0, "even"), (32, 0.0, "> 0"), (32, -1.0, "> 0"),
     (32, float("nan"), "finite"), (32.0, 8.0, "int")],
)
def test_grid_rejects_bad_input(n, length, match):
    with pytest.raises(ValueError, match=match):
        bj.Grid(n, length)


def test_resample_is_band_limited_interpolation():
    """A smooth field sampled on 32² and resampled to 64² equals the field sampled on 64²
    (spectral accuracy), and back again; the Nyquist mode of the smaller grid is dropped."""
    from bec_jax.gpe.grid import resample

    def field(grid):
        X, Y = grid.mesh()
        return np.exp(-((X - 0.3) ** 2 + (Y + 0.5) ** 2) / 2) * np.exp(1j * 0.7 * X)

    small, big = bj.Grid(32, 12.0), bj.Grid(64, 12.0)
    up = np.asarray(resample(jnp.asarray(field(small), jnp.complex64), 64))
    np.testing.assert_allclose(up, field(big), atol=1e-5)
    down = np.asarray(resample(jnp.asarray(field(big), jnp.complex64), 32))
    np.testing.assert_allclose(down, field(small), atol=1e-5)
    assert resample(jnp.ones((2, 3, 32, 32)), 48).shape == (2, 3, 48, 48)
    nyquist = np.cos(np.pi * np.arange(32))[None, :] * np.ones((32, 1))  # (-1)^x: the 32² grid's Nyquist mode
    np.testing.assert_allclose(np.asarray(resample(jnp.asarray(nyquist, jnp.complex64), 64)), 0, atol=1e-6)
    with pytest.raises(ValueError, match="coarsening factor"):
        small.coarsened(3)
