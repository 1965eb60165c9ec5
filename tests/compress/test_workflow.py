"""Fine-tuning workflow: validation-based epoch selection and the dense control."""

from types import SimpleNamespace

import numpy as np
import pytest


def test_finetune_keeps_the_epoch_of_lowest_validation_mse(small_dataset):
    from bec_jax.compress.workflow import FineTuner, test_mse
    from bec_jax.data.loader import BatchLoader
    from bec_jax.models import UNetConfig, init_model
    from bec_jax.train import TrainConfig
    from bec_jax.train.trainer import load_dataset

    tc = TrainConfig()
    grid, arrays, _, splits = load_dataset(small_dataset, tc)
    train, val = (BatchLoader(grid, arrays["psi"][splits[k]], 4, tc.target_config, shuffle=k == "train")
                  for k in ("train", "val"))
    model = init_model(UNetConfig(base_width=4, depth=2, input_size=grid.n), 0)
    model.eval()
    tuner = FineTuner(model, train, learning_rate=3e-2)
    r = tuner.run(model, None, 5, select=val)
    assert len(r.train_losses) == len(r.val_mse) == 5
    assert r.epoch == 1 + int(np.argmin(r.val_mse))
    # the returned model is that epoch's, not the last one's (exact recomputation)
    assert test_mse(r.model, val)["mse"] == pytest.approx(min(r.val_mse), rel=1e-5)
    last = tuner.run(model, None, 2)
    assert last.epoch == 2 and last.val_mse == []
    assert np.isfinite(test_mse(model, val)["mse"])  # the caller's model keeps its (undonated) buffers


def test_dense_control_applies_the_same_rule(monkeypatch):
    from bec_jax.compress import workflow

    setup = SimpleNamespace(model=None, test="test", val="val")

    class Tuner:  # three epochs; the models themselves do not matter here
        def run(self, model, masks, epochs, on_epoch=None):
            for k in range(1, epochs + 1):
                on_epoch(k, None)

    def control(keep):
        # (test, val) MSE of epochs 0..3: the control must follow validation, not test
        seq = {"test": iter([5.0, 4.0, 1.0, 2.0]), "val": iter([5.0, 3.0, 4.0, 2.0])}
        monkeypatch.setattr(workflow, "test_mse",
                            lambda model, loader, predict=None: dict(mse=next(seq[loader])))
        return workflow.dense_control(setup, Tuner(), 3, keep)

    assert control("best") == [5.0, 4.0, 4.0, 2.0]
    assert control("last") == [5.0, 4.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="keep must be one of"):
        control("first")


def test_cosine_cycles_decay_and_restart():
    from bec_jax.compress.workflow import cosine_cycles

    f = cosine_cycles(1e-3, 10, floor=0.01)
    values = np.array([float(f(np.int32(i))) for i in (0, 5, 10, 15, 20)])
    # peak at each restart, midpoint (peak + floor)/2, then back to the peak
    np.testing.assert_allclose(values, [1e-3, 5.05e-4, 1e-3, 5.05e-4, 1e-3], rtol=1e-5)
    assert float(f(np.int32(9))) < float(f(np.int32(8))) < 1e-3


def test_finetuner_rejects_bad_cycle():
    from bec_jax.compress.workflow import FineTuner

    with pytest.raises(ValueError, match="cycle_epochs must be None or >= 1, got 0"):
        FineTuner(None, None, learning_rate=1e-3, cycle_epochs=0)
