"""A pipeline rerun trusts a finished stage only while its record and the files it wrote are intact."""

import json
import shutil

import pytest

from bec_jax.cli import main
from tests.reliability.test_cli_and_api import TINY


@pytest.mark.slow
def test_resume_checks_what_each_stage_left(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pipeline", "--out", str(out), *TINY]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    # everything a later stage needs is deleted: the rerun computes it again instead of reporting ghosts
    (out / "data.h5").unlink()
    shutil.rmtree(out / "train")
    shutil.rmtree(out / "models")
    capsys.readouterr()
    assert main(args) == 0
    log = capsys.readouterr().out
    assert "generate: running again (data.h5 is missing)" in log
    assert all((out / "models" / m / ".bec_jax.json").is_file() for m in report["models"])
    # an edited stage record is not published
    stage = out / "stages" / "evaluate.json"
    rec = json.loads(stage.read_text())
    rec["summary"]["mse"] = -42.0
    stage.write_text(json.dumps(rec))
    assert main(args) == 0
    assert "evaluate: running again (stages/evaluate.json was changed" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["evaluation"]["mse"] > 0
    # a file bec_jax wrote that now holds other bytes is refused, never overwritten
    raw = bytearray((out / "data.h5").read_bytes())
    raw[-100] ^= 0xFF
    (out / "data.h5").write_bytes(bytes(raw))
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.h5" in err[0] and "was changed" in err[0]
