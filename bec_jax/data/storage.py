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
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from bec_jax.gpe.grid import Grid

__all__ = ["FIELDS", "write_h5", "read_h5", "load_grid", "atomic_write_h5"]

FIELDS = {
    "g": np.float64, "omega": np.float64, "energy": np.float64, "mu": np.float64, "residual": np.float64,
    "vortices": np.int64, "steps": np.int64, "group": np.int64, "seed": np.int64, "converged": np.bool_, "touches_edge": np.bool_,
}


def write_h5(path, arrays: dict, attrs: dict, compression: str = "gzip"):
    """Write one dataset file: arrays = {"psi": (N,n,n) complex, field: (N,)}."""
    psi = np.asarray(arrays["psi"], np.complex64)
    n_samples, n = psi.shape[0], psi.shape[-1]
    with h5py.File(path, "w") as f:
        f.create_dataset("psi", data=psi, chunks=(1, n, n) if n_samples else None,
                         compression=compression if n_samples else None, shuffle=bool(n_samples))
        for name, dt in FIELDS.items():
            f.create_dataset(name, data=np.asarray(arrays[name], dt).reshape(n_samples))
        for k, v in attrs.items():
            f.attrs[k] = v


def atomic_write_h5(path, arrays: dict, attrs: dict):
    """write_h5 to a temporary name, fsync, then rename: a crash (even SIGKILL)
    leaves either no file or a complete one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write_h5(tmp, arrays, attrs)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_h5(path, fields=None, psi: bool = True) -> tuple[dict, dict]:
    """(arrays, attrs) of a dataset file; ``psi=False`` skips the big array."""
    with h5py.File(path, "r") as f:
        names = list(FIELDS) if fields is None else list(fields)
        arrays = {k: f[k][()] for k in names}
        if psi:
            arrays["psi"] = f["psi"][()]
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return arrays, attrs


def load_grid(attrs: dict) -> Grid:
    return Grid(int(attrs["grid_n"]), float(attrs["grid_length"]))


def config_of(attrs: dict) -> dict:
    return json.loads(attrs["config"])
