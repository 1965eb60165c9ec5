"""Global unstructured magnitude pruning: masks over a parameter pytree and an
optax transform that keeps pruned weights exactly zero.

Everything here is a pure function of pytrees. ``params`` is the ``nnx.State``
of ``nnx.Param`` variables of a model (``nnx.state(model, nnx.Param)``) or any
pytree of float arrays; a *mask* pytree has the same structure with bool leaves
(True = weight kept). Leaf names are the '/'-joined keys of their path, e.g.
``"down/0/conv1/kernel"`` or ``"inc/bn1/scale"``.

Which leaves take part (``PruneConfig``): conv kernels (4-D leaves named
``kernel``) always; BatchNorm scales (``scale``) when ``include_bn_scale`` — the
reference pruned every PyTorch ``.weight``, which includes BatchNorm scales, so
that is the default. Biases, BatchNorm biases and running statistics are never
pruned. The threshold is global: the ``k = round(sparsity · N)`` smallest
|w| among all N participating weights are removed (ties broken by position, so
exactly k weights are pruned).

Training with masks: chain ``keep_pruned(masks)`` *last*, e.g.
``optax.chain(optax.adam(lr), keep_pruned(masks))``. It replaces the update of
every pruned weight by exactly 0, so ``optax.apply_updates`` leaves a pruned
(zero) weight at exactly 0 whatever Adam's moments or AdamW's decay hold.
(``optax.masked`` would not do this: it masks whole leaves and passes the raw
gradient through for masked-off leaves.) The masks live in the optimizer
state, so a jitted train step is compiled once and the masks of an iterative
schedule are swapped in with ``set_masks``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "PruneConfig", "leaf_name", "named_leaves", "prunable_names", "global_magnitude_masks", "apply_masks",
    "KeepPrunedState", "keep_pruned", "set_masks", "sparsity_report", "DEFAULT_SCHEDULE", "schedule_to",
]

#: The reference's iterative schedule (fractions of the participating weights).
DEFAULT_SCHEDULE = (0.8, 0.9, 0.97, 0.99, 0.995, 0.999)


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    """``sparsity`` as a float in [0, 1); ValueError otherwise."""
    s = float(sparsity)
    if not (0.0 <= s < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {sparsity!r}")
    return s


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """What global magnitude pruning removes.

    sparsity: fraction of the participating weights set to zero, in [0, 1).
    include_bn_scale: BatchNorm scales take part (the reference: yes).
    """

    sparsity: float = 0.9
    include_bn_scale: bool = True

    def __post_init__(self):
        object.__setattr__(self, "sparsity", check_sparsity(self.sparsity))


def leaf_name(path) -> str:
    """'/'-joined keys of a pytree path, without nnx's trailing ``.value``."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            if k.name != "value":
                parts.append(k.name)
        else:
            parts.append(str(k))
    return "/".join(parts)


def named_leaves(tree) -> dict:
    """{leaf name: array leaf} of a pytree (nnx.State or nested dicts), in tree order."""
    return {leaf_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _participates(name: str, leaf, include_bn_scale: bool) -> bool:
    last = name.rsplit("/", 1)[-1]
    if last == "kernel" and np.ndim(leaf) == 4:
        return True
    return include_bn_scale and last == "scale" and np.ndim(leaf) == 1


def prunable_names(params, include_bn_scale: bool = True) -> list[str]:
    """Names of the leaves that global pruning considers (conv kernels, optionally BN scales)."""
    return [n for n, x in named_leaves(params).items() if _participates(n, x, include_bn_scale)]


def global_magnitude_masks(params, config: PruneConfig, previous=None):
    """Bool masks (pytree like ``params``) removing the smallest-|w| fraction globally.

    params: pytree of float arrays (any shapes). previous: optional earlier masks
    (same structure); weights they prune stay pruned (treated as magnitude −1),
    so an iterative schedule only ever grows the pruned set.
    Returns masks with exactly round(sparsity · N) False entries over the N
    participating weights; non-participating leaves are all True.
    """
    names = named_leaves(params)
    prev = named_leaves(previous) if previous is not None else {}
    chosen = [n for n, x in names.items() if _participates(n, x, config.include_bn_scale)]
    if not chosen:
        raise ValueError("no prunable leaves (4-D 'kernel' or 1-D 'scale') in params")
    mags = []
    for n in chosen:
        m = np.abs(np.asarray(names[n], np.float32)).ravel()
        if n in prev:
            m = np.where(np.asarray(prev[n]).ravel(), m, -1.0)
        mags.append(m)
    flat = np.concatenate(mags)
    k = int(round(config.sparsity * flat.size))
    keep = np.ones(flat.size, bool)
    if k > 0:
        keep[np.argsort(flat, kind="stable")[:k]] = False
    out, offset = {}, 0
    for n, m in zip(chosen, mags):
        out[n] = keep[offset:offset + m.size].reshape(np.shape(names[n]))
        offset += m.size

    def mask_of(path, x):
        n = leaf_name(path)
        return jnp.asarray(out[n]) if n in out else jnp.ones(np.shape(x), bool)

    return jax.tree_util.tree_map_with_path(mask_of, params)


def apply_masks(params, masks):
    """params with every masked-off entry set to exactly 0 (same structure, dtypes)."""
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros((), p.dtype)), params, masks)


