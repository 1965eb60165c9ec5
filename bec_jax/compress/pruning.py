"""Unstructured magnitude pruning: masks over a parameter pytree and an optax
transform that keeps pruned weights exactly zero.

Everything here is a pure function of pytrees. ``params`` is the ``nnx.State``
of ``nnx.Param`` variables of a model (``nnx.state(model, nnx.Param)``) or any
pytree of float arrays; a *mask* pytree has the same structure with bool leaves
(True = weight kept). Leaf names are the '/'-joined keys of their path, e.g.
``"down/0/conv1/kernel"`` or ``"inc/bn1/scale"``.

Which leaves take part (``PruneConfig``): conv kernels (4-D leaves named
``kernel``) always; BatchNorm scales (``scale``) when ``include_bn_scale`` — the
reference pruned every PyTorch ``.weight``, which includes BatchNorm scales, so
that is the default. Biases, BatchNorm biases and running statistics are never
pruned.

How the pruned weights are spread over the layers (``PruneConfig.distribution``):

- ``"global"`` (the reference): one threshold, the ``k = round(sparsity · N)``
  smallest |w| among all N participating weights are removed (ties broken by
  position, so exactly k weights are pruned). Every conv is followed by
  BatchNorm, so a conv's weight scale carries no meaning across layers: deep
  convs with fan-ins in the thousands have the smallest weights and are the
  first to be emptied at high sparsity.

  With ``reclaim_dead_scales`` (opt-in) a BatchNorm scale ``…/bn<i>/scale``
  paired with the kernel ``…/conv<i>/kernel`` of the same block is not ranked:
  it is kept exactly while its channel has a kept kernel weight. A channel
  whose kernel column is all zero outputs its bias, a constant that BatchNorm
  maps to its bias whatever the scale, so that scale does nothing; pruning it
  frees its place for a kernel weight. (At 99.9 % the quick preset's U-Net
  then keeps 4,070 kernel weights instead of 2,047.) The kernel
  budget is the largest for which kernels + live scales ≤ N − k, so a few
  more than k weights may go. Measured (experiments/pruning_variants.py): it
  gives the best ratios at 99–99.9 %, but it leaves channels with one or two
  weights, whose near-zero BatchNorm variance made eval-mode outputs blow up
  at 99.9 % in one exploratory run, so it is not the default.
  (``workflow.precise_batch_stats``, ``bec-jax prune --precise-bn``,
  recomputes those statistics over the training set and calms this.)
- ``"lamp"``: layer-adaptive magnitude pruning (Lee et al., "Layer-adaptive
  sparsity for the magnitude-based pruning", ICLR 2021): each weight u is
  scored u² / Σ_{|v| ≥ |u|} v² over its own layer (leaf), and one global
  threshold goes over the scores. A score does not change when a layer is
  multiplied by a constant, which is what a conv followed by BatchNorm
  ignores too, and the largest weight of every layer scores 1, so no layer is
  emptied while fewer weights go than there are layers. ``reclaim_dead_scales``
  applies as for "global".
- ``"erk"``: Erdős–Rényi-Kernel layer densities (Evci et al., "Rigging the
  Lottery", ICML 2020): a kernel of shape (kh, kw, c_in, c_out) keeps a
  fraction ∝ (kh + kw + c_in + c_out) / (kh·kw·c_in·c_out), capped at 1 and
  scaled so that ``round(sparsity · N)`` weights go in total (up to per-layer
  rounding); magnitude decides within each layer. Every layer keeps weights, so
  the network stays connected. BatchNorm scales are kept whole (a pruned scale
  silences a channel) but still count in N, so the reported sparsity means the
  same in both distributions.

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
    "PruneConfig", "DISTRIBUTIONS", "leaf_name", "named_leaves", "masks_of", "prunable_names", "magnitude_masks",
    "erk_densities", "lamp_scores", "apply_masks",
    "KeepPrunedState", "keep_pruned", "set_masks", "sparsity_report", "DEFAULT_SCHEDULE", "schedule_to",
]

#: The reference's iterative schedule (fractions of the participating weights).
DEFAULT_SCHEDULE = (0.8, 0.9, 0.97, 0.99, 0.995, 0.999)
#: How pruning spreads over the layers (see the module docstring).
DISTRIBUTIONS = ("global", "lamp", "erk")


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
    distribution: one of DISTRIBUTIONS: "global" (one magnitude threshold, the
      reference), "lamp" (one threshold on layer-normalised scores) or "erk"
      (per-layer densities, magnitude within a layer).
    reclaim_dead_scales: "global" and "lamp": a BatchNorm scale paired with a conv
      kernel is pruned exactly when its channel's kernel is (module docstring);
      False (default) ranks scales by magnitude like any weight (the reference).
    """

    sparsity: float = 0.9
    include_bn_scale: bool = True
    distribution: str = "global"
    reclaim_dead_scales: bool = False

    def __post_init__(self):
        object.__setattr__(self, "sparsity", check_sparsity(self.sparsity))
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")


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


