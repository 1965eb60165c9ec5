"""HDF5 storage of ground-state datasets (h5py; chunked, compressed, no pickle).

One file per dataset. Per sample (first axis N):

    psi       complex64 (N, n, n)  normalised ground state, chunked (1, n, n), gzip
    g, omega, energy, mu, residual                float64 (N,)
    vortices, steps, group, seed                   int64 (N,)
    converged, touches_edge                        bool (N,)

File attributes: ``grid_n``, ``grid_length``, ``config`` (JSON of the
GenerateConfig), ``solver`` (JSON of the solver settings), ``bec_jax_version``,
``created`` (UTC ISO time), ``backend``, ``n_failed`` (states generated but not
stored). Readable with h5py, h5dump, HDFView, …

Sharded datasets (several processes, ``generate_sharded``): a folder ``<name>.shards/``
holding ``shard-IIIII-of-NNNNN.h5`` files (each a dataset file as above, with a ``shard``
attribute) and a manifest ``.bec_jax.json`` (``artifacts.write_manifest``, kind
"dataset-shards": the SHA-256 of every shard, its sample count and size in bytes, the
config). ``read_h5`` reads the folder (or its manifest file) as one dataset: the shards'
samples in shard order, the attributes of the first with ``n_failed`` and ``summary`` of all;
``rows`` reads (and hashes) only the first shard and those holding them.

Integrity: every dataset carries HDF5's Fletcher-32 checksum per chunk, so a
flipped byte fails the read; ``read_h5`` turns that, a truncated, foreign or
non-HDF5 file, missing fields, inconsistent lengths and non-finite values into
one ``CorruptArtifact`` (a ValueError) naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from bec_jax.artifacts import (MANIFEST, CorruptArtifact, atomic_write, first_line, has_manifest, read_manifest,
                               verify_manifest)
from bec_jax.gpe.grid import Grid

__all__ = ["FIELDS", "SHARDS_KIND", "write_h5", "read_h5", "load_grid", "atomic_write_h5", "is_sharded", "shards_dir",
           "shard_name", "same_states", "config_differences"]

SHARDS_KIND = "dataset-shards"

FIELDS = {
    "g": np.float64, "omega": np.float64, "energy": np.float64, "mu": np.float64, "residual": np.float64,
    "vortices": np.int64, "steps": np.int64, "group": np.int64, "seed": np.int64, "converged": np.bool_, "touches_edge": np.bool_,
}


def write_h5(path, arrays: dict, attrs: dict, compression: str = "gzip"):
    """Write one dataset file: arrays = {"psi": (N,n,n) complex, field: (N,)}."""
    psi = np.asarray(arrays["psi"], np.complex64)
    n_samples, n = psi.shape[0], psi.shape[-1]
    check = dict(fletcher32=True) if n_samples else {}  # checksums need chunks; an empty set has none
    with h5py.File(path, "w") as f:
        f.create_dataset("psi", data=psi, chunks=(1, n, n) if n_samples else None,
                         compression=compression if n_samples else None, shuffle=bool(n_samples), **check)
        for name, dt in FIELDS.items():
            f.create_dataset(name, data=np.asarray(arrays[name], dt).reshape(n_samples), **check)
        for k, v in attrs.items():
            f.attrs[k] = v


def atomic_write_h5(path, arrays: dict, attrs: dict):
    """write_h5 to a temporary name, fsync, then rename: a crash (even SIGKILL)
    leaves either no file or a complete one."""
    atomic_write(path, lambda tmp: write_h5(tmp, arrays, attrs))


def shards_dir(out) -> Path:
    """The shard folder of the dataset ``out`` (``data/big.h5`` -> ``data/big.shards``)."""
    out = Path(out)
    return out.with_name(out.stem + ".shards")


def shard_name(index: int, count: int) -> str:
    """File name of shard ``index`` of ``count`` in a shard folder."""
    return f"shard-{index:05d}-of-{count:05d}.h5"


def is_sharded(path) -> bool:
    """Whether ``path`` names a sharded dataset: its folder, or the manifest in it."""
    path = Path(path)
    return path.is_dir() or (path.name == MANIFEST and path.parent.is_dir())


def content_sha256(arrays: dict) -> str:
    """sha256 of a dataset's arrays (names, dtypes, shapes and values, in name order; not its attributes, which
    hold times): equal for two generations of the same states, so a regenerated dataset can be compared with the
    one a run was trained on (the file's own digest changes with every write)."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.reshape(-1).view(np.uint8))  # the bytes in place: no copy of a dataset's ψ
    return h.hexdigest()


def read_h5(path, fields=None, psi: bool = True, rows=None) -> tuple[dict, dict]:
    """(arrays, attrs) of a dataset file or shard folder (module doc); ``psi=False`` skips the big array.

    rows: strictly increasing sample indices to read (default all).
    Raises CorruptArtifact (module doc) for a file that is not a complete bec_jax
    dataset, FileNotFoundError for a missing one, ValueError for rows out of range.
    """
    path = Path(path)
    if is_sharded(path):
        return _read_shards(path.parent if path.name == MANIFEST else path, fields, psi, rows)
    if not path.is_file():
        raise FileNotFoundError(2, "no dataset file", str(path))
    names = list(FIELDS) if fields is None else list(fields)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in [*names, *(["psi"] if psi else [])] if k not in f]
            if missing:
                raise CorruptArtifact(f"{str(path)!r} is not a bec_jax dataset: no {', '.join(missing)}")
            sel = _rows(rows, len(f["g"])) if "g" in f else slice(None)
            arrays = {k: f[k][sel] for k in [*names, *(["psi"] if psi else [])]}
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except (CorruptArtifact, IndexError):
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:  # not HDF5, truncated, a failed checksum
        raise CorruptArtifact(f"{str(path)!r} cannot be read as a dataset ({first_line(e, 200)})") from None
    if names and not {"grid_n", "grid_length"} <= set(attrs) and "batch" not in attrs:
        raise CorruptArtifact(f"{str(path)!r} is not a bec_jax dataset: no grid_n / grid_length attributes")
    _validate(path, arrays)
    return arrays, attrs


