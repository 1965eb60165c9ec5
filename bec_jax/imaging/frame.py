"""From a camera image back to the model's input frame: the one mapping ``predict`` and training share.

Given where the cloud sits in the image (its centre in pixel coordinates,
pixel centres at integers, row = first axis; its Thomas–Fermi radius in pixels),
the background per pixel and the in-trap length of one image pixel
(scale = P/λ: object-plane pixel size over the time-of-flight dilation):

1. ``cloud_signal``: background subtracted, clipped at 0, zeroed beyond
   ``margin`` Thomas–Fermi radii (the model is trained on an empty background);
2. ``signal_to_grid``: pixel (row, col) covers the in-trap square
   u = (pixel − centre ± ½)·scale; the counts are area-resampled exactly onto
   the model's grid cells (``camera.resample_density``) and normalised to one
   atom (∫n dA = 1 in a⊥²);
3. ``model_input``: log(n + eps), as the network's clean inputs are made
   (``data.targets.log_density``).

Pure JAX and jit/vmap-able (``bec_jax.deploy.predict`` calls it eagerly with the
fitted cloud, ``imaging.training`` inside jit with the rendered cloud's known
position). The rotation of the flight is not undone: the model's frame is the
image's orientation.
"""

from __future__ import annotations

import jax.numpy as jnp

from bec_jax.gpe.grid import Grid
from bec_jax.imaging.camera import cell_edges, resample_density

__all__ = ["CLOUD_MARGIN", "cloud_signal", "signal_to_grid", "model_input"]

#: the fitted cloud's disc is zeroed beyond this many Thomas–Fermi radii (noise floor → empty background)
CLOUD_MARGIN = 1.2


def cloud_signal(image, row, col, radius, background, margin: float | None = CLOUD_MARGIN):
    """Background-free counts of the cloud, float (H, W).

    image: float (H, W) counts; row, col: cloud centre (pixels); radius: Thomas–Fermi
    radius (pixels); background: counts per pixel. max(image − background, 0) inside the
    disc of ``margin``·radius, 0 outside (margin None: no disc, everything kept).
    """
    image = jnp.asarray(image)
    signal = jnp.maximum(image - background, 0.0)
    if margin is None:
        return signal
    rr = jnp.arange(image.shape[0], dtype=image.dtype)[:, None]
    cc = jnp.arange(image.shape[1], dtype=image.dtype)[None, :]
    return jnp.where(jnp.hypot(rr - row, cc - col) <= margin * radius, signal, 0.0)


def signal_to_grid(grid: Grid, signal, row, col, scale):
    """(density float (n, n) on ``grid`` normalised to one atom, total counts) of an image's signal.

    signal: float (H, W) counts per pixel; row, col: the pixel coordinates of the trap
    centre (the grid's origin); scale: in-trap length of one pixel (a⊥, > 0). The image
    is area-resampled exactly (module doc); total = ∫ resampled dA (counts; the signal's
    sum when the grid covers it). A zero total gives a zero density (callers check it).
    """
    signal = jnp.asarray(signal)
    h, w = signal.shape
    ey = (jnp.arange(h + 1, dtype=signal.dtype) - 0.5 - row) * scale
    ex = (jnp.arange(w + 1, dtype=signal.dtype) - 0.5 - col) * scale
    src = cell_edges(grid).astype(signal.dtype)
    n = resample_density(signal, ey, ex, src, src)
    total = jnp.sum(n) * grid.cell_area
    return n / jnp.where(total > 0, total, 1.0), total


def model_input(density, eps: float = 1e-9):
    """The network input log(n + eps), float (..., n, n), of a density normalised to one atom."""
    return jnp.log(density + eps)
