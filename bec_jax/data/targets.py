"""Network inputs, targets and masks derived from ψ (transforms, never stored copies).

Layout is channels-last for the models: input (..., n, n, 1), target
(..., n, n, 2) with channel 0 along x (columns) and channel 1 along y (rows),
mask (..., n, n). All functions are jit/vmap-able.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from bec_jax.gpe.grid import Grid
from bec_jax.gpe.hamiltonian import density
from bec_jax.gpe.observables import phase_gradient

__all__ = ["TargetConfig", "log_density", "phase_differences", "velocity", "valid_mask", "make_example", "rotate90"]

TARGETS = ("phase_diff", "velocity")


@dataclasses.dataclass(frozen=True)
class TargetConfig:
    """How ψ becomes (input, target, mask).

    target: "phase_diff" — the reference convention, wrapped forward pixel
      differences of the phase in [-π, π] (not divided by dx); or "velocity" —
      the superfluid velocity ∇θ = Im(ψ*∇ψ)/|ψ|² (spectral, trap units).
    eps: added to the density before the log (reference: 1e-9).
    mask_threshold: pixels with |ψ|² < mask_threshold · max|ψ|² are invalid
      (excluded from losses and metrics: the phase there is noise).
    """

    target: str = "phase_diff"
    eps: float = 1e-9
    mask_threshold: float = 1e-3

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if not (self.eps > 0):
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if not (0 <= self.mask_threshold < 1):
            raise ValueError(f"mask_threshold must be in [0, 1), got {self.mask_threshold}")


def log_density(psi, eps: float = 1e-9):
    """log(|ψ|² + eps), float (..., n, n)."""
    return jnp.log(density(psi) + eps)


def phase_differences(psi):
    """Wrapped forward differences of arg ψ, (..., n, n, 2) in [-π, π].

    Channel 0: θ[j, i+1] - θ[j, i] (along x); channel 1: θ[j+1, i] - θ[j, i]
    (along y); periodic at the last column/row. Computed as arg(ψ_{+1} ψ*),
    which is the wrapped difference exactly, with no branch-cut artefacts.
    """
    dx = jnp.angle(jnp.roll(psi, -1, axis=-1) * jnp.conj(psi))
    dy = jnp.angle(jnp.roll(psi, -1, axis=-2) * jnp.conj(psi))
    return jnp.stack([dx, dy], axis=-1)


def velocity(grid: Grid, psi):
    """Superfluid velocity ∇θ, (..., n, n, 2), channel 0 = ∂θ/∂x, 1 = ∂θ/∂y."""
    return jnp.moveaxis(phase_gradient(grid, psi), -3, -1)


def valid_mask(psi, threshold: float = 1e-3):
    """bool (..., n, n): density ≥ threshold · (max density of that state)."""
    rho = density(psi)
    return rho >= threshold * jnp.max(rho, axis=(-2, -1), keepdims=True)


def make_example(grid: Grid, psi, config: TargetConfig = TargetConfig()):
    """(input (..., n, n, 1) float, target (..., n, n, 2) float, mask (..., n, n) bool)."""
    x = log_density(psi, config.eps)[..., None]
    y = phase_differences(psi) if config.target == "phase_diff" else velocity(grid, psi)
    return x, y, valid_mask(psi, config.mask_threshold)


def rotate90(psi, k):
    """Rotate states (..., n, n) by k·90° counter-clockwise (k traced, per call).

    The square periodic grid maps onto itself under rot90 about the array
    centre, so targets recomputed from the rotated ψ are exactly the rotated
    vector field: v'(r) = R v(R⁻¹r), i.e. (v_x, v_y) → (-v_y, v_x) for k = 1.
    Rotations commute with L_z, so a rotated ground state is a ground state.
    Mirror images are *not* used: a reflection flips L_z, turning the
    counter-clockwise vortex lattice of Ω > 0 into the ground state of -Ω.
    With rows = y and origin at the bottom, counter-clockwise is np.rot90 with
    axes (x, y) = (-1, -2).
    """
    rots = [lambda p, j=j: jnp.rot90(p, j, axes=(-1, -2)) for j in range(4)]
    return jax.lax.switch(jnp.asarray(k, jnp.int32) % 4, rots, psi)
