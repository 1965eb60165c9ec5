"""Dataset generation: contents, determinism, conflicts, resume after SIGKILL."""

import dataclasses
import importlib
import json
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

import bec_jax as bj
import bec_jax.data as bd

TINY = bd.GenerateConfig(n=16, n_groups=4, states_per_group=2, g_range=(20.0, 60.0), omega_range=(0.2, 0.5),
                         batch_size=2, n_starts=1, max_iter=300, keep_unconverged=True)
CLI = [sys.executable, "-m", "bec_jax.cli", "generate", "--no-progress", "--n", "16", "--n-groups", "4",
       "--states-per-group", "2", "--g-range", "20,60", "--omega-range", "0.2,0.5", "--batch-size", "2",
       "--n-starts", "1", "--max-iter", "300", "--keep-unconverged"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import warnings

    path = tmp_path_factory.mktemp("gen") / "tiny.h5"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        summary = bd.generate(TINY, path, progress=False)
    summary["warnings"] = [x for x in w if x.category is bj.GridTooCoarseWarning]
    return path, summary


@pytest.mark.parametrize("preset", sorted(bd.PRESETS))
def test_the_presets_resolve_their_vortex_cores(preset):
    c = bd.PRESETS[preset]
    (_, g1), (o0, o1) = c.g_range, c.omega_range
    assert c.grid.dx <= 2 * bj.healing_length(g1, min(abs(o0), abs(o1)))  # the densest corner: no warning


def test_a_grid_too_coarse_for_the_ranges_is_warned_of_once(tiny):
    """16² at L = 13.4 (dx = 0.83) does not resolve g = 60's cores (ξ = 0.34): one warning for the dataset, not
    one per batch (4 here)."""
    (w,) = tiny[1]["warnings"]
    assert "have vortex cores" in str(w.message) and "resolves them (dx <= ξ)" in str(w.message)


def test_dataset_contents_and_attributes(tiny):
    path, summary = tiny
    assert summary["status"] == "complete" and summary["n_samples"] == 8
    arrays, attrs = bd.read_h5(path)
    assert arrays["psi"].shape == (8, 16, 16) and arrays["psi"].dtype == np.complex64
    np.testing.assert_array_equal(arrays["group"], np.repeat(np.arange(4), 2))
    assert len(set(arrays["seed"])) == 8
    g, om = arrays["g"], arrays["omega"]
    assert np.all((20 <= g) & (g <= 60)) and np.all((0.2 <= om) & (om <= 0.5))
    assert np.all(g[::2] == g[1::2])  # one (g, Ω) per group
    np.testing.assert_allclose(np.sum(np.abs(arrays["psi"]) ** 2, (1, 2)) * (attrs["grid_length"] / 16) ** 2, 1,
                               rtol=1e-5)
    assert json.loads(attrs["config"])["n"] == 16 and attrs["bec_jax_version"] and attrs["created"]
    assert bd.load_grid(attrs).n == 16
    with h5py.File(path) as f:  # chunked + compressed, readable with plain h5py
        assert f["psi"].chunks == (1, 16, 16) and f["psi"].compression == "gzip"


def test_same_config_same_data_and_conflict_is_refused(tiny, tmp_path):
    path, _ = tiny
    again = tmp_path / "again.h5"
    summary = bd.generate(TINY, again, progress=False)
    a, b = bd.read_h5(path)[0], bd.read_h5(again)[0]
    np.testing.assert_array_equal(a["psi"], b["psi"])
    # the content digest names the states, not the write: equal for both generations, the arrays' own, and
    # changed by one flipped value
    from bec_jax.data.generate import content_sha256

    assert summary["content_sha256"] == tiny[1]["content_sha256"] == content_sha256(b)
    b["psi"][0, 0, 0] += 1e-6
    assert content_sha256(b) != summary["content_sha256"]
    # Rerun on a finished file with the same config: a no-op; another config: refused.
    again = bd.generate(TINY, path, progress=False)
    assert again["status"] == "complete" and again["seconds_this_run"] == 0 and again["batches_this_run"] == 0
    with pytest.raises(bd.DatasetConflict, match=r"different config \(seed: stored 0, given 1\)"):
        bd.generate(dataclasses.replace(TINY, seed=1), path, progress=False)


def test_a_run_resumes_with_another_batch_size(tiny, tmp_path):
    """Two batches of 2 saved, the rest solved in batches of 3 (one padded): the same states as one run's
    (to round-off: a batch is vectorised), in order; a complete dataset is complete at any batch size."""
    out = tmp_path / "d.h5"
    assert bd.generate(TINY, out, progress=False, max_batches=2)["samples_done"] == 4
    wider = dataclasses.replace(TINY, batch_size=3)
    with pytest.raises(bd.DatasetConflict, match=r"different config \(seed: stored 0, given 1\)"):
        bd.generate(dataclasses.replace(wider, seed=1), out, progress=False)  # the batch size is not named
    summary = bd.generate(wider, out, progress=False)
    assert summary["status"] == "complete" and summary["batches_this_run"] == 2
    a, b = bd.read_h5(tiny[0])[0], bd.read_h5(out)[0]
    for k in ("g", "omega", "seed", "group", "vortices"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    np.testing.assert_allclose(b["energy"], a["energy"], rtol=1e-5)
    assert bd.generate(dataclasses.replace(TINY, batch_size=8), out, progress=False)["status"] == "complete"


def test_a_partial_run_of_numbered_batches_resumes(tiny, tmp_path):
    """A partial folder written when batch files were numbered (batch_000001.h5: positions 2..3 at batch size
    2) is renamed to positions and resumed, here at batch size 4."""
    out = tmp_path / "d.h5"
    bd.generate(TINY, out, progress=False, max_batches=2)
    part = tmp_path / "d.h5.partial"
    (part / "batch_000000002_000000004.h5").rename(part / "batch_000001.h5")
    (part / "batch_000000000_000000002.h5").rename(part / "batch_000000.h5")
    summary = bd.generate(dataclasses.replace(TINY, batch_size=4), out, progress=False)
    assert summary["status"] == "complete" and summary["batches_this_run"] == 1  # positions 4..7
    np.testing.assert_array_equal(bd.read_h5(out)[0]["seed"], bd.read_h5(tiny[0])[0]["seed"])


@pytest.mark.slow  # integration test over ~15 s on 2 cores: `make test-slow`
def test_only_converged_states_are_kept_by_default(tmp_path, monkeypatch):
    """Two single-state batches; the first sample's batch is solved with an unreachable
    tolerance (residual 1e-30, far below float32 round-off), so it cannot converge
    whatever the preconditioner or iteration budget; the second converges as usual."""
    cfg = dataclasses.replace(TINY, keep_unconverged=False, n_groups=2, states_per_group=1, batch_size=1)
    g = bd.sample_parameters(cfg)[0]
    gen = importlib.import_module("bec_jax.data.generate")  # the module (bd.generate is the function)
    solve = gen.ground_state

    def ground_state(grid, g_batch, omega, **kw):
        if np.all(g_batch == g[0]):
            kw.update(tol_residual=1e-30, tol_energy=1e-30)
        return solve(grid, g_batch, omega, **kw)

    monkeypatch.setattr(gen, "ground_state", ground_state)
    s = bd.generate(cfg, tmp_path / "x.h5", progress=False)
    assert (s["n_samples"], s["n_failed"], s["n_not_converged"], s["n_touch_edge"]) == (1, 1, 1, 0)
    kept = bd.read_h5(tmp_path / "x.h5")[0]
    assert kept["psi"].shape == (1, 16, 16)
    assert kept["g"].tolist() == [g[1]] and kept["converged"].tolist() == [True]  # the converged one is kept


# Runs the CLI in a child that SIGKILLs itself while writing the second batch
# (after the temporary file is written, before the rename): deterministic,
# unlike racing a kill against the solver from outside.
DIE_IN_SECOND_WRITE = """
import os, signal, sys
from bec_jax.cli import main
from bec_jax.data import storage
written = []
def dying_write(path, arrays, attrs):
    if written:
        storage.write_h5(path.with_name(path.name + ".tmp"), arrays, attrs)
        os.kill(os.getpid(), signal.SIGKILL)
    storage.atomic_write_h5(path, arrays, attrs)
    written.append(path)
sys.modules["bec_jax.data.generate"].atomic_write_h5 = dying_write
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # ~55 s on 2 cores: run by `make test-slow`
def test_sigkill_mid_generation_then_resume_gives_identical_data(tiny, tmp_path):
    out = tmp_path / "killed.h5"
    part = tmp_path / "killed.h5.partial"
    killed = subprocess.run([sys.executable, "-c", DIE_IN_SECOND_WRITE] + CLI[3:] + ["--out", str(out)],
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert sorted(p.name for p in part.glob("batch_*")) == ["batch_000000000_000000002.h5",
                                                            "batch_000000002_000000004.h5.tmp"]
    assert not out.exists()
    # A conflicting config does not touch the partial run.
    bad = subprocess.run(CLI + ["--out", str(out), "--seed", "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "different config (seed: stored" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stdout == ""  # the refusal is its only line
    ok = subprocess.run(CLI + ["--out", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.splitlines()[0].endswith("; resuming, 2 of 8 states saved") and not part.exists()
    a, b = bd.read_h5(tiny[0])[0], bd.read_h5(out)[0]
    for k in ("psi", "g", "omega", "seed", "group", "energy"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_bad_config_is_a_value_error():
    with pytest.raises(ValueError, match="omega"):
        bd.GenerateConfig(omega_range=(0.5, 1.0))
    with pytest.raises(ValueError, match="n_groups"):
        bd.GenerateConfig(n_groups=0)
    with pytest.raises(ValueError, match="even"):
        bd.GenerateConfig(n=33)
    # a coarse grid must exist, belong to pcg and resolve the healing length at the densest corner of the ranges
    with pytest.raises(ValueError, match="wider than the healing length at g=250"):
        dataclasses.replace(bd.PRESETS["quick"], coarsen=2)
    with pytest.raises(ValueError, match="needs method 'pcg'"):
        dataclasses.replace(bd.PRESETS["paper"], method="imaginary_time", coarsen=2)
    with pytest.raises(ValueError, match="coarsening factor"):
        dataclasses.replace(bd.PRESETS["paper"], coarsen=3)


def test_config_json_is_unchanged_without_coarsening():
    """coarsen None means 2 where the coarse grid resolves the ranges, else 1; files written before the
    field resume: it is left out of the stored config at 1."""
    paper = bd.PRESETS["paper"]
    assert paper.resolved_coarsen == 2 and paper.solver.coarsen == 2
    assert bd.PRESETS["quick"].resolved_coarsen == 1
    assert dataclasses.replace(paper, n=64).resolved_coarsen == 1  # 32² would not resolve g = 500
    assert dataclasses.replace(paper, method="imaginary_time").resolved_coarsen == 1
    assert "coarsen" not in json.loads(bd.PRESETS["quick"].to_json())
    assert json.loads(bd.PRESETS["paper"].to_json())["coarsen"] == 2


def test_a_batch_larger_than_the_memory_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """The paper preset's GPU-sized batch (240 states × 4 starts at 200², ~43 GiB) on a 24 GiB machine: one line
    naming a batch size that fits, and no partial folder that a smaller batch would then conflict with."""
    gen = importlib.import_module("bec_jax.data.generate")
    paper = gen.PRESETS["paper"]
    with pytest.raises(ValueError, match=r"batch of 240 states .* about 4\d\.\d GiB .* at most 1\d\d\b"):
        gen.check_batch_memory(paper, available=24 * 2**30)
    gen.check_batch_memory(dataclasses.replace(paper, batch_size=24), available=24 * 2**30)  # fits
    monkeypatch.setattr(gen, "_available_memory", lambda: 1000)  # bytes: nothing fits
    with pytest.raises(ValueError, match="--batch-size"):
        bd.generate(TINY, tmp_path / "d.h5", progress=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["JaxRuntimeError", "ValueError"])
def test_an_accelerator_out_of_memory_names_the_batch_and_leaves_nothing(tmp_path, monkeypatch, kind):
    """A GPU batch too large fails inside XLA (RESOURCE_EXHAUSTED, raised by a fetch or by jit's dispatch):
    one line naming the batch, and no partial folder, so the same command with a smaller batch runs."""
    import jax

    gen = importlib.import_module("bec_jax.data.generate")
    error = getattr(jax.errors, kind, ValueError)

    def oom(*args, **kwargs):
        raise error("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 43.17GiB")

    with monkeypatch.context() as m:
        m.setattr(gen, "ground_state", oom)
        with pytest.raises(ValueError, match=r"a batch of 4 states .* does not fit .* smaller batch size"):
            bd.generate(dataclasses.replace(TINY, batch_size=4), tmp_path / "d.h5", progress=False)
    assert not any(tmp_path.iterdir())
    assert bd.generate(TINY, tmp_path / "d.h5", progress=False)["status"] == "complete"


def test_a_dataset_that_kept_no_state_is_warned_of(tmp_path, capsys):
    """Every state reaching the edge of a box too small for it: the file is written (complete, empty), and the
    command says so on stderr instead of leaving it to the next command."""
    from bec_jax.cli import main

    rc = main(["generate", "--out", str(tmp_path / "z.h5"), "--n", "32", "--n-groups", "2", "--states-per-group",
               "1", "--batch-size", "2", "--n-starts", "1", "--length", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "warning: the dataset holds no states: all 2 failed (0 not converged, 2 reaching" in err
