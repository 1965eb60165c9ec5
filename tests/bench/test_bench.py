"""bec_jax.bench: the NumPy baseline is the same scheme as bj.imaginary_time; `bec-jax bench` runs and refuses
bad input with exit code 2. (Speed itself is measured in benchmarks/, never here.)"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.bench.measure import (StepWorkload, WorkerError, WorkerPool, initial_states, numpy_imaginary_time,
                                   round_orders, step_row)
from bec_jax.cli import main
from tests.conftest import tol


@pytest.mark.parametrize("fft", ["numpy", "scipy"])
def test_numpy_step_is_the_same_scheme(precision, fft):
    dtype = "complex64" if precision == "float32" else "complex128"
    w = StepWorkload(32, 2, steps=7, dtype=dtype, g=200.0, omega=0.7, dt=0.02)  # odd: ends on a first-order step
    psi = initial_states(w)
    psi[1] *= 3.0  # any normalisation
    psi[1, 10, 12] += 0.2j  # not symmetric
    ref = np.asarray(bj.imaginary_time(bj.Grid(32, w.length), jnp.asarray(psi), w.g, w.omega, dt=w.dt, steps=w.steps))
    out = numpy_imaginary_time(psi, w, fft=fft)
    assert out.dtype == np.dtype(dtype) and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out, ref, atol=tol(precision, 2e-6, 1e-13), rtol=0)
    norms = np.sum(np.abs(out) ** 2, axis=(-2, -1)) * (w.length / 32) ** 2
    np.testing.assert_allclose(norms, 1.0, rtol=tol(precision, 1e-5, 1e-13))
    # a fresh Gaussian is not overwritten, and 200 steps keep a finite, normalised state (the folded norm is bounded)
    assert np.array_equal(psi[0], initial_states(w)[0])
    long = numpy_imaginary_time(psi, w, steps=200, fft=fft)
    assert np.all(np.isfinite(long))


def run_bench(tmp_path, *extra):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--n", "16", "--batch", "2", "--steps", "2", "--repeats", "2", "--starts", "1",
               "--g", "20", "--omega", "0.3", "--out", str(out), *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_bench_command_writes_json_and_table(tmp_path, capsys):
    r = run_bench(tmp_path)
    s = r["split_step"]
    assert set(s["ms_per_step"]) == {"bec_jax", "fft"} and "speedup_vs_numpy" not in s
    assert all(v > 0 for v in s["state_steps_per_s"].values())
    assert s["bec_jax_over_fft"] > 0 and len(s["load_average_before"]) == 3 and s["n"] == 16 and s["batch"] == 2
    assert s["round_orders"] == round_orders(["bec_jax", "fft"], s["repeats"], seed=0)  # the pool's first row
    gs = r["ground_state"]
    assert gs["batch"] == 2 and gs["n_starts"] == 1 and gs["ground_states_per_s"] > 0 and gs["converged"] == 2
    table = capsys.readouterr().out
    assert "FFT floor" in table and "ground states/s" in table and len(table.splitlines()) <= 24


def test_bench_times_coarse_to_fine_ground_states(tmp_path, capsys):
    gs = run_bench(tmp_path, "--n", "32", "--coarsen", "2")["ground_state"]
    assert gs["coarsen"] == 2 and gs["n"] == 32 and gs["converged"] == 2
    assert "relaxed on 16² first" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_command_numpy_baselines(tmp_path, capsys):
    s = run_bench(tmp_path, "--numpy", "--no-ground-states")["split_step"]
    assert set(s["ms_per_step"]) == {"bec_jax", "fft", "numpy", "scipy"}
    assert s["numpy_baseline"] in ("numpy", "scipy") and s["numpy_max_abs_diff"] < 1e-4 and s["speedup_vs_numpy"] > 0
    assert "speed-up vs the faster NumPy" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--n", "31"], "n must be an even int"),
    (["--dtype", "float16"], "dtype must be one of"),
    (["--omega", "1.2"], "|omega| < 1"),
    (["--g", "-1"], "g must be finite and >= 0"),
    (["--coarsen", "3"], "coarsening factor must be an integer"),
    (["--out", "bench.txt"], "--out must end in .json"),
])
def test_bench_bad_input_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("args", [["--batch", "0"], ["--repeats", "0"], ["--steps", "-2"]])
def test_bench_bad_counts_exit_2(args, capsys):
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{args[0][2:]} must be an int >= 1" in err and len(err.splitlines()) == 1


def test_worker_failure_is_one_error():
    with WorkerPool() as pool, pytest.raises(WorkerError, match="unknown contender 'nope'"):
        pool.measure(StepWorkload(16, 1, steps=1), ["nope"], 1)
    with pytest.raises(ValueError, match="unknown split-step contenders"):
        step_row(None, StepWorkload(16, 1), ["nope"])


def test_round_orders_shuffle_every_round_reproducibly():
    names = ["a", ("b", None), None, "d"]  # any hashable names, kept as they are
    orders = round_orders(names, 40, seed=3)
    assert all(sorted(map(repr, o)) == sorted(map(repr, names)) for o in orders)  # each once a round
    assert orders == round_orders(names, 40, seed=3) != round_orders(names, 40, seed=4)
    # not a rotation: a contender's predecessor changes from round to round
    before = {tuple(o[o.index("a") - 1:o.index("a")]) for o in orders}
    assert len(before) == len(names)  # none (first) and each of the three others
    assert round_orders(names, np.int64(2)) == round_orders(names, 2)
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="repeats must be an int >= 1"):
            round_orders(names, bad)
