"""Programs the multi-process tests run in every process (``python -m tests.distributed.workers NAME ...``).

Each joins the run from the JAX_* environment set by ``launch_local`` and prints one JSON
line prefixed ``RESULT `` for the test to read.
"""

from __future__ import annotations

import json
import sys


def _result(**values) -> None:
    print("RESULT " + json.dumps(values), flush=True)


def smoke() -> None:
    """Initialise, build the global mesh, sum a sharded array (a jit all-reduce), all-gather ids."""
    from bec_jax import distributed as dist

    assert dist.initialize(dist.DistributedConfig(heartbeat_timeout_s=20, init_timeout_s=60))
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = dist.global_mesh()
    p, n = dist.process_index(), dist.process_count()
    local = np.arange(10 * n, dtype=np.float32)[dist.process_slice(10 * n)]  # this process's rows
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("batch")), local)
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(x)
    gathered = multihost_utils.process_allgather(np.array([p]))
    dist.barrier("smoke-end", timeout_s=60)
    _result(process=p, count=n, devices=len(jax.devices()), mesh=list(mesh.shape.values()), total=float(total),
            gathered=np.asarray(gathered).ravel().tolist(), all_true=dist.all_true(True), any_false=dist.all_true(p != 0))


def generate(out: str) -> None:
    """Every process its shard of ``TINY_DATA`` under OUT's shard folder; process 0 the manifest."""
    from bec_jax import distributed as dist

    assert dist.initialize(dist.DistributedConfig(heartbeat_timeout_s=30, init_timeout_s=60))
    from bec_jax.data.generate import generate_sharded
    from tests.distributed.conftest import TINY_DATA

    _result(**generate_sharded(TINY_DATA, out, progress=False))


def train(data: str, out: str, epochs: str = "2") -> None:
    """Every process ``fit``s the same run (data-parallel at global batch 2)."""
    from bec_jax import distributed as dist

    assert dist.initialize(dist.DistributedConfig(heartbeat_timeout_s=20, init_timeout_s=60))
    from tests.distributed.conftest import train_run

    result = train_run(data, out, int(epochs))
    _result(process=dist.process_index(), history=result.history, best_epoch=result.best_epoch)


def die(victim: str) -> None:
    """Process ``victim`` ends abruptly after the first collective; the others then wait at a barrier
    and sum again: they must fail with a message, not hang."""
    import os

    from bec_jax import distributed as dist

    assert dist.initialize(dist.DistributedConfig(heartbeat_timeout_s=10, init_timeout_s=60))
    assert dist.all_true(True)
    if dist.process_index() == int(victim):
        os._exit(3)
    dist.barrier("after-death", timeout_s=60)
    dist.all_true(True)
    _result(survived=True)  # never reached: the test fails if it is


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
