"""bec_jax: JAX-native differentiable physics + ML for rotating Bose-Einstein condensates.

Units hbar = m = omega_perp = 1; trap V = (x^2 + y^2)/2; arrays indexed [..., y, x].
See README.md for the public API.
"""

__version__ = "0.1.0"

from bec_jax.gpe import *  # noqa: F401,F403  (the physics core is the top-level API)
from bec_jax.gpe import __all__ as _gpe_all
from bec_jax.quantum import fidelity_loss



def predict(model, image, *, pixel_size, **settings):
    """Phase gradient, phase and vortices of ONE camera image: ``bec_jax.deploy.predict.predict``, whose
    docstring gives every setting (pixel_size in a⊥ per pixel; tof, atom_number, psf_width, estimate,
    zero_momentum) and the returned ``Prediction``. Imported on first use, so ``import bec_jax`` stays free of
    the model stack."""
    from bec_jax.deploy.predict import predict as _predict

    return _predict(model, image, pixel_size=pixel_size, **settings)


__all__ = ["__version__", *_gpe_all, "fidelity_loss", "predict"]
