"""Batch parallelism over local devices, and the CPU device split that feeds it.

States of a batch are independent, so a batched solver runs on D devices as D
copies of the single-device program, one slice of the batch each
(``jax.shard_map``): no cross-device traffic at all. Placing sharded inputs
into a plain ``jit`` does not give that: XLA's SPMD partitioner does not
partition FFTs along batch dimensions, and all-gathers the whole batch onto
every device before each one (XLA:CPU, jax 0.10, 2 devices, n = 200, batch
16: 0.64x the speed of one device, against 1.53x with shard_map;
``benchmarks/cpu_sharding.py``).

XLA:CPU runs each FFT on one thread, so on a CPU host the split-step solver
only uses all cores when the host is split into several XLA devices
(``use_cpu_cores``), each running its slice concurrently.
"""

from __future__ import annotations

import os

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["batch_mesh", "shard_batch", "place", "use_cpu_cores"]

AXIS = "batch"


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


def _env_device_count() -> bool:
    """True when the environment already sets the CPU device count."""
    return "JAX_NUM_CPU_DEVICES" in os.environ or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")


def use_cpu_cores(n: int | None = None) -> int:
    """Split the host CPU into ``n`` XLA devices.

    Batched solvers shard over local devices, so on a CPU host this lets n
    FFTs run at once (XLA:CPU runs each on one thread): 1.4-1.5x the
    split-step throughput on 2 cores (``benchmarks/solver_throughput.py``,
    ``cpu_sharding.py``). Programs that are not sharded (network training)
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
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1 (CPU devices), got {n!r}")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as e:
        raise RuntimeError(f"use_cpu_cores must be called before JAX runs its first computation: {e}") from None
    return n
