"""BatchNorm folded into the convolutions: what an inference export stores.

Eval-mode BatchNorm after a conv is a per-channel affine map y·a + shift (a = γ/√(σ²+ε),
shift = β − μ·a), so it merges into the conv: a float kernel is scaled by a; an int8 conv keeps its
int8 rows and takes a into its per-channel scale (a negative a flips the row, exact in int8). Both
export formats (``deploy.export``) fold with this module, so no exported file carries BatchNorm state.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

__all__ = ["fold_batchnorm"]


class _Identity(nnx.Module):
    """Stands in for a BatchNorm folded into its conv (no state)."""

    def __call__(self, x):
        return x


def _folded_conv(conv, bn):
    """``conv`` followed by eval-mode ``bn`` as one conv of the same kind.

    nnx.Conv: kernel·a, bias·a + shift (a = γ/√(σ²+ε) per output channel, shift = β − μ·a; float64,
    rounded once to float32). Int8Conv: the int8 rows are kept and a enters the per-channel scale,
    s'_c = s_c·|a_c|; a negative a_c flips the row's sign (exact in int8: |q| <= 127) and a zero a_c
    zeroes the row (its output is the bias alone).
    """
    from bec_jax.compress.quantization import Int8Conv

    a = np.asarray(bn.scale[...], np.float64) / np.sqrt(np.asarray(bn.var[...], np.float64) + bn.epsilon)
    bias = np.asarray(conv.bias[...], np.float64) * a + np.asarray(bn.bias[...], np.float64) \
        - np.asarray(bn.mean[...], np.float64) * a
    if isinstance(conv, Int8Conv):
        q = np.asarray(conv.kernel_q[...], np.int8)  # HWIO
        s = np.broadcast_to(np.asarray(conv.w_scale[...], np.float64), a.shape)
        q = np.where(a == 0, 0, q * np.where(a < 0, -1, 1).astype(np.int8)).astype(np.int8)
        return Int8Conv(q, np.where(a == 0, s, s * np.abs(a)).astype(np.float32), bias.astype(np.float32),
                        conv.padding)
    conv = nnx.clone(conv)
    conv.kernel[...] = (np.asarray(conv.kernel[...], np.float64) * a).astype(np.float32)
    conv.bias[...] = bias.astype(np.float32)
    return conv


def fold_batchnorm(model):
    """Copy of ``model`` (eval mode) with every BatchNorm folded into the conv before it (``_folded_conv``)
    and replaced by the identity: what an inference export stores (one weight and one bias tensor per
    conv, plus the per-channel scale of an int8 conv). Same outputs up to float32 rounding."""
    from bec_jax.compress.quantization import conv_layers

    model = nnx.clone(model)
    model.eval()
    for _, parent, attr in conv_layers(model):
        if attr not in ("conv1", "conv2"):  # outc: no BatchNorm
            continue
        bn_attr = "bn" + attr[-1]
        bn = getattr(parent, bn_attr)
        if isinstance(bn, _Identity):
            continue
        setattr(parent, attr, _folded_conv(getattr(parent, attr), bn))
        setattr(parent, bn_attr, _Identity())
    return model
