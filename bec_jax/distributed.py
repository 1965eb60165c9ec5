"""Several processes, one program: ``jax.distributed`` set-up, the global mesh, process slices.

JAX's multi-controller runtime runs the same Python program in every process (one per
host, or several on one host); a coordinator (process 0's address) joins them, after
which ``jax.devices()`` lists every process's devices and a ``jit`` over arrays sharded
on all of them inserts the cross-process collectives itself. bec_jax stands on it:

- ``initialize``: from explicit settings (the CLI's ``--coordinator``, ``--num-processes``,
  ``--process-id``), else the environment (``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), else JAX's own cluster auto-detection when a
  multi-task SLURM or Open MPI job is detected (or ``coordinator="auto"``, e.g. on a TPU
  pod). CPU processes exchange data through gloo.
- ``global_mesh``: a 1-D mesh over every process's devices (axis ``"batch"``, the axis of
  ``gpe.sharding``); ``process_slice``: this process's contiguous part of an index range.
- ``barrier``, ``all_true``: small synchronisations between the processes.
- ``launch_local``: N processes of one command on this machine (tests, benchmarks).

A process that dies is noticed by the others: a collective with it fails at once
(gloo: "connection closed by peer"), and the coordination service ends every process
whose peer stopped sending heartbeats for ``heartbeat_timeout_s``, with a message that
another task died. Nothing waits forever.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

__all__ = ["DistributedConfig", "config_from_env", "cluster_detected", "initialize", "is_initialized",
           "process_index", "process_count", "global_mesh", "process_slice", "replicate", "shard_rows", "local_copy",
           "barrier", "all_true", "ProcessLost", "is_collective_failure",
           "free_port", "launch_local", "ProcessResult", "python_argv"]

ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a multi-process run (all None: one process, unless a cluster is detected).

    coordinator: "HOST:PORT" of process 0's coordination service (reachable from every
      process), or "auto" for JAX's cluster auto-detection (SLURM, Open MPI, TPU pods).
    num_processes: processes in the run, >= 1.
    process_id: this process's index in [0, num_processes).
    heartbeat_timeout_s: seconds without a heartbeat after which a process counts as dead
      and every other process is stopped, >= 1.
    init_timeout_s: seconds to wait for every process to join, >= 1.
    """

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_timeout_s: int = 60
    init_timeout_s: int = 300

    def __post_init__(self):
        if self.coordinator is not None and self.coordinator != "auto":
            host, _, port = self.coordinator.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"coordinator must be HOST:PORT with a port in [1, 65535] (or 'auto'), "
                                 f"got {self.coordinator!r}")
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {self.num_processes}")
        if self.process_id is not None and self.num_processes is not None:
            if not 0 <= self.process_id < self.num_processes:
                raise ValueError(f"process_id must be in [0, {self.num_processes - 1}], got {self.process_id}")
        elif self.process_id is not None and self.process_id < 0:
            raise ValueError(f"process_id must be >= 0, got {self.process_id}")
        for name in ("heartbeat_timeout_s", "init_timeout_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def explicit(self) -> bool:
        """Whether the settings name a multi-process run (rather than leaving it to auto-detection)."""
        # a process id alone (JAX_PROCESS_ID set, the count forgotten) asks for one too: refused as incomplete
        return (self.coordinator not in (None, "auto") or (self.num_processes or 1) > 1
                or (self.process_id is not None and self.num_processes is None))


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None


def config_from_env(base: DistributedConfig = DistributedConfig()) -> DistributedConfig:
    """``base`` with its unset coordinator / process count / process id taken from the
    ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` environment."""
    return dataclasses.replace(
        base, coordinator=base.coordinator or os.environ.get(ENV_COORDINATOR) or None,
        num_processes=base.num_processes if base.num_processes is not None else _env_int(ENV_NUM_PROCESSES),
        process_id=base.process_id if base.process_id is not None else _env_int(ENV_PROCESS_ID))


def cluster_detected() -> str | None:
    """The multi-task job this process runs in ("slurm", "openmpi"), or None: a job of one task
    (or none) is a single process, so an ordinary ``srun``/``mpirun -n 1`` stays single."""
    for name, var in (("slurm", "SLURM_NTASKS"), ("openmpi", "OMPI_COMM_WORLD_SIZE")):
        try:
            if int(os.environ.get(var, "1")) > 1:
                return name
        except ValueError:
            pass
    return None


_initialized = False


def is_initialized() -> bool:
    """Whether ``initialize`` joined this process to a run (of one or more processes)."""
    return _initialized


def initialize(config: DistributedConfig = DistributedConfig()) -> bool:
    """Join a multi-process run if ``config``, the environment or a detected cluster asks for one.

    Must run before JAX's first computation in this process (the CLI calls it first).
    Returns True when this process joined a run of several processes, False when it runs
    alone. Raises ValueError for inconsistent settings, RuntimeError when JAX already runs.
    """
    global _initialized
    config = config_from_env(config)
    auto = config.coordinator == "auto" or (not config.explicit and cluster_detected() is not None)
    if not auto and not config.explicit:
        return False
    if not auto and None in (config.coordinator, config.num_processes, config.process_id):
        missing = [k for k in ("coordinator", "num_processes", "process_id") if getattr(config, k) is None]
        raise ValueError(f"a multi-process run needs a coordinator, a process count and a process id; "
                         f"missing: {', '.join(missing)} (flags --coordinator, --num-processes, --process-id or "
                         f"{ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID})")
    if not auto and config.process_id == 0:
        _check_port_free(config.coordinator)
    import jax

    # CPU devices of different processes exchange data through gloo (no MPI needed).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = dict(initialization_timeout=config.init_timeout_s, heartbeat_timeout_seconds=config.heartbeat_timeout_s)
    if not auto:
        kwargs.update(coordinator_address=config.coordinator, num_processes=config.num_processes,
                      process_id=config.process_id)
    jax.distributed.initialize(**kwargs)
    _initialized = True
    return jax.process_count() > 1


def _check_port_free(coordinator: str) -> None:
    """ValueError when the coordinator's port is taken on this machine: process 0 serves it (on every
    interface), and XLA, failing to, ends the process from C++ without a word bec_jax could catch."""
    port = int(coordinator.rpartition(":")[2])
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server: TIME_WAIT is no conflict
                s.bind((host, port))
            return
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"the coordinator's port {port} is in use on this machine: choose another "
                                 f"(--coordinator HOST:PORT)") from None
    # neither family could be tried (no IPv6, say): leave it to XLA


