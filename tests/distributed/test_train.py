"""Data-parallel training over processes: the same run as one process at the same global batch."""

import jax
import numpy as np
import pytest

from bec_jax.train.trainer import load_trained
from tests.distributed.conftest import results, run_workers, train_run


def _params(run):
    model, info = load_trained(run, "latest")
    from flax import nnx

    return jax.tree.leaves(nnx.state(model)), info


@pytest.mark.slow  # ~45 s on 2 cores (three training runs over 1 and 2 processes)
def test_two_processes_train_as_one(tmp_path, tiny_dataset):
    one = train_run(tiny_dataset, tmp_path / "one", 2)
    res = results(run_workers(["train", tiny_dataset, tmp_path / "two", 2], 2, timeout_s=120))
    for r in res:  # every process saw the same losses, and they are the single process's
        for a, b in zip(r["history"], one.history):
            assert a["epoch"] == b["epoch"]
            np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=2e-5)
            np.testing.assert_allclose(a["val_loss"], b["val_loss"], rtol=2e-5)
    (p1, i1), (p2, i2) = _params(tmp_path / "one"), _params(tmp_path / "two")  # the checkpoints all processes saved
    assert i1["epoch"] == i2["epoch"] == 2
    for a, b in zip(p1, p2):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_loader_refuses_batches_that_do_not_split_over_the_devices():
    import types

    import pytest

    from bec_jax.data.loader import BatchLoader
    from bec_jax.gpe.grid import Grid

    psi = np.ones((7, 16, 16), np.complex64)
    mesh = types.SimpleNamespace(size=2)  # the constructor reads only the device count
    with pytest.raises(ValueError, match=r"batches of \[1, 2\] samples do not split evenly over 2 devices: use a "
                       r"batch size that is a multiple of 2 with drop_last \(--drop-last\) \(no such size divides"):
        BatchLoader(Grid(16, 8.0), psi, 2, mesh=mesh)  # 7 = 3 x 2 + a last batch of 1
    with pytest.raises(ValueError, match=r"or one of \[2, 4, 8\], which divide the 8 samples"):
        BatchLoader(Grid(16, 8.0), np.ones((8, 16, 16), np.complex64), 3, mesh=mesh)
    assert len(BatchLoader(Grid(16, 8.0), psi, 2, mesh=mesh, drop_last=True)) == 3
    with pytest.raises(ValueError, match=r"\[3\]"):
        BatchLoader(Grid(16, 8.0), psi[:6], 3, mesh=mesh)
