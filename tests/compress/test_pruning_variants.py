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
    assert (tmp_path / "rep" / "pruning_variants.png").stat().st_size > 10_000
    # the two seeds as two runs, pooled again: the same report, but for the line that names the runs
    for seed in (0, 3):
        part = dict(rep, settings=dict(rep["settings"], seeds=[seed]),
                    dense_control_mse={str(seed): rep["dense_control_mse"][str(seed)]},
                    rows=[r for r in rows if r["seed"] == seed])
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "pruning_variants.json").write_text(json.dumps(part))
    merge = [sys.executable, str(ROOT / "experiments" / "pruning_variants.py"), "--merge", "s3,s0",
             "--report-dir", "pooled"]
    run = subprocess.run(merge, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    pooled = (tmp_path / "pooled" / "pruning_variants.md").read_text().splitlines()
    assert pooled[2] == "Seeds pooled from the runs `s3`, `s0`."
    assert pooled[:2] + pooled[4:] == md.splitlines()
    assert json.loads((tmp_path / "pooled" / "pruning_variants.json").read_text())["rows"] == rows


def test_pruning_variants_rejects_bad_seeds():
    cmd = [sys.executable, str(ROOT / "experiments" / "pruning_variants.py"), "--seeds", "1,x"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--seeds must be comma-separated integers" in run.stderr


def _fake_run(path, seeds, **settings):
    """A pruning_variants.json as a run with these seeds would write it (no training)."""
    path.mkdir()
    s = dict(ft_epochs=1, ft_lr=1e-3, last_epochs=2, report_at=[1, 2], keep="best", lr_schedule="constant",
             precise_bn=False, schedule=[0.5], seeds=seeds, report_dir=str(path), merge=None)
    rows = [dict(variant="global", seed=k, sparsity=0.5, mse=0.1 * (k + 1), ratio=0.9 + 0.01 * k,
                 at={"1": dict(mse=0.1, ratio=1.0 + k), "2": dict(mse=0.1, ratio=0.9 + 0.01 * k)}) for k in seeds]
    (path / "pruning_variants.json").write_text(json.dumps(dict(
        settings=dict(s, **settings), dense_control_mse={str(k): [0.1, 0.1, 0.1] for k in seeds}, rows=rows,
        seconds=1.0)))


def test_pruning_variants_merge_pools_seeds_and_rejects_other_settings(tmp_path):
    script = str(ROOT / "experiments" / "pruning_variants.py")
    _fake_run(tmp_path / "a", [0, 1])
    _fake_run(tmp_path / "b", [2])
    _fake_run(tmp_path / "c", [1])
    _fake_run(tmp_path / "d", [3], ft_lr=1e-4)
    merge = lambda dirs: subprocess.run([sys.executable, script, "--merge", dirs, "--report-dir", "m"],
                                        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    run = merge("a,b")
    assert run.returncode == 0, run.stderr[-2000:]
    md = (tmp_path / "m" / "pruning_variants.md").read_text()
    assert "median [min–max] over seeds [0, 1, 2]" in md
    assert "| global | 0.91× [0.9–0.92] |" in md  # the median of 0.90, 0.91, 0.92
    assert "| global | 2× [1–3] | 0.91× [0.9–0.92] |" in md  # read at 1 and 2 epochs
    for dirs, why in [("a,c", "the runs share seeds: [0, 1, 1]"), ("a,d", "other settings than 'a': ft_lr"),
                      ("a,nowhere", "no pruning_variants.json in 'nowhere'"), ("a", "at least two report dirs")]:
        run = merge(dirs)
        assert run.returncode == 2 and why in run.stderr, (dirs, run.stderr[-500:])
