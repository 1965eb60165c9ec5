"""Datasets of rotating ground states: generation, HDF5 storage, targets, splits, loading."""

from bec_jax.data.generate import (
    PRESETS,
    DatasetConflict,
    GenerateConfig,
    generate,
    generate_sharded,
    sample_keys,
    sample_parameters,
)
from bec_jax.data.loader import BatchLoader
from bec_jax.data.splits import split_by_group
from bec_jax.data.storage import load_grid, read_h5
from bec_jax.data.targets import (
    TargetConfig,
    log_density,
    make_example,
    phase_differences,
    rotate90,
    valid_mask,
    velocity,
)

__all__ = [
    "PRESETS",
    "DatasetConflict",
    "GenerateConfig",
    "generate",
    "generate_sharded",
    "sample_parameters",
    "sample_keys",
    "BatchLoader",
    "split_by_group",
    "load_grid",
    "read_h5",
    "TargetConfig",
    "log_density",
    "make_example",
    "phase_differences",
    "rotate90",
    "valid_mask",
    "velocity",
]
