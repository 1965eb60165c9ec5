"""benchmarks/gpu_check.sh, the one script a short GPU lease runs, on the CPU at tiny sizes: every step must
finish and bring its results back, so that a rare device lease is not spent finding a broken script."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

STEPS = ("tests", "pipeline", "latency", "throughput", "optimizers", "schedules", "online")
# the dry run of the script's header: tiny data, model and epochs, --smoke benchmarks
TINY = dict(PIPELINE_ARGS="--data-n 32 --data-n-groups 8 --data-states-per-group 2 --model-depth 2 "
                          "--train-epochs 1 --compress-ft-epochs 1",
            BENCH_ARGS="--smoke", TRAIN_ARGS="--model-depth 2 --epochs 1",
            PRUNE_ARGS="--ft-epochs 1 --last-ft-epochs 1", ONLINE_ARGS="--quick --batch-size 8 --n 32", BUDGET_S="3000",
            CAP_SCALE="5", STEPS=" ".join(STEPS))  # per-step caps sized for a GPU, times 5


def gpu_check(tmp_path, *args, timeout=60, **env):
    # python3 in the script is this interpreter (the device machine's python3 has the packages installed)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout,
                          env=dict(os.environ, PATH=path, STATE=str(tmp_path / "state"), OUT=str(tmp_path / "out"),
                                   **env))


def test_an_unknown_step_is_a_one_line_error_before_any_work(tmp_path):
    done = gpu_check(tmp_path, STEPS="pipeline bench")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "unknown step 'bench'" in done.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / "out").exists()


def test_an_argument_is_a_one_line_error_before_any_work(tmp_path):
    done = gpu_check(tmp_path, "--status", STEPS="nosuchstep")  # with the check gone: fails at once, not a GPU run
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "takes no arguments" in done.stderr and "'--status'" in done.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow  # seven steps at tiny sizes: ~4 min on 2 cores
def test_every_step_finishes_on_the_cpu_and_a_second_call_skips_them(tmp_path):
    done = gpu_check(tmp_path, timeout=1800, **TINY)
    out, state = tmp_path / "out", tmp_path / "state"
    log = (out / "gpu.log").read_text()
    assert done.returncode == 0, done.stderr[-3000:] + log[-3000:]
    for s in STEPS:
        assert f"   {s} done in" in log, log[-3000:]
        # the mark holds the flags it ran with: a real call with other flags does not take it as done
        assert (state / f"done_{s}").read_text().strip() == "|".join(
            TINY[k] for k in ("PIPELINE_ARGS", "BENCH_ARGS", "TRAIN_ARGS", "PRUNE_ARGS", "ONLINE_ARGS"))
    assert (out / "tests_int8_bf16.log").read_text().rstrip().endswith("rc=0")
    with tarfile.open(out / "paper_run.tgz") as tgz:
        names = set(tgz.getnames())
    assert {"report.json", "train/metrics.json", "train/eval_val_latest/evaluation.json"} <= names, names
    latency = json.loads((out / "model_latency.json").read_text())
    throughput = json.loads((out / "accelerator_throughput.json").read_text())
    assert latency and throughput["settings"]["smoke"]
    for opt in ("adamw", "sgd"):  # folders experiments/reference_comparison.py reads as --optimizer-run
        assert (out / f"opt_{opt}" / "metrics.json").is_file() and \
            (out / f"opt_{opt}" / "eval_val_latest" / "evaluation.json").is_file(), opt
    assert {"prune.json", "bn_recalibration.json"} <= {p.name for p in (out / "prune_iterative").iterdir()}
    assert any((out / "online_training").glob("*.json"))

    again = gpu_check(tmp_path, timeout=300, **TINY)  # a later call on the same machine: every step is done
    log = (out / "gpu.log").read_text()
    assert again.returncode == 0 and all(f"== {s}: done in an earlier call" in log for s in STEPS), log[-3000:]
