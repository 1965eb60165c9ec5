"""Deployment: export a saved model to a self-contained artifact (jax.export StableHLO or ONNX) and
load one back as a plain callable. Runtime extras: ``pip install bec_jax[deploy]``."""

from bec_jax.deploy.export import FORMATS, QUANTIZERS, export_artifact, load_artifact

__all__ = ["FORMATS", "QUANTIZERS", "export_artifact", "load_artifact"]
