"""Structured (channel) pruning that physically shrinks the U-Net.

Two kinds of channels are removed:

* *inner* channels of a DoubleConv (conv1's outputs = bn1's channels =
  conv2's inputs): they feed nothing but conv2;
* *outer* channels (conv2's outputs = bn2's channels = the block's output):
  they feed the next down block, the skip connection into the up block of
  the same level, the next up block or the output conv. Every consumer loses
  the matching input channels (for an up block, in both halves of its
  [skip, upsampled] concatenation), so the result is again an ordinary
  ``UNet`` (same forward code, smaller kernels): with outer channels pruned
  every convolution shrinks in both dimensions and the FLOPs fall about as
  the square of the kept fraction.

Channel importance: ‖filter‖₁ · |BN scale| of the conv that produces the
channel (a channel with zero BN scale and bias contributes exactly nothing).
Widths are per DoubleConv in forward order (inc, down…, up…).

Gradual pruning (``gradual_shrink``) removes the channels in several steps with
fine-tuning between them, so each step ranks channels by the scores of a
network that has already adapted to the previous cut.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from bec_jax.models.unet import DoubleConv, UNet, UNetConfig, _conv

__all__ = ["channel_scores", "shrink_model", "with_widths", "inner_widths", "outer_widths", "full_widths",
           "keep_schedule", "gradual_shrink"]


def channel_scores(block: DoubleConv, which: str = "inner") -> np.ndarray:
    """Importance float64 of each inner (conv1 output, shape (mid,)) or outer (conv2 output, (cout,)) channel."""
    if which not in ("inner", "outer"):
        raise ValueError(f"which must be 'inner' or 'outer', got {which!r}")
    conv, bn = (block.conv1, block.bn1) if which == "inner" else (block.conv2, block.bn2)
    k = np.abs(np.asarray(conv.kernel[...], np.float64)).sum(axis=(0, 1, 2))
    return k * np.abs(np.asarray(bn.scale[...], np.float64))


def _blocks(model: UNet) -> list[DoubleConv]:
    return [model.inc, *model.down, *model.up]


def inner_widths(model: UNet) -> list[int]:
    """Inner (mid) channel count of every DoubleConv, forward order."""
    return [b.conv1.kernel.shape[-1] for b in _blocks(model)]


def outer_widths(model: UNet) -> list[int]:
    """Output channel count of every DoubleConv, forward order."""
    return [b.conv2.kernel.shape[-1] for b in _blocks(model)]


def full_widths(config: UNetConfig) -> tuple[list[int], list[int]]:
    """(inner, outer) widths of the unpruned U-Net of ``config``, forward order."""
    enc, dec = config.encoder_widths, config.decoder_widths
    return list(enc) + [mid for _, mid, _ in dec], list(enc) + [out for _, _, out in dec]


def _top(scores: np.ndarray, keep: int) -> np.ndarray:
    """Sorted indices of the ``keep`` largest scores (ties: the lower index)."""
    return np.sort(np.argsort(-scores, kind="stable")[:keep])


def _sliced_block(block: DoubleConv, cin, mid, cout) -> DoubleConv:
    """A DoubleConv holding ``block``'s weights of input channels ``cin``, inner ``mid``, outputs ``cout``."""
    new = DoubleConv(len(cin), len(cout), len(mid), momentum=1.0 - block.bn1.momentum, epsilon=block.bn1.epsilon,
                     rngs=nnx.Rngs(0))
    new.conv1.kernel[...] = block.conv1.kernel[...][:, :, cin][..., mid]
    new.conv1.bias[...] = block.conv1.bias[...][mid]
    new.conv2.kernel[...] = block.conv2.kernel[...][:, :, mid][..., cout]
    new.conv2.bias[...] = block.conv2.bias[...][cout]
    for bn_old, bn_new, idx in ((block.bn1, new.bn1, mid), (block.bn2, new.bn2, cout)):
        for name in ("scale", "bias", "mean", "var"):
            getattr(bn_new, name)[...] = getattr(bn_old, name)[...][idx]
    return new


def _check_widths(name: str, widths, current: list[int]) -> list[int]:
    widths = [int(w) for w in widths]
    if len(widths) != len(current):
        raise ValueError(f"expected {len(current)} {name} widths (inc, down, up), got {len(widths)}")
    for i, (w, c) in enumerate(zip(widths, current)):
        if not 1 <= w <= c:
            raise ValueError(f"{name} width of block {i}: keep must be in [1, {c}], got {w}")
    return widths


