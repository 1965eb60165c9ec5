"""Batch parallelism over local devices, and the CPU device split that feeds it.

States of a batch are independent, so a batched solver runs on D devices as D
copies of the single-device program, one slice of the batch each
(``jax.shard_map``): no cross-device traffic at all. Placing sharded inputs
into a plain ``jit`` does not give that: XLA's SPMD partitioner does not
partition FFTs along batch dimensions, and all-gathers the whole batch onto
every device before each one, a program XLA:CPU (jax 0.10) refuses to run;
split by shard_map, 2 devices run it (n = 200, batch 16) 2.17x faster than
one (``benchmarks/cpu_sharding.py``).

XLA:CPU runs each FFT on one thread, so on a CPU host the split-step solver
only uses all cores when the host is split into several XLA devices
(``use_cpu_cores``), each running its slice concurrently.

Within a device, a CPU runs a batch fastest a few states at a time
(``map_batch`` with ``cpu_chunk``): every pass of a split step or a PCG
iteration then streams a chunk that stays in the core's cache, where a whole
batch of 200² states (5 MB at batch 16) makes each of the step's ~12 passes
go to the shared L3 cache (``benchmarks/solver_throughput.py``). A GPU wants
the opposite, the whole batch in every kernel.
"""

from __future__ import annotations

import numbers
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["batch_mesh", "shard_batch", "place", "use_cpu_cores", "map_batch", "cpu_chunk", "loop_chunk", "backend_of"]

AXIS = "batch"

#: bytes of the states of one CPU chunk (``cpu_chunk``): 4 states at 64² in
#: complex64, one from 128² up (a core's L2 holds 512 kB on the development
#: VM; compare other sizes with ``benchmarks/solver_throughput.py --chunk k``)
CHUNK_BYTES = 128 * 1024


def cpu_chunk(n: int, dtype, backend: str | None = None) -> int | None:
    """States per chunk of a fixed-length loop (the integrators) for
    ``map_batch``: on the CPU backend, as many (n, n) states of ``dtype`` as
    fit in ``CHUNK_BYTES`` (at least 1); None (the whole batch at once) on any
    other backend. Solvers whose loops stop at convergence use ``loop_chunk``."""
    if (backend or jax.default_backend()) != "cpu":
        return None
    return max(1, CHUNK_BYTES // (n * n * jax.numpy.dtype(dtype).itemsize))


def loop_chunk(backend: str | None = None) -> int | None:
    """States per chunk of a solver whose loops stop at convergence
    (``ground_state``, the online sampler): 1 on the CPU backend, so that
    every start stops at its own iteration count where a vmapped loop runs
    every start as long as the slowest; None (all at once) elsewhere."""
    return 1 if (backend or jax.default_backend()) == "cpu" else None


def backend_of(x) -> str:
    """Platform ("cpu", "gpu", ...) of the device holding array ``x``; the
    default backend for anything else (a tracer, a NumPy array, None)."""
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
        return next(iter(x.devices())).platform
    return jax.default_backend()


def resolve_chunk(chunk, auto: int | None) -> int | None:
    """The ``chunk`` argument of the batched solvers: "auto" -> ``auto`` (the
    solver's default); None or an int >= 1 as given. Raises ValueError otherwise."""
    if isinstance(chunk, str) and chunk == "auto":
        return auto
    if chunk is None:
        return None
    if isinstance(chunk, numbers.Integral) and not isinstance(chunk, (bool, np.bool_)) and chunk >= 1:
        return int(chunk)
    raise ValueError(f'chunk must be "auto", None or an int >= 1 (states per chunk), got {chunk!r}')


def map_batch(fn, chunk: int | None):
    """``fn`` (one state's function of array arguments) over the leading axis of its arguments.

    chunk None: ``jax.vmap(fn)``, one program over the whole batch. Else
    ``jax.lax.map`` over chunks of ``chunk`` states, each chunk vmapped: the
    same results up to floating-point reassociation, a chunk's loops
    (``while_loop``) stop when its own states are done, and its passes stay
    in cache (module doc).
    """
    if chunk is None:
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args, batch_size=chunk)


