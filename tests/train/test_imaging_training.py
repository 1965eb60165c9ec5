"""Training under the imaging model: loader keys, exact resume, run settings, clean inputs unchanged."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from bec_jax.data.loader import BatchLoader
from bec_jax.data.storage import load_grid, read_h5
from bec_jax.imaging.training import ImagingTrainConfig
from bec_jax.models import UNetConfig
from bec_jax.train import CheckpointMismatch, TrainConfig, fit, load_trained
from bec_jax.train.trainer import run_imaging

TINY = UNetConfig(base_width=4, depth=2, input_size=32)
LAB = ImagingTrainConfig(enabled=True, rows=64, cols=64)


def _psi(path, k=8):
    arrays, attrs = read_h5(path)
    return load_grid(attrs), arrays["psi"][:k]


def _batches(loader, epoch):
    return [jax.tree.map(np.asarray, b) for b in loader.epoch(epoch)]


def test_loader_renders_per_epoch_and_batch_reproducibly(small_dataset):
    grid, psi = _psi(small_dataset)
    loader = BatchLoader(grid, psi, 4, seed=3, imaging=LAB)
    a, again, other = _batches(loader, 1), _batches(loader, 1), _batches(loader, 2)
    for b, c in zip(a, again):
        for u, v in zip(b, c):
            np.testing.assert_array_equal(u, v)
    assert a[0].x.shape == (4, 32, 32, 1) and a[0].y.shape == (4, 32, 32, 2) and a[0].mask.shape == (4, 32, 32)
    assert all(np.all(np.isfinite(b.x)) for b in a)
    assert not np.allclose(a[0].x, other[0].x)  # new images (and order) each epoch
    # the clean loader's inputs are not the rendered ones, and a disabled config is the clean loader
    clean = _batches(BatchLoader(grid, psi, 4, seed=3), 1)
    off = _batches(BatchLoader(grid, psi, 4, seed=3, imaging=dataclasses.replace(LAB, enabled=False)), 1)
    assert not np.allclose(a[0].x, clean[0].x)
    for b, c in zip(clean, off):
        for u, v in zip(b, c):
            np.testing.assert_array_equal(u, v)


def test_a_step_that_renders_its_batch_trains_as_one_given_the_batch(small_dataset):
    """The training step draws its camera images itself (``make_train_step(render=...)`` on the loader's
    sources): the same images, so the same update, as a step handed the loader's rendered batch."""
    from bec_jax.models import init_model
    from bec_jax.train.core import init_state, make_loss, make_optimizer, make_train_step

    grid, psi = _psi(small_dataset)
    loader = BatchLoader(grid, psi, 4, seed=3, augment=True, imaging=LAB)
    cfg = TrainConfig(batch_size=4)
    tx = make_optimizer(cfg)
    gd, _, state = init_state(init_model(TINY, 0), tx)
    fused = make_train_step(gd, tx, make_loss(cfg, grid), render=loader.render)
    given = make_train_step(gd, tx, make_loss(cfg, grid))
    copy = lambda s: jax.tree.map(lambda a: a.copy(), s)  # noqa: E731 (the steps donate their state)
    a, b = copy(state), copy(state)
    for src, batch in zip(loader.sources(1), loader.epoch(1)):
        a, loss_a = fused(a, src)
        b, loss_b = given(b, batch)
        np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-4)
    for u, v in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-3, atol=1e-5)


def _leaves(model):
    return [np.asarray(a) for kind in (nnx.Param, nnx.BatchStat) for a in jax.tree_util.tree_leaves(nnx.state(model, kind))]


@pytest.mark.slow  # four tiny fits: ~2 min on a busy 2-core machine
def test_fit_under_imaging_resumes_exactly_and_records_its_settings(small_dataset, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=4, learning_rate=3e-3)
    straight = fit(small_dataset, tmp_path / "straight", TINY, cfg, imaging=LAB, progress=False, log=None)
    fit(small_dataset, tmp_path / "resumed", TINY, dataclasses.replace(cfg, epochs=1), imaging=LAB,
        progress=False, log=None)
    resumed = fit(small_dataset, tmp_path / "resumed", TINY, cfg, imaging=LAB, progress=False, log=None)
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]
    for u, v in zip(_leaves(straight.model), _leaves(resumed.model)):
        np.testing.assert_array_equal(u, v)
    _, info = load_trained(tmp_path / "straight", "latest")
    assert run_imaging(info["run"]) == LAB
    # other imaging settings (or none) are another run
    with pytest.raises(CheckpointMismatch, match="imaging"):
        fit(small_dataset, tmp_path / "straight", TINY, cfg, imaging=dataclasses.replace(LAB, tof=(0.0, 2.0)),
            progress=False, log=None)
    with pytest.raises(CheckpointMismatch, match="imaging"):
        fit(small_dataset, tmp_path / "straight", TINY, cfg, progress=False, log=None)
    # a clean run stores no imaging entry (runs written before it existed resume unchanged)
    clean = fit(small_dataset, tmp_path / "clean", TINY, dataclasses.replace(cfg, epochs=1), progress=False, log=None)
    _, info = load_trained(clean.out_dir, "latest")
    assert "imaging" not in info["run"] and run_imaging(info["run"]) is None
    assert clean.history[0]["val_loss"] != straight.history[0]["val_loss"]
