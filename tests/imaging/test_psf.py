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


@pytest.mark.parametrize("pixel, tof, width", [(0.3, 0.0, 0.0), (0.6, 1.0, 0.5)])
def test_observation_transfer_is_the_rendered_and_resampled_image_averaged_over_pixel_offsets(pixel, tof, width):
    """observation_transfer against the exact chain: expected_image (PSF, camera pixels) then predict's
    signal_to_grid, averaged over the pixel grid's sub-pixel offset."""
    from bec_jax.imaging.frame import signal_to_grid
    from bec_jax.imaging.model import ImagingConfig, ImagingParams, expected_image

    grid = bj.Grid(48, 12.0)
    X, Y = grid.mesh()
    n = np.exp(-(X**2 + Y**2) / 8) * (1 - 0.9 * np.exp(-((X - 1) ** 2 + (Y - 0.5) ** 2) / 0.3))  # a cloud with a core
    n = jnp.asarray(n / (n.sum() * grid.cell_area), jnp.float32)
    lam = float(im.expansion_factor(tof))
    cam = ImagingConfig(rows=64, cols=64, psf="gaussian" if width else "none", shot_noise=False, n_fringes=0)
    rng, acc, K = np.random.default_rng(0), 0.0, 32
    for _ in range(K):
        cx, cy = rng.uniform(-0.5, 0.5, 2) * pixel
        p = ImagingParams(tof=tof, pixel_size=pixel, center_x=cx, center_y=cy, psf_width=width or 0.3, atom_number=1.0)
        row, col = 0.5 * (cam.rows - 1) - cy / pixel, 0.5 * (cam.cols - 1) - cx / pixel
        acc = acc + np.asarray(signal_to_grid(grid, expected_image(grid, n, p, cam), row, col, pixel / lam)[0])
    exact = acc / K
    model = np.asarray(im.blur(n, im.observation_transfer(grid, cam.psf, width, pixel / lam, lam)))
    err = lambda a: np.linalg.norm(a - exact) / np.linalg.norm(exact)
    assert err(model) < 1e-2 and err(model) < 0.6 * err(np.asarray(n)), (err(model), err(np.asarray(n)))
