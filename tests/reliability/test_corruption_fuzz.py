"""Seeded corruption fuzz: random truncations and byte flips of every kind of file bec_jax reads back
as trusted. Each damaged artifact must be refused with one line naming a file, or read back exactly as
it was written (a flip in bytes no reader uses); never used silently with other content."""

import json
import shutil

import numpy as np
import pytest
from flax import nnx

from bec_jax.artifacts import MANIFEST
from bec_jax.compress.quantization import load_quantized, save_quantized
from bec_jax.data.storage import read_h5
from bec_jax.train.trainer import load_trained

CASES = 16  # per artifact kind


def _mutate(rng, folder_or_file):
    """Damage one file: truncate it or flip 1-64 bytes. Returns a description."""
    root = folder_or_file
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".lock")
    f = files[rng.integers(len(files))]
    raw = bytearray(f.read_bytes())
    if rng.random() < 0.3 or len(raw) < 2:
        cut = int(rng.integers(0, max(len(raw), 1)))
        f.write_bytes(bytes(raw[:cut]))
        return f"{f.name} truncated to {cut} of {len(raw)} bytes"
    k = int(rng.integers(1, 65))
    for pos in rng.integers(0, len(raw), k):
        raw[pos] ^= int(rng.integers(1, 256))
    f.write_bytes(bytes(raw))
    return f"{f.name}: {k} bytes flipped"


def _params(model):
    return {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(model))}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def _fuzz(tmp_path, original, load, seed):
    reference = load(original)
    handled = 0
    for i in range(CASES):
        rng = np.random.default_rng([seed, i])
        copy = tmp_path / f"case{i}" / original.name
        copy.parent.mkdir()
        (shutil.copytree if original.is_dir() else shutil.copy)(original, copy)
        what = _mutate(rng, copy)
        try:
            got = load(copy)
        except ValueError as e:  # CorruptArtifact and the other one-line errors
            msg = str(e)
            assert "\n" not in msg and str(tmp_path) in msg, (what, msg)
            handled += 1
            continue
        assert _same(got, reference), f"damage used silently: {what}"
        handled += 1
    return handled


def test_datasets(small_dataset, tmp_path):
    def load(p):
        arrays, attrs = read_h5(p)
        return dict(arrays, **{f"attr:{k}": np.asarray(str(v)) for k, v in attrs.items()})
    assert _fuzz(tmp_path, small_dataset, load, 1) == CASES


def test_checkpoints(small_run, tmp_path):
    run, _ = small_run
    assert _fuzz(tmp_path, run, lambda p: _params(load_trained(p, "best")[0]), 2) == CASES


@pytest.mark.parametrize("sparse", [False, True])
def test_saved_models(small_run, tmp_path, sparse):
    run, _ = small_run
    model, _ = load_trained(run, "best")
    folder = tmp_path / "saved" / "model"
    save_quantized(folder, model, None, sparse=sparse)
    assert json.loads((folder / MANIFEST).read_text())["kind"] == "model"
    assert _fuzz(tmp_path, folder, lambda p: _params(load_quantized(p)[0]), 3 + sparse) == CASES
