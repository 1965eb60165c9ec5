"""Counts: Poisson shot noise statistics, straight-through gradient, fringes and read noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bec_jax import imaging as im


@pytest.mark.parametrize("rate", [0.7, 12.0, 400.0])
def test_poisson_noise_has_the_right_mean_and_variance(rate):
    m = 200_000
    c = np.asarray(im.shot_noise(jax.random.key(3), jnp.full((m,), rate, jnp.float32)))
    assert np.all(c == np.round(c)) and c.min() >= 0
    # 5 standard errors: se(mean) = √(rate/m), se(var) ≈ rate·√(2/m) (+ the fourth cumulant, rate/m)
    assert abs(c.mean() - rate) < 5 * np.sqrt(rate / m)
    assert abs(c.var() - rate) < 5 * np.sqrt((2 * rate**2 + rate) / m)


def test_shot_noise_gradient_is_straight_through():
    g = jax.grad(lambda r: jnp.sum(im.shot_noise(jax.random.key(0), r)))(jnp.full((5,), 30.0))
    assert np.allclose(np.asarray(g), 1.0)


def test_fringes_are_low_frequency_plane_waves_of_the_given_rms():
    f = np.asarray(im.fringes(jax.random.key(1), (256, 256), 4.0, 3, (16.0, 64.0)))
    assert abs(np.sqrt(np.mean(f**2)) - 4.0 / np.sqrt(2)) < 0.6
    # periods of at least 16 px: a neighbouring-pixel difference is at most 2π/16 of the amplitude
    for axis in (0, 1):
        assert np.sqrt(np.mean(np.diff(f, axis=axis) ** 2)) < 2 * np.pi / 16 * 4.0 / np.sqrt(2) * 1.1
    assert np.all(np.asarray(im.fringes(jax.random.key(1), (4, 5), 4.0, 0)) == 0)


def test_read_noise_std():
    r = np.asarray(im.read_noise(jax.random.key(2), (400, 400), 3.0))
    assert abs(r.std() - 3.0) < 0.05 and abs(r.mean()) < 0.05
