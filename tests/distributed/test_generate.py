"""Sharded generation: every process (or job) its part of the (g, Ω) groups, a manifest, one dataset."""

import dataclasses
import json

import numpy as np
import pytest

from bec_jax.artifacts import MANIFEST, CorruptArtifact
from bec_jax.data.generate import generate, generate_sharded
from bec_jax.data.storage import read_h5, shard_name, shards_dir
from tests.distributed.conftest import TINY_DATA, results, run_workers


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process dataset of TINY_DATA."""
    path = tmp_path_factory.mktemp("ref") / "one.h5"
    assert generate(TINY_DATA, path, progress=False)["status"] == "complete"
    return read_h5(path)


def assert_same_dataset(arrays, ref):
    for k in ("g", "omega", "group", "seed", "converged", "touches_edge"):
        np.testing.assert_array_equal(arrays[k], ref[k], err_msg=k)  # same samples, same order
    # the same per-sample keys and solver: equal to round-off (batches differ, so XLA may reassociate)
    np.testing.assert_allclose(arrays["energy"], ref["energy"], rtol=1e-5)
    np.testing.assert_allclose(arrays["psi"], ref["psi"], atol=2e-4)


def test_shards_resume_separately_and_read_as_one(tmp_path, reference):
    out = tmp_path / "data.h5"
    # independent jobs: shard 1 stops after one batch, shard 0 completes, then shard 1 resumes
    first = generate_sharded(TINY_DATA, out, progress=False, max_batches=1, index=1, count=2)
    assert first["status"] == "partial"
    assert generate_sharded(TINY_DATA, out, progress=False, index=0, count=2)["status"] == "partial"
    folder = shards_dir(out)
    assert not (folder / MANIFEST).exists()  # no manifest before every shard is complete
    # shard 1 resumes with another batch size (on another machine, say): the shards still read as one
    last = generate_sharded(dataclasses.replace(TINY_DATA, batch_size=TINY_DATA.batch_size + 1), out,
                            progress=False, index=1, count=2)
    assert last["status"] == "complete" and last["path"] == str(folder) and last["n_samples"] == 10
    manifest = json.loads((folder / MANIFEST).read_text())
    assert [s["file"] for s in manifest["shards"]] == [shard_name(0, 2), shard_name(1, 2)]
    assert [s["n_samples"] for s in manifest["shards"]] == [4, 6]  # groups 0-1 and 2-3-4, two states each

    arrays, attrs = read_h5(folder)
    assert_same_dataset(arrays, reference[0])
    assert attrs["config"] == reference[1]["config"] and attrs["shards"] == 2
    assert read_h5(folder / MANIFEST, psi=False)[1]["grid_n"] == 16  # the manifest's path reads the same
    rows, _ = read_h5(folder, fields=["seed"], rows=[1, 6, 9])  # rows across both shards
    np.testing.assert_array_equal(rows["seed"], reference[0]["seed"][[1, 6, 9]])
    np.testing.assert_array_equal(rows["psi"], arrays["psi"][[1, 6, 9]])

    from bec_jax.data.plots import plot_samples
    assert plot_samples(folder, tmp_path / "show.png", n_samples=2).exists()
    again = generate_sharded(TINY_DATA, out, progress=False, index=0, count=2)  # a complete shard, rerun
    assert again["status"] == "complete" and again["n_samples"] == 10 and again["seconds_this_run"] == 0.0

    shard = folder / shard_name(1, 2)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifact, match="shard-00001-of-00002.h5"):
        read_h5(folder)
    with pytest.raises(CorruptArtifact, match="shard-00001-of-00002.h5"):
        read_h5(folder, rows=[0, 5])  # a row in the damaged shard
    # a rerun reads the shard whole: bytes changed outside its data (HDF5 free space) are recorded anew, with a
    # warning; a changed value is named
    with pytest.warns(UserWarning, match="shard-00001-of-00002.h5' differs from the dataset's previous manifest"):
        assert generate_sharded(TINY_DATA, out, progress=False, index=1, count=2)["status"] == "complete"
    assert_same_dataset(read_h5(folder)[0], reference[0])
    import h5py
    with h5py.File(shard, "r+") as f:                     # its checksums rewritten with it
        f["energy"][0] = f["energy"][0] + 1.0
    with pytest.raises(CorruptArtifact, match="shard-00001-of-00002.h5' is corrupt: its content does not match"):
        generate_sharded(TINY_DATA, out, progress=False, index=1, count=2)
    with pytest.raises(CorruptArtifact, match="shard-00001-of-00002.h5"):
        generate_sharded(TINY_DATA, out, progress=False, index=0, count=2)  # the shard beside it: not "complete"
    # rows of the intact shard alone read and hash that shard alone
    np.testing.assert_array_equal(read_h5(folder, rows=[0, 3])[0]["psi"], arrays["psi"][[0, 3]])
    none, attrs = read_h5(folder, rows=[])
    assert none["psi"].shape == (0, 16, 16) and attrs["shards"] == 2


@pytest.mark.parametrize("n", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_processes_generate_the_single_process_dataset(tmp_path, reference, n):
    out = tmp_path / "data.h5"
    res = results(run_workers(["generate", out], n, timeout_s=85))
    assert [r["shard"] for r in res] == list(range(n)) and all(r["status"] == "complete" for r in res)
    assert res[0]["n_samples"] == 10
    assert sorted(p.name for p in shards_dir(out).glob("*.h5")) == [shard_name(i, n) for i in range(n)]
    assert_same_dataset(read_h5(shards_dir(out))[0], reference[0])
