"""Optical resolution: the point-spread function as a transfer function on the solver grid.

Blurring is a product in Fourier space with the optical transfer function
H(k) (H(0) = 1, so the atom number is unchanged). Widths are in trap units a⊥
in the plane being imaged. ``scale`` evaluates H(k / scale): a PSF of width w in
the imaged plane acts on the pre-flight density (coordinates divided by
λ = ``expansion_factor``) as a PSF of width w/λ.

- Gaussian: PSF ∝ exp(−r²/2σ²), H = exp(−σ²k²/2).
- Airy (diffraction-limited incoherent imaging through a circular aperture of
  numerical aperture NA at wavelength λ_L): PSF ∝ (2 J₁(v)/v)², v = 2π NA r/λ_L,
  first dark ring at r_A = 3.8317·λ_L/(2π NA) ≈ 0.61 λ_L/NA (``airy_radius``);
  H(ρ) = (2/π)(arccos ρ − ρ√(1 − ρ²)) for ρ = k/k_c ≤ 1, 0 beyond,
  k_c = 4π NA/λ_L = 2·3.8317/r_A.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bec_jax.gpe.grid import Grid

__all__ = ["PSF_KINDS", "BESSEL_J1_ZERO", "airy_radius", "gaussian_otf", "airy_otf", "otf", "box_transfer",
           "observation_transfer", "blur"]

PSF_KINDS = ("none", "gaussian", "airy")
#: first zero of J₁
BESSEL_J1_ZERO = 3.8317059702075125


def airy_radius(numerical_aperture, wavelength):
    """First-dark-ring radius r_A = 3.8317 λ_L/(2π NA), in the units of ``wavelength``."""
    return BESSEL_J1_ZERO * wavelength / (2 * np.pi * numerical_aperture)


def _k2(grid: Grid):
    k = jnp.asarray(grid.k)
    return k[None, :] ** 2 + k[:, None] ** 2


def gaussian_otf(grid: Grid, sigma, scale=1.0):
    """exp(−σ²|k/scale|²/2) on the grid's (n, n) wavenumbers; sigma ≥ 0 (trap units)."""
    return jnp.exp(-0.5 * jnp.square(sigma / scale) * _k2(grid))


def airy_otf(grid: Grid, radius, scale=1.0):
    """Incoherent circular-pupil OTF (module doc) for first-dark-ring radius ``radius`` > 0 (trap units)."""
    kc = 2 * BESSEL_J1_ZERO / radius
    rho = jnp.clip(jnp.sqrt(_k2(grid)) / (scale * kc), 0.0, 1.0)
    return (2 / np.pi) * (jnp.arccos(rho) - rho * jnp.sqrt(1 - rho * rho))


def otf(grid: Grid, kind: str, width, scale=1.0):
    """Transfer function of a PSF ``kind`` (one of PSF_KINDS) of ``width`` (σ for "gaussian",
    r_A for "airy"; ignored for "none"), evaluated at k/scale. Real (n, n)."""
    if kind == "none":
        return jnp.ones((grid.n, grid.n), jnp.result_type(float))
    if kind == "gaussian":
        return gaussian_otf(grid, width, scale)
    if kind == "airy":
        return airy_otf(grid, width, scale)
    raise ValueError(f"psf kind must be one of {PSF_KINDS}, got {kind!r}")


def box_transfer(grid: Grid, width):
    """Transfer function of averaging over a square of side ``width`` ≥ 0 (trap units):
    sinc(k_x w/2)·sinc(k_y w/2), real (n, n)."""
    k = jnp.asarray(grid.k)
    s = jnp.sinc(k * width / (2 * np.pi))  # numpy's sinc is sin(πx)/(πx)
    return s[None, :] * s[:, None]


def observation_transfer(grid: Grid, psf: str, psf_width, pixel, lam=1.0):
    """What a camera image, mapped back onto ``grid`` as ``bec-jax predict`` does, makes of an in-trap
    density: one real transfer function (n, n).

    psf, psf_width: the optical PSF (``otf``; width in the imaged plane, acting as width/λ in the
    trap). pixel: the in-trap side of one camera pixel (P/λ). lam: the flight's dilation λ.
    Three box averages: the rendering integrates the density as constant over each grid cell
    (side dx), the camera over each pixel, and predict area-resamples the pixels back onto the
    cells (side dx). Their exact result depends on where pixel edges fall; averaged over that
    sub-pixel position it is the convolution with the boxes (the test compares it with the
    rendered and resampled images: 0.5–0.6 % of the density in L2). Noise is not a transfer: it
    stays in the observation.
    """
    cell = box_transfer(grid, grid.dx)
    return otf(grid, psf, psf_width, lam) * box_transfer(grid, pixel) * cell * cell


def blur(density, transfer):
    """Real density (..., n, n) convolved (periodically) with the PSF whose transfer function is ``transfer`` (n, n)."""
    return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(density) * transfer)).astype(density.dtype)
