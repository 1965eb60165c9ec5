"""Every experiment and benchmark script is run by some test (a script no test runs breaks silently when the
library changes under it)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
#: imported by the scripts, not run
HELPERS = {"benchmarks/common.py", "experiments/_seed_study.py", "experiments/_units.py"}


@pytest.mark.parametrize("script", sorted(str(p.relative_to(ROOT)) for folder in ("experiments", "benchmarks")
                                          for p in (ROOT / folder).glob("*.py")))
def test_script_is_run_by_a_test(script):
    if script in HELPERS:
        return
    name = Path(script).stem
    # as a quoted file name (run("x.py", ...), ROOT / "benchmarks" / "x.py", run_script("benchmarks/x.py")), or
    # named in test_smoke.py's tables
    quoted = (f'"{name}.py"', f'"{script}"', f'"{name}": [', f'("{name}", [')
    assert any(p in TESTS for p in quoted), f"no test runs {script}"