class KeepPrunedState(NamedTuple):
    """Optimizer state of ``keep_pruned``: the current masks (bool pytree like the params).

    The masks are copied in, so a train step that donates its state does not
    invalidate the caller's mask arrays.
    """

    masks: object


def keep_pruned(masks) -> optax.GradientTransformation:
    """optax transform that zeroes the updates of pruned weights (chain it last).

    masks: bool pytree with the structure of the params (True = kept). They are
    stored in the state (``KeepPrunedState``); replace them with ``set_masks``.
    update(updates, state, params=None) → (where(mask, update, 0), state).
    With the params pruned (``apply_masks``) before training, pruned weights stay
    exactly 0 under any preceding transform (Adam, AdamW, momentum SGD, …).
    """

    def init_fn(params):
        if jax.tree.structure(params) != jax.tree.structure(masks):
            raise ValueError("keep_pruned: masks and params have different tree structures")
        return KeepPrunedState(masks=jax.tree.map(lambda m: jnp.array(m, dtype=bool, copy=True), masks))

    def update_fn(updates, state, params=None):
        del params
        new = jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros((), u.dtype)), updates, state.masks)
        return new, state

    return optax.GradientTransformation(init_fn, update_fn)


def set_masks(opt_state, masks):
    """``opt_state`` with the masks of every ``KeepPrunedState`` inside replaced by ``masks``.

    Raises ValueError if the state holds no ``KeepPrunedState``.
    """
    found = []

    def walk(s):
        if isinstance(s, KeepPrunedState):
            found.append(True)
            return KeepPrunedState(masks=jax.tree.map(lambda m: jnp.array(m, dtype=bool, copy=True), masks))
        if isinstance(s, tuple) and hasattr(s, "_fields"):
            return type(s)(*(walk(v) for v in s))
        if isinstance(s, (tuple, list)):
            return type(s)(walk(v) for v in s)
        return s

    out = walk(opt_state)
    if not found:
        raise ValueError("opt_state holds no keep_pruned state; build the optimizer with keep_pruned(masks)")
    return out


def sparsity_report(params, include_bn_scale: bool = True) -> dict:
    """Per-leaf and global fraction of exact zeros among the prunable leaves.

    Returns {"layers": [{"name", "size", "zeros", "sparsity"}...], "total": {...}}.
    """
    rows, zeros, size = [], 0, 0
    for n, x in named_leaves(params).items():
        if not _participates(n, x, include_bn_scale):
            continue
        a = np.asarray(x)
        z = int(np.sum(a == 0))
        rows.append(dict(name=n, size=int(a.size), zeros=z, sparsity=z / max(a.size, 1)))
        zeros, size = zeros + z, size + a.size
    return dict(layers=rows, total=dict(size=int(size), zeros=int(zeros), sparsity=zeros / max(size, 1)))


def schedule_to(target: float, schedule=DEFAULT_SCHEDULE) -> tuple[float, ...]:
    """Iterative schedule ending at ``target``: the schedule's steps below it, then ``target``."""
    target = check_sparsity(target, "target sparsity")
    steps = [check_sparsity(s, "schedule step") for s in schedule]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"schedule must be strictly increasing, got {tuple(schedule)}")
    return tuple(s for s in steps if s < target) + (target,)
