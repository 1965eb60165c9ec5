import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_optimizer_study_writes_report(small_dataset, tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "optimizer_comparison.py"), "--data", str(small_dataset),
           "--quick", "--out", str(tmp_path), "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "optimizer_comparison.json").read_text())
    assert set(report["summary"]) == {"sgd", "adam", "adamw"}
    assert all(len(r["val_ref"]) == 3 for r in report["runs"]) and len(report["runs"]) == 6
    table = (tmp_path / "optimizer_comparison.md").read_text()
    assert "| adamw |" in table
    assert (tmp_path / "optimizer_comparison.png").stat().st_size > 10_000
