"""experiments/reference_campaign.sh without its hours of work: its argument checks and `--status`, which a later
sitting reads to choose what to run."""

import os
import subprocess

from tests.conftest import ROOT


def campaign(tmp_path, *args, **env):
    return subprocess.run(["bash", str(ROOT / "experiments" / "reference_campaign.sh"), *args], cwd=ROOT,
                          env=dict(os.environ, RUNS=str(tmp_path / "runs"), **env), capture_output=True, text=True,
                          timeout=60)


def test_bad_steps_and_runs_are_one_line_errors(tmp_path):
    for env, what in ((dict(STEPS="8 10"), "STEPS takes steps 1 to 9, got '10'"),
                      (dict(OPT_RUNS="adam"), "OPT_RUNS takes optimizer:seed")):
        done = campaign(tmp_path, **env)
        assert done.returncode == 2 and what in done.stderr and len(done.stderr.splitlines()) == 1
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
