"""The hostile cases of the CLI and the Python API: each is refused in one line, before any work,
and nothing outside the output is touched."""

import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.artifacts import MANIFEST, locked
from bec_jax.cli import main

BEC = [sys.executable, "-m", "bec_jax.cli"]
TINY = ["--data-n", "32", "--data-n-groups", "6", "--data-states-per-group", "2", "--data-batch-size", "4",
        "--data-n-starts", "1", "--data-max-iter", "300", "--data-g-range", "20,60", "--data-omega-range", "0.3,0.6",
        "--model-base-width", "2", "--train-epochs", "1", "--train-batch-size", "4", "--compress-method", "prune",
        "--compress-ft-epochs", "0", "--compress-sparsity", "0.5", "--report-latency-repeats", "3",
        "--report-samples", "1", "--no-progress"]


def _one_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


def _user_folder(path):
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    return path


@pytest.mark.parametrize("command", ["prune", "shrink", "quantize"])
def test_overwrite_never_deletes_through_a_link_or_a_foreign_folder(command, small_run, tmp_path, capsys):
    run, _ = small_run
    user = _user_folder(tmp_path / "user_files")
    out = tmp_path / "pp"
    out.mkdir()
    (out / "model").symlink_to(user, target_is_directory=True)
    extra = dict(prune=["--sparsity", "0.5", "--method", "prune"], shrink=["--keep", "0.5", "--ft-epochs", "0"],
                 quantize=["--scheme", "per_channel"])[command]
    assert main([command, "--run", str(run), *extra, "--out", str(out), "--overwrite"]) == 2
    _one_line(capsys, "symbolic link")
    (out / "model").unlink()
    shutil.copytree(user, out / "model")            # a folder bec_jax did not write
    assert main([command, "--run", str(run), *extra, "--out", str(out), "--overwrite"]) == 2
    _one_line(capsys, "not written by bec_jax")
    assert main([command, "--run", str(run), *extra, "--out", str(out)]) == 2   # no --overwrite: refused first
    _one_line(capsys, "exists and is not empty")
    assert (user / "thesis.tex").read_text() == "years of work"
    assert (out / "model" / "thesis.tex").exists()
    assert not (out / f"{command}.json").exists()   # refused before any work


def test_prune_overwrite_replaces_its_own_model(small_run, tmp_path, capsys):
    run, _ = small_run
    args = ["prune", "--run", str(run), "--sparsity", "0.5", "--method", "prune", "--out", str(tmp_path)]
    assert main(args) == 0
    first = json.loads((tmp_path / "model" / MANIFEST).read_text())
    assert first["kind"] == "model" and first["files"]
    capsys.readouterr()
    assert main(args) == 2                                   # done: said so, nothing redone
    _one_line(capsys, "holds a finished `bec-jax prune` (prune.json): nothing to do")
    assert main(args + ["--overwrite"]) == 0
    capsys.readouterr()
    for out in (run, run / "checkpoints"):                   # never into the run it reads
        assert main([*args[:-1], str(out)]) == 2
        _one_line(capsys, "--out", "--run", "write the output elsewhere")


