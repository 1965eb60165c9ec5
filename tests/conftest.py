import subprocess
import sys
from pathlib import Path

import jax
import pytest

from bec_jax.data import GenerateConfig, generate


@pytest.fixture(params=["float32", "float64"])
def precision(request):
    """Run the test in float32/complex64 and in float64/complex128 (jax x64)."""
    with jax.enable_x64(request.param == "float64"):
        yield request.param


@pytest.fixture
def exact_matmul():
    """float32 matmuls and convolutions at full precision, for tests that compare two float paths:
    on a GPU JAX's default is TF32, whose rounding (~1e-3) is above their tolerances."""
    with jax.default_matmul_precision("highest"):
        yield


def tol(precision, f32, f64):
    """dtype-aware tolerance."""
    return f32 if precision == "float32" else f64


ROOT = Path(__file__).resolve().parents[1]


def run_script(path, *args, timeout=900):
    """Run the repository's script ``path`` (e.g. "experiments/x.py") with ``args`` from the repository root in
    this Python; fail the test with its stderr's tail unless it exits 0. Returns the CompletedProcess."""
    done = subprocess.run([sys.executable, str(ROOT / path), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# 6 groups x 2 states on a 32² grid (~5-15 s on 2 cores): split 4/1/1 groups.
SMALL_DATA = GenerateConfig(n=32, n_groups=6, states_per_group=2, g_range=(50.0, 120.0), omega_range=(0.3, 0.6),
                            batch_size=12, n_starts=1, max_iter=600)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "small.h5"
    summary = generate(SMALL_DATA, path, progress=False)
    assert summary["status"] == "complete" and summary["n_samples"] >= 10
    return path


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, small_dataset):
    """A 2-epoch width-4 depth-2 U-Net trained on the small 32² dataset: (run dir, data path)."""
    from bec_jax.models import UNetConfig
    from bec_jax.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("compress_run")
    fit(small_dataset, root / "run", UNetConfig(base_width=4, depth=2, input_size=32),
        TrainConfig(epochs=2, batch_size=4), progress=False, log=None)
    return root / "run", small_dataset