def _rows(rows, n: int):
    """An h5py selection of ``rows`` (strictly increasing, in [0, n)); all for None."""
    if rows is None:
        return slice(None)
    rows = np.asarray(rows, np.int64).reshape(-1)
    if rows.size and (rows[0] < 0 or rows[-1] >= n or np.any(np.diff(rows) <= 0)):
        raise IndexError(f"rows must be strictly increasing sample indices in [0, {n}), got {rows[:8].tolist()}…")
    return rows if rows.size else slice(0, 0)


def same_states(stored: str | None, given: str) -> bool:
    """Whether two configs' JSON (``GenerateConfig.to_json``) make the same states: equal but for the batch
    size, which only sets how many are solved at once. Identical texts (None for both included) are the same
    without parsing them."""
    return stored == given or config_differences(stored, given) == ""


def config_differences(stored: str | None, given: str) -> str:
    """The fields but batch_size in which two configs' JSON differ, as "field: stored X, given Y"; "" if none."""
    try:
        a, b = json.loads(stored or "{}"), json.loads(given)
    except (TypeError, json.JSONDecodeError):  # not text, or not JSON
        return "the stored config cannot be read"
    if not isinstance(a, dict) or not isinstance(b, dict):
        return "the stored config cannot be read"
    diff = [f"{k}: stored {a.get(k)!r}, given {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k != "batch_size" and a.get(k) != b.get(k)]
    return "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "")


def _read_shards(folder: Path, fields, psi: bool, rows) -> tuple[dict, dict]:
    """``read_h5`` of a shard folder: every shard's size checked against the manifest, the first shard and
    those holding ``rows`` read, checked against it (their SHA-256 too when ψ is read) and their samples
    concatenated in shard order."""
    if not has_manifest(folder) and not any(folder.glob("shard-*-of-*.h5")):
        raise ValueError(f"{str(folder)!r} is a folder, not a dataset: give a dataset .h5 file (or the "
                         "<name>.shards folder of a sharded one) from `bec-jax generate`")
    manifest = read_manifest(folder)
    if manifest.get("kind") != SHARDS_KIND:
        raise CorruptArtifact(f"{str(folder)!r} holds a bec_jax {manifest.get('kind')!r}, not a sharded dataset")
    shards = manifest.get("shards") or []
    for s in shards:
        f = folder / s["file"]
        if not f.is_file() or f.stat().st_size != s["bytes"]:
            raise CorruptArtifact(f"{str(f)!r} is missing or has another size than its manifest records")
    ends = np.cumsum([s["n_samples"] for s in shards], dtype=np.int64)
    rows = None if rows is None else np.asarray(rows, np.int64).reshape(-1)
    if rows is not None:
        _rows(rows, int(ends[-1]) if len(ends) else 0)
    held = range(len(shards)) if rows is None else np.unique(np.searchsorted(ends, rows, side="right")).tolist()
    read = sorted({*held, 0}) if shards else []  # the first shard too: the attributes are its
    if psi:  # the content hashes of the shards read alone: a few rows of a big dataset do not hash it all
        verify_manifest(folder, SHARDS_KIND, only=None if rows is None else {shards[i]["file"] for i in read})
    parts, attrs = [], None
    for i in read:
        s, lo = shards[i], int(ends[i]) - shards[i]["n_samples"]
        local = None if rows is None else rows[(rows >= lo) & (rows < ends[i])] - lo
        arrays, a = read_h5(folder / s["file"], fields, psi, rows=local)
        if not same_states(a.get("config"), manifest.get("config")):
            raise CorruptArtifact(f"{str(folder / s['file'])!r} was generated with another config than its manifest")
        got = len(next(iter(arrays.values()))) if arrays else None
        if rows is None and got is not None and got != s["n_samples"]:
            raise CorruptArtifact(f"{str(folder / s['file'])!r} holds {got} samples, its manifest {s['n_samples']}")
        parts.append(arrays)
        attrs = attrs or {k: v for k, v in a.items() if k != "shard"}
    if attrs is None:
        raise CorruptArtifact(f"{str(folder)!r}: its manifest lists no shards")
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    summary = dict(json.loads(attrs.get("summary", "{}")), n_samples=int(ends[-1]),
                   n_failed=int(manifest.get("n_failed", 0)), shards=len(shards))
    attrs.update(n_failed=int(manifest.get("n_failed", 0)), summary=json.dumps(summary), shards=len(shards))
    return arrays, attrs


def _validate(path, arrays: dict) -> None:
    """Consistent lengths, the stored dtypes, finite values (one CorruptArtifact naming the field)."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise CorruptArtifact(f"{str(path)!r} has fields of different lengths: {lengths}")
    for k, v in arrays.items():
        want = np.complex64 if k == "psi" else FIELDS[k]
        if v.dtype != np.dtype(want) or (k != "psi" and v.ndim != 1):
            raise CorruptArtifact(f"{str(path)!r}: field {k!r} is {v.dtype} {v.shape}, expected {np.dtype(want)} (N,)")
    if "psi" in arrays and arrays["psi"].ndim != 3:
        raise CorruptArtifact(f"{str(path)!r}: psi has shape {arrays['psi'].shape}, expected (N, n, n)")
    # A failed solve is a stored fact (kept with --keep-unconverged, or in a batch before the merge drops
    # it): only the parameters and the usable states must be finite and nonzero.
    usable = np.ones(next(iter(lengths.values()), 0), bool)
    if "converged" in arrays and "touches_edge" in arrays:
        usable = arrays["converged"] & ~arrays["touches_edge"]
    for k, v in arrays.items():
        rows = v if k in ("g", "omega") else v[usable]
        if v.dtype.kind in "fc" and not np.all(np.isfinite(rows)):
            raise CorruptArtifact(f"{str(path)!r}: field {k!r} holds non-finite values")
    if "psi" in arrays:
        empty = np.flatnonzero(usable & ~np.any(arrays["psi"] != 0, axis=(1, 2)))
        if empty.size:
            raise CorruptArtifact(f"{str(path)!r}: psi of sample {int(empty[0])} is all zeros ({empty.size} such)")


def load_grid(attrs: dict) -> Grid:
    """The Grid of a dataset's attributes (CorruptArtifact when they are missing or invalid)."""
    try:
        return Grid(int(attrs["grid_n"]), float(attrs["grid_length"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptArtifact(f"dataset attributes hold no valid grid (grid_n, grid_length): {e}") from None


def config_of(attrs: dict) -> dict:
    return json.loads(attrs["config"])
