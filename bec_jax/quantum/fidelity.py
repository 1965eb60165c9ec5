"""Quantum fidelity loss L = 1 - |<psi1, psi2>|^2 and its modified gradient.

Schnell & Thuerey (2023), "A gradient flow modification to improve learning from
differentiable quantum simulators": the gradient of L vanishes for orthogonal
states although L = 1 there, so poor predictions barely train. The modified
gradient G_M = grad(L) / sqrt(1 - L) cancels that factor. Because
sqrt(1 - L) = |<psi1, psi2>|, G_M is the gradient of 2 (1 - |<psi1, psi2>|): a
phase-invariant loss whose gradient does not vanish at orthogonality.

States are vectors over the trailing ``state_ndim`` axes (1 for a 1-D grid, 2 for
an [y, x] image); all leading axes are batch axes and broadcast against each
other. Both states are normalised inside, so any overall scale is irrelevant
(a network need not output normalised states). The inner product is
<a, b> = sum_j w_j conj(a_j) b_j with optional positive quadrature weights w; a
uniform grid spacing cancels in the normalised overlap, so ``measure=None``
(unit weights) is exact for uniform grids.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_EPS",
    "fidelity_loss",
    "l2_state_loss",
    "overlap",
]

#: Lower clamp of sqrt(1 - L) = |<psi1, psi2>| in the modified backward pass. The
#: modified cotangent grad(L) / max(sqrt(1 - L), eps) stays finite as L -> 1:
#: grad(L) itself is O(|overlap|), so for |overlap| < eps the rescaled gradient is
#: bounded by that of 2(1 - |overlap|) and is exactly 0 at exact orthogonality.
DEFAULT_EPS = 1e-6

Reduction = Literal["mean", "sum", "none"]


def _prepare(psi_pred, psi_true, measure, state_ndim: int):
    """Validate shapes and cast both states (and weights) to one inexact dtype."""
    if not isinstance(state_ndim, (int, np.integer)) or state_ndim < 1:
        raise ValueError(f"state_ndim must be an integer >= 1, got {state_ndim!r}")
    psi_pred = jnp.asarray(psi_pred)
    psi_true = jnp.asarray(psi_true)
    for name, a in (("psi_pred", psi_pred), ("psi_true", psi_true)):
        if a.ndim < state_ndim:
            raise ValueError(
                f"{name} must have at least state_ndim={state_ndim} axes, got shape {a.shape}"
            )
    s_pred = psi_pred.shape[psi_pred.ndim - state_ndim :]
    s_true = psi_true.shape[psi_true.ndim - state_ndim :]
    if s_pred != s_true:
        raise ValueError(
            f"state shapes differ: psi_pred {psi_pred.shape} vs psi_true {psi_true.shape} "
            f"(the trailing state_ndim={state_ndim} axes must match exactly)"
        )
    try:
        np.broadcast_shapes(psi_pred.shape[: psi_pred.ndim - state_ndim],
                            psi_true.shape[: psi_true.ndim - state_ndim])
    except ValueError:
        raise ValueError(
            f"batch shapes of psi_pred {psi_pred.shape} and psi_true {psi_true.shape} "
            "do not broadcast"
        ) from None
    dtype = jnp.result_type(psi_pred.dtype, psi_true.dtype, jnp.float32)
    if measure is None:
        weights = None
    else:
        weights = jnp.asarray(measure)
        if jnp.iscomplexobj(weights):
            raise ValueError(f"measure must be real and positive, got dtype {weights.dtype}")
        try:
            np.broadcast_shapes(weights.shape, s_pred)
            ok = weights.ndim <= state_ndim
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"measure shape {weights.shape} must broadcast to the state shape {s_pred}"
            )
        weights = weights.astype(jnp.finfo(dtype).dtype)
    return psi_pred.astype(dtype), psi_true.astype(dtype), weights


def _overlap(a, b, w, state_ndim: int):
    """Normalised overlap <a, b>/(|a||b|) over the trailing axes; zero-safe."""
    axes = tuple(range(-state_ndim, 0))
    w = 1.0 if w is None else w
    inner = jnp.sum(w * jnp.conj(a) * b, axis=axes)
    na = jnp.sum(w * jnp.abs(a) ** 2, axis=axes)
    nb = jnp.sum(w * jnp.abs(b) ** 2, axis=axes)
    # Guard an all-zero state: overlap 0 (L = 1) instead of 0/0 = NaN.
    tiny = jnp.finfo(na.dtype).tiny
    return inner / (jnp.sqrt(jnp.maximum(na, tiny)) * jnp.sqrt(jnp.maximum(nb, tiny)))


_overlap_jit = jax.jit(_overlap, static_argnames=("state_ndim",))


def _standard(a, b, w, state_ndim: int):
    """Per-sample L = 1 - |<a, b>|^2, shape = broadcast batch shape, real dtype."""
    ov = _overlap(a, b, w, state_ndim)
    return 1.0 - (ov.real**2 + ov.imag**2)


def _modified_fn(state_ndim: int, eps: float):
    """Per-sample L with custom backward grad(L)/max(sqrt(1 - L), eps).

    Built per (state_ndim, eps): both are Python scalars closed over, so every
    array argument stays differentiable (no array in nondiff_argnums).
    """

    @jax.custom_vjp
    def loss(a, b, w):
        return _standard(a, b, w, state_ndim)

    def fwd(a, b, w):
        ov = _overlap(a, b, w, state_ndim)
        # Residuals are the primal inputs: the backward pass re-linearises the
        # (cheap) standard loss, so its complex convention is exactly JAX's.
        return 1.0 - (ov.real**2 + ov.imag**2), (a, b, w, jnp.abs(ov))

    def bwd(res, g):
        a, b, w, abs_ov = res
        _, vjp = jax.vjp(lambda a_, b_, w_: _standard(a_, b_, w_, state_ndim), a, b, w)
        return vjp(g / jnp.maximum(abs_ov, eps))

    loss.defvjp(fwd, bwd)
    return loss


_MODIFIED_CACHE: dict[tuple[int, float], object] = {}


@partial(jax.jit, static_argnames=("modified", "state_ndim", "reduction", "eps"))
def _fidelity_core(a, b, w, *, modified: bool, state_ndim: int, reduction: str, eps: float):
    # Jitted so eager calls compile once instead of dispatching ~20 small ops.
    if modified:
        key = (state_ndim, eps)
        if key not in _MODIFIED_CACHE:
            _MODIFIED_CACHE[key] = _modified_fn(*key)
        per_sample = _MODIFIED_CACHE[key](a, b, w)
    else:
        per_sample = _standard(a, b, w, state_ndim)
    return _reduce(per_sample, reduction)


@partial(jax.jit, static_argnames=("state_ndim", "reduction"))
def _l2_core(a, b, w, *, state_ndim: int, reduction: str):
    axes = tuple(range(-state_ndim, 0))
    wt = 1.0 if w is None else w
    tiny = jnp.finfo(jnp.finfo(a.dtype).dtype).tiny

    def unit(v):
        n2 = jnp.sum(wt * jnp.abs(v) ** 2, axis=axes, keepdims=True)
        return v / jnp.sqrt(jnp.maximum(n2, tiny))

    d = unit(a) - unit(b)
    return _reduce(0.5 * jnp.sum(wt * (d.real**2 + d.imag**2), axis=axes), reduction)


def _reduce(per_sample, reduction: str):
    if reduction == "mean":
        return jnp.mean(per_sample)
    if reduction == "sum":
        return jnp.sum(per_sample)
    return per_sample


def _check_reduction(reduction) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")


def overlap(psi1, psi2, *, measure=None, state_ndim: int = 1):
    """Normalised overlap <psi1, psi2> / (|psi1| |psi2|).

    Args:
      psi1: real or complex array (..., *state).
      psi2: real or complex array (..., *state); batch axes broadcast with psi1.
      measure: optional positive quadrature weights broadcastable to the state
        shape (e.g. non-uniform cell sizes); None = uniform grid (spacing cancels).
      state_ndim: number of trailing axes forming one state.

    Returns:
      Complex (or real, for real inputs) array of the broadcast batch shape with
      modulus <= 1 (up to round-off). Dimensionless.
    """
    a, b, w = _prepare(psi1, psi2, measure, state_ndim)
    return _overlap_jit(a, b, w, state_ndim=int(state_ndim))


def fidelity_loss(
    psi_pred,
    psi_true,
    *,
    modified: bool = False,
    measure=None,
    state_ndim: int = 1,
    reduction: Reduction = "mean",
    eps: float = DEFAULT_EPS,
):
    """Quantum fidelity loss L = 1 - |<psi_pred, psi_true>|^2 (states normalised).

    Args:
      psi_pred: real or complex array (..., *state): the prediction(s). Need not be
        normalised. float32/complex64 or float64/complex128.
      psi_true: the same for the target; leading batch axes broadcast with psi_pred
        (e.g. many predictions vs one target).
      modified: if True the value is identical but the backward pass (jax.custom_vjp)
        returns, per sample, grad(L) / max(sqrt(1 - L), eps) for every input,
        i.e. the modified gradient G_M of Schnell & Thuerey (2023), in JAX's
        complex convention (that of ``jax.grad`` of the standard loss).
        sqrt(1 - L) is evaluated as |<psi_pred, psi_true>| (no cancellation).
        Reverse mode only (grad/vjp); forward mode (jvp, jacfwd) is undefined.
      measure: optional positive quadrature weights broadcastable to the state
        shape; None means a uniform grid (a constant spacing cancels).
      state_ndim: number of trailing axes forming one state (1 for 1-D grids,
        2 for [y, x] images).
      reduction: 'mean' (default) or 'sum' over all batch entries, or 'none' for
        the per-sample losses.
      eps: lower clamp of sqrt(1 - L) in the modified backward pass, 0 < eps < 1
        (see ``DEFAULT_EPS``); keeps the gradient finite as L -> 1.

    Returns:
      Real scalar (or per-sample array of the broadcast batch shape for
      reduction='none') in [0, 1], dimensionless, dtype float32 or float64.

    Raises:
      ValueError: mismatched state shapes, non-broadcasting batch shapes, a bad
        measure shape, an unknown reduction, or eps outside (0, 1).
    """
    _check_reduction(reduction)
    if not (isinstance(eps, (float, int)) and 0.0 < float(eps) < 1.0):
        raise ValueError(f"eps must be a float in (0, 1), got {eps!r}")
    a, b, w = _prepare(psi_pred, psi_true, measure, state_ndim)
    return _fidelity_core(a, b, w, modified=bool(modified), state_ndim=int(state_ndim),
                          reduction=reduction, eps=float(eps))


def l2_state_loss(
    psi_pred,
    psi_true,
    *,
    measure=None,
    state_ndim: int = 1,
    reduction: Reduction = "mean",
):
    """Mean-squared-error baseline 0.5 * ||psi_pred/|psi_pred| - psi_true/|psi_true| ||^2.

    The "L2" gradient of Schnell & Thuerey (2023): mathematically convenient but
    not invariant under a global phase of either state. For normalised states it
    equals 1 - Re<psi_pred, psi_true>, in [0, 2]. Arguments and shapes as in
    ``fidelity_loss``; returns a real scalar (or per-sample array for 'none').
    """
    _check_reduction(reduction)
    a, b, w = _prepare(psi_pred, psi_true, measure, state_ndim)
    return _l2_core(a, b, w, state_ndim=int(state_ndim), reduction=reduction)
