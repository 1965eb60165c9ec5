"""Point-spread functions against closed forms."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import j1

import bec_jax as bj
from bec_jax import imaging as im
from tests.conftest import tol

GRID = bj.Grid(128, 16.0)


def gauss(s):
    X, Y = GRID.mesh()
    return np.exp(-(X**2 + Y**2) / (2 * s**2)) / (2 * np.pi * s**2)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_gaussian_psf_of_a_gaussian_cloud_is_a_wider_gaussian(precision, scale):
    s0, s = 0.8, 0.6
    out = np.asarray(im.blur(jnp.asarray(gauss(s0), GRID.x.dtype), im.gaussian_otf(GRID, s, scale=scale)))
    ref = gauss(np.sqrt(s0**2 + (s / scale) ** 2))
    assert np.max(np.abs(out - ref)) < tol(precision, 1e-6, 1e-12) * ref.max() + tol(precision, 1e-6, 1e-12)
    assert abs(out.sum() * GRID.cell_area - 1) < tol(precision, 1e-5, 1e-12)


def test_airy_psf_is_the_airy_pattern_with_its_first_dark_ring_at_r_A():
    r_a = float(im.airy_radius(0.4, 0.8))  # NA 0.4, wavelength 0.8 a⊥
    assert r_a == pytest.approx(0.6098 * 0.8 / 0.4, rel=1e-3)
    delta = np.zeros((GRID.n, GRID.n))
    delta[GRID.n // 2, GRID.n // 2] = 1 / GRID.cell_area
    with __import__("jax").enable_x64(True):
        psf = np.asarray(im.blur(jnp.asarray(delta), im.airy_otf(GRID, r_a)))
    assert abs(psf.sum() * GRID.cell_area - 1) < 1e-10  # OTF(0) = 1: atoms are conserved
    x = GRID.x
    row = psf[GRID.n // 2] / psf[GRID.n // 2, GRID.n // 2]
    v = 3.8317 * np.abs(x) / r_a
    ref = np.where(v > 0, (2 * j1(np.where(v > 0, v, 1)) / np.where(v > 0, v, 1)) ** 2, 1.0)
    near = np.abs(x) < 2.5 * r_a
    assert np.max(np.abs(row - ref)[near]) < 5e-3
    assert abs(np.interp(r_a, x[GRID.n // 2:], row[GRID.n // 2:])) < 5e-3


def test_otf_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="psf kind"):
        im.otf(GRID, "lorentz", 1.0)
