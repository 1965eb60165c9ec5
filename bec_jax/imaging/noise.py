"""Counts on the camera: shot noise, background, read noise and fringes.

All quantities are in detected counts per pixel, with one count per detected
atom (the atom number N sets the scale: a pixel holding a fraction f of the
cloud expects N·f counts). Absorption images show

    image = Poisson(N·f) + background + fringes + read noise,

with fringes a sum of a few low-frequency plane waves (interference of the
imaging beam), and read noise Gaussian. Pure JAX; keys are keyword-only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["shot_noise", "fringes", "read_noise"]


def shot_noise(key, expected):
    """Poisson counts with mean ``expected`` (float (...), ≥ 0), as float of the same dtype.

    The sample is exact (``jax.random.poisson``); its gradient with respect to
    ``expected`` is the identity (straight-through: d E[counts]/d expected = 1),
    so the forward model stays differentiable.
    """
    expected = jnp.maximum(expected, 0.0)
    sample = jax.random.poisson(key, expected, dtype=jnp.int32).astype(expected.dtype)
    return expected + jax.lax.stop_gradient(sample - expected)


def fringes(key, shape, amplitude, n_waves: int, period=(8.0, 64.0)):
    """Sum of ``n_waves`` plane waves on a (rows, cols) pixel grid, float (rows, cols), counts.

    Each wave has a uniformly random direction and phase and a period drawn
    uniformly from ``period`` (pixels: low spatial frequencies); the sum is
    scaled by amplitude/√n_waves, so its RMS is amplitude/√2 for any n_waves.
    """
    if n_waves < 1:
        return jnp.zeros(shape, jnp.result_type(float))
    kd, kp, kf = jax.random.split(key, 3)
    theta = jax.random.uniform(kd, (n_waves,), minval=0.0, maxval=2 * np.pi)
    lam = jax.random.uniform(kp, (n_waves,), minval=period[0], maxval=period[1])
    phi = jax.random.uniform(kf, (n_waves,), minval=0.0, maxval=2 * np.pi)
    y = jnp.arange(shape[0], dtype=jnp.result_type(float))[:, None, None]
    x = jnp.arange(shape[1], dtype=jnp.result_type(float))[None, :, None]
    kx, ky = 2 * np.pi * jnp.cos(theta) / lam, 2 * np.pi * jnp.sin(theta) / lam
    return amplitude / np.sqrt(n_waves) * jnp.sum(jnp.cos(kx * x + ky * y + phi), axis=-1)


def read_noise(key, shape, sigma):
    """Gaussian read noise of standard deviation ``sigma`` (counts), float (shape)."""
    return sigma * jax.random.normal(key, shape)
