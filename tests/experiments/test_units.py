"""experiments/_units.py: the saved units of a killed experiment are read back, not computed again, and only
under the settings they were made with; start_count resumes through it."""

import importlib.util
import json
import math
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
from _units import Units  # noqa: E402


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_a_saved_unit_is_read_back_and_finish_removes_them(tmp_path):
    compute, calls = counting({"energy": [1.5, float("nan")], "n": 3})
    first = Units(tmp_path / "units", dict(n=64, rules=("a", "b")))
    assert first("g100_omega0.85", compute)["n"] == 3 and first.resumed == 0
    again = Units(tmp_path / "units", dict(n=64, rules=["a", "b"]))  # tuples are saved as lists
    v = again("g100_omega0.85", compute)
    assert len(calls) == 1 and again.resumed == 1 and v["n"] == 3 and v["energy"][0] == 1.5
    assert math.isnan(v["energy"][1])
    again.finish()
    assert not (tmp_path / "units").exists()


def test_other_settings_are_refused_with_the_difference(tmp_path, capsys):
    Units(tmp_path / "u", dict(n=64, seed=0))("a", lambda: 1)
    with pytest.raises(SystemExit) as stop:
        Units(tmp_path / "u", dict(n=128, seed=0))
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1
    assert "other settings (n 64 there, 128 here); rerun with those settings" in err[0]
    Units(tmp_path / "v", dict(n=1))  # killed before its first unit: nothing saved, other settings may start
    assert Units(tmp_path / "v", dict(n=2)).settings == json.loads((tmp_path / "v" / "settings.json").read_text())
    (tmp_path / "u" / "settings.json").unlink()  # as a finish() killed half-way leaves it
    with pytest.raises(SystemExit) as stop:
        Units(tmp_path / "u", dict(n=128, seed=0))
    assert stop.value.code == 2 and "holds saved units but no settings.json" in capsys.readouterr().err


def test_a_damaged_unit_is_computed_again_and_bad_names_refused(tmp_path, capsys):
    units = Units(tmp_path / "u", {})
    (tmp_path / "u" / "a.json").write_text('{"trunc')
    compute, calls = counting([1, 2])
    assert units("a", compute) == [1, 2] and len(calls) == 1
    assert "is not valid JSON" in capsys.readouterr().err
    assert json.loads((tmp_path / "u" / "a.json").read_text()) == [1, 2]
    for bad in ("../x", "a b", "settings", ""):
        with pytest.raises(ValueError, match="unit names"):
            units(bad, compute)


def test_start_count_resumes_after_a_kill(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("start_count_units", ROOT / "experiments" / "start_count.py")
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    solved = []

    def fake(n, g, omega, seed, rule, n_starts=16, coarsen=1):  # no solver: energies that differ by seed
        if kill and len(solved) == 2:
            raise KeyboardInterrupt
        solved.append((g, omega, seed, rule))
        e = [2.0 + 0.01 * ((i + seed) % 3) for i in range(n_starts)]
        return dict(length=10.0, seeded=[8] * n_starts, energy=e, vortices=[8] * n_starts, residual=[1e-5] * n_starts,
                    converged=[True] * n_starts, steps=[100] * n_starts, touches_edge=[False] * n_starts)

    monkeypatch.setattr(sc, "relax_starts", fake)
    monkeypatch.setattr(sc.bj, "use_cpu_cores", lambda *a: 0)  # jax is running in this process already
    argv = ["--quick", "--out", str(tmp_path / "sc")]
    kill = True
    with pytest.raises(KeyboardInterrupt):
        sc.main(argv)
    assert len(list((tmp_path / "sc" / "units").glob("g*.json"))) == 2
    kill = False
    assert sc.main(argv) == 0
    assert len(solved) == 4  # 2 seeds x 2 rules: the two saved ones were not solved again
    result = json.loads((tmp_path / "sc" / "start_count.json").read_text())
    assert result["resumed_runs"] == 2 and not (tmp_path / "sc" / "units").exists()
    assert [r["energy"][0] for r in result["cases"][0]["runs"]["previous"]] == [2.0, 2.01]
