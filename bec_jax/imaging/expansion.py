"""Time of flight: free expansion of a released 2-D condensate, and exact rotations on the grid.

Lens transform (SO(2,1) symmetry of the 2-D GPE with contact interactions,
Pitaevskii–Rosch): after the trap (ω⊥ = 1) is switched off at t = 0, the state
equals the trapped lab-frame evolution at τ = arctan t, dilated by
λ(t) = √(1 + t²) (times a quadratic phase). A state stationary in the frame
rotating at Ω rotates rigidly at Ω in the lab, so the density after a flight
time t is

    n_t(r) = n₀(R(−Ω·arctan t) r / λ) / λ²,

with R(α) the counter-clockwise rotation by α. Lengths are in oscillator
lengths a⊥, times in 1/ω⊥. The law is checked against ``real_time`` with the
trap switched off in tests/imaging/test_expansion.py (docs/imaging.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bec_jax.gpe.grid import Grid

__all__ = ["expansion_factor", "expansion_angle", "rotate", "magnify", "expand_density"]


def expansion_factor(t):
    """λ(t) = √(1 + t²): the linear scale of the cloud after a flight time t (1/ω⊥), dimensionless."""
    return jnp.sqrt(1.0 + jnp.square(t))


def expansion_angle(t, omega):
    """α = Ω·arctan t (radians, counter-clockwise): the rigid rotation of a rotating-frame
    stationary state (rotation rate Ω in units of ω⊥) during a flight time t (1/ω⊥)."""
    return omega * jnp.arctan(t)


def _rot90(f, k):
    """f rotated by k·90° counter-clockwise about the grid origin (index n/2), exactly.

    f_rot(x, y) = f(R(−90°)(x, y)) = f(y, −x): F_rot[j, i] = F[(−i) mod n, j].
    """
    n = f.shape[-1]
    flip = (-np.arange(n)) % n

    def once(a):
        return jnp.swapaxes(jnp.take(a, flip, axis=-2), -1, -2)

    rots = [lambda a: a, once, lambda a: once(once(a)), lambda a: once(once(once(a)))]
    return jax.lax.switch(jnp.asarray(k, jnp.int32) % 4, rots, f)


def _shift_rows(grid: Grid, f, shift, axis: int):
    """g = f shifted along ``axis`` (−1: x, −2: y) by ``shift`` (broadcast over the other axis): g(x) = f(x + s).

    Fourier shift; the Nyquist wavenumber is dropped (its shift is ambiguous and would make a real f complex).
    """
    k = jnp.asarray(grid.k).at[grid.n // 2].set(0.0)
    k = k if axis == -1 else k[:, None]
    return jnp.fft.ifft(jnp.fft.fft(f, axis=axis) * jnp.exp(1j * k * shift), axis=axis)


@functools.partial(jax.jit, static_argnames=("grid",))
def rotate(grid: Grid, f, angle):
    """f rotated counter-clockwise by ``angle`` (radians, traced) about the origin: f(R(−angle) r).

    f: real or complex (..., n, n) on ``grid``; returns the same shape and dtype.
    Exact multiples of 90° are index permutations; the remainder |β| ≤ π/4 is
    three Fourier shears, R(β) = S_x(−tan β/2)·S_y(sin β)·S_x(−tan β/2)
    (Unser et al. 1995): exact for a band-limited field whose sheared copies stay
    inside the periodic box (a shear moves a cloud of radius R out to ≤ 1.1 R, so
    the box must hold the cloud with ~10 % margin).
    """
    f = jnp.asarray(f)
    if f.ndim < 2 or f.shape[-2:] != (grid.n, grid.n):
        raise ValueError(f"f must have shape (..., {grid.n}, {grid.n}) for {grid}, got {f.shape}")
    angle = jnp.asarray(angle, jnp.result_type(float))
    k = jnp.round(angle / (0.5 * np.pi))
    beta = angle - k * (0.5 * np.pi)
    x = jnp.asarray(grid.x)
    a, b = jnp.tan(0.5 * beta), -jnp.sin(beta)
    g = _rot90(f, k)
    g = _shift_rows(grid, g, a * x[:, None], axis=-1)  # g(x + a·y, y)
    g = _shift_rows(grid, g, b * x[None, :], axis=-2)  # g(x, y + b·x)
    g = _shift_rows(grid, g, a * x[:, None], axis=-1)
    return (g if jnp.iscomplexobj(f) else jnp.real(g)).astype(f.dtype)


@functools.partial(jax.jit, static_argnames=("grid",))
def magnify(grid: Grid, n, factor):
    """Density dilated by ``factor`` m about the origin, n(r/m)/m², on the same grid (norm-conserving).

    n: float (..., n, n) density (any normalisation); factor > 0 (traced).
    Each grid cell receives the exact area integral of the dilated
    piecewise-constant density (``camera.integrate_pixels``), divided by its area.
    """
    from bec_jax.imaging.camera import cell_edges, integrate_pixels

    src = cell_edges(grid)
    dst = src / factor  # the cells of the dilated field, in the coordinates of the original
    return integrate_pixels(n, src, src, dst, dst) / grid.cell_area


def expand_density(grid: Grid, n, t, omega):
    """Density after a flight time t (1/ω⊥) of a state stationary in the frame rotating at Ω.

    n: float (..., n, n) in-trap density on ``grid``; returns n₀(R(−Ω arctan t) r/λ)/λ²
    on the same grid (the box must hold the expanded cloud). Norm-conserving.
    """
    return magnify(grid, rotate(grid, n, expansion_angle(t, omega)), expansion_factor(t))
