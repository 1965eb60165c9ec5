"""The one optax step of bec_jax, for any differentiable loss of a parameter pytree.

A leaf module (JAX and optax only): the U-Net's training core
(``bec_jax.train.core.make_update``), the inverse problems' surrogate and the
gradient-flow experiments all step through ``make_gradient_step``.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import jax
import optax

__all__ = ["make_gradient_step", "check_learning_rate"]


def check_learning_rate(value, name: str = "learning_rate") -> None:
    """ValueError unless ``value`` is a finite number > 0: nan and inf pass ``> 0`` tests one way or the other,
    and an infinite rate diverges in the first step, after the compile and the data load."""
    try:  # a Python or NumPy real, or a 0-d array of one; a bool (np.bool_ too) is none
        scalar = value.item() if getattr(value, "ndim", None) == 0 else value
        ok = isinstance(scalar, numbers.Real) and not isinstance(scalar, bool) and 0 < float(scalar) < math.inf
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def make_gradient_step(loss_fn: Callable, tx: optax.GradientTransformation, *, has_aux: bool = False):
    """The one optax step of bec_jax: pure ``step(params, opt_state, *args) -> (params, opt_state, value[, aux])``.

    loss_fn(params, *args) -> float scalar, or (scalar, aux) with ``has_aux``; params
    any pytree. The value (and aux) are those before the update. The U-Net's
    ``make_update``, the inverse problems' surrogate and the gradient-flow
    experiments all take their steps through it.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)

    def step(params, opt_state, *args):
        value, grads = grad_fn(params, *args)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, *value) if has_aux else (params, opt_state, value)

    return step
