"""Structured (channel) pruning that physically shrinks the U-Net.

Only the *inner* channels of each DoubleConv are pruned (conv1's outputs =
bn1's channels = conv2's inputs). They feed nothing but conv2, so removing
them needs no change to skip connections or neighbouring blocks, and the
result is a smaller ordinary ``UNet`` (same forward code, smaller kernels).
Channel importance: ‖conv1 filter‖₁ · |bn1 scale| (a channel with zero BN
scale and bias contributes exactly nothing). For the reference U-Net the inner
channels carry most of the FLOPs of the up path (mid = in/2).
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from bec_jax.models.unet import DoubleConv, UNet

__all__ = ["channel_scores", "shrink_double_conv", "shrink_model", "inner_widths", "with_inner_widths"]


def channel_scores(block: DoubleConv) -> np.ndarray:
    """Importance (mid,) float64 of each inner channel of ``block``."""
    k = np.abs(np.asarray(block.conv1.kernel[...], np.float64)).sum(axis=(0, 1, 2))
    return k * np.abs(np.asarray(block.bn1.scale[...], np.float64))


def shrink_double_conv(block: DoubleConv, keep: int) -> DoubleConv:
    """A DoubleConv with only the ``keep`` most important inner channels (1 <= keep <= mid)."""
    mid = block.conv1.kernel.shape[-1]
    if not 1 <= keep <= mid:
        raise ValueError(f"keep must be in [1, {mid}], got {keep}")
    idx = np.sort(np.argsort(-channel_scores(block), kind="stable")[:keep])
    cin, cout = block.conv1.kernel.shape[2], block.conv2.kernel.shape[-1]
    new = DoubleConv(cin, cout, keep, momentum=1.0 - block.bn1.momentum, epsilon=block.bn1.epsilon,
                     rngs=nnx.Rngs(0))
    new.conv1.kernel[...] = block.conv1.kernel[...][..., idx]
    new.conv1.bias[...] = block.conv1.bias[...][idx]
    for name in ("scale", "bias", "mean", "var"):
        getattr(new.bn1, name)[...] = getattr(block.bn1, name)[...][idx]
    new.conv2.kernel[...] = block.conv2.kernel[...][:, :, idx, :]
    new.conv2.bias[...] = block.conv2.bias[...]
    for name in ("scale", "bias", "mean", "var"):
        getattr(new.bn2, name)[...] = getattr(block.bn2, name)[...]
    return new


def shrink_model(model: UNet, keep_fraction: float) -> UNet:
    """Copy of ``model`` whose every DoubleConv keeps ceil(keep_fraction · mid) inner channels.

    keep_fraction in (0, 1]. The copy is in eval mode. Its ``config`` still
    describes the unpruned widths: the shrunken model is for inference and
    fine-tuning (``FineTuner``) and is stored with ``save_quantized``, which
    records its ``inner_widths``; training ``Checkpoints`` cannot hold it.
    """
    if not (0 < keep_fraction <= 1):
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    return with_inner_widths(model, [max(1, int(np.ceil(keep_fraction * w))) for w in inner_widths(model)])


def with_inner_widths(model: UNet, widths) -> UNet:
    """Copy of ``model`` (eval mode) whose DoubleConvs keep their ``widths[i]`` most important inner channels.

    widths: one int per DoubleConv in ``inner_widths`` order (inc, down…, up…),
    each in [1, current inner width].
    """
    widths = [int(w) for w in widths]
    if len(widths) != len(inner_widths(model)):
        raise ValueError(f"expected {len(inner_widths(model))} inner widths (inc, down, up), got {len(widths)}")
    model = nnx.clone(model)
    it = iter(widths)
    model.inc = shrink_double_conv(model.inc, next(it))
    for blocks in (model.down, model.up):
        for i in range(len(blocks)):
            blocks[i] = shrink_double_conv(blocks[i], next(it))
    model.eval()
    return model


def inner_widths(model: UNet) -> list[int]:
    """Inner (mid) channel count of every DoubleConv, forward order."""
    return [b.conv1.kernel.shape[-1] for b in [model.inc, *model.down, *model.up]]
