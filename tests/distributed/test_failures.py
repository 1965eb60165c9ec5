"""A process that dies makes the others fail with a clear message, and a rerun resumes."""

import json
import os
import signal
import sys
import time

import pytest

from bec_jax.artifacts import MANIFEST
from bec_jax.distributed import launch_local
from tests.distributed.conftest import ROOT, run_workers


def test_dead_process_fails_the_others_not_hangs():
    procs = run_workers(["die", 1], 2, timeout_s=80)
    assert procs[1].returncode == 3
    p0 = procs[0]
    assert p0.returncode not in (0, None), "process 0 hung or survived its peer's death"
    assert "RESULT" not in p0.stdout
    text = p0.stderr.lower()
    assert "another process did not reach 'after-death'" in text or "another task died" in text \
        or "heartbeat" in text, p0.stderr[-2000:]


def _train_cmd(data, out, epochs):
    return [sys.executable, "-m", "bec_jax.cli", "--heartbeat-timeout-s", "15", "--init-timeout-s", "60", "train",
            "--data", str(data), "--out", str(out), "--epochs", str(epochs), "--batch-size", "2", "--optimizer", "sgd",
            "--lr", "0.05", "--momentum", "0.9", "--width", "2", "--depth", "2", "--no-progress"]


def _env():
    return dict(PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_NUM_CPU_DEVICES="1",
                JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


def _saved_steps(ckpt):
    return sorted(int(p.name) for p in ckpt.glob("[0-9]*") if (p / MANIFEST).is_file()) if ckpt.is_dir() else []


@pytest.mark.slow
def test_killed_training_process_stops_the_run_and_a_rerun_resumes(tmp_path, tiny_dataset):
    out = tmp_path / "run"

    def kill_after_first_checkpoint(procs):
        deadline = time.monotonic() + 70
        while not _saved_steps(out / "checkpoints") and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(procs[1].pid, signal.SIGKILL)

    procs = launch_local(_train_cmd(tiny_dataset, out, 500), 2, timeout_s=120, env=_env(), cwd=ROOT,
                         on_start=kill_after_first_checkpoint)
    assert procs[1].returncode == -signal.SIGKILL
    p0 = procs[0]
    assert p0.returncode not in (0, None), f"process 0 hung or finished: {p0.stderr[-2000:]}"
    text = p0.stderr
    assert ("an exchange with the other processes failed" in text and "process 0 of 2 stopped" in text) \
        or "another task died" in text, text[-3000:]
    done = _saved_steps(out / "checkpoints")[-1]
    assert done >= 1

    procs = launch_local(_train_cmd(tiny_dataset, out, done + 2), 2, timeout_s=120, env=_env(), cwd=ROOT)
    assert [p.returncode for p in procs] == [0, 0], procs[0].stderr[-3000:] + procs[1].stderr[-3000:]
    assert f"resuming from epoch {done}" in procs[0].stdout
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == list(range(1, done + 3))
    plots = [json.loads(p.stdout.strip().splitlines()[-1])["plot"] for p in procs]  # one figure, process 0's
    assert plots == [str(out / "loss.png"), None] and (out / "loss.png").is_file()
