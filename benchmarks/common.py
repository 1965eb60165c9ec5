"""Shared by the benchmark scripts: machine metadata and JSON output."""

from __future__ import annotations

import collections
import gzip
import json
import os
import platform
import re
import tempfile
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


#: profiler events that are runtime bookkeeping, not XLA operations
BOOKKEEPING = ("ThunkExecutor", "$", "Pjit", "Slinky", "ParseArguments", "CommonPjRt", "ThreadpoolListener", "end: ",
               "Wait for")


def op_kind_totals(call, n_calls: int, skip=BOOKKEEPING):
    """Run ``call()`` ``n_calls`` times under ``jax.profiler`` (perfetto trace) and sum the durations of the
    executed XLA operations by kind (op name without its numeric suffix; events whose name starts with one of
    ``skip`` are left out). Returns (ms per call, operations per call), both ``collections.Counter`` by kind.
    ``call`` must block until its result is ready."""
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        for _ in range(n_calls):
            call()
        jax.profiler.stop_trace()
        traces = sorted(Path(tmp).rglob("*.json.gz"))
        if not traces:
            raise RuntimeError("the profiler wrote no perfetto trace")
        events = json.load(gzip.open(traces[-1]))["traceEvents"]
    kinds, counts = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") != "X" or e["name"].startswith(tuple(skip)):
            continue
        k = re.sub(r"\.\d+$", "", e["name"])
        kinds[k] += e["dur"] / 1e3 / n_calls  # µs → ms per call
        counts[k] += 1 / n_calls
    return kinds, counts