def process_index() -> int:
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def global_mesh():
    """1-D ``Mesh`` over every device of every process, axis ``"batch"`` (``gpe.sharding.AXIS``),
    ordered by process so that process p's devices hold the p-th block of a sharded axis."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from bec_jax.gpe.sharding import AXIS

    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (AXIS,))


def process_slice(n: int, index: int | None = None, count: int | None = None) -> slice:
    """Process ``index``'s (default: this one's) contiguous part of ``range(n)`` split over
    ``count`` (default: all) processes; parts differ in length by at most one."""
    index = process_index() if index is None else index
    count = process_count() if count is None else count
    if n < 0 or count < 1 or not 0 <= index < count:
        raise ValueError(f"need n >= 0, count >= 1 and index in [0, count), got n={n}, index={index}, count={count}")
    return slice(n * index // count, n * (index + 1) // count)


def replicate(tree, mesh):
    """The arrays of ``tree`` (equal in every process) as global arrays held whole by every device
    of ``mesh`` (parameters, optimizer state)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), tree)


def shard_rows(tree, mesh, rows: int):
    """Global arrays of ``rows`` rows split over ``mesh``'s devices from this process's rows (its
    ``process_slice(rows)``, the leading axis of every array of ``tree``): a global batch."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a, (rows, *a.shape[1:])), tree)


def local_copy(tree):
    """This process's copy of replicated global arrays (``replicate``), for computations that each
    process runs alone (validation, saving a figure)."""
    import jax

    return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, tree)


class ProcessLost(RuntimeError):
    """Another process of the run did not reach a synchronisation point (it stopped, or hangs)."""


def barrier(name: str, timeout_s: float = 600.0) -> None:
    """Wait until every process reaches the barrier ``name`` (each name used once per run).

    Raises ProcessLost naming the barrier when another process does not arrive within
    ``timeout_s`` (it died, or hangs). A no-op for a single process."""
    import jax

    if jax.process_count() == 1:
        return
    from jax._src import distributed as _dist  # the coordination service's barrier takes a timeout

    try:
        _dist.global_state.client.wait_at_barrier(f"bec_jax:{name}", int(timeout_s * 1000))
    except Exception as e:  # the client raises XlaRuntimeError subclasses of several kinds
        raise ProcessLost(f"process {jax.process_index()} of {jax.process_count()}: another process did not reach "
                           f"{name!r} within {timeout_s:g} s (it failed or hangs; see its log): "
                           f"{str(e).strip().splitlines()[0][:200]}") from None


# XLA runtime statuses of a broken exchange; bec_jax's own errors never start with one
_BROKEN_EXCHANGE = ("UNKNOWN:", "UNAVAILABLE:", "DEADLINE_EXCEEDED:", "ABORTED:", "CANCELLED:", "INTERNAL:")


def is_collective_failure(e: BaseException) -> bool:
    """Whether ``e`` is a failed exchange with the other processes (most likely because one stopped).

    A collective that breaks while its result is fetched raises ``JaxRuntimeError``; one that
    breaks inside a ``jit`` dispatch (``process_allgather``, orbax's barriers during a save)
    raises ``ValueError`` carrying the same XLA status; ``barrier`` raises ``ProcessLost``.
    False in a single-process run."""
    if isinstance(e, ProcessLost):
        return True
    if not _initialized:  # no run joined: nothing to exchange with (and no backend started to find out)
        return False
    import jax

    if jax.process_count() == 1:
        return False
    if type(e).__name__ == "JaxRuntimeError":  # any runtime failure but running out of memory
        return not str(e).lstrip().startswith("RESOURCE_EXHAUSTED:")
    return isinstance(e, ValueError) and str(e).lstrip().startswith(_BROKEN_EXCHANGE)


def all_true(flag: bool) -> bool:
    """Whether ``flag`` is true in every process (a collective; every process must call it)."""
    import jax
    import numpy as np

    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.array([bool(flag)]))))


# ----------------------------------------------------------------------- local launcher

def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a local coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class ProcessResult:
    """One process of ``launch_local``: exit code (None: killed at the timeout), stdout, stderr, seconds."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


def launch_local(argv: list[str], num_processes: int, *, timeout_s: float, env: dict | None = None,
                 cwd=None, on_start=None) -> list[ProcessResult]:
    """Run ``argv`` as ``num_processes`` processes of one run on this machine, coordinator on
    127.0.0.1 at a free port, passed through ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES``
    / ``JAX_PROCESS_ID``. Each process gets its own session; when ``timeout_s`` passes, every
    process group still running is killed (returncode None), so a hang cannot outlive it.

    env: extra environment variables. on_start(popens): called once all have started (e.g.
    to kill one of them). Returns one ``ProcessResult`` per process, in process order.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    address = f"127.0.0.1:{free_port()}"
    procs, files, t0 = [], [], time.monotonic()
    try:
        for i in range(num_processes):
            penv = dict(os.environ, **(env or {}), **{ENV_COORDINATOR: address, ENV_NUM_PROCESSES: str(num_processes),
                                                       ENV_PROCESS_ID: str(i)})
            # files, not pipes: a process blocked on a full pipe would stall the others in their collectives
            out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
            files.append((out, err))
            procs.append(subprocess.Popen(argv, env=penv, cwd=cwd, stdout=out, stderr=err, text=True,
                                          start_new_session=True))
        if on_start is not None:
            on_start(procs)
        ends = []
        for p in procs:
            try:
                p.wait(timeout=max(0.1, timeout_s - (time.monotonic() - t0)))
                ends.append(p.returncode)
            except subprocess.TimeoutExpired:
                _kill_group(p)
                p.wait()
                ends.append(None)
            ends[-1] = (ends[-1], time.monotonic() - t0)
        results = []
        for (code, seconds), (out, err) in zip(ends, files):
            out.seek(0)
            err.seek(0)
            results.append(ProcessResult(code, out.read(), err.read(), seconds))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                _kill_group(p)
                p.wait()
        for out, err in files:
            out.close()
            err.close()


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def python_argv(*args: str) -> list[str]:
    """``[this python, *args]``: e.g. ``python_argv("-m", "bec_jax.cli", "train", ...)``."""
    return [sys.executable, *args]
