"""experiments/start_count.py: the k-start winner is the lowest finite energy among the first k starts, and the
summary and recommendation follow from it (synthetic runs: no solver here)."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "start_count", Path(__file__).resolve().parents[2] / "experiments" / "start_count.py")
sc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sc)


def run(energies, vortices):
    return dict(energy=energies, vortices=vortices, steps=[100] * len(energies), seeded=[10] * len(energies))


def test_best_of_takes_the_first_k_and_skips_nan():
    r = run([3.0, float("nan"), 2.5, 2.0] + [9.0] * 12, list(range(16)))
    assert [sc.best_of(r, k) for k in (1, 2, 4)] == [0, 0, 3]


def test_summary_and_recommendation():
    low, high = 2.0, 2.001
    a = run([high, low] + [high] * 14, [10, 8] + [10] * 14)  # the second start finds the lowest state
    b = run([high] * 3 + [low * (1 + 5e-6)] + [high] * 12, [10] * 3 + [8] + [10] * 13)  # the fourth, within rtol
    s = sc.summarise(dict(runs=dict(current=[a, b])), rtol=1e-5)
    assert s["lowest_energy"] == low and s["lowest_vortices"] == [8]
    per_k = s["rules"]["current"]["per_k"]
    frac = {k: per_k[k]["fraction_at_lowest"] for k in sc.KS}
    assert frac == {1: 0.0, 2: 0.5, 4: 1.0, 8: 1.0, 16: 1.0}
    assert per_k[1]["mean_excess"] == pytest.approx(high - low)
    assert per_k[2]["vortices"] == [8, 10] and per_k[4]["mean_iterations"] == 400
    assert per_k[4]["fraction_starts_at_lowest"] == pytest.approx(2 / 8)
    assert sc.recommend([dict(summary=s)], "current") == 4
    never = sc.summarise(dict(runs=dict(current=[a, run([high] * 16, [10] * 16)])), rtol=1e-5)
    assert sc.recommend([dict(summary=s), dict(summary=never)], "current") is None
    # the lowest state is the lowest of every rule's starts
    both = sc.summarise(dict(runs=dict(current=[a], previous=[run([high] * 16, [10] * 16)])), rtol=1e-5)
    assert both["rules"]["previous"]["per_k"][16]["fraction_at_lowest"] == 0.0
