"""bec_jax.distributed on localhost: N CPU processes, coordinator on 127.0.0.1, gloo collectives."""

import pytest

from bec_jax.distributed import DistributedConfig, config_from_env, initialize, process_slice
from tests.distributed.conftest import results, run_workers


@pytest.mark.parametrize("n", [2, 4])
def test_smoke_mesh_allreduce_allgather(n):
    out = results(run_workers(["smoke"], n, timeout_s=80))
    for p, r in enumerate(out):
        assert r["process"] == p and r["count"] == n and r["devices"] == n and r["mesh"] == [n]
        assert r["total"] == sum(range(10 * n))  # every process's rows entered the jit all-reduce
        assert r["gathered"] == list(range(n))
        assert r["all_true"] is True and r["any_false"] is False


def test_process_slice_partitions_the_range():
    for n in (0, 1, 7, 10):
        for count in (1, 2, 3, 4):
            parts = [process_slice(n, i, count) for i in range(count)]
            assert sum((list(range(n))[s] for s in parts), []) == list(range(n))
            assert max(s.stop - s.start for s in parts) - min(s.stop - s.start for s in parts) <= 1
    with pytest.raises(ValueError, match="index"):
        process_slice(4, 2, 2)


def test_config_validation_and_environment(monkeypatch):
    with pytest.raises(ValueError, match="HOST:PORT"):
        DistributedConfig(coordinator="localhost")
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 1\]"):
        DistributedConfig(coordinator="h:1", num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="num_processes must be >= 1"):
        DistributedConfig(num_processes=0)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    cfg = config_from_env(DistributedConfig(process_id=1, num_processes=4))
    assert (cfg.coordinator, cfg.num_processes, cfg.process_id) == ("10.0.0.1:1234", 4, 1)  # flags win
    monkeypatch.setenv("JAX_PROCESS_ID", "x")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        config_from_env()


def test_single_process_needs_no_coordinator(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS",
                "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert initialize() is False
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="missing: coordinator, process_id"):
        initialize()
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")  # an id alone: not silently one process
    with pytest.raises(ValueError, match="missing: coordinator, num_processes"):
        initialize()


def test_a_coordinator_port_in_use_is_one_line_before_jax_starts():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=f"coordinator's port {port} is in use"):
            initialize(DistributedConfig(coordinator=f"127.0.0.1:{port}", num_processes=2, process_id=0))


def test_a_broken_exchange_is_named_whatever_exception_carries_it(monkeypatch, capsys):
    import jax

    import bec_jax.distributed as dist
    from bec_jax.cli import _report_error
    from bec_jax.distributed import ProcessLost, is_collective_failure

    # as jit dispatch raised it when orbax's barrier inside a save lost its peer
    gloo = ValueError("UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/pair.cc:538] Read error "
                      "[127.0.0.1]:59312: Connection reset by peer")
    ours = ValueError("the number of CPU devices must be an integer in [1, 64], got 0")
    def unasked():
        raise AssertionError("a user error outside a multi-process run must not start JAX's backend")

    monkeypatch.setattr(jax, "process_count", unasked)
    assert not is_collective_failure(gloo)  # no run joined: nothing to exchange with
    assert _report_error("train", ours) == 2
    monkeypatch.setattr(dist, "_initialized", True)
    monkeypatch.setattr(jax, "process_count", lambda: 1)
    assert not is_collective_failure(gloo)  # a run of one process
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert is_collective_failure(gloo) and not is_collective_failure(ours)
    assert not is_collective_failure(OSError("UNKNOWN: disk"))
    assert not is_collective_failure(jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory"))
    assert is_collective_failure(jax.errors.JaxRuntimeError("INTERNAL: Gloo all-reduce failed"))
    assert is_collective_failure(ProcessLost("process 0 of 2: another process did not reach 'x' within 600 s"))
    assert _report_error("train", gloo) == 1 and _report_error("train", ours) == 2
    err = capsys.readouterr().err.splitlines()[1:]
    assert err[0].startswith("bec-jax train: error: an exchange with the other processes failed")
    assert err[1] == f"bec-jax train: error: {ours}"
