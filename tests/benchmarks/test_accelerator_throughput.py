import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accelerator_throughput.py"


def _run(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.mark.slow
def test_smoke_run_writes_every_part(tmp_path):
    out = tmp_path / "acc.json"
    r = _run("--smoke", "--parts", "solver,pcg", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    rows = res["solver"]["rows"]
    assert [row["batch"] for row in rows] == [2, 4]
    best = max(row["copy_bandwidth_gb_s"] for row in rows)
    assert res["solver"]["peak_copy_bandwidth_gb_s"] == pytest.approx(best)
    for row in rows:  # the roofline of the best bandwidth, 64 B a point and step
        assert row["fraction_of_roofline"] == pytest.approx(row["state_steps_per_s"] * 64 * 32**2 / (best * 1e9))
    pcg = res["pcg"]["rows"][0]
    assert pcg["batch"] == 2 and pcg["ground_states_per_s"] > 0 and 0 <= pcg["converged_fraction"] <= 1


def test_bad_arguments_exit_2(tmp_path):
    for args in (["--parts", "solver,gpu"], ["--parts", "models"], ["--steps", "3"], ["--solver-batches", "0"]):
        r = _run(*args, "--out", str(tmp_path / "x.json"), cwd=tmp_path)
        assert r.returncode == 2, args
        assert "Traceback" not in r.stderr
