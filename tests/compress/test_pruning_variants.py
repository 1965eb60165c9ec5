import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pruning_variants_seeds_and_longer_last_stage(small_dataset, tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "pruning_variants.py"), "--data", str(small_dataset),
           "--out", str(tmp_path / "run"), "--report-dir", str(tmp_path / "rep"), "--epochs", "1", "--width", "4",
           "--ft-epochs", "1", "--last-epochs", "2", "--schedule", "0.5,0.9", "--variants", "global",
           "--seeds", "0,3", "--report-at", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    rep = json.loads((tmp_path / "rep" / "pruning_variants.json").read_text())
    # one dense control per seed, trained as long as the chain: 1 + 2 epochs (+ the starting point)
    assert sorted(rep["dense_control_mse"]) == ["0", "3"]
    assert all(len(d) == 4 for d in rep["dense_control_mse"].values())
    rows = rep["rows"]
    assert [(r["seed"], r["sparsity"]) for r in rows] == [(0, 0.5), (0, 0.9), (3, 0.5), (3, 0.9)]
    assert [r["kept_epoch"] <= e for r, e in zip(rows, [1, 2, 1, 2])] == [True] * 4
    for r in rows:
        dense = rep["dense_control_mse"][str(r["seed"])][1 if r["sparsity"] == 0.5 else 3]
        assert r["ratio"] == pytest.approx(r["mse"] / dense)
    # the last stage read at 1 and 2 of its 2 epochs: the keep rule over that prefix, against the control as long
    for r in rows[1::2]:
        control = rep["dense_control_mse"][str(r["seed"])]
        at = r["at"]
        assert sorted(at) == ["1", "2"]
        assert at["2"]["mse"] == pytest.approx(r["mse"], rel=1e-6)
        assert at["1"]["mse"] == pytest.approx(r["mse"], rel=1e-6) or r["kept_epoch"] == 2
        for e in (1, 2):
            assert at[str(e)]["ratio"] == pytest.approx(at[str(e)]["mse"] / control[1 + e])
    # other shuffling orders give other fine-tuned models
    assert rows[0]["mse"] != rows[2]["mse"]
    md = (tmp_path / "rep" / "pruning_variants.md").read_text()
    assert "read at other lengths" in md and "| 1 | 2 |" in md
    assert "last stage 2" in md and "median [min–max] over seeds [0, 3]" in md and "| global |" in md


def test_pruning_variants_rejects_bad_seeds():
    cmd = [sys.executable, str(ROOT / "experiments" / "pruning_variants.py"), "--seeds", "1,x"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--seeds must be comma-separated integers" in run.stderr
