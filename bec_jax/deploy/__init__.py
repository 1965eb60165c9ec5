"""``bec_jax.deploy``: the lab's door. ``predict`` takes a camera image to the phase and the vortices;
``export_artifact`` writes a saved model as a self-contained artifact (jax.export StableHLO or ONNX) and
``load_artifact`` loads one back as a plain callable. Runtime extras: ``pip install bec_jax[deploy]``."""

from bec_jax.deploy.export import FORMATS, QUANTIZERS, export_artifact, load_artifact
from bec_jax.deploy.predict import (ImageError, LoadedModel, Prediction, Vortex, expand_inputs, find_cloud,
                                    load_image, load_model, predict, predict_files)

__all__ = ["ImageError", "LoadedModel", "Prediction", "Vortex", "expand_inputs", "find_cloud", "load_image",
           "load_model", "predict", "predict_files", "FORMATS", "QUANTIZERS", "export_artifact", "load_artifact"]
