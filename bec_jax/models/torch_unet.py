"""The same U-Net in PyTorch (optional; for parity tests and same-run benchmarks).

This is the reference architecture as the paper's PyTorch code builds it
(``DoubleConv``/``Down``/``Up``/``OutConv`` with bilinear upsampling), driven by
a :class:`~bec_jax.models.unet.UNetConfig`, plus a weight copy from a Flax
:class:`~bec_jax.models.unet.UNet`. PyTorch is NCHW; the copy transposes kernels
(H, W, in, out) → (out, in, H, W). Importing this module requires ``torch``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from bec_jax.models.unet import UNet, UNetConfig

__all__ = ["TorchUNet", "copy_weights_to_torch"]


class _DoubleConv(nn.Sequential):
    def __init__(self, cin, cout, mid, momentum, eps):
        super().__init__(
            nn.Conv2d(cin, mid, 3, padding=1), nn.BatchNorm2d(mid, momentum=momentum, eps=eps), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1), nn.BatchNorm2d(cout, momentum=momentum, eps=eps), nn.ReLU(inplace=True),
        )


class TorchUNet(nn.Module):
    """PyTorch U-Net, x (B, in, H, W) float32 → (B, out, H, W)."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        m, e = config.bn_momentum, config.bn_epsilon
        enc = config.encoder_widths
        self.inc = _DoubleConv(config.in_channels, enc[0], enc[0], m, e)
        self.down = nn.ModuleList([_DoubleConv(enc[i], enc[i + 1], enc[i + 1], m, e) for i in range(config.depth)])
        self.up = nn.ModuleList([_DoubleConv(cin, cout, mid, m, e) for cin, mid, cout in config.decoder_widths])
        self.outc = nn.Conv2d(enc[0], config.out_channels, 1)

    def forward(self, x):
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
            dy, dx = skip.shape[2] - h.shape[2], skip.shape[3] - h.shape[3]
            h = F.pad(h, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            h = block(torch.cat([skip, h], dim=1))
        return self.outc(h)


def _copy_conv(src: nnx.Conv, dst: nn.Conv2d):
    dst.weight.copy_(torch.from_numpy(np.array(src.kernel[...]).transpose(3, 2, 0, 1).copy()))
    dst.bias.copy_(torch.from_numpy(np.array(src.bias[...])))


def _copy_bn(src: nnx.BatchNorm, dst: nn.BatchNorm2d):
    dst.weight.copy_(torch.from_numpy(np.array(src.scale[...])))
    dst.bias.copy_(torch.from_numpy(np.array(src.bias[...])))
    dst.running_mean.copy_(torch.from_numpy(np.array(src.mean[...])))
    dst.running_var.copy_(torch.from_numpy(np.array(src.var[...])))


@torch.no_grad()
def copy_weights_to_torch(model: UNet, tmodel: TorchUNet) -> TorchUNet:
    """Copy every parameter and BatchNorm statistic of a Flax UNet into a TorchUNet
    of the same config (in place; returns ``tmodel``)."""
    if model.config != tmodel.config:
        raise ValueError(f"configs differ: {model.config} vs {tmodel.config}")
    pairs = [(model.inc, tmodel.inc)] + list(zip(model.down, tmodel.down)) + list(zip(model.up, tmodel.up))
    for src, dst in pairs:
        _copy_conv(src.conv1, dst[0])
        _copy_bn(src.bn1, dst[1])
        _copy_conv(src.conv2, dst[3])
        _copy_bn(src.bn2, dst[4])
    _copy_conv(model.outc, tmodel.outc)
    return tmodel
