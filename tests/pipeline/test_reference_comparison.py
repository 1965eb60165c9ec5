import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "results" / "gpu_h200" / "paper_pipeline"
spec = importlib.util.spec_from_file_location("reference_comparison", ROOT / "experiments" / "reference_comparison.py")
rc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rc)


def test_rows_come_from_the_run_and_missing_ones_say_so(tmp_path):
    report = json.loads((RUN / "report.json").read_text())
    result = rc.compare(RUN, {})
    assert (result["grid_n"], result["n_states"], result["params"]) == (200, 1680, 17_314_578)
    assert result["test_mse_ref"] == report["evaluation"]["mse_ref"]
    rows = {r["quantity"]: r for r in result["rows"]}
    adam = rows["test MSE, Adam (dense, best checkpoint)"]
    assert adam["reference"] == 7.8e-4 and adam["bec_jax_masked_mse"] == report["evaluation"]["mse"]
    assert adam["verdict"] == ("matches or beats" if adam["bec_jax"] <= 7.8e-4 else "worse")
    sgd = rows["validation loss at epoch 50, sgd"]
    assert sgd["bec_jax"] is None and sgd["verdict"] is None and "not run" in sgd["note"]
    change = rows["int8 mixed: test MSE change"]["bec_jax"]
    models = report["models"]
    assert change == pytest.approx(models["int8_mixed"]["mse_ref"] / models["dense"]["mse_ref"] - 1)
    # another optimizer's run fills its row from its own metrics
    opt = tmp_path / "sgd"
    opt.mkdir()
    shutil.copy(RUN / "metrics.json", opt / "metrics.json")
    rows = {r["quantity"]: r for r in rc.compare(RUN, {"sgd": opt})["rows"]}
    assert rows["validation loss at epoch 50, sgd"]["bec_jax"] == rows["validation loss at epoch 50, adam"]["bec_jax"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        rc.main(["--run", str(tmp_path)])
    assert e.value.code == 2 and "no report.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        rc.main(["--run", str(RUN), "--optimizer-run", "rmsprop=x", "--out", str(tmp_path)])
    assert e.value.code == 2 and "NAME=DIR" in capsys.readouterr().err


def test_a_pruning_run_fills_the_rows_of_its_stages(tmp_path, capsys):
    prune = tmp_path / "prune"
    prune.mkdir()
    stages = [dict(sparsity=s, test_mse_pruned=1.0, test_mse_pruned_ref=0.5, test_mse_finetuned=m, test_mse_finetuned_ref=m / 4)
              for s, m in ((0.97, 1e-3), (0.99, 2e-3), (0.995, 3e-3))]
    (prune / "prune.json").write_text(json.dumps(dict(stages=stages)))
    rows = {r["quantity"]: r for r in rc.compare(RUN, {}, prune)["rows"]}
    r99 = rows["iterative pruning 99.0%, test MSE"]
    assert (r99["bec_jax"], r99["bec_jax_masked_mse"], r99["reference"]) == (5e-4, 2e-3, 9.1e-4)
    assert r99["verdict"] == "matches or beats"
    assert rows["iterative pruning 99.5%, test MSE"]["bec_jax"] == 7.5e-4
    assert rows["iterative pruning 99.9%, test MSE"]["bec_jax"] is None  # a stage the run did not reach
    with pytest.raises(SystemExit) as e:
        rc.main(["--run", str(RUN), "--pruning-run", str(tmp_path), "--out", str(tmp_path)])
    assert e.value.code == 2 and "no prune.json" in capsys.readouterr().err


def test_the_reference_int8_scheme_gets_its_own_rows(tmp_path):
    q = tmp_path / "q"
    q.mkdir()
    (q / "quantize.json").write_text(json.dumps(dict(mse_change=0.25, bytes_on_disk=16 * 2**20)))
    rows = {r["quantity"]: r for r in rc.compare(RUN, {}, None, q)["rows"]}
    change = rows["int8 per-tensor, the reference's scheme: test MSE change"]
    assert (change["reference"], change["bec_jax"], change["verdict"]) == (0.335, 0.25, "matches or beats")
    assert rows["int8 per-tensor, the reference's scheme: size on disk (MiB)"]["bec_jax"] == 16.0
