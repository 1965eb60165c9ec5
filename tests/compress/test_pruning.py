import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bec_jax.compress.pruning import (
    PruneConfig, apply_masks, erk_densities, lamp_scores, magnitude_masks, keep_pruned, leaf_name, named_leaves, prunable_names,
    schedule_to, set_masks, sparsity_report,
)
from bec_jax.models import UNetConfig, init_model
from bec_jax.train import Batch, TrainConfig, init_state, make_loss, make_train_step

CFG = UNetConfig(base_width=4, depth=2, input_size=16)


def _params():
    return nnx.state(init_model(CFG, seed=1), nnx.Param)


def test_masks_prune_exact_count_and_are_global():
    params = _params()
    masks = magnitude_masks(params, PruneConfig(0.7))
    p, m = named_leaves(params), named_leaves(masks)
    names = prunable_names(params)
    assert any(n.endswith("scale") for n in names) and any(n.endswith("kernel") for n in names)
    total = sum(p[n].size for n in names)
    pruned = sum(int((~np.asarray(m[n])).sum()) for n in names)
    assert pruned == round(0.7 * total)
    kept_min = min(np.abs(np.asarray(p[n]))[np.asarray(m[n])].min() for n in names)
    pruned_max = max(np.abs(np.asarray(p[n]))[~np.asarray(m[n])].max() for n in names if (~np.asarray(m[n])).any())
    assert kept_min >= pruned_max  # one global threshold
    for n in p:  # biases and BN biases untouched
        if n not in names:
            assert np.asarray(m[n]).all()


def test_bn_scales_excluded_on_request():
    params = _params()
    masks = magnitude_masks(params, PruneConfig(0.9, include_bn_scale=False))
    for n, mk in named_leaves(masks).items():
        if n.endswith("scale"):
            assert np.asarray(mk).all()
    rep = sparsity_report(apply_masks(params, masks), include_bn_scale=False)
    assert rep["total"]["sparsity"] == pytest.approx(0.9, abs=1e-3)


def test_previous_masks_stay_pruned():
    params = _params()
    m1 = magnitude_masks(params, PruneConfig(0.5))
    # perturb the params so that magnitudes reorder; pruned entries must stay pruned
    rng = np.random.default_rng(3)
    noisy = jax.tree.map(lambda x: np.asarray(x) + 0.5 * rng.standard_normal(x.shape).astype(np.float32), params)
    m2 = magnitude_masks(noisy, PruneConfig(0.8), previous=m1)
    for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m2)):
        assert not np.any(np.asarray(b) & ~np.asarray(a))


@pytest.mark.parametrize("opt", [optax.adam(1e-2), optax.adamw(1e-2, weight_decay=0.1),
                                 optax.sgd(1e-2, momentum=0.9)])
def test_keep_pruned_keeps_zeros_exactly(opt):
    key = jax.random.key(0)
    params = {"a": jax.random.normal(key, (3, 3, 4, 5)), "b": {"scale": jnp.linspace(-1, 1, 7)}}
    masks = magnitude_masks(params, PruneConfig(0.6))
    params = apply_masks(params, masks)
    target = jax.tree.map(lambda x: x + 3.0, params)  # gradients push every weight away from 0
    loss = lambda p: sum(jnp.sum((x - t) ** 2) for x, t in zip(jax.tree.leaves(p), jax.tree.leaves(target)))

    def run(tx, p):
        s = tx.init(p)
        for _ in range(5):
            u, s = tx.update(jax.grad(loss)(p), s, p)
            p = optax.apply_updates(p, u)
        return p

    pruned = run(optax.chain(opt, keep_pruned(masks)), params)
    for x, m in zip(jax.tree.leaves(pruned), jax.tree.leaves(masks)):
        assert np.all(np.asarray(x)[~np.asarray(m)] == 0.0)
        assert np.all(np.asarray(x)[np.asarray(m)] != 0.0)
    # control: the same optimizer without keep_pruned revives pruned weights
    dense = run(opt, params)
    assert any(np.any(np.asarray(x)[~np.asarray(m)] != 0) for x, m in zip(jax.tree.leaves(dense),
                                                                          jax.tree.leaves(masks)))


