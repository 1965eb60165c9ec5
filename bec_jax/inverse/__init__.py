"""Hamiltonian learning: recover (g, Ω) from a density snapshot n = |ψ|².

Two routes, same rotation-invariant loss (``features``):

* ``solver_inversion``: gradient descent through the ground-state solver,
  implicit differentiation of the stationary state (custom_vjp, adjoint CG on
  the tangent space minus the phase and rotation zero modes).
* ``surrogate``: gradient descent through a trained coordinate network
  (r, g, Ω) → rotation-invariant density features.

Parameters stay in range through ``ParamBox`` (scaled sigmoid).
"""

from bec_jax.inverse.features import (
    FeatureConfig,
    azimuthal_features,
    closed_form_guess,
    density_minima,
    feature_loss,
    seed_state_from_density,
)
from bec_jax.inverse.ranges import ParamBox, check_in_box
from bec_jax.inverse.solver_inversion import (
    InversionResult,
    SolverInversionConfig,
    hessian_apply,
    invert_with_solver,
    make_stationary,
)
from bec_jax.inverse.surrogate import (
    FeatureSurrogate,
    SurrogateConfig,
    invert_with_surrogate,
    load_surrogate,
    render_density,
    save_surrogate,
    train_surrogate,
)

__all__ = [
    "FeatureConfig", "azimuthal_features", "closed_form_guess", "density_minima", "feature_loss",
    "seed_state_from_density", "ParamBox", "check_in_box", "InversionResult", "SolverInversionConfig",
    "hessian_apply", "invert_with_solver", "make_stationary", "FeatureSurrogate", "SurrogateConfig",
    "invert_with_surrogate", "load_surrogate", "render_density", "save_surrogate", "train_surrogate",
]
