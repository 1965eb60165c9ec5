"""Neural networks (Flax NNX): the U-Net that maps log-density to phase gradient."""

from bec_jax.models.unet import (
    DoubleConv,
    TorchBatchNorm,
    UNet,
    UNetConfig,
    apply_conv,
    count_params,
    default_depth,
    init_model,
    max_pool2x,
    pad_to,
    upsample_bilinear2x,
)

__all__ = ["DoubleConv", "TorchBatchNorm", "UNet", "UNetConfig", "apply_conv", "count_params", "default_depth",
           "init_model", "max_pool2x", "pad_to", "upsample_bilinear2x"]
