"""Every experiment script without a test of its own, end to end at tiny sizes: each must still write its
report with the current library (scripts no test ran have broken silently before)."""

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_script


def run(script, *args, timeout=900):
    return run_script(f"experiments/{script}", *args, timeout=timeout)


def strict_json(path):
    """The file's JSON, which must be strict (no NaN or Infinity)."""
    return json.loads(Path(path).read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {path}"))


@pytest.mark.slow  # ~20 s
def test_hamiltonian_learning(small_dataset, tmp_path):
    run("hamiltonian_learning.py", "--data", small_dataset, "--out", tmp_path, "--max-cases", 4, "--chunk", 2,
        "--steps", 2, "--relax-iter", 10, "--cg-iters", 10, "--surrogate-steps", 20, "--surrogate-width", 16)
    assert strict_json(tmp_path / "hamiltonian_learning.json")
    assert list(tmp_path.glob("*.png"))


@pytest.mark.slow  # ~3 min: trains a camera-image model, which vortex_errors and parameter_estimation then read
def test_imaging_robustness_then_parameter_estimation(small_dataset, tmp_path):
    runs = tmp_path / "runs"
    run("imaging_robustness.py", "--data", small_dataset, "--out", tmp_path / "robust", "--runs", runs, "--epochs", 1,
        "--width", 4)
    assert strict_json(tmp_path / "robust" / "imaging_robustness.json")
    report = {p.name for p in (tmp_path / "robust").iterdir()}  # the report alone: checkpoints go to --runs
    assert report == {f"imaging_robustness.{e}" for e in ("json", "md", "png")}
    run("vortex_errors.py", "--data", small_dataset, "--robustness", tmp_path / "robust", "--runs", runs, "--out",
        tmp_path / "errors")
    assert strict_json(tmp_path / "errors" / "vortex_errors.json")
    run("parameter_estimation.py", "--run", runs / "lab", "--count", 2, "--out", tmp_path / "estimate")
    assert strict_json(tmp_path / "estimate" / "parameter_estimation.json")


@pytest.mark.slow  # ~20 s
def test_inverse_design(tmp_path):
    run("inverse_design.py", "--n", 32, "--steps", 2, "--out", tmp_path)
    result = strict_json(tmp_path / "inverse_design.json")
    assert result["steps"] >= 1 and result["history"]


@pytest.mark.slow  # ~30 s (its grids are fixed at 128² and 200²)
def test_pcg_rotation_mode(tmp_path):
    run("pcg_rotation_mode.py", "--out", tmp_path, "--iters", 300)
    assert list(tmp_path.glob("*.json")) and list(tmp_path.glob("*.md"))


@pytest.mark.slow  # ~20 s
def test_sensitivity_map_agrees_with_finite_differences(tmp_path):
    run("sensitivity_map.py", "--n", 48, "--out", tmp_path)
    r = strict_json(tmp_path / "sensitivity_map.json")
    # orientation-blind radial profiles agree closely whatever the grid does to the lattice's orientation
    assert r["converged"] and r["rel_l2_vs_fd_radial_profile"] < 1e-3
    assert r["d_r2_domega"] == pytest.approx(r["d_r2_domega_fd"], rel=1e-4)


@pytest.mark.slow  # ~30 s
def test_physics_informed(small_dataset, tmp_path):
    run("physics_informed.py", "--data", small_dataset, "--quick", "--out", tmp_path / "runs", "--report-dir", tmp_path,
        "--no-progress")
    assert strict_json(tmp_path / "physics_informed.json")["summary"]


def test_vortex_count_estimate_refits_its_stored_runs(tmp_path):
    """--from-json (no solving) remakes the committed tables from the committed runs."""
    committed = ROOT / "experiments" / "results" / "vortex_count_estimate"
    shutil.copytree(committed, tmp_path / "vce")
    run("vortex_count_estimate.py", "--from-json", "--out", tmp_path / "vce")
    assert (tmp_path / "vce" / "vortex_count_estimate.md").read_text() == \
        (committed / "vortex_count_estimate.md").read_text()


def test_zero_momentum_scores_runs_with_and_without_their_uniform_flow(small_run, tmp_path):
    run_dir, _ = small_run
    run("zero_momentum.py", "--runs", run_dir, "--split", "test", "--which", "best", "--out", tmp_path)
    result = strict_json(tmp_path / "zero_momentum.json")
    (row,) = result["runs"]
    s = row["summary"]
    assert 0 <= s["fidelity_mean"] <= 1 and 0 <= s["fidelity_zero_momentum_mean"] <= 1
    assert s["flow_speed_median"] > 0
    assert f"| {s['flow_speed_median']:.3f} |" in (tmp_path / "zero_momentum.md").read_text()
    # the dataset's ground states carry no momentum: an absolute bound, as these small states have hardly any
    # vortices and speeds of ~1e-4 (tests/gpe/test_phase_field.py checks a lattice against its speed)
    assert result["true_targets"]["flow_max"] < 1e-3
    assert (tmp_path / "zero_momentum.png").stat().st_size > 5_000
    import subprocess
    import sys

    bad = subprocess.run([sys.executable, str(ROOT / "experiments" / "zero_momentum.py"), "--runs",
                          str(tmp_path / "nothing"), "--out", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no training run" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    twice = subprocess.run([sys.executable, str(ROOT / "experiments" / "zero_momentum.py"), "--runs", str(run_dir),
                            str(run_dir), "--out", str(tmp_path)], capture_output=True, text=True)
    assert twice.returncode == 2 and "same name" in twice.stderr