def test_damaged_checkpoint_and_model_are_refused_naming_the_file(small_run, tmp_path, capsys):
    run, data = small_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    step = max(p for p in (copy / "checkpoints").iterdir() if p.name.isdigit())
    manifest = json.loads((step / MANIFEST).read_text())
    target = max(manifest["files"], key=lambda rel: (step / rel).stat().st_size)   # the array data
    raw = bytearray((step / target).read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    (step / target).write_bytes(bytes(raw))
    assert main(["evaluate", "--run", str(copy), "--data", str(data), "--checkpoint", "latest", "--out", str(tmp_path / "ev"), "--no-progress"]) == 2
    _one_line(capsys, target.split("/")[-1], "corrupt")
    (step / target).write_bytes(bytes(raw[: len(raw) // 3]))   # truncated
    assert main(["evaluate", "--run", str(copy), "--data", str(data), "--checkpoint", "latest", "--out", str(tmp_path / "ev"), "--no-progress"]) == 2
    _one_line(capsys, "corrupt")


def test_a_damaged_checkpoint_without_its_manifest_is_one_line_naming_the_step(small_run, tmp_path, capsys):
    import gc
    import time

    from flax import nnx

    from bec_jax.artifacts import CorruptArtifact
    from bec_jax.train.trainer import load_trained

    run, data = small_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    steps = [p for p in (copy / "checkpoints").iterdir() if p.name.isdigit()]
    for step in steps:                                    # read unchecked, as a run saved before manifests
        (step / MANIFEST).unlink()
    # undamaged, it restores as it was saved (every array read once before orbax restores them)
    saved, unchecked = load_trained(run, "best")[0], load_trained(copy, "best")[0]
    for a, b in zip(jax.tree.leaves(nnx.state(saved)), jax.tree.leaves(nnx.state(unchecked))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    best = copy / "checkpoints" / str(json.loads((copy / "metrics.json").read_text())["best_epoch"])
    data_files = [p for p in (best / "state").rglob("*") if p.is_file() and p.parent.name == "d"]  # OCDBT data
    target = max(data_files, key=lambda p: p.stat().st_size)
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])   # truncated array data
    assert main(["evaluate", "--run", str(copy), "--data", str(data), "--out", str(tmp_path / "ev"),
                 "--samples", "0", "--no-progress"]) == 2
    gc.collect()
    time.sleep(0.5)                                       # orbax's read threads would print after the error
    _one_line(capsys, f"checkpoint {str(best)!r} cannot be read", "no .bec_jax.json")
    with pytest.raises(CorruptArtifact, match=f"checkpoint {str(best)!r} cannot be read"):
        load_trained(copy, "best")
    (best / "state" / "manifest.ocdbt").unlink()          # the root of its arrays gone
    with pytest.raises(CorruptArtifact, match="manifest.ocdbt"):
        load_trained(copy, "best")


def test_foreign_empty_and_missing_datasets_are_one_line(tmp_path, capsys):
    (tmp_path / "text.h5").write_text("not hdf5")
    (tmp_path / "empty.h5").write_bytes(b"")
    import h5py
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["images"] = np.zeros((2, 4, 4))
    (tmp_path / "a_run").mkdir()  # a folder (a training run, say) given as the dataset
    for name in ("text.h5", "empty.h5", "foreign.h5", "a_run"):
        assert main(["train", "--data", str(tmp_path / name), "--out", str(tmp_path / "t"), "--epochs", "1"]) == 2
        _one_line(capsys, name, *(["is a folder, not a dataset"] if name == "a_run" else []))
    assert not (tmp_path / "t").exists()  # refused: nothing left behind


def test_bad_settings_fail_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["pipeline", "--out", "p1", *TINY, "--train-split", "0.9,0.9,0.9"]) == 2
    _one_line(capsys, "split")
    assert main(["pipeline", "--out", "p1", *TINY, "--compress-ft-lr", "inf"]) == 2  # not after training
    _one_line(capsys, "compress.ft_lr must be a finite number > 0, got inf")
    assert not (tmp_path / "p1").exists()
    assert main(["generate", "--out", "s.h5", "--seed", "-1"]) == 2
    _one_line(capsys, "seed")
    assert main(["generate", "--out", "s.h5", "--seed", str(2**31)]) == 2
    _one_line(capsys, "seed")
    assert not any(tmp_path.glob("s.h5*"))
    r = subprocess.run(BEC + ["generate", "--out", "s.h5", "--max-batches", "-1"], capture_output=True, text=True)
    assert r.returncode == 2 and "integer >= 1" in r.stderr
    cfg = json.loads(json.dumps(__import__("bec_jax.pipeline", fromlist=["PRESETS"]).PRESETS["quick"].to_dict()))
    cfg["data"]["keep_unconverged"] = "false"
    cfg["data"]["n_groups"] = 2.5
    cfg["train"]["bogus"] = 1
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert main(["pipeline", "--config", "c.json", "--out", "p2"]) == 2
    line = _one_line(capsys, "data.keep_unconverged", "data.n_groups", "train.bogus")
    assert "expected true or false" in line and "expected an integer" in line
    assert not (tmp_path / "p2").exists()


def test_a_command_refused_after_making_its_output_folder_leaves_nothing(small_run, tmp_path, capsys):
    run, data = small_run
    # a dataset where a training run is expected: the folder made for the output goes again, with its parents
    assert main(["prune", "--run", str(data), "--out", str(tmp_path / "new" / "px")]) == 2
    _one_line(capsys)
    assert not (tmp_path / "new").exists()
    # an output folder that existed stays, without a lock file
    (tmp_path / "mine").mkdir()
    assert main(["evaluate", "--run", str(run), "--batch-size", "0", "--out", str(tmp_path / "mine")]) == 2
    _one_line(capsys, "batch")
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_a_second_process_on_the_same_out_refuses(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with locked(out):
        r = subprocess.run(BEC + ["pipeline", "--out", str(out), *TINY], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "in use by another bec-jax process" in r.stderr
    assert r.stderr.count("\n") == 1 and not (out / "data.h5").exists()


def test_unexpected_errors_print_a_summary_line_first(tmp_path, monkeypatch, capsys):
    import bec_jax.cli as cli

    def boom(args):
        raise KeyError("an internal bug")
    p = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: p)
    p._subparsers._group_actions[0].choices["demo"].set_defaults(func=boom)
    assert main(["demo", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("bec-jax demo: unexpected error: KeyError") and "Traceback" in err[1]


def test_api_refuses_non_finite_and_empty_inputs():
    grid = bj.Grid(16, 8.0)
    x = jnp.asarray(grid.x)
    psi = jnp.exp(-(x[None, :] ** 2 + x[:, None] ** 2)).astype(jnp.complex64)
    for fn in (bj.energy, bj.residual, bj.chemical_potential):
        with pytest.raises(ValueError, match="g must be finite"):
            fn(grid, psi, np.nan, 0.3)
        with pytest.raises(ValueError, match="omega must be finite"):
            fn(grid, psi, 10.0, np.inf)
        with pytest.raises(ValueError, match="zero"):
            fn(grid, jnp.zeros_like(psi), 10.0, 0.3)
        with pytest.raises(ValueError, match="non-finite"):
            fn(grid, psi.at[3, 4].set(jnp.nan), 10.0, 0.3)
    with pytest.raises(ValueError, match="non-finite"):
        bj.angular_momentum(grid, psi.at[0, 0].set(jnp.inf))
    # traced values pass unchecked (inside jit nothing can be inspected), and valid input still works
    assert np.isfinite(jax.jit(lambda p: bj.energy(grid, p, 10.0, 0.3))(psi))
    with pytest.raises(ValueError, match="dt must be in"):
        bj.imaginary_time(grid, psi, 10.0, 0.3, dt=1e6, steps=2)
    with pytest.raises(ValueError, match="zero"):
        bj.imaginary_time(grid, jnp.zeros_like(psi), 10.0, 0.3, dt=0.01, steps=2)
    for key in (None, 0, jnp.zeros(3, jnp.uint32)):
        with pytest.raises(ValueError, match="key must be a jax.random key"):
            bj.ground_state(grid, 10.0, 0.3, key=key)
    with pytest.raises(ValueError, match="g must be finite and >= 0"):
        bj.box_length(-1.0, 0.3)


def test_divergent_training_stops_in_one_line_and_saves_nothing(small_dataset, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", "--data", str(small_dataset), "--out", str(out), "--epochs", "2", "--lr", "1e30",
                 "--width", "2", "--batch-size", "4", "--no-progress"]) == 2
    _one_line(capsys, "diverged")
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.isdigit()]


def test_a_moved_run_uses_the_data_beside_it_or_refuses(small_run, tmp_path):
    import h5py

    from bec_jax.train.trainer import run_data_path

    run, data = small_run
    stored = json.loads((run / "metrics.json").read_text())["data"]
    assert not stored.startswith("/")                       # relative to the run folder
    moved = tmp_path / "moved" / "a" / "run"                 # run and data moved together, same relative layout
    shutil.copytree(run, moved)
    (moved / stored).resolve().parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(data, moved / stored)
    assert run_data_path(moved).resolve() == (moved / stored).resolve()
    assert ".." not in run_data_path(moved).parts             # run/train/../data.h5 reads as run/data.h5
    with h5py.File(moved / stored, "r+") as f:               # another dataset under the same name
        f.attrs["config"] = f.attrs["config"].replace('"seed": 0', '"seed": 7')
    with pytest.raises(ValueError, match="not the dataset"):
        run_data_path(moved)
    lonely = tmp_path / "x" / "y" / "lonely"
    shutil.copytree(run, lonely)                             # the run alone: its data is not beside it
    with pytest.raises(ValueError, match="not found"):
        run_data_path(lonely)


def test_runs_that_cannot_fit_or_start_are_refused_up_front(tmp_path, monkeypatch, capsys):
    import bec_jax.gpe.sharding as sharding

    monkeypatch.setattr(sharding, "available_memory", lambda backend=None: 2**30)
    with pytest.raises(ValueError, match=r"needs about .* GiB, but 1.0 GiB are free"):
        bj.ground_state(bj.Grid(1024, 16.0), [10.0] * 8, 0.3, key=jax.random.key(0))
    monkeypatch.undo()
    r = subprocess.run(BEC + ["--cpu-devices", "100000", "demo", "--out", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "[1, 256]" in r.stderr


def test_a_full_disk_is_one_line_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    import errno

    generate = sys.modules["bec_jax.data.generate"]

    real = generate.atomic_write_h5
    calls = []

    def full_disk(path, arrays, attrs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, arrays, attrs)
    monkeypatch.setattr(generate, "atomic_write_h5", full_disk)
    args = ["generate", "--out", str(tmp_path / "d.h5"), "--n", "32", "--n-groups", "3", "--states-per-group", "1",
            "--batch-size", "1", "--n-starts", "1", "--max-iter", "200", "--g-range", "20,40", "--omega-range",
            "0.2,0.3", "--no-progress"]
    assert main(args) == 2
    _one_line(capsys, "batch_000000001_000000002.h5", "No space left on device")
    monkeypatch.undo()
    assert main(args) == 0                                   # resumes: batch 0 kept, 1 and 2 computed
    assert "; resuming, 1 of 3 states saved" in capsys.readouterr().out
    assert len(read_h5_fields(tmp_path / "d.h5")) == 3
    assert main(args) == 0 and "; already complete" in capsys.readouterr().out
    import h5py
    with h5py.File(tmp_path / "d.h5", "r+") as f:             # changed since, its checksums rewritten with it
        f["psi"][0, 3, 3] = f["psi"][0, 3, 3] * 1.001
    assert main(args) == 2
    _one_line(capsys, "d.h5' is corrupt", "digest")


def read_h5_fields(path):
    from bec_jax.data.storage import read_h5
    return read_h5(path, psi=False)[0]["g"]


def test_dataset_contents_are_checked_and_a_damaged_batch_is_recomputed(tmp_path, small_dataset):
    from bec_jax.artifacts import CorruptArtifact
    from bec_jax.data import GenerateConfig, generate
    from bec_jax.data.storage import read_h5, write_h5

    arrays, attrs = read_h5(small_dataset)
    for change, match in ((dict(group=arrays["group"][:-1]), "different lengths"),
                          (dict(psi=np.zeros_like(arrays["psi"])), "all zeros"),
                          (dict(omega=np.where(np.arange(len(arrays["omega"])) == 2, np.nan, arrays["omega"])),
                           "non-finite")):
        bad = tmp_path / f"bad_{match.replace(' ', '_')}.h5"
        write_h5(bad, {**arrays, **change} if "group" not in change else arrays, attrs)
        if "group" in change:  # write_h5 reshapes by N: write the short field by hand
            import h5py
            with h5py.File(bad, "r+") as f:
                del f["group"]
                f["group"] = change["group"]
        with pytest.raises(CorruptArtifact, match=match):
            read_h5(bad)
    cfg = GenerateConfig(n=32, n_groups=3, states_per_group=1, g_range=(20.0, 40.0), omega_range=(0.2, 0.3),
                         batch_size=1, n_starts=1, max_iter=200)
    out = tmp_path / "d.h5"
    generate(cfg, out, progress=False, max_batches=2)
    batch = tmp_path / "d.h5.partial" / "batch_000000001_000000002.h5"
    batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])   # truncated
    with pytest.warns(UserWarning, match="batch_000000001_000000002.h5.*: the batch is computed again"):
        summary = generate(cfg, out, progress=False)       # the damaged batch is computed again, not merged
    assert summary["status"] == "complete" and summary["batches_this_run"] == 2
    assert len(read_h5(out, psi=False)[0]["g"]) == summary["n_samples"]
    # a finished file changed since (its checksums rewritten with it): a rerun does not call it complete
    import h5py
    with h5py.File(out, "r+") as f:
        f["psi"][0, 3, 3] = f["psi"][0, 3, 3] * 1.001
    with pytest.raises(CorruptArtifact, match="d.h5' is corrupt: its content does not match the digest"):
        generate(cfg, out, progress=False)


def test_runs_and_models_saved_before_these_checks_still_load_and_a_stopped_save_is_replaceable(small_run, tmp_path):
    from bec_jax.artifacts import CorruptArtifact, claim_folder
    from bec_jax.compress.quantization import load_quantized, save_quantized
    from bec_jax.train.trainer import load_trained

    run, _ = small_run
    assert (run / "checkpoints" / "metadata" / MANIFEST).is_file()
    old = tmp_path / "old_run"
    shutil.copytree(run, old)
    for m in old.rglob(MANIFEST):                         # no manifests, no UNetConfig.dtype: an older run
        m.unlink()
    meta_file = old / "checkpoints" / "metadata" / "_ROOT_METADATA"
    meta = json.loads(meta_file.read_text())
    del meta["custom_metadata"]["model_config"]["dtype"]
    meta_file.write_text(json.dumps(meta))
    model, _ = load_trained(old, "best")
    folder = tmp_path / "m" / "model"
    save_quantized(folder, model, None)
    (folder / MANIFEST).unlink()                          # a model folder saved before manifests
    assert load_quantized(folder)[0] is not None
    save_quantized(folder, model, None, overwrite=True)   # adopted and replaced
    assert json.loads((folder / MANIFEST).read_text())["kind"] == "model"
    stopped = tmp_path / "m" / "stopped"
    claim_folder(stopped, "model")                         # a save killed before it finished
    (stopped / "quantized.json").write_text("{")
    with pytest.raises(CorruptArtifact, match="incomplete"):
        load_quantized(stopped)
    save_quantized(stopped, model, None, overwrite=True)
    assert load_quantized(stopped)[0] is not None


def test_a_run_folder_of_an_older_config_resumes(tmp_path):
    from bec_jax.pipeline import PRESETS
    from bec_jax.pipeline.run import prepare_run

    cfg = PRESETS["quick"]
    old = json.loads(json.dumps(cfg.to_dict()))
    del old["model"]["dtype"]                              # written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert prepare_run(cfg, tmp_path) == tmp_path
