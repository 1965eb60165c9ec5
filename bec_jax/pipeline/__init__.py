"""The end-to-end pipeline: dataset → U-Net → pruned / int8 models → report (``bec-jax pipeline``)."""

from bec_jax.pipeline.config import PRESETS, CompressConfig, PipelineConfig, ReportConfig
from bec_jax.pipeline.run import STAGES, RunConflict, run_pipeline

__all__ = ["PRESETS", "CompressConfig", "PipelineConfig", "ReportConfig", "STAGES", "RunConflict", "run_pipeline"]
