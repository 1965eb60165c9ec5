"""experiments/reference_campaign.sh without its hours of work: its argument checks and `--status`, which a later
sitting reads to choose what to run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def campaign(tmp_path, *args, timeout=60, **env):
    return subprocess.run(["bash", str(ROOT / "experiments" / "reference_campaign.sh"), *map(str, args)], cwd=ROOT,
                          env=dict(os.environ, RUNS=str(tmp_path / "runs"), **env), capture_output=True, text=True,
                          timeout=timeout)


def test_bad_steps_and_runs_are_one_line_errors(tmp_path):
    for env, what in ((dict(STEPS="8 10"), "STEPS takes steps 1 to 9, got '10'"),
                      (dict(OPT_RUNS="adam"), "OPT_RUNS takes optimizer:seed")):
        done = campaign(tmp_path, **env)
        assert done.returncode == 2 and what in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_an_unknown_argument_is_a_one_line_error_not_the_campaign(tmp_path):
    # BEC_JAX, PYTHON: a campaign started by mistake fails at once instead of running for hours
    for arg in ("--stauts", "status", "--help", ""):
        done = campaign(tmp_path, arg, BEC_JAX="false", PYTHON="false")
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and not done.stdout
        assert f"unknown argument '{arg}'" in done.stderr and "--status" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_status_counts_each_steps_records(tmp_path):
    done = campaign(tmp_path, "--status")
    assert done.returncode == 2 and "no campaign in RUNS=" in done.stderr
    assert not (tmp_path / "runs").exists()  # asking creates nothing
    runs = tmp_path / "runs"
    for record in ("paper/stages/generate.json", "paper/stages/train.json", "int8_reference/quantize.json",
                   "prune_iterative/prune.json", "prune_oneshot_0.995/prune.json",
                   "optimizers/sgd_seed1/eval_val_latest/evaluation.json",
                   "optimizers/adam_seed2/metrics.json"):  # still training: not evaluated
        (runs / record).parent.mkdir(parents=True, exist_ok=True)
        (runs / record).write_text("{}")
    done = campaign(tmp_path, "--status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("step 1: 0 of 2 records; missing paper/report.json")
    assert lines[1] == "  pipeline stages finished: generate train"
    assert lines[2] == "step 2: 1 of 1 records"
    assert lines[3] == "step 3: 1 of 2 records; missing prune_iterative/bn_recalibration.json"
    assert lines[4].startswith("step 4: 1 of 6 records; missing prune_oneshot_0.99/prune.json prune_oneshot_0.999/")
    assert lines[8].startswith("step 8: 1 of 6 records; missing optimizers/adam_seed1/") and "adam_seed2" in lines[8]
    assert lines[9] == "step 9: to run (step 3's record predates kept stages)"
    (runs / "prune_iterative" / "stages").mkdir()
    assert "step 9" not in campaign(tmp_path, "--status").stdout


def test_the_committed_tables_are_remade_from_the_committed_records(tmp_path):
    """--table: experiments/results/reference_comparison is what the current code writes from the records
    collected in experiments/results/paper_cpu, and paper_cpu/first_machine/reference_comparison from that
    machine's records (a change that moves a committed figure or note fails here)."""
    done = campaign(tmp_path, "--table", tmp_path / "nowhere", tmp_path / "t")
    assert done.returncode == 2 and "no paper run's report.json" in done.stderr and not (tmp_path / "t").exists()
    for mode, what in (("--table", "--table DIR TABLE"), ("--collect", "--collect DEST TABLE")):
        done = campaign(tmp_path, mode, tmp_path / "t")
        assert done.returncode == 2 and done.stderr == f"reference_campaign.sh: {mode} takes two folders: {what}\n"
    paper = "experiments/results/paper_cpu"  # relative to the repository, as the tables name their records
    for records, committed in ((paper, "experiments/results/reference_comparison"),
                               (f"{paper}/first_machine", f"{paper}/first_machine/reference_comparison")):
        out = tmp_path / committed.replace("/", "_")
        done = campaign(tmp_path, "--table", records, out, timeout=300, PYTHON=sys.executable)
        assert done.returncode == 0, done.stderr[-3000:]
        for name in ("reference_comparison.md", "reference_comparison.json"):
            assert (out / name).read_text() == (ROOT / committed / name).read_text(), (committed, name)
        assert (out / "pruning.png").is_file() and (ROOT / committed / "pruning.png").is_file()
    # the figure's points are the table's: each pruning row's model at its sparsity
    result = json.loads((ROOT / "experiments/results/reference_comparison/reference_comparison.json").read_text())
    rows = {r["quantity"]: r for r in result["rows"]}
    curves = result["pruning_curves"]["curves"]
    for label, quantity in (("bec_jax's recipe", "bec_jax's recipe {:.1%}, test MSE"),
                            ("the paper's iterative schedule, run by bec_jax", "iterative pruning {:.1%}, test MSE")):
        points = {p["sparsity"]: p for p in curves[label]}
        for s in (0.99, 0.995, 0.999):
            row = rows[quantity.format(s)]
            assert (points[s]["mse"], points[s]["vortex_count_accuracy"]) == (row["bec_jax"],
                                                                             row["vortex_count_accuracy"])
    assert result["pruning_curves"]["baseline"]["mse"] == rows["dense baseline of the pruning study: test MSE"][
        "bec_jax"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # the campaign at toy sizes, ~35 short processes: ~8 min on 2 cores
def test_a_toy_campaign_runs_its_steps_resumes_and_collects(tmp_path):
    """Steps 1–4 and 6–8 at toy sizes (data, model and training epochs; step 5 trains as step 8 does, which runs
    one seed): every step's records exist, a rerun trains and prunes nothing again, and --collect copies the records
    (no data, no models) and writes the table from them."""
    env = dict(BEC_JAX=str(Path(sys.executable).parent / "bec-jax"), PYTHON=sys.executable, STEPS="1 2 3 4 6 7 8",
               OPT_RUNS="adam:1", PIPELINE_ARGS="--data-n 32 --data-n-groups 8 --data-states-per-group 2 "
                                             "--model-depth 2 --train-epochs 1 --compress-ft-epochs 1",
               TRAIN_ARGS="--model-depth 2", EPOCHS="1")  # pruning with the steps' own epochs: toy epochs are short
    done = campaign(tmp_path, timeout=1800, **env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = campaign(tmp_path, "--status").stdout.splitlines()
    finished = [line.split(":")[0] for line in status if line.startswith("step") and "missing" not in line]
    assert finished == [f"step {s}" for s in (1, 2, 3, 4, 6, 7)], status
    assert [line for line in status if line.startswith("step 8")][0].startswith("step 8: 1 of 6 records")
    runs = tmp_path / "runs"
    records = sorted(runs.glob("*/*.json")) + sorted(runs.glob("*/*/eval_val_latest/evaluation.json"))
    # the pipeline's report and the table are remade; nothing else is written again
    before = {p: p.stat().st_mtime_ns for p in records if p.parent.name not in ("paper", "reference_comparison")}
    history = json.loads((runs / "optimizers" / "adam_seed1" / "metrics.json").read_text())["history"]
    again = campaign(tmp_path, timeout=900, **env)  # every step has finished: nothing runs again
    assert again.returncode == 0 and "resuming" not in again.stdout + again.stderr, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert json.loads((runs / "optimizers" / "adam_seed1" / "metrics.json").read_text())["history"] == history
    dest, table = tmp_path / "dest", tmp_path / "table"
    done = campaign(tmp_path, "--collect", dest, table, **env)
    assert done.returncode == 0, done.stderr[-3000:]
    for record in ("report.json", "metrics.json", "eval_val_latest/evaluation.json", "int8_reference/quantize.json",
                   "prune_iterative/prune.json", "prune_iterative/bn_recalibration.json", "prune_recipe/prune.json",
                   "prune_dense_baseline/prune.json", "optimizers/adam_seed1/metrics.json"):
        assert (dest / record).is_file(), record
    assert not [p for p in dest.rglob("*") if p.suffix == ".h5" or p.name in ("checkpoints", "model")]
    rows = {r["quantity"]: r for r in json.loads((table / "reference_comparison.json").read_text())["rows"]}
    assert (table / "pruning.png").is_file()
    for quantity in ("iterative pruning 99.9%, test MSE", "bec_jax's recipe 99.9%, test MSE",
                     "int8 per-tensor, the reference's scheme: test MSE change"):
        assert rows[quantity]["bec_jax"] is not None, quantity
    assert "the dense baseline" in rows["iterative pruning 99.0%, test MSE"]["note"]  # step 6's run


def test_a_script_changed_while_it_runs_does_not_change_the_run(tmp_path):
    """bash reads a script as it runs it: the script rewritten in place during a campaign must not change the run.
    The campaign's bec-jax here overwrites the script (a copy) with lines that exit 7, then succeeds."""
    script = tmp_path / "campaign.sh"
    script.write_text((ROOT / "experiments" / "reference_campaign.sh").read_text())
    fake = tmp_path / "bec-jax"
    fake.write_text(f"#!/bin/bash\nyes 'echo MODIFIED; exit 7' | head -c 200000 > '{script}'\n")
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, RUNS=str(tmp_path / "runs"), STEPS="2", BEC_JAX=str(fake)))
    assert "MODIFIED" in script.read_text()  # the step ran and changed the script
    assert done.returncode == 0 and "MODIFIED" not in done.stdout, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].endswith(" done")
