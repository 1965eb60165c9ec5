"""benchmarks/report.py: the README's Results section is its output, and it renders every result file."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def test_readme_results_section_is_the_report_output():
    text = (ROOT / "benchmarks" / "README.md").read_text()
    begin, end = text.index(report.BEGIN) + len(report.BEGIN) + 1, text.index(report.END)
    assert text[begin:end] == report.render_all(), "run `python benchmarks/report.py --write`"


def test_every_result_json_has_a_renderer():
    found = {p.relative_to(report.RESULTS).with_suffix("").as_posix() for p in report.RESULTS.rglob("*.json")}
    skipped = {f for f in found if f.startswith(tuple(report.SKIPPED))}
    assert skipped, "the skip list names files that no longer exist"
    assert found - skipped == {name for name, _ in report.SECTIONS}


@pytest.mark.parametrize("name,renderer", report.SECTIONS, ids=[n for n, _ in report.SECTIONS])
def test_each_file_renders_a_table_under_its_name(name, renderer):
    text = report.render(report.RESULTS / f"{name}.json", renderer)
    assert text.startswith(f"`{name}.json`: ")
    assert "\n|---|" in text  # at least one table


def test_missing_files_render_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert report.render_all() == ""
    with pytest.raises(ValueError, match="no result file"):
        report.render(tmp_path / "solver_throughput.json", report.solver)


def test_a_table_holds_the_numbers_of_its_file(tmp_path, monkeypatch):
    d = dict(device="cpu", backend="cpu", cpu_count=2, jax_version="0.0", n=64, batch=4, steps_per_call=10,
             rounds=5, calls_per_round=3, median_ms_per_step=dict(quiet=2.0, busy=3.5), busy_over_quiet=1.75,
             loadavg_1_5_15=[0.3, 0.5, 0.5])
    (tmp_path / "fft_contention.json").write_text(json.dumps(d))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    out = report.render_all()
    assert out.startswith("### fft_contention\n\n`fft_contention.json`: ")
    assert "n = 64, batch 4" in out and "load average 0.3." in out
    assert "| quiet | 2.00 |\n| busy | 3.50 |" in out and "Busy / quiet: 1.75×." in out


def test_write_replaces_only_the_section(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nabove\n\n{report.BEGIN}\nstale table\n{report.END}\n\nbelow\n")
    assert report.main(["--write", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text == f"# Title\n\nabove\n\n{report.BEGIN}\n{report.render_all()}{report.END}\n\nbelow\n"
    report.main(["--write", "--readme", str(readme)])
    assert readme.read_text() == text


def test_write_needs_both_markers(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.END}\n{report.BEGIN}\n")
    with pytest.raises(SystemExit) as e:
        report.main(["--write", "--readme", str(readme)])
    assert e.value.code == 2 and "report.py: begin" in capsys.readouterr().err
    assert readme.read_text() == f"{report.END}\n{report.BEGIN}\n"
