"""The composed imaging model: atom number, jit/vmap over sampled parameters, gradients, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax import imaging as im

GRID = bj.Grid(48, 12.0)


def cloud():
    """A smooth (band-limited on the grid) cloud of radius ~3 with a vortex near the centre."""
    X, Y = GRID.mesh()
    n = np.exp(-(((X**2 + Y**2) / 9.0) ** 2))
    return jnp.asarray(np.sqrt(n) * np.exp(1j * np.arctan2(Y - 0.5, X)), jnp.complex64)


@pytest.mark.parametrize("psf", ["none", "gaussian", "airy"])
def test_expected_image_holds_all_atoms_when_the_camera_covers_the_cloud(psf):
    p = im.ImagingParams(tof=1.5, omega=0.6, angle=0.4, pixel_size=0.35, center_x=0.7, center_y=-0.4,
                         psf_width=0.4, atom_number=2e4)
    img = im.expected_image(GRID, cloud(), p, im.ImagingConfig(rows=60, cols=70, psf=psf))
    assert img.shape == (60, 70)
    # the Airy pattern's r⁻³ tails carry a few 1e-4 of the atoms beyond the field of view
    assert abs(float(img.sum()) / 2e4 - 1) < (1e-3 if psf == "airy" else 1e-5)
    assert float(img.min()) > -1e-3 * float(img.max())


def test_render_jits_and_vmaps_over_sampled_parameters_and_is_differentiable():
    cfg = im.ImagingConfig(rows=32, cols=40)
    ranges = im.ImagingRanges(tof=(0.0, 1.0), omega=(0.3, 0.6), atom_number=(1e4, 1e5))
    params = im.sample_params(jax.random.key(0), ranges, shape=(3,))
    assert np.all((np.asarray(params.tof) >= 0) & (np.asarray(params.tof) <= 1))
    assert np.all((np.asarray(params.atom_number) >= 1e4) & (np.asarray(params.atom_number) <= 1e5))
    f = jax.jit(jax.vmap(lambda p, k: im.render(GRID, cloud(), p, cfg, key=k)))
    imgs = np.asarray(f(params, jax.random.split(jax.random.key(1), 3)))
    assert imgs.shape == (3, 32, 40) and np.all(np.isfinite(imgs))
    assert not np.allclose(imgs[0], imgs[1])
    # differentiable in the state through the noise (straight-through shot noise)
    loss = lambda psi: jnp.sum(im.render(GRID, psi, im.ImagingParams(), cfg, key=jax.random.key(2)) ** 2)
    gpsi = np.asarray(jax.grad(loss)(cloud()))
    assert np.all(np.isfinite(gpsi)) and np.any(gpsi != 0)


def test_pixel_size_gradient_matches_finite_differences():
    cfg = im.ImagingConfig(rows=24, cols=24, shot_noise=False, n_fringes=0)
    with jax.enable_x64(True):
        psi = cloud().astype(jnp.complex128)
        f = lambda s: im.expected_image(GRID, psi, im.ImagingParams(pixel_size=s, psf_width=0.3, tof=0.5), cfg)[12, 15]
        g = float(jax.grad(f)(0.31))
        h = 1e-6
        fd = (float(f(0.31 + h)) - float(f(0.31 - h))) / (2 * h)
    assert abs(g - fd) < 1e-5 * max(1.0, abs(fd))


@pytest.mark.parametrize("kw,match", [(dict(rows=0), "rows"), (dict(psf="moffat"), "psf"),
                                      (dict(n_fringes=-1), "n_fringes"), (dict(fringe_period=(5.0, 2.0)), "fringe")])
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        im.ImagingConfig(**kw)


@pytest.mark.parametrize("kw,match", [(dict(omega=(0.5, 1.2)), "omega"), (dict(pixel_size=(0.0, 1.0)), "pixel_size"),
                                      (dict(tof=(2.0, 1.0)), "tof"), (dict(read_noise=(-1.0, 1.0)), "read_noise")])
def test_ranges_reject_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        im.ImagingRanges(**kw)


@pytest.mark.parametrize("kw,match", [(dict(pixel_size=0.0), "pixel_size"), (dict(omega=1.0), "omega"),
                                      (dict(tof=-0.1), "tof"), (dict(atom_number=float("nan")), "atom_number"),
                                      (dict(read_noise=-1.0), "read_noise")])
def test_concrete_bad_params_are_refused_naming_the_field_and_range(kw, match):
    with pytest.raises(ValueError, match=match + r" must be finite and in"):
        im.expected_image(GRID, cloud(), im.ImagingParams(**kw))
    with pytest.raises(ValueError, match="psi must have shape"):
        im.expected_image(GRID, cloud()[:-2], im.ImagingParams())
