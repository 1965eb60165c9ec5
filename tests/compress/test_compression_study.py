"""experiments/compression_study.py end to end at its quick size."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~2 min on 2 cores
def test_quick_compression_study_writes_its_report(small_dataset, tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "compression_study.py"), "--quick", "--data", str(small_dataset),
           "--out", str(tmp_path / "run"), "--report-dir", str(tmp_path / "report"), "--sparsities", "0.5,0.9"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "quick" / "compression_study.json").read_text())
    text = json.dumps(report)
    # bec_jax's int8 schemes, each with its int8 path and QAT; the reference's scheme (no int8 path) is not one
    for scheme in ("per_tensor", "per_channel", "mixed"):
        assert f'"{scheme}"' in text
    assert "reference_per_tensor" not in text
    assert (tmp_path / "report" / "quick" / "compression_study.md").stat().st_size > 0
