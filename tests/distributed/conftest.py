import json
import os
import sys
from pathlib import Path

import pytest

from bec_jax.data.generate import GenerateConfig
from bec_jax.distributed import launch_local

ROOT = Path(__file__).resolve().parents[2]

# 5 groups x 2 states on a 16² grid, batches of 2: seconds per process even on a loaded machine.
TINY_DATA = GenerateConfig(n=16, n_groups=5, states_per_group=2, g_range=(10.0, 30.0), omega_range=(0.2, 0.4),
                           batch_size=2, n_starts=1, max_iter=300)


def run_workers(args, n, timeout_s, on_start=None, **env):
    """``launch_local`` of ``python -m tests.distributed.workers *args`` on n processes of one CPU device
    each; returns the ProcessResults (every process is killed at the timeout)."""
    base = dict(PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_NUM_CPU_DEVICES="1",
                JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **env)
    return launch_local([sys.executable, "-m", "tests.distributed.workers", *map(str, args)], n, timeout_s=timeout_s,
                        env=base, cwd=ROOT, on_start=on_start)


def results(procs):
    """The RESULT json of every process; fails with the processes' output tails otherwise."""
    out = []
    for i, p in enumerate(procs):
        lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if p.returncode != 0 or not lines:
            pytest.fail(f"process {i} exit {p.returncode} after {p.seconds:.0f} s\nstdout: {p.stdout[-2000:]}\n"
                        f"stderr: {p.stderr[-3000:]}")
        out.append(json.loads(lines[-1][len("RESULT "):]))
    return out


def train_run(data, out, epochs: int):
    """The test's training run: a width-2 depth-2 U-Net, global batch 2, SGD with momentum (linear in the
    gradients, so round-off stays round-off; Adam's first steps, g/|g|, turn it into ±lr on tiny gradients)."""
    from bec_jax.models import UNetConfig
    from bec_jax.train import TrainConfig, fit

    return fit(data, out, UNetConfig(base_width=2, depth=2, input_size=16), TrainConfig(epochs=epochs, batch_size=2, optimizer="sgd", learning_rate=0.05, momentum=0.9),
               progress=False, log=print)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    from bec_jax.data.generate import generate

    path = tmp_path_factory.mktemp("tiny") / "tiny.h5"
    assert generate(TINY_DATA, path, progress=False)["status"] == "complete"
    return path