def test_keep_pruned_through_unet_train_step():
    model = init_model(CFG, seed=0)
    params = nnx.state(model, nnx.Param)
    masks = magnitude_masks(params, PruneConfig(0.8))
    nnx.update(model, apply_masks(params, masks))
    tx = optax.chain(optax.adamw(1e-2, weight_decay=1e-2), keep_pruned(masks))
    gd_train, _, state = init_state(model, tx)
    step = make_train_step(gd_train, tx, make_loss(TrainConfig(), None))
    k1, k2 = jax.random.split(jax.random.key(1))
    x = jax.random.normal(k1, (2, 16, 16, 1))
    y = jax.random.normal(k2, (2, 16, 16, 2))
    mask = jnp.ones((2, 16, 16), bool)
    before = jax.tree.map(np.asarray, state.params)
    for _ in range(3):
        state, _ = step(state, Batch(x, y, mask))
    rep = sparsity_report(state.params)
    assert rep["total"]["zeros"] == round(0.8 * rep["total"]["size"])
    changed = [not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(before),
                                                                   jax.tree.leaves(state.params))]
    assert any(changed)  # it did train
    # swap in a sparser mask: new zeros appear only after applying it, then persist
    masks2 = magnitude_masks(state.params, PruneConfig(0.9), previous=masks)
    state = state.replace(params=apply_masks(state.params, masks2), opt_state=set_masks(state.opt_state, masks2))
    state, _ = step(state, Batch(x, y, mask))
    assert sparsity_report(state.params)["total"]["zeros"] == round(0.9 * rep["total"]["size"])


def test_bad_input():
    for s in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            PruneConfig(s)
    # below 1, yet rounding to every weight: refused, naming the largest sparsity that keeps one
    params = {"conv": {"kernel": jnp.arange(1.0, 1001.0).reshape(10, 10, 10, 1)}}
    with pytest.raises(ValueError, match=r"removes all 1000 prunable weights: use sparsity <= 0.999 "):
        magnitude_masks(params, PruneConfig(0.9999999, include_bn_scale=False))
    assert int(magnitude_masks(params, PruneConfig(0.999, include_bn_scale=False))["conv"]["kernel"].sum()) == 1
    with pytest.raises(ValueError, match="keep_pruned"):
        set_masks(optax.adam(1e-3).init({"a": jnp.ones(3)}), {"a": jnp.ones(3, bool)})
    with pytest.raises(ValueError, match="structure"):
        keep_pruned({"a": jnp.ones(3, bool)}).init({"b": jnp.ones(3)})


def test_schedule_to():
    assert schedule_to(0.99) == (0.8, 0.9, 0.97, 0.99)
    assert schedule_to(0.95) == (0.8, 0.9, 0.95)
    assert schedule_to(0.5) == (0.5,)
    with pytest.raises(ValueError):
        schedule_to(1.0)


def test_erk_densities_closed_forms():
    # equal shapes: every layer gets the overall density
    np.testing.assert_allclose(erk_densities([(3, 3, 8, 8)] * 3, 0.25), 0.25)
    # density ∝ sum/prod: (3,3,4,4) scores 14/144, (3,3,8,8) 22/576; solve ε from the budget by hand
    shapes, d = [(3, 3, 4, 4), (3, 3, 8, 8)], 0.1
    eps = d * (144 + 576) / (14 + 22)
    np.testing.assert_allclose(erk_densities(shapes, d), [eps * 14 / 144, eps * 22 / 576])
    # a layer whose share would exceed 1 is frozen dense and the rest re-solved
    dens = erk_densities([(1, 1, 1, 2), (3, 3, 64, 64)], 0.5)
    assert dens[0] == 1.0 and np.isclose(2 * 1 + 36864 * dens[1], 0.5 * (2 + 36864))
    assert erk_densities([(3,), (3, 3, 4, 4)], 0.5, dense=[True, False])[0] == 1.0
    with pytest.raises(ValueError, match="kept whole"):
        erk_densities([(100,), (3, 3, 1, 1)], 0.1, dense=[True, False])


def test_erk_masks_keep_every_layer_and_prune_by_magnitude_within_it():
    params = nnx.state(init_model(UNetConfig(base_width=4, depth=3, input_size=16), seed=2), nnx.Param)
    masks = magnitude_masks(params, PruneConfig(0.95, distribution="erk"))
    p, m = named_leaves(params), named_leaves(masks)
    names = prunable_names(params)
    total = sum(p[n].size for n in names)
    pruned = sum(int((~np.asarray(m[n])).sum()) for n in names)
    assert abs(pruned - round(0.95 * total)) <= len(names)  # per-layer rounding only
    glob = named_leaves(magnitude_masks(params, PruneConfig(0.95)))
    assert any(not np.asarray(glob[n]).any() for n in names if n.endswith("kernel"))  # global empties layers
    for n in names:
        keep, w = np.asarray(m[n]), np.abs(np.asarray(p[n]))
        if n.endswith("scale"):
            assert keep.all()  # BatchNorm scales are kept whole
            continue
        assert keep.any()  # every conv keeps weights
        if not keep.all():
            assert w[keep].min() >= w[~keep].max()  # magnitude decides within a layer
    m2 = magnitude_masks(params, PruneConfig(0.98, distribution="erk"), previous=masks)
    for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(m2)):
        assert not np.any(np.asarray(b) & ~np.asarray(a))
    with pytest.raises(ValueError, match="distribution"):
        PruneConfig(0.5, distribution="layerwise")
    with pytest.raises(ValueError, match="BatchNorm scales"):  # this small net's scales are 0.8 % of its weights
        magnitude_masks(params, PruneConfig(0.995, distribution="erk"))


