"""The camera: pixels that integrate the density over their area.

A camera is a rectangular array of square pixels of side p (trap units a⊥, in
the atoms' plane at the moment of imaging), rows along y and columns along x
(row = first array axis, as everywhere in bec_jax), centred at (x_c, y_c)
relative to the trap centre: pixel (j, i) covers
x ∈ x_c + (i − cols/2 + [0, 1])·p, y ∈ y_c + (j − rows/2 + [0, 1])·p,
so its centre is at x_c + (i − (cols − 1)/2)·p.

Resampling is exact area weighting of a piecewise-constant density: each solver
cell (or input pixel) holds a constant density, and an output pixel gets the
integral of that density over its area, via one overlap matrix per axis
(``overlap_matrix``). The total is conserved whenever the output pixels cover
the input's support. Pure JAX, differentiable (a.e.) in the edges, so in pixel
size and offset.
"""

from __future__ import annotations

import jax.numpy as jnp

from bec_jax.gpe.grid import Grid

__all__ = ["pixel_edges", "cell_edges", "overlap_matrix", "integrate_pixels", "resample_density"]


def pixel_edges(count: int, pixel_size, center=0.0):
    """(count + 1,) pixel edges along one axis: center + (arange(count + 1) − count/2)·pixel_size (trap units)."""
    if int(count) < 1:
        raise ValueError(f"pixel count must be >= 1, got {count}")
    return center + (jnp.arange(int(count) + 1, dtype=jnp.result_type(float)) - 0.5 * int(count)) * pixel_size


def cell_edges(grid: Grid):
    """(n + 1,) edges of the solver grid's cells (each grid point at its cell's centre), trap units."""
    return jnp.asarray(grid.x[0] - 0.5 * grid.dx + grid.dx * jnp.arange(grid.n + 1, dtype=grid.x.dtype))


def overlap_matrix(src_edges, dst_edges):
    """(D, S) overlap lengths of D destination and S source intervals given by ascending edges (D+1,), (S+1,).

    A[d, s] = max(0, min(dst_hi, src_hi) − max(dst_lo, src_lo)) (same units as the edges).
    """
    lo = jnp.maximum(dst_edges[:-1, None], src_edges[None, :-1])
    hi = jnp.minimum(dst_edges[1:, None], src_edges[None, 1:])
    return jnp.maximum(hi - lo, 0.0)


def integrate_pixels(density, src_y, src_x, dst_y, dst_x):
    """Integral of a piecewise-constant density over each destination pixel.

    density: float (..., S_y, S_x), constant on the source cells with edges src_y
    (S_y + 1,), src_x (S_x + 1,); dst_y (D_y + 1,), dst_x (D_x + 1,): destination
    edges, same length unit. Returns (..., D_y, D_x) = A_y · density · A_xᵀ
    (density × area: atoms per pixel for a density in atoms per unit area).
    """
    ay = overlap_matrix(src_y, dst_y).astype(density.dtype)
    ax = overlap_matrix(src_x, dst_x).astype(density.dtype)
    return jnp.einsum("ds,...st,et->...de", ay, density, ax)


def resample_density(density, src_y, src_x, dst_y, dst_x):
    """Mean density over each destination pixel (``integrate_pixels`` / pixel area), (..., D_y, D_x)."""
    area = (dst_y[1:] - dst_y[:-1])[:, None] * (dst_x[1:] - dst_x[:-1])[None, :]
    return integrate_pixels(density, src_y, src_x, dst_y, dst_x) / area
