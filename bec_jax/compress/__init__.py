"""Model compression: magnitude pruning (global or ERK layer densities; (masks + an optax transform),
structured channel pruning, and int8 quantization (fake-quant with a
straight-through gradient, post-training quantization, orbax int8 storage,
integer inference)."""

from bec_jax.compress.pruning import (
    DEFAULT_SCHEDULE,
    DISTRIBUTIONS,
    KeepPrunedState,
    PruneConfig,
    apply_masks,
    erk_densities,
    magnitude_masks,
    keep_pruned,
    prunable_names,
    schedule_to,
    set_masks,
    sparsity_report,
)
from bec_jax.compress.quantization import (
    SCHEMES,
    FakeQuantConv,
    Int8Conv,
    QuantConfig,
    conv_layer_names,
    dequantize,
    fake_quant,
    load_quantized,
    quantize_array,
    quantize_model,
    read_model_meta,
    save_quantized,
)
from bec_jax.compress.workflow import CompressConfig

__all__ = [
    "CompressConfig",
    "DEFAULT_SCHEDULE", "DISTRIBUTIONS", "KeepPrunedState", "PruneConfig", "apply_masks", "erk_densities", "magnitude_masks", "keep_pruned",
    "prunable_names", "schedule_to", "set_masks", "sparsity_report",
    "SCHEMES", "FakeQuantConv", "Int8Conv", "QuantConfig", "conv_layer_names", "dequantize", "fake_quant",
    "load_quantized", "quantize_array", "quantize_model", "read_model_meta", "save_quantized",
]
