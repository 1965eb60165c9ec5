"""Camera pixels integrate the density over their area; resampling conserves the atom number."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import bec_jax as bj
from bec_jax import imaging as im
from tests.conftest import tol


def test_overlap_matrix_is_the_exact_interval_overlap():
    a = im.overlap_matrix(jnp.array([0.0, 1.0, 2.0]), jnp.array([0.5, 1.25, 3.0]))
    assert np.allclose(np.asarray(a), [[0.5, 0.25], [0.0, 0.75]])


@pytest.mark.parametrize("shape,pixel,center", [((17, 23), 0.37, (0.3, -0.2)), ((40, 40), 0.11, (0.0, 0.05)),
                                                 ((5, 9), 1.9, (-1.0, 0.7))][::2])
def test_resampling_conserves_the_atom_number(precision, shape, pixel, center):
    """A random density on 30×25 source pixels, integrated over any camera covering it."""
    rng = np.random.default_rng(1)
    src = rng.random((30, 25)).astype(np.float32 if precision == "float32" else np.float64)
    sy = im.pixel_edges(30, 0.1, 0.0)
    sx = im.pixel_edges(25, 0.1, 0.2)
    total = float(src.sum()) * 0.01
    dy = im.pixel_edges(shape[0], pixel, center[1])
    dx = im.pixel_edges(shape[1], pixel, center[0])
    if dy[0] > sy[0] or dy[-1] < sy[-1] or dx[0] > sx[0] or dx[-1] < sx[-1]:  # make the camera cover the source
        dy = im.pixel_edges(shape[0] + 40, pixel, center[1])
        dx = im.pixel_edges(shape[1] + 40, pixel, center[0])
    out = im.integrate_pixels(jnp.asarray(src), sy, sx, dy, dx)
    assert abs(float(out.sum()) - total) < tol(precision, 2e-6, 1e-13) * total
    # mean densities back onto the source grid: a uniform density is reproduced exactly
    ones = im.resample_density(jnp.ones(shape), dy[: shape[0] + 1], dx[: shape[1] + 1],
                               im.pixel_edges(7, pixel / 3, center[1]), im.pixel_edges(7, pixel / 3, center[0]))
    assert np.allclose(np.asarray(ones), 1.0, atol=tol(precision, 1e-5, 1e-12))


def test_pixels_integrate_over_their_area_not_point_sample():
    """Large pixels on a narrow Gaussian: the counts are the erf-products of the pixel areas."""
    grid = bj.Grid(256, 12.0)
    s, x0, y0 = 0.35, 0.23, -0.11
    X, Y = grid.mesh()
    n = np.exp(-((X - x0) ** 2 + (Y - y0) ** 2) / (2 * s**2)) / (2 * np.pi * s**2)
    p = im.ImagingParams(pixel_size=0.5, center_x=0.1, center_y=0.05, atom_number=1.0, psf_width=0.0)
    cfg = im.ImagingConfig(rows=7, cols=9, psf="none", shot_noise=False, n_fringes=0)
    with jax.enable_x64(True):
        img = np.asarray(im.expected_image(grid, jnp.asarray(n), p, cfg))
    ey = np.asarray(im.pixel_edges(7, 0.5, 0.05))
    ex = np.asarray(im.pixel_edges(9, 0.5, 0.1))
    cy = np.diff(0.5 * erf((ey - y0) / (np.sqrt(2) * s)))
    cx = np.diff(0.5 * erf((ex - x0) / (np.sqrt(2) * s)))
    ref = cy[:, None] * cx[None, :]
    assert np.max(np.abs(img - ref)) < 2e-3 * ref.max()
    cy, cx = 0.5 * (ey[1:] + ey[:-1]), 0.5 * (ex[1:] + ex[:-1])
    point = 0.25 * np.exp(-((cx[None] - x0) ** 2 + (cy[:, None] - y0) ** 2) / (2 * s**2)) / (2 * np.pi * s**2)
    assert np.max(np.abs(point - ref)) > 0.1 * ref.max()  # a point-sampling camera would be far off


def test_camera_beyond_the_box_records_nothing_there():
    grid = bj.Grid(32, 8.0)
    n = np.ones((32, 32))
    cfg = im.ImagingConfig(rows=20, cols=20, psf="none", shot_noise=False, n_fringes=0)
    img = np.asarray(im.expected_image(grid, jnp.asarray(n), im.ImagingParams(pixel_size=1.0, atom_number=64.0), cfg))
    assert img[0, 0] == 0 and img[-1, -1] == 0 and abs(img.sum() - 64.0) < 1e-3
    assert np.allclose(img[8:12, 8:12], 1.0, atol=1e-5)


def test_pixel_edges_rejects_empty_cameras():
    with pytest.raises(ValueError, match="pixel count"):
        im.pixel_edges(0, 1.0)
