"""Every benchmark script without a test of its own, end to end at tiny sizes (measuring nothing): each must
still write its result file with the current library (scripts no test ran have broken silently before)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_script

# script: its tiny flags (an --out is appended)
TINY = {
    "step_variants": ["--n", "16", "--batch", "1", "--steps", "2", "--rounds", "1"],
    "fft_contention": ["--n", "16", "--batch", "1", "--steps", "2", "--rounds", "1", "--calls", "1"],
    "solver_throughput": ["--sizes", "16", "--batches", "1", "--repeats", "5", "--steps", "2", "--no-ground-state"],
    "distributed": ["--n", "16", "--groups", "6", "--gen-batch", "4", "--width", "2", "--train-batch", "2",
                    "--repeats", "1", "--timeout", "300"],
    "cpu_sharding": ["--devices", "2", "--n", "16", "--batch", "2", "--steps", "2", "--repeats", "1"],
    "phase_reconstruction": ["--n", "32", "--batch", "2", "--repeats", "1"],
    "pcg_profile": ["--n", "16", "--batch", "1", "--iters", "1", "--repeats", "1"],
    "ground_state_memory": ["--cases", "32:1,32:4"],
    "seeding": ["--batches", "1", "--batch", "1"],
    "ground_state_ablations": ["--cases", "10:0.3:32", "--starts", "1", "--tol", "1e-3", "--coarse-tols", "1e-2",
                               "--max-iter", "200"],
    "ground_state_gradient": ["--n", "32", "--batch", "1", "--repeats", "1"],
    "ground_state_methods": ["--cases", "10:0.3:32", "--starts", "1", "--tol", "1e-3", "--report-tols", "1e-2",
                             "--max-iter", "200", "--it-max-steps", "200"],
    "dataset_time": ["--states", "1", "--batch", "1"],
    "generation_throughput": ["--paper-states", "1", "--method-states", "1", "--repeats", "1"],
    "gradient_flow_step": ["--quick", "--repeats", "1", "--block", "1", "--no-jit-block", "1", "--eager-block", "1"],
    "unet_profile": ["--size", "16", "--width", "2", "--batch", "2", "--steps", "1"],
    "unet_throughput": ["--size", "16", "--width", "2", "--train-batches", "2", "--infer-batches", "1", "--repeats",
                        "3", "--warmup", "1", "--ablation"],
}


def run(script, args, out, timeout=900):
    run_script(f"benchmarks/{script}.py", *args, "--out", out, timeout=timeout)
    return json.loads(Path(out).read_text())


@pytest.mark.slow  # 2 s to 2 min each, ~7 min in all
@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs_at_tiny_size(script, tmp_path):
    assert run(script, TINY[script], tmp_path / f"{script}.json")


@pytest.mark.slow  # ~20 s
def test_real_time_norm_drift_prints_its_result():
    assert json.loads(run_script("benchmarks/real_time_norm_drift.py", timeout=600).stdout)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """A tiny quick-preset pipeline run and a structured (shrunk) copy of its model: what the deployment
    benchmarks read."""
    root = tmp_path_factory.mktemp("bench_inputs")
    bj = [sys.executable, "-m", "bec_jax.cli"]
    for cmd in (["pipeline", "--preset", "quick", "--out", root / "run", "--no-progress", "--data-n", "32",
                 "--data-n-groups", "10", "--data-states-per-group", "2", "--data-batch-size", "20", "--data-n-starts",
                 "1", "--data-max-iter", "300", "--model-base-width", "4", "--model-depth", "3", "--train-epochs", "1",
                 "--compress-method", "prune", "--compress-schemes", "per_channel", "--report-samples", "1",
                 "--report-latency-repeats", "3", "--report-latency-batch", "2"],
                ["shrink", "--run", root / "run" / "train", "--out", root / "shrink50", "--keep", "0.5", "--outer",
                 "--ft-epochs", "1", "--repeats", "3", "--no-progress"]):
        done = subprocess.run(bj + [str(c) for c in cmd], capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.mark.slow  # ~4 min with the inputs
@pytest.mark.parametrize("script, args", [
    ("onnx_profile", ["--run", "{run}", "--structured", "{shrunk}", "--batch", "1", "--calls", "1"]),
    ("inference_latency", ["--run", "{run}", "--structured", "{shrunk}", "--sizes", "32", "--batches", "1",
                           "--repeats", "1", "--repeats-ref", "1", "--warmup", "0", "--calibration", "4"]),
    ("compression_latency", ["--width", "4", "--depth", "2", "--size", "16", "--batches", "1", "--keep", "0.5",
                             "--warmup", "0", "--repeats", "3", "--run", "{run}/train", "--data", "{run}/data.h5",
                             "--ft-epochs", "1"]),
])
def test_deployment_benchmark_runs_at_tiny_size(script, args, pipeline_run, tmp_path):
    pytest.importorskip("onnxruntime")
    paths = dict(run=pipeline_run / "run", shrunk=pipeline_run / "shrink50" / "model")
    assert run(script, [a.format(**paths) for a in args], tmp_path / f"{script}.json")
