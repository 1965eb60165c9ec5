"""Shared by the benchmark scripts: machine metadata and JSON output."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import jax


def machine_info() -> dict:
    """Backend, device, cores and versions, recorded with every result."""
    return dict(backend=jax.default_backend(), device=str(jax.devices()[0].device_kind), cpu_count=os.cpu_count(),
                jax_version=jax.__version__, python=platform.python_version())


def write_result(path, result: dict) -> None:
    """Write ``result`` (with machine_info merged in) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**machine_info(), **result}, indent=2))
    print(f"wrote {path}")
