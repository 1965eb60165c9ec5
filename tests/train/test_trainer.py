import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bec_jax.cli import main
from bec_jax.models import UNetConfig, init_model
from bec_jax.train import (
    CheckpointMismatch,
    Checkpoints,
    TrainConfig,
    fit,
    init_state,
    load_trained,
    make_optimizer,
    make_train_step,
    make_loss,
)
from bec_jax.train.core import Batch

TINY = UNetConfig(base_width=4, depth=2, input_size=32)
# Flags shared by the CLI runs of the resume test (tiny model, 32² data).
CLI_FLAGS = ["--width", "4", "--depth", "2", "--batch-size", "4", "--no-progress"]


def leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="rmsprop"), "optimizer must be one of"),
    (dict(loss="l1"), "loss must be one of"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=float("inf")), "learning_rate must be a finite number > 0, got inf"),
    (dict(learning_rate=float("nan")), "learning_rate must be a finite number > 0, got nan"),
    (dict(learning_rate=np.bool_(True)), "learning_rate must be a finite number > 0, got np.True_"),
    (dict(learning_rate=np.ones(1)), "learning_rate must be a finite number > 0"),
    (dict(weight_decay=float("inf")), "weight_decay must be a finite number >= 0, got inf"),
    (dict(weight_decay=float("nan")), "weight_decay must be a finite number >= 0, got nan"),
    (dict(batch_size=0), "batch_size"),
    (dict(epochs=0), "epochs"),
    (dict(momentum=1.0), "momentum"),
    (dict(target="phase"), "target must be one of"),
])
def test_train_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_optimizers_follow_pytorch_semantics():
    params = {"w": jnp.array([1.0, -2.0])}
    zero = {"w": jnp.zeros(2)}
    grad = {"w": jnp.array([0.5, 0.25])}
    sgd = make_optimizer(TrainConfig(optimizer="sgd", learning_rate=0.1))
    up, _ = sgd.update(grad, sgd.init(params), params)
    np.testing.assert_allclose(up["w"], [-0.05, -0.025])
    # AdamW: decoupled decay lr * wd * p even with zero gradient; Adam: no decay.
    adamw = make_optimizer(TrainConfig(optimizer="adamw", learning_rate=0.1, weight_decay=0.01))
    up, _ = adamw.update(zero, adamw.init(params), params)
    np.testing.assert_allclose(up["w"], [-0.001, 0.002], rtol=1e-6)
    adam = make_optimizer(TrainConfig(optimizer="adam", learning_rate=0.1))
    up, _ = adam.update(zero, adam.init(params), params)
    np.testing.assert_allclose(up["w"], [0.0, 0.0])


def test_train_step_reduces_loss_and_updates_batch_stats():
    model = init_model(TINY, 0)
    tx = optax.adam(1e-2)
    gd_train, _, state = init_state(model, tx)
    step = make_train_step(gd_train, tx, make_loss(TrainConfig(), None))
    key = jax.random.key(0)
    x = jax.random.normal(key, (4, 32, 32, 1))
    y = jnp.concatenate([x, -x], axis=-1) * 0.1
    mask = jnp.ones((4, 32, 32), bool)
    mean0 = leaves(state.batch_stats)
    losses = []
    for _ in range(15):
        state, loss = step(state, Batch(x, y, mask))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert any(not np.array_equal(a, b) for a, b in zip(mean0, leaves(state.batch_stats)))


def test_checkpoints_keep_best_and_latest_and_refuse_foreign_configs(tmp_path):
    model = init_model(TINY, 0)
    tx = optax.adam(1e-3)
    state = init_state(model, tx)[2].as_dict()
    run = dict(train=dict(optimizer="adam"))
    with Checkpoints(tmp_path / "ck", TINY, run) as ck:
        for step, val in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 5.0)]:
            ck.save(step, state, dict(epoch=step), val)
        assert ck.all_steps() == [2, 4]  # best (val 1.0) and latest
        with pytest.raises(ValueError, match="already exists"):
            ck.save(4, state, {}, 1.0)
        restored, meta = ck.restore(2, state)
        assert meta == dict(epoch=2)
        assert all(np.array_equal(a, b) for a, b in zip(leaves(restored), leaves(state)))
    other = UNetConfig(base_width=6, depth=2, input_size=32)
    with pytest.raises(CheckpointMismatch, match="base_width: stored 4 vs now 6"):
        Checkpoints(tmp_path / "ck", other, run)
    with pytest.raises(CheckpointMismatch, match="train.optimizer: stored 'adam' vs now 'sgd'"):
        Checkpoints(tmp_path / "ck", TINY, dict(train=dict(optimizer="sgd")))


