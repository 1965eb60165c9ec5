"""Physics-informed training: masked MSE + λ · quantum fidelity of the integrated phase.

The U-Net predicts a difference field d (B, n, n, 2) (``phase_diff``, or a
``velocity`` turned into one by ``phase_field.to_differences``). This module makes
the state the network implies and scores it against the state of the target:

    θ_pred = integrate(d_pred),   ψ_pred = √n · e^{iθ_pred}
    θ_true = integrate(d_true),   ψ_true = √n · e^{iθ_true}   (no gradient)
    loss   = masked_mse(pred, y) + λ · fidelity_loss(ψ_pred, ψ_true)

with n the measured density (recovered from the network input
x = log(n + eps)) and ``fidelity_loss`` from ``bec_jax.quantum`` (standard
gradient, or the modified gradient ∇L/√(1−L) of Schnell & Thuerey 2023).

``integrate`` is weighted least squares on the valid pixels
(``integrate_differences``: conjugate gradients inside
``lax.custom_linear_solve``, so its derivative is the implicit one, another
preconditioned CG solve with the same symmetric operator, not a
backpropagation through the iterations). θ is linear in d. Least squares
keeps only the curl-free part of a field, so both states lack their vortices;
but the fidelity depends only on θ_pred − θ_true = LS(d_pred − d_true) (common
amplitude), i.e. it is the fidelity the prediction reaches if its vortices are
right: a smooth, density-weighted, non-local penalty on the gradient part of
the error.

``vortices=True`` integrates as the evaluation does (``reconstruct_phase``):
detected vortices (integer windings, piecewise constant, held fixed with
``stop_gradient``) are subtracted, the remainder integrated, the singular
phase added back. Its value then also counts vortex errors, but those carry
no gradient; measured on quick.h5 (λ = 1, 30 epochs) it trains much worse
(spurious vortices of early predictions dominate the loss), hence the default.

Why the reference is the *reconstructed* true state and not the stored ψ: the
loss is then exactly 0 for an exact prediction (the same integration applied
to both), and it needs only what the train step already has: (x, y, mask).
With ``vortices=True`` that reconstruction reproduces the stored ψ to
fidelity 1 − 2·10⁻⁶ on quick.h5 (``fidelity_ceiling`` of the evaluation); with
the default, only θ_pred − θ_true enters (above).

Plugging in: ``TrainConfig(loss="mse+fidelity", fidelity_weight=λ,
fidelity_modified=...)`` makes ``fit`` use ``physics_informed_loss``; any
caller of ``train.core.make_train_step`` can pass it directly: like every
training loss it is loss(pred, batch), and it reads the density from batch.x.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from functools import partial

import jax
import jax.numpy as jnp

from bec_jax.gpe.grid import Grid
from bec_jax.gpe.observables import RegionConfig
from bec_jax.gpe.phase_field import reconstruct_phase, to_differences, vortex_mask
from bec_jax.quantum.fidelity import fidelity_loss
from bec_jax.train.losses import masked_mse

__all__ = ["PhysicsConfig", "state_from_differences", "physics_informed_loss", "physics_terms"]


@dataclasses.dataclass(frozen=True)
class PhysicsConfig:
    """Settings of the physics-informed loss (hashable: a static jit argument).

    fidelity_weight: λ ≥ 0, weight of the fidelity term (λ = 0: plain masked MSE).
    modified: use the modified gradient ∇L/√(1−L) (``fidelity_loss(modified=True)``).
    vortices: subtract detected vortices before the least-squares integration
      (as ``reconstruct_phase``; module doc). Default False: plain least
      squares (no vortices in either state; smooth loss, trains better).
    max_vortices: vortices per image used by the singular phase (static, ≥ 1).
    cg_maxiter: CG iterations of the weighted integration, ≥ 1 (typically ~10 used).
    outside_weight: smoothness weight of edges outside the valid region, in (0, 1].
    target: "phase_diff" or "velocity": what the network predicts.
    eps: the constant in the input log(n + eps) (``TargetConfig.eps``), > 0.
    vortex_threshold, vortex_sigma: the cloud region where vortices count
      (``vortex_mask``), as in ``EvalConfig``.
    """

    fidelity_weight: float = 0.1
    modified: bool = False
    vortices: bool = False
    max_vortices: int = 64
    cg_maxiter: int = 50
    outside_weight: float = 1e-4
    target: str = "phase_diff"
    eps: float = 1e-9
    vortex_threshold: float = RegionConfig.threshold
    vortex_sigma: float = RegionConfig.sigma

    def __post_init__(self):
        if not (isinstance(self.fidelity_weight, numbers.Real) and math.isfinite(self.fidelity_weight)
                and self.fidelity_weight >= 0):
            raise ValueError(f"fidelity_weight must be a finite number >= 0, got {self.fidelity_weight}")
        if not isinstance(self.max_vortices, numbers.Integral) or self.max_vortices < 1:
            raise ValueError(f"max_vortices must be an integer >= 1, got {self.max_vortices!r}")
        if not isinstance(self.cg_maxiter, numbers.Integral) or self.cg_maxiter < 1:
            raise ValueError(f"cg_maxiter must be an integer >= 1, got {self.cg_maxiter!r}")
        if not (0 < self.outside_weight <= 1):
            raise ValueError(f"outside_weight must be in (0, 1], got {self.outside_weight}")
        if self.target not in ("phase_diff", "velocity"):
            raise ValueError(f"target must be 'phase_diff' or 'velocity', got {self.target!r}")
        if not (self.eps > 0):
            raise ValueError(f"eps must be > 0, got {self.eps}")
        RegionConfig(self.vortex_threshold, self.vortex_sigma)  # validates them


def state_from_differences(grid: Grid, d, amp, valid, config: PhysicsConfig = PhysicsConfig()):
    """ψ = amp · e^{iθ(d)}, complex (B, n, n), from a batch of difference fields d (B, n, n, 2).

    amp: float (B, n, n) √(measured density); valid: bool (B, n, n).
    """
    region = vortex_mask(grid, amp, config.vortex_threshold, config.vortex_sigma)
    integrate = partial(reconstruct_phase, vortices=config.vortices, max_vortices=config.max_vortices,
                        outside_weight=config.outside_weight, maxiter=config.cg_maxiter)
    theta = jax.vmap(integrate)(d, valid, region)[0]
    return amp * jnp.exp(1j * theta)


def physics_terms(grid: Grid, pred, y, mask, x, config: PhysicsConfig = PhysicsConfig()):
    """(masked MSE, fidelity loss) of one batch, float32 scalars.

    pred, y: float (B, n, n, 2) predicted / true targets of kind ``config.target``;
    mask: bool (B, n, n); x: float (B, n, n, 1) network input log(n + eps).
    The fidelity term is 1 − |⟨ψ_pred, ψ_true⟩|² (mean over the batch), with
    the modified backward pass if ``config.modified``; ψ_true carries no gradient.
    """
    amp = jnp.sqrt(jnp.maximum(jnp.exp(x[..., 0]) - config.eps, 0.0))
    d_pred = to_differences(pred, config.target, grid.dx)
    d_true = jax.lax.stop_gradient(to_differences(y, config.target, grid.dx))
    psi_pred = state_from_differences(grid, d_pred, amp, mask, config)
    psi_true = jax.lax.stop_gradient(state_from_differences(grid, d_true, amp, mask, config))
    fid = fidelity_loss(psi_pred, psi_true, modified=config.modified, state_ndim=2)
    return masked_mse(pred, y, mask), fid


def physics_informed_loss(grid: Grid, config: PhysicsConfig = PhysicsConfig()):
    """loss(pred, batch) = masked_mse + λ · fidelity, a float32 scalar (pure, jit/grad-able).

    batch: a ``train.core.Batch`` (x, y, mask), shapes as in ``physics_terms``;
    the density n = exp(x) − eps is recovered from the network input x.
    """
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be a bec_jax Grid, got {type(grid).__name__}")

    def loss(pred, batch):
        mse, fid = physics_terms(grid, pred, batch.y, batch.mask, batch.x, config)
        return mse + config.fidelity_weight * fid

    return loss
