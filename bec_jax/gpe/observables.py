"""Observables read off a wavefunction: phase, phase gradient, vortices, cloud size.

All take psi of shape (..., n, n) indexed [..., y, x] and are jit/vmap-able.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bec_jax.gpe.grid import Grid
from bec_jax.gpe.hamiltonian import density, norm

__all__ = [
    "phase",
    "phase_gradient",
    "plaquette_winding",
    "RegionConfig",
    "envelope",
    "vortex_mask",
    "vortex_count",
    "vortex_positions",
    "vortex_cores",
    "thomas_fermi",
    "rms_radius",
    "edge_density",
]


def phase(psi):
    """θ = arg ψ in (-π, π], real, shape of psi."""
    return jnp.angle(psi)


def phase_gradient(grid: Grid, psi, eps: float = 1e-12):
    """Superfluid velocity ∇θ = Im(ψ* ∇ψ)/|ψ|², spectral derivatives.

    Returns (..., 2, n, n): channel 0 is ∂θ/∂x (along columns), 1 is ∂θ/∂y
    (along rows), in inverse trap units. ``eps`` regularises the vortex cores
    and the empty region where |ψ|² → 0.
    """
    # First derivative: the Nyquist mode gets wavenumber 0 (its sign is
    # ambiguous), which keeps ∇θ exactly covariant under 90° rotations.
    k = jnp.asarray(grid.k).at[grid.n // 2].set(0.0)
    dx = jnp.fft.ifft(1j * k * jnp.fft.fft(psi, axis=-1), axis=-1)
    dy = jnp.fft.ifft(1j * k[:, None] * jnp.fft.fft(psi, axis=-2), axis=-2)
    rho = density(psi)
    gx = jnp.imag(jnp.conj(psi) * dx) / (rho + eps)
    gy = jnp.imag(jnp.conj(psi) * dy) / (rho + eps)
    return jnp.stack([gx, gy], axis=-3)


def plaquette_winding(psi):
    """Winding number of the phase around each grid plaquette.

    The loop (j,i) → (j,i+1) → (j+1,i+1) → (j+1,i) → (j,i) is counter-clockwise
    in the (x, y) plane (rows are y). Returns int32 (..., n-1, n-1): +1 for a
    vortex with phase increasing counter-clockwise (the sign that Ω > 0
    favours), -1 for an antivortex. Plaquette centres are at x + dx/2.
    """
    p00, p01 = psi[..., :-1, :-1], psi[..., :-1, 1:]
    p11, p10 = psi[..., 1:, 1:], psi[..., 1:, :-1]
    loop = (
        jnp.angle(p01 * jnp.conj(p00))
        + jnp.angle(p11 * jnp.conj(p01))
        + jnp.angle(p10 * jnp.conj(p11))
        + jnp.angle(p00 * jnp.conj(p10))
    )
    return jnp.round(loop / (2 * np.pi)).astype(jnp.int32)


def _blur(grid: Grid, f, sigma: float):
    """Periodic Gaussian blur of width sigma (trap units) over the last two axes."""
    k = jnp.asarray(grid.k)
    kernel = jnp.exp(-0.5 * sigma**2 * (k[:, None] ** 2 + k[None, :] ** 2))
    return jnp.real(jnp.fft.ifft2(kernel * jnp.fft.fft2(f)))


@dataclasses.dataclass(frozen=True)
class RegionConfig:
    """Where vortices count: inside the cloud, the blurred density above a fraction of its peak.

    threshold: fraction of the peak of the blurred density, in (0, 1).
    sigma: Gaussian blur width in trap units (oscillator lengths), >= 0; a few
      healing lengths fill the vortex cores so that the region is the cloud's envelope.
    The one source of these defaults: ``vortex_mask``, ``vortex_count``, the
    evaluation (``EvalConfig``) and the physics-informed loss (``PhysicsConfig``).
    """

    threshold: float = 0.05
    sigma: float = 0.75

    def __post_init__(self):
        if not (0 < self.threshold < 1):
            raise ValueError(f"vortex_threshold must be in (0, 1), got {self.threshold}")
        if not (self.sigma >= 0):
            raise ValueError(f"vortex_sigma must be >= 0, got {self.sigma}")


def envelope(grid: Grid, psi, sigma: float = RegionConfig.sigma):
    """The cloud's envelope on the plaquettes: |ψ|² blurred over ``sigma`` (trap units; a few healing
    lengths fill the vortex cores), averaged over each plaquette's corners, as a fraction of its peak.
    psi (..., n, n) → float (..., n-1, n-1) in [0, 1]."""
    rho = _blur(grid, density(psi), sigma)
    rho = 0.25 * (rho[..., :-1, :-1] + rho[..., :-1, 1:] + rho[..., 1:, :-1] + rho[..., 1:, 1:])
    return rho / jnp.max(rho, axis=(-2, -1), keepdims=True)


def vortex_mask(grid: Grid, psi, threshold: float = RegionConfig.threshold, sigma: float = RegionConfig.sigma):
    """Plaquettes inside the cloud: ``envelope`` > threshold.

    Phase singularities in the near-empty outer region ("ghost vortices") carry
    no physics and are excluded. Returns bool (..., n-1, n-1).
    """
    return envelope(grid, psi, sigma) > threshold


def vortex_count(grid: Grid, psi, threshold: float = RegionConfig.threshold, sigma: float = RegionConfig.sigma):
    """Number of (anti)vortices inside the cloud, int32 shape psi.shape[:-2].

    Counts plaquettes of nonzero winding inside ``vortex_mask``, weighted by
    |winding| (a doubly quantised core counts twice).
    """
    w = plaquette_winding(psi)
    return jnp.sum(jnp.abs(w) * vortex_mask(grid, psi, threshold, sigma), axis=(-2, -1))


def vortex_positions(grid: Grid, psi, threshold: float = RegionConfig.threshold,
                     sigma: float = RegionConfig.sigma):
    """Vortex positions of ONE state psi (n, n), as numpy (x, y, winding) rows.

    Not jit-able (the count is data-dependent); meant for plots and analysis.
    """
    psi = jnp.asarray(psi)
    if psi.ndim != 2:
        raise ValueError(f"vortex_positions takes one state of shape (n, n), got {psi.shape}")
    w = np.asarray(plaquette_winding(psi) * vortex_mask(grid, psi, threshold, sigma))
    j, i = np.nonzero(w)
    xc = grid.x[:-1] + 0.5 * grid.dx
    return np.stack([xc[i], xc[j], w[j, i]], axis=-1) if len(i) else np.zeros((0, 3))


def vortex_cores(grid: Grid, psi, xy0, iters: int = 5):
    """Sub-pixel vortex cores of ONE state psi (n, n): the zeros of its spectral
    (Fourier) interpolant, by Newton's method from guesses xy0 (m, 2) (e.g. the
    (x, y) columns of ``vortex_positions``). Returns (m, 2), real, trap units.

    A simple zero moves smoothly with ψ, so the cores are differentiable (in ψ,
    and through ``ground_state`` in g and Ω); jit/vmap-able. Each Newton step
    evaluates ψ and ∇ψ at m points, O(m n²).
    """
    n = grid.n
    k = jnp.asarray(grid.k)
    x0 = float(grid.x[0])
    c = jnp.fft.fft2(psi) / n**2  # [k_y, k_x]

    def value_and_jac(p):
        ex = jnp.exp(1j * k * (p[0] - x0)).astype(c.dtype)
        ey = jnp.exp(1j * k * (p[1] - x0)).astype(c.dtype)
        cy = c @ ex  # Σ_kx over x: [k_y]
        cyx = c @ (1j * k * ex)
        f = ey @ cy
        fx = ey @ cyx
        fy = (1j * k * ey) @ cy
        jac = jnp.array([[jnp.real(fx), jnp.real(fy)], [jnp.imag(fx), jnp.imag(fy)]])
        return jnp.array([jnp.real(f), jnp.imag(f)]), jac

    def newton(p):
        for _ in range(iters):
            f, jac = value_and_jac(p)
            p = p - jnp.linalg.solve(jac, f)
        return p

    return jax.vmap(newton)(jnp.asarray(xy0, k.dtype))


def thomas_fermi(g, omega):
    """Thomas–Fermi estimates (μ, R) for the rotating 2-D cloud.

    The vortex lattice makes the cloud feel the trap softened to 1 - Ω²:
    μ ≈ √((1-Ω²) g/π), R ≈ √(2μ/(1-Ω²)). Works on numpy or jax arrays.
    """
    soft = 1.0 - omega**2
    mu = (soft * g / np.pi) ** 0.5
    return mu, (2 * mu / soft) ** 0.5


def rms_radius(grid: Grid, psi):
    """√⟨r²⟩ of the (normalised) density, shape psi.shape[:-2]."""
    r2 = 2 * jnp.asarray(grid.potential())
    return jnp.sqrt(jnp.sum(r2 * density(psi), axis=(-2, -1)) * grid.cell_area / norm(grid, psi))


def edge_density(psi):
    """Largest density on the box boundary relative to the peak density.

    Shape psi.shape[:-2]; a value above ~1e-4 means the cloud is cut by
    the periodic box and the box should be larger.
    """
    rho = density(psi)
    edge = jnp.maximum(
        jnp.maximum(jnp.max(rho[..., 0, :], -1), jnp.max(rho[..., -1, :], -1)),
        jnp.maximum(jnp.max(rho[..., :, 0], -1), jnp.max(rho[..., :, -1], -1)),
    )
    return edge / jnp.max(rho, axis=(-2, -1))