@pytest.mark.slow  # integration test over ~15 s on 2 cores: `make test-slow`
def test_fit_writes_metrics_and_loads_back(small_dataset, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=4, learning_rate=3e-3)
    res = fit(small_dataset, tmp_path / "run", TINY, cfg, progress=False, log=None)
    assert [r["epoch"] for r in res.history] == [1, 2]
    for r in res.history:
        assert np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"])
        assert r["val_mse_ref"] < r["val_mse"]  # the reference loss is diluted by the empty pixels
    info = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert info["best_epoch"] == res.best_epoch and info["model_config"] == TINY.to_dict()
    # the states' digest, the generation summary's: which generation of a dataset trained the run
    from bec_jax.data.storage import read_h5

    assert info["data_content_sha256"] == json.loads(read_h5(small_dataset)[1]["summary"])["content_sha256"]
    csv_lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,train_loss,val_loss") and len(csv_lines) == 3
    latest, meta = load_trained(tmp_path / "run", "latest")
    assert meta["epoch"] == 2 and meta["model_config"] == TINY
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 1))
    np.testing.assert_array_equal(np.asarray(nnx.jit(lambda m, x: m(x))(latest, x)),
                                  np.asarray(nnx.jit(lambda m, x: m(x))(res.model, x)))
    best, meta = load_trained(tmp_path / "run", "best")
    assert meta["epoch"] == res.best_epoch
    # The same command again is a no-op resume; a different model is refused.
    again = fit(small_dataset, tmp_path / "run", TINY, cfg, progress=False, log=None)
    assert again.history == res.history
    with pytest.raises(CheckpointMismatch, match="model configuration"):
        fit(small_dataset, tmp_path / "run", UNetConfig(base_width=8, depth=2, input_size=32), cfg,
            progress=False, log=None)

    # `bec-jax evaluate` on this run: JSON report and the Fig. 7-style PNG.
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--split", "all", "--samples", "2",
                 "--no-progress"]) == 0
    report = json.loads((tmp_path / "run" / "eval" / "evaluation.json").read_text())
    s = report["summary"]
    assert report["config"]["epoch"] == res.best_epoch and s["n_samples"] >= 10
    assert 0 <= s["fidelity_mean"] <= 1 and s["fidelity_ceiling_mean"] > 0.99
    assert s["mse"] > s["mse_ref"] > 0
    assert s["true_positives"] + s["false_negatives"] == s["vortices_true"]
    png = (tmp_path / "run" / "eval" / "predictions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--split", "all", "--samples", "0",
                 "--no-progress"]) == 0  # no figure: the last one's would not match the new numbers
    assert not (tmp_path / "run" / "eval" / "predictions.png").exists()
    # a model given in place of the checkpoint (a compressed copy) is scored on the run's split the same way
    from bec_jax.train.evaluate import evaluate_run

    given = evaluate_run(tmp_path / "run", split="all", model=best, progress=False)
    assert given["config"]["checkpoint"] == "given" and given["config"]["epoch"] is None
    assert given["summary"] == pytest.approx(s)
    untrained = evaluate_run(tmp_path / "run", split="all", model=init_model(TINY, seed=7), progress=False)
    assert untrained["summary"]["mse"] != pytest.approx(s["mse"], rel=1e-3)


def test_fit_rejects_mismatched_input_size(small_dataset, tmp_path):
    with pytest.raises(ValueError, match="dataset grid n=32 of .* differs from the model's input_size 64"):
        fit(small_dataset, tmp_path, UNetConfig(base_width=4, depth=2, input_size=64), TrainConfig(epochs=1),
            progress=False, log=None)


