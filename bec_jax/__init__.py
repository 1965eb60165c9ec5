"""bec_jax: JAX-native differentiable physics + ML for rotating Bose-Einstein condensates.

Units hbar = m = omega_perp = 1; trap V = (x^2 + y^2)/2; arrays indexed [..., y, x].
See README.md for the public API.
"""

__version__ = "0.1.0"

from bec_jax.gpe import *  # noqa: F401,F403  (the physics core is the top-level API)
from bec_jax.gpe import __all__ as _gpe_all
from bec_jax.quantum import fidelity_loss

__all__ = ["__version__", *_gpe_all, "fidelity_loss"]
