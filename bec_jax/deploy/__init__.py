"""``bec_jax.deploy``: the lab's door. ``predict`` takes a camera image to the phase and the vortices."""

from bec_jax.deploy.predict import (ImageError, LoadedModel, Prediction, Vortex, expand_inputs, find_cloud,
                                    load_image, load_model, predict, predict_files)

__all__ = ["ImageError", "LoadedModel", "Prediction", "Vortex", "expand_inputs", "find_cloud", "load_image",
           "load_model", "predict", "predict_files"]