def _cli_train(data, out, epochs):
    return [sys.executable, "-m", "bec_jax.cli", "train", "--data", str(data), "--out", str(out),
            "--epochs", str(epochs), *CLI_FLAGS]


@pytest.mark.slow  # ~60 s on 2 cores: run by `make test-slow`
def test_resume_after_sigkill_matches_uninterrupted(small_dataset, tmp_path):
    epochs = 12
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(_cli_train(small_dataset, out, epochs), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ck = out / "checkpoints"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ck.is_dir() and any(p.name.isdigit() for p in ck.iterdir()):
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit())
    assert done and max(done) < epochs, f"kill came too late (checkpoints {done})"

    rerun = subprocess.run(_cli_train(small_dataset, out, epochs), env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from epoch" in rerun.stdout + rerun.stderr

    # The uninterrupted run goes through the Python API (same settings as CLI_FLAGS).
    straight = tmp_path / "straight"
    fit(small_dataset, straight, TINY, TrainConfig(batch_size=4, epochs=epochs), progress=False, log=None)
    a, _ = load_trained(out, "latest")
    b, _ = load_trained(straight, "latest")
    for name in (nnx.Param, nnx.BatchStat):
        for x, y in zip(leaves(nnx.state(a, name)), leaves(nnx.state(b, name))):
            np.testing.assert_array_equal(x, y)
    ha = json.loads((out / "metrics.json").read_text())["history"]
    hb = json.loads((straight / "metrics.json").read_text())["history"]
    assert [r["val_loss"] for r in ha] == [r["val_loss"] for r in hb]
    assert len(ha) == epochs


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "r")]) == 2
    assert "no dataset" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(tmp_path / "nothing")]) == 2
    assert "no training run" in capsys.readouterr().err
    (tmp_path / "pipe" / "train" / "checkpoints").mkdir(parents=True)  # a pipeline run folder's layout
    for command in ("evaluate", "prune"):
        assert main([command, "--run", str(tmp_path / "pipe"), "--out", str(tmp_path / "o")]) == 2
        assert f"is a pipeline run: its training run is {str(tmp_path / 'pipe' / 'train')!r}" in \
            capsys.readouterr().err


def test_cli_refuses_a_non_finite_learning_rate_before_training(small_dataset, tmp_path, capsys):
    for lr in ("inf", "nan"):
        assert main(["train", "--data", str(small_dataset), "--out", str(tmp_path / "r"), "--lr", lr]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"learning_rate must be a finite number > 0, got {lr}" in err[0], err
    assert not (tmp_path / "r").exists()


def test_a_rerun_with_fewer_epochs_than_the_run_holds_is_refused(small_run, tmp_path, capsys):
    import shutil

    run, data = small_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = (copy / "metrics.json").read_text()
    assert main(["train", "--data", str(data), "--out", str(copy), "--epochs", "1", *CLI_FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds 2 trained epochs, more than epochs=1" in err[0], err
    assert "epochs >= 2" in err[0]
    assert (copy / "metrics.json").read_text() == before   # nothing rewritten
    with pytest.raises(CheckpointMismatch, match="holds 2 trained epochs"):
        fit(data, copy, TINY, TrainConfig(epochs=1, batch_size=4), progress=False, log=None)


def test_help_names_the_defaults_and_every_evaluate_option():
    from bec_jax.cli import build_parser

    sub = build_parser().subcommands
    train = " ".join(sub["train"].format_help().split())
    assert "(default runs/train)" in train and "(default data/quick.h5)" in train
    evaluate = {a.dest: a.help for a in sub["evaluate"]._actions}
    assert all(evaluate[k] for k in ("run", "data", "checkpoint", "split", "out", "samples", "batch_size"))
    assert "(default best)" in evaluate["checkpoint"] and "(default test)" in evaluate["split"]


def test_cli_depth_too_large(small_dataset, tmp_path, capsys):
    assert main(["train", "--data", str(small_dataset), "--out", str(tmp_path / "r"), "--depth", "6"]) == 2
    assert "--model-depth must be in [1, 5]" in capsys.readouterr().err