def test_lamp_scores_closed_forms():
    # ascending squares 1, 4, 9: 1/14, 4/13, 9/9; already-pruned entries score -1 and leave the sums
    np.testing.assert_allclose(lamp_scores(np.array([3.0, 1.0, 2.0])), [1.0, 1 / 14, 4 / 13])
    np.testing.assert_allclose(lamp_scores(np.array([3.0, -1.0, 2.0, 0.0])), [1.0, -1.0, 4 / 13, 0.0])
    # ties: the earlier one ranks lower (pruned first, as in _global_keeps)
    np.testing.assert_allclose(lamp_scores(np.array([2.0, 2.0])), [0.5, 1.0])
    np.testing.assert_array_equal(lamp_scores(np.array([0.0, -1.0])), [0.0, -1.0])


def test_lamp_masks_ignore_layer_scale_and_keep_every_layer():
    tree = {"a": {"kernel": jnp.array([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3)},
            "b": {"kernel": jnp.array([0.1, 0.2, 0.3]).reshape(1, 1, 1, 3)}}
    glob = named_leaves(magnitude_masks(tree, PruneConfig(2 / 6)))
    lamp = named_leaves(magnitude_masks(tree, PruneConfig(2 / 6, distribution="lamp")))
    assert np.asarray(glob["b/kernel"]).ravel().tolist() == [False, False, True]  # magnitude: b's two smallest
    # LAMP: a and b score alike (b = a/10), so each loses its smallest weight
    assert np.asarray(lamp["a/kernel"]).ravel().tolist() == [False, True, True]
    assert np.asarray(lamp["b/kernel"]).ravel().tolist() == [False, True, True]

    params = nnx.state(init_model(UNetConfig(base_width=4, depth=3, input_size=16), seed=2), nnx.Param)
    names = prunable_names(params)
    p = named_leaves(params)
    total = sum(p[n].size for n in names)
    masks = magnitude_masks(params, PruneConfig(0.99, distribution="lamp"))
    m = named_leaves(masks)
    assert sum(int((~np.asarray(m[n])).sum()) for n in names) == round(0.99 * total)  # exact count
    for n in names:
        keep, w = np.asarray(m[n]), np.abs(np.asarray(p[n]))
        assert keep.any()  # every layer keeps its largest weight (score 1)
        if not keep.all():
            assert w[keep].min() >= w[~keep].max()  # magnitude decides within a layer
    # multiplying one layer by a constant changes nothing (what a conv + BatchNorm ignores too)
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 1e3 if leaf_name(path) == names[3] else x, params)
    again = magnitude_masks(scaled, PruneConfig(0.99, distribution="lamp"))
    for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # iterative: the pruned set only grows, and dead scales can be reclaimed as with "global"
    m2 = magnitude_masks(params, PruneConfig(0.995, distribution="lamp", reclaim_dead_scales=True), previous=masks)
    for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(m2)):
        assert not np.any(np.asarray(b) & ~np.asarray(a))
    assert sum(int((~np.asarray(named_leaves(m2)[n])).sum()) for n in names) >= round(0.995 * total)


def test_dead_channel_scales_are_reclaimed_for_kernel_weights():
    params = nnx.state(init_model(UNetConfig(base_width=4, depth=3, input_size=16), seed=2), nnx.Param)
    names = prunable_names(params)
    total = sum(named_leaves(params)[n].size for n in names)

    def counts(masks):
        m = named_leaves(masks)
        return (sum(int(np.asarray(m[n]).sum()) for n in names if n.endswith("kernel")),
                sum(int((~np.asarray(m[n])).sum()) for n in names))

    old = magnitude_masks(params, PruneConfig(0.97, reclaim_dead_scales=False))
    new = magnitude_masks(params, PruneConfig(0.97, reclaim_dead_scales=True))
    m = named_leaves(new)
    dead_before = 0
    for n in names:
        if n.endswith("scale"):
            column_alive = np.asarray(m[n.replace("/bn", "/conv").replace("/scale", "/kernel")]).reshape(
                -1, m[n].size).any(axis=0)
            np.testing.assert_array_equal(np.asarray(m[n]), column_alive)  # kept exactly while its channel lives
            old_k = np.asarray(named_leaves(old)[n.replace("/bn", "/conv").replace("/scale", "/kernel")])
            dead_before += int((~old_k.reshape(-1, m[n].size).any(axis=0)).sum())
    (kern_old, pruned_old), (kern_new, pruned_new) = counts(old), counts(new)
    assert pruned_old == round(0.97 * total)
    assert round(0.97 * total) <= pruned_new <= round(0.97 * total) + 8  # budget met, a few more at most
    assert dead_before > 0 and kern_new > kern_old  # the freed places went to kernel weights
    m2 = magnitude_masks(params, PruneConfig(0.99, reclaim_dead_scales=True), previous=new)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(m2)):
        assert not np.any(np.asarray(b) & ~np.asarray(a))