def masks_of(params, include_bn_scale: bool = True):
    """The masks (pytree like ``params``) a pruned model carries in its zeros: False at the zero entries of
    the participating leaves, all True elsewhere. How an interrupted schedule recovers its masks from a saved
    stage (a trained weight that is exactly 0 without being pruned would count as pruned)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: np.asarray(x) != 0 if _participates(leaf_name(p), x, include_bn_scale)
        else np.ones(np.shape(x), bool), params)


def prunable_names(params, include_bn_scale: bool = True) -> list[str]:
    """Names of the leaves that global pruning considers (conv kernels, optionally BN scales)."""
    return [n for n, x in named_leaves(params).items() if _participates(n, x, include_bn_scale)]


def erk_densities(shapes, density: float, dense=None) -> np.ndarray:
    """Erdős–Rényi-Kernel kept fractions, one per layer, for an overall ``density``.

    shapes: layer shapes (kh, kw, c_in, c_out) or any shape; a layer's raw
    score is sum(shape) / prod(shape). dense: optional bool per layer, layers
    kept whole from the start. The densities min(1, ε·score) solve
    Σ density_l·size_l = density·Σ size_l; layers that reach 1 are frozen
    dense and ε is solved again (at most one pass per layer).
    Returns float64 (L,) in [0, 1].
    """
    sizes = np.array([np.prod(s) for s in shapes], np.float64)
    score = np.array([np.sum(s) for s in shapes], np.float64) / np.maximum(sizes, 1)
    full = np.zeros(len(sizes), bool) if dense is None else np.array(dense, bool)
    budget = density * sizes.sum()
    if budget < sizes[full].sum():
        raise ValueError(f"density {density} is below the share of the layers kept whole "
                         f"({sizes[full].sum() / sizes.sum():.4g})")
    while True:
        free = ~full
        denom = (score * sizes)[free].sum()
        eps = (budget - sizes[full].sum()) / denom if denom > 0 else 0.0
        newly = free & (eps * score >= 1)
        if not newly.any():
            return np.where(full, 1.0, np.clip(eps * score, 0.0, 1.0))
        full |= newly


def lamp_scores(mags: np.ndarray) -> np.ndarray:
    """LAMP scores of one layer: u² / Σ_{v ranked at or above u} v², float64, same shape.

    mags: flat |w| of the layer, −1 where a weight is already pruned (scored −1,
    left out of the sums). Ranking is ascending |w|, ties by position (the
    earlier one ranks lower, as ``_global_keeps`` prunes it first). A layer
    whose kept weights are all 0 scores 0.
    """
    m = np.asarray(mags, np.float64)
    order = np.argsort(m, kind="stable")
    sq = np.where(m >= 0, m, 0.0)[order] ** 2
    tail = np.cumsum(sq[::-1])[::-1]  # Σ of the squares ranked at or above each entry
    out = np.empty_like(m)
    out[order] = np.divide(sq, tail, out=np.zeros_like(sq), where=tail > 0)
    return np.where(m >= 0, out, -1.0)


def magnitude_masks(params, config: PruneConfig, previous=None):
    """Bool masks (pytree like ``params``) removing the smallest-|w| weights.

    params: pytree of float arrays (any shapes). config.distribution decides
    how many weights each layer loses (module docstring); within that, the
    smallest |w| go. previous: optional earlier masks (same structure);
    weights they prune stay pruned (treated as magnitude −1, and a layer
    never loses fewer than it already has), so an iterative schedule only ever
    grows the pruned set.
    Returns masks with round(sparsity · N) False entries over the N
    participating weights (a few more where dead scales are reclaimed; "erk":
    up to per-layer rounding, and never fewer than ``previous`` had);
    non-participating leaves are all True.
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

    def smallest(m, k):  # keep-mask of m without its k smallest entries (stable: ties by position)
        keep = np.ones(m.size, bool)
        if k > 0:
            keep[np.argsort(m, kind="stable")[:k]] = False
        return keep

    if config.distribution in ("global", "lamp"):
        pairs = _scale_kernel_pairs(names, chosen) if config.reclaim_dead_scales else {}
        scores = mags if config.distribution == "global" else [lamp_scores(m) for m in mags]
        n_all = sum(m.size for m in mags)
        if round(config.sparsity * n_all) >= n_all:
            raise ValueError(f"sparsity {config.sparsity!r} removes all {n_all} prunable weights: use sparsity "
                             f"<= {1 - 1 / n_all:.12g} (one weight kept)")
        keeps = _global_keeps(chosen, scores, pairs, int(round(config.sparsity * n_all)))
    else:  # erk
        shapes = [np.shape(names[n]) for n in chosen]
        whole = [len(s) != 4 for s in shapes]
        n_whole, n_all = sum(m.size for m, w in zip(mags, whole) if w), sum(m.size for m in mags)
        if (1.0 - config.sparsity) * n_all < n_whole:
            raise ValueError(f"sparsity {config.sparsity} keeps fewer weights than the {n_whole} BatchNorm scales "
                             f"that 'erk' keeps whole: use sparsity <= {1 - n_whole / n_all:.4g} or "
                             "include_bn_scale=False")
        dens = erk_densities(shapes, 1.0 - config.sparsity, dense=whole)
        keeps = [smallest(m, max(int(round((1.0 - d) * m.size)), int(np.sum(m < 0))))
                 for m, d in zip(mags, dens)]
    out = {n: k.reshape(np.shape(names[n])) for n, k in zip(chosen, keeps)}

    def mask_of(path, x):
        n = leaf_name(path)
        return jnp.asarray(out[n]) if n in out else jnp.ones(np.shape(x), bool)

    return jax.tree_util.tree_map_with_path(mask_of, params)