def with_widths(model: UNet, inner, outer=None) -> UNet:
    """Copy of ``model`` (eval mode) whose DoubleConvs keep their most important channels.

    inner: one int per DoubleConv (``inner_widths`` order), each in [1, current
    inner width]; outer: likewise for the block outputs (``outer_widths``), or
    None to keep them all. Consumers of a block's output lose the matching
    input channels (module doc).
    """
    blocks = _blocks(model)
    inner = _check_widths("inner", inner, inner_widths(model))
    outer = outer_widths(model) if outer is None else _check_widths("outer", outer, outer_widths(model))
    mids = [_top(channel_scores(b, "inner"), w) for b, w in zip(blocks, inner)]
    outs = [_top(channel_scores(b, "outer"), w) for b, w in zip(blocks, outer)]
    depth = len(model.down)
    full_out = outer_widths(model)

    def inputs(i):
        """Kept input channels of block i, in its own input numbering."""
        if i == 0:
            return np.arange(blocks[0].conv1.kernel.shape[2])
        if i <= depth:  # down block i-1 reads block i-1 (inc or the down block above)
            return outs[i - 1]
        j = i - depth - 1  # up block j: [skip of level depth-1-j, upsampled (block i-1)]
        skip = depth - 1 - j
        return np.concatenate([outs[skip], full_out[skip] + outs[i - 1]])

    new = [_sliced_block(b, inputs(i), mids[i], outs[i]) for i, b in enumerate(blocks)]
    model = nnx.clone(model)
    model.inc = new[0]
    for i in range(depth):
        model.down[i] = new[1 + i]
        model.up[i] = new[1 + depth + i]
    old = model.outc
    model.outc = _conv(len(outs[-1]), old.kernel.shape[-1], old.kernel.shape[0], nnx.Rngs(0))
    model.outc.kernel[...] = old.kernel[...][:, :, outs[-1]]
    model.outc.bias[...] = old.bias[...]
    model.eval()
    return model


def shrink_model(model: UNet, keep_fraction: float, *, outer: bool = False) -> UNet:
    """Copy of ``model`` whose every DoubleConv keeps ceil(keep_fraction · width) inner channels
    (and, with ``outer=True``, as many of its output channels).

    keep_fraction in (0, 1]. The copy is in eval mode. Its ``config`` still
    describes the unpruned widths: the shrunken model is for inference and
    fine-tuning (``FineTuner``) and is stored with ``save_quantized``, which
    records its ``inner_widths`` and ``outer_widths``; training ``Checkpoints``
    cannot hold it.
    """
    if not (0 < keep_fraction <= 1):
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    keep = lambda widths: [max(1, int(np.ceil(keep_fraction * w))) for w in widths]
    return with_widths(model, keep(inner_widths(model)), keep(outer_widths(model)) if outer else None)


def keep_schedule(keep_fraction: float, steps: int) -> list[float]:
    """Kept fractions of the full widths after each of ``steps`` gradual steps: keep^(i/steps), i = 1..steps
    (equal ratios per step, ending at ``keep_fraction`` in (0, 1]; steps >= 1)."""
    if not (0 < keep_fraction <= 1):
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [float(keep_fraction ** (i / steps)) for i in range(1, steps + 1)]


def gradual_shrink(model: UNet, keep_fraction: float, steps: int, finetune, *, outer: bool = False) -> UNet:
    """Shrink ``model`` to ``keep_fraction`` of its full widths in ``steps`` steps (``keep_schedule``),
    calling ``finetune(model, step) -> model`` after each cut (step = 1..steps; the last result is
    returned). Each step keeps ceil(fraction · full width) channels of every DoubleConv (and of its
    outputs with ``outer=True``), ranked by ``channel_scores`` of the model as fine-tuned so far;
    ``steps=1`` is ``shrink_model`` followed by one fine-tuning."""
    inner_full, outer_full = full_widths(model.config)
    for step, frac in enumerate(keep_schedule(keep_fraction, steps), 1):
        keep = lambda widths: [max(1, int(np.ceil(frac * w))) for w in widths]
        model = with_widths(model, keep(inner_full), keep(outer_full) if outer else None)
        model = finetune(model, step)
    return model