def batch_mesh(batch: int, devices=None) -> Mesh | None:
    """1-D mesh over ``devices`` (default: all local devices) when there are at
    least two and they divide ``batch`` evenly; else None (run unsharded)."""
    devices = jax.local_devices() if devices is None else list(devices)
    if len(devices) < 2 or batch % len(devices):
        return None
    return Mesh(devices, (AXIS,))


def place(tree, mesh: Mesh | None, split: bool = True):
    """The arrays of ``tree`` put on ``mesh``: split along their leading (batch)
    axis, or whole on every device (``split=False``); unchanged for mesh None.
    Inputs committed to one device would otherwise clash with the mesh."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(AXIS) if split else PartitionSpec()))


def shard_batch(fn, mesh: Mesh | None, n_replicated: int = 0):
    """``fn`` run as one program per device of ``mesh``, each on its slice.

    fn(*args): every array leaf of the first ``len(args) - n_replicated``
    arguments and of the result has the batch as leading axis; the last
    ``n_replicated`` arguments (e.g. a scalar time step) are passed whole to
    every device. fn must treat batch entries independently (a vmap-like
    function), which makes the split exact. With ``mesh=None`` returns fn.
    """
    if mesh is None:
        return fn
    split, whole = PartitionSpec(AXIS), PartitionSpec()

    def sharded(*args):
        specs = (split,) * (len(args) - n_replicated) + (whole,) * n_replicated
        # check_vma=False: no collectives inside, so no replication to track.
        return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=split, check_vma=False)(*args)

    return sharded


def available_memory(backend: str | None = None) -> int | None:
    """Bytes free for new arrays: the accelerator's free memory, or the host's available memory
    (``MemAvailable``) on a CPU; None where it cannot be read."""
    backend = backend or jax.default_backend()
    if backend != "cpu":
        stats = jax.local_devices(backend=backend)[0].memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(nbytes: float, what: str, backend: str | None = None) -> None:
    """ValueError before the work when ``nbytes`` (an estimate) exceeds 90 % of ``available_memory``."""
    free = available_memory(backend)
    if free is not None and nbytes > 0.9 * free:
        raise ValueError(f"{what} needs about {nbytes / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB are free on "
                         f"{backend or jax.default_backend()}; use fewer states at a time or a smaller grid")


#: more host devices than this only adds overhead (and XLA takes minutes to set them up)
MAX_CPU_DEVICES = 256


def _env_device_count() -> bool:
    """True when the environment already sets the CPU device count."""
    return "JAX_NUM_CPU_DEVICES" in os.environ or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")


def use_cpu_cores(n: int | None = None) -> int:
    """Split the host CPU into ``n`` XLA devices.

    Batched solvers shard over local devices, so on a CPU host this lets n
    FFTs run at once (XLA:CPU runs each on one thread): 2.17x the
    split-step throughput on 2 cores at n = 200, batch 16
    (``benchmarks/cpu_sharding.py``). Programs that are not sharded (network training)
    still get the whole intra-op thread pool. Affects only the CPU backend: a GPU stays the default device. Must
    run before JAX's first computation; the ``bec-jax`` CLI calls it first.

    Args:
      n: devices; default all cores, unless the environment already sets a
        count (``JAX_NUM_CPU_DEVICES`` or XLA_FLAGS
        ``--xla_force_host_platform_device_count``), which is then kept.

    Returns the number of CPU devices requested (0 when the environment's is kept).
    Raises ValueError for n < 1, RuntimeError once the backends exist.
    """
    if n is None:
        if _env_device_count():
            return 0
        n = os.cpu_count() or 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CPU_DEVICES:
        raise ValueError(f"the number of CPU devices must be an integer in [1, {MAX_CPU_DEVICES}], got {n!r}")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as e:
        raise RuntimeError(f"use_cpu_cores must be called before JAX runs its first computation: {e}") from None
    return n