def _scale_kernel_pairs(names: dict, chosen: list) -> dict:
    """{index of a 1-D ``…/bn<i>/scale``: index of its ``…/conv<i>/kernel``} among ``chosen``
    (same block, kernel's last axis = the scale's length)."""
    where = {n: i for i, n in enumerate(chosen)}
    pairs = {}
    for i, n in enumerate(chosen):
        head, _, last = n.rpartition("/")
        block, _, module = head.rpartition("/")
        if last != "scale" or not module.startswith("bn"):
            continue
        kernel = "/".join(filter(None, (block, "conv" + module[2:], "kernel")))
        j = where.get(kernel)
        if j is not None and np.ndim(names[kernel]) == 4 and np.shape(names[kernel])[-1] == np.size(names[n]):
            pairs[i] = j
    return pairs


def _global_keeps(chosen, mags, pairs: dict, k: int) -> list:
    """Keep-masks (flat, one per chosen leaf) of global pruning of ``k`` weights by score
    (``mags``: |w| or LAMP scores, −1 where pruned before).

    Leaves in ``pairs`` (scale index → kernel index) are not ranked: a scale
    entry is kept iff its kernel column (output channel) keeps a weight and it
    was not pruned before (magnitude ≥ 0). The ranked budget is the largest
    for which ranked + live scales ≤ N − k (bisection: both grow with it).
    """
    sizes = [m.size for m in mags]
    budget = sum(sizes) - k
    ranked = [i for i in range(len(mags)) if i not in pairs]
    flat = np.concatenate([mags[i] for i in ranked])
    # descending magnitude; stable ascending reversed, so among ties the earlier position is pruned first
    order = np.argsort(flat, kind="stable")[::-1]
    offsets = np.cumsum([0] + [sizes[i] for i in ranked])

    def keeps_for(kept: int) -> list:
        flat_keep = np.zeros(flat.size, bool)
        flat_keep[order[:kept]] = True
        out = [None] * len(mags)
        for r, i in enumerate(ranked):
            out[i] = flat_keep[offsets[r]:offsets[r + 1]]
        for i, j in pairs.items():
            alive = out[j].reshape(-1, sizes[i]).any(axis=0)
            out[i] = alive & (mags[i] >= 0)
        return out

    def total(keeps) -> int:
        return int(sum(int(x.sum()) for x in keeps))

    hi = min(budget, int(np.sum(flat >= 0)))  # never revive a weight pruned before
    if not pairs:
        return keeps_for(hi)
    lo = 0  # invariant: total(keeps_for(lo)) <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if total(keeps_for(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return keeps_for(lo)


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
