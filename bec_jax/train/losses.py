"""Masked mean-squared errors between predicted and true phase-gradient fields.

Shapes: pred, target float (B, n, n, C) channels-last (C = 2: along x, along y);
mask bool (B, n, n), True on valid pixels (enough density for the phase to mean
something). All functions are pure and jit/vmap/grad-able. The training losses
built on them (loss(pred, batch)) are registered in ``bec_jax.train.core.LOSSES``.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["masked_sq_error_sums", "masked_mse", "reference_masked_mse"]


def _check(pred, target, mask):
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    if mask.shape != pred.shape[:-1]:
        raise ValueError(f"mask must have shape {pred.shape[:-1]} (pred without its channel axis), got {mask.shape}")


def masked_sq_error_sums(pred, target, mask):
    """(Σ (pred−target)²·mask, number of valid pixels, number of pixels), float32 scalars.

    The building block of both losses and of exact epoch-level metrics
    accumulated over batches. Channel sums are included in the first number;
    the pixel counts are per channel-less pixel.
    """
    _check(pred, target, mask)
    m = mask.astype(pred.dtype)
    sq = jnp.sum(jnp.square(pred - target) * m[..., None])
    return sq, jnp.sum(m), jnp.asarray(m.size, pred.dtype)


def masked_mse(pred, target, mask):
    """Mean squared error over valid pixels and channels (the default loss).

    = Σ (pred−target)²·mask / (C · Σ mask); 0 when no pixel is valid. Independent
    of how much of the image is empty, so losses are comparable across boxes.
    """
    sq, valid, _ = masked_sq_error_sums(pred, target, mask)
    return sq / (pred.shape[-1] * jnp.maximum(valid, 1.0))


def reference_masked_mse(pred, target, mask):
    """The reference's loss: mean((pred−target)²·mask) over *all* pixels and channels.

    = Σ (pred−target)²·mask / (C · B · n · n). Equals ``masked_mse`` times the
    valid fraction, so its value depends on how much of the box the cloud fills.
    """
    sq, _, total = masked_sq_error_sums(pred, target, mask)
    return sq / (pred.shape[-1] * total)
