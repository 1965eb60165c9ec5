"""The training core every trainer in bec_jax calls.

- ``TrainState`` (params, batch_stats, opt_state) and ``Batch`` (x, y, mask): pytrees.
- ``TrainConfig``: the hyper-parameters of a training run.
- One loss registry (``LOSSES``, ``register_loss``, ``make_loss``): every loss is
  ``loss(pred, batch) -> float32 scalar``, so a loss that needs the input (the
  physics-informed one reads the density from ``batch.x``) takes no special path.
- One optimizer factory (``make_optimizer``), one optax step of any loss
  (``make_gradient_step``), the U-Net's update on it (``make_update`` /
  ``make_train_step``), one compiled prediction (``make_predict``), exact loader
  metrics (``evaluate_loader``).
- One epoch driver (``run_epochs``): batches → steps → validation → best/last
  selection → callbacks.

Callers: ``trainer.fit`` (``bec-jax train``), fine-tuning of pruned and quantized
models (``compress.workflow.FineTuner``: the optimizer chained with
``keep_pruned``), online training (``online.make_online_step``: solver + update in
one program); the inverse problems' surrogate and the gradient-flow experiments
step through ``make_gradient_step``.

The model is split once with ``nnx.split`` and merged inside ``jax.jit``-compiled
pure functions (no per-call ``nnx.jit`` overhead). Train and eval modes are two
graphdefs of one model (BatchNorm ``use_running_average`` False / True).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bec_jax.data.loader import Batch
from bec_jax.data.targets import TargetConfig
from bec_jax.optim import check_learning_rate, make_gradient_step
from bec_jax.train.losses import masked_mse, masked_sq_error_sums, reference_masked_mse

__all__ = [
    "Batch", "TrainState", "TrainConfig", "TrainingDiverged", "OPTIMIZERS", "LOSSES", "register_loss", "make_loss",
    "make_optimizer", "init_state", "make_gradient_step", "make_update", "make_train_step", "make_predict",
    "evaluate_loader", "EpochsResult", "run_epochs",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """What a training step carries: trainable ``params`` and BatchNorm ``batch_stats``
    (``nnx.State``), and the optax ``opt_state``. A pytree (jit/donate/orbax-able)."""

    params: Any
    batch_stats: Any
    opt_state: Any

    def replace(self, **changes) -> "TrainState":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """The checkpoint layout {"params", "batch_stats", "opt_state"}."""
        return dict(params=self.params, batch_stats=self.batch_stats, opt_state=self.opt_state)


OPTIMIZERS = ("sgd", "adam", "adamw")
_PHYSICS_FIELDS = ("fidelity_weight", "fidelity_modified", "fidelity_vortices")

#: name -> factory(grid, config) -> loss(pred, batch). ``register_loss`` adds to it.
LOSSES: dict[str, Callable] = {}


def register_loss(name: str):
    """Decorator: register ``factory(grid, config: TrainConfig) -> loss(pred, batch)`` as ``name``."""

    def add(factory):
        LOSSES[name] = factory
        return factory

    return add


@register_loss("masked_mse")
def _masked_mse(grid, config):
    """Mean over valid pixels (``losses.masked_mse``)."""
    return lambda pred, batch: masked_mse(pred, batch.y, batch.mask)


@register_loss("reference")
def _reference(grid, config):
    """Mean over all pixels of the masked squared error, the reference's (``losses.reference_masked_mse``)."""
    return lambda pred, batch: reference_masked_mse(pred, batch.y, batch.mask)


@register_loss("mse+fidelity")
def _physics_informed(grid, config):
    """Masked MSE + λ · quantum fidelity of the integrated phase (``physics_informed``)."""
    from bec_jax.train.physics_informed import physics_informed_loss

    return physics_informed_loss(grid, config.physics_config)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (reference defaults: Adam, lr 1e-3, batch 8, 50 epochs).

    optimizer: "sgd", "adam" or "adamw", with PyTorch semantics.
    learning_rate: step size, finite and > 0.
    batch_size: samples per step, >= 1.
    epochs: passes over the training split, >= 1 (may be raised on resume).
    seed: model initialisation and batch order.
    weight_decay: AdamW's decoupled weight decay, finite and >= 0 (PyTorch's default 1e-2).
    momentum: SGD momentum in [0, 1) (reference: 0).
    loss: a name of ``LOSSES``: "masked_mse" (mean over valid pixels), "reference"
      (mean over all pixels of the masked squared error, the paper's), or
      "mse+fidelity" (masked MSE + fidelity_weight · quantum fidelity of the
      integrated phase, ``bec_jax.train.physics_informed``).
    target: "phase_diff" (wrapped pixel differences of the phase, radians) or
      "velocity" (∇θ in inverse oscillator lengths) (``TargetConfig``).
    mask_threshold: pixels below this fraction of the peak density are not data, in [0, 1).
    augment: random 90° rotations of training samples.
    split_seed: seed of the group-wise train/val/test split.
    split: train, val and test fractions of the (g, Ω) groups, summing to 1.
    drop_last: drop the last partial training batch (reference: keep it).
    fidelity_weight: λ >= 0 of the "mse+fidelity" loss.
    fidelity_modified: the modified gradient ∇L/√(1−L) of the fidelity term ("mse+fidelity").
    fidelity_vortices: vortex-aware phase integration in the fidelity term ("mse+fidelity").
    """

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 8
    epochs: int = 50
    seed: int = 0
    weight_decay: float = 1e-2
    momentum: float = 0.0
    loss: str = "masked_mse"
    target: str = "phase_diff"
    mask_threshold: float = 1e-3
    augment: bool = False
    split_seed: int = 0
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    drop_last: bool = False
    fidelity_weight: float = 0.1
    fidelity_modified: bool = False
    fidelity_vortices: bool = False

    def __post_init__(self):
        object.__setattr__(self, "split", tuple(float(f) for f in self.split))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {self.loss!r}")
        check_learning_rate(self.learning_rate)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not (0 <= self.weight_decay < math.inf):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        fr = self.split
        if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-6 or fr[0] == 0 or fr[1] == 0:
            raise ValueError(f"split must be 3 fractions (train, val, test) >= 0 summing to 1, with train and val > 0; "
                             f"got {fr}")
        self.target_config  # validates target and mask_threshold
        if self.loss == "mse+fidelity":
            self.physics_config  # validates fidelity_weight

    @property
    def physics_config(self):
        """The ``PhysicsConfig`` of the "mse+fidelity" loss."""
        from bec_jax.train.physics_informed import PhysicsConfig

        return PhysicsConfig(fidelity_weight=self.fidelity_weight, modified=bool(self.fidelity_modified),
                             vortices=bool(self.fidelity_vortices), target=self.target)

    @property
    def target_config(self) -> TargetConfig:
        return TargetConfig(target=self.target, mask_threshold=self.mask_threshold)

    def resume_key(self) -> dict:
        """Settings a resumed run must share with the original (all but ``epochs``)."""
        d = dataclasses.asdict(self)
        d.pop("epochs")
        if self.loss != "mse+fidelity":
            # unused by the pixel losses: runs written before these fields existed resume unchanged
            for k in _PHYSICS_FIELDS:
                d.pop(k)
        return d


class TrainingDiverged(ValueError):
    """A training or validation loss went non-finite (the epoch is not saved)."""


def make_loss(config: TrainConfig, grid) -> Callable:
    """The training loss ``loss(pred, batch) -> float32 scalar`` of ``config`` on ``grid`` (``LOSSES``)."""
    return LOSSES[config.loss](grid, config)


def make_optimizer(config: TrainConfig, learning_rate=None) -> optax.GradientTransformation:
    """The optax transformation of ``config`` (PyTorch semantics for each optimizer).

    learning_rate: overrides ``config.learning_rate`` (a float or an optax schedule;
    fine-tuning passes its own rate).
    """
    lr = config.learning_rate if learning_rate is None else learning_rate
    if config.optimizer == "sgd":
        return optax.sgd(lr, momentum=config.momentum or None)
    if config.optimizer == "adam":
        return optax.adam(lr)
    return optax.adamw(lr, weight_decay=config.weight_decay)


def init_state(model, tx: optax.GradientTransformation):
    """(train_graphdef, eval_graphdef, TrainState) of a model (an nnx module with BatchNorms).

    An abstract model (``nnx.eval_shape``) gives an abstract state (ShapeDtypeStructs).
    """
    model.train()
    gd_train, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.eval()
    gd_eval = nnx.split(model, nnx.Param, nnx.BatchStat)[0]
    model.train()
    abstract = any(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree_util.tree_leaves(params))
    opt_state = jax.eval_shape(tx.init, params) if abstract else tx.init(params)
    return gd_train, gd_eval, TrainState(params, batch_stats, opt_state)


def make_update(gd_train, tx: optax.GradientTransformation, loss: Callable):
    """The pure (un-jitted) ``update(state, batch) -> (state, loss)`` of one batch of the U-Net.

    loss(pred, batch): float32 scalar; the returned loss is the batch's before the
    update, and the BatchNorm statistics are the train-mode forward's. Exposed so
    that other compiled steps (``online.make_online_step``: solver + update in one
    program) run the same code as ``make_train_step``.
    """

    def loss_of(params, batch_stats, batch):
        model = nnx.merge(gd_train, params, batch_stats, copy=True)
        return loss(model(batch.x), batch), nnx.state(model, nnx.BatchStat)

    step = make_gradient_step(loss_of, tx, has_aux=True)

    def update(state: TrainState, batch: Batch):
        params, opt_state, value, batch_stats = step(state.params, state.opt_state, state.batch_stats, batch)
        return TrainState(params, batch_stats, opt_state), value

    return update


def make_train_step(gd_train, tx: optax.GradientTransformation, loss: Callable, render: Callable | None = None):
    """A jitted ``step(state, batch) -> (state, loss)`` (state buffers donated); see ``make_update``.

    render: maps what the step is given to its ``Batch`` inside the compiled step, e.g. a loader's
    ``BatchLoader.render`` of its ``sources`` (the camera images of training under the imaging
    model are then drawn in the same program as the update). None: the step is given batches.
    """
    update = make_update(gd_train, tx, loss)
    if render is not None:
        made = update
        update = lambda state, src: made(state, render(src))  # noqa: E731
    return jax.jit(update, donate_argnums=(0,))


@functools.lru_cache(maxsize=32)
def make_predict(gd_eval):
    """A jitted ``predict(params, batch_stats, x) -> y`` in eval mode (running BatchNorm stats).

    Cached by graph definition: models of one architecture (a checkpoint, its
    pruned and dequantized copies) share one compiled function.
    """

    @jax.jit
    def predict(params, batch_stats, x):
        return nnx.merge(gd_eval, params, batch_stats)(x)

    return predict


@jax.jit
def _sums(pred, y, mask):
    return jnp.stack(masked_sq_error_sums(pred, y, mask))


def evaluate_loader(predict, params, batch_stats, loader) -> dict:
    """Exact masked MSEs over all batches of ``loader`` (epoch 0 order).

    predict: from ``make_predict``. Returns {"mse": Σsq / (C Σvalid),
    "mse_ref": Σsq / (C Σpixels), "valid_fraction"}.
    """
    total = np.zeros(3)
    n_channels = 1
    for batch in loader.epoch(0):
        pred = predict(params, batch_stats, batch.x)
        n_channels = pred.shape[-1]
        total += np.asarray(_sums(pred, batch.y, batch.mask), np.float64)
    sq, valid, pixels = total
    return dict(mse=sq / (n_channels * max(valid, 1.0)), mse_ref=sq / (n_channels * max(pixels, 1.0)),
                valid_fraction=valid / max(pixels, 1.0))


class EpochsResult(NamedTuple):
    """What ``run_epochs`` returns.

    state: the state after the last epoch (training continues from it).
    kept: the state the selection kept (``view`` applied), kept_epoch its epoch.
    history: one dict per epoch: epoch, train_loss, the ``validate`` metrics, seconds
      (and whatever ``on_epoch`` added).
    """

    state: TrainState
    kept: TrainState
    kept_epoch: int
    history: list


def _copy(tree):
    return jax.tree.map(lambda a: a.copy(), tree)


def run_epochs(step: Callable, state: TrainState, batches: Callable[[int], Iterable[Batch]], epochs: Iterable[int],
               *, validate: Callable[[TrainState], dict] | None = None, keep: str = "last",
               view: Callable[[TrainState], TrainState] | None = None, on_batch: Callable[[], None] | None = None,
               on_epoch: Callable[[dict, TrainState], None] | None = None, what: str = "training") -> EpochsResult:
    """The epoch driver: for each epoch e of ``epochs``, ``step`` over ``batches(e)``, then validate and select.

    step(state, batch) -> (state, loss): e.g. ``make_train_step`` (it may donate
      its state: a kept state is copied). batches(e): the batches of epoch e (their
      order may depend on e, which makes a resumed run exact).
    validate(state) -> dict of metrics with a "val_loss" (lower is better), on the
      ``view`` of the state; None: no validation.
    keep: "best" keeps the epoch of lowest finite val_loss (the earliest on ties; a
      non-finite val_loss is never best), "last" the last epoch.
    view(state) -> state: what is validated, kept and passed on (e.g. recomputed
      BatchNorm statistics); training continues from the un-viewed state.
    on_batch(): after every step (progress bars). on_epoch(row, viewed_state): after
      every epoch; it may add fields to the history row, save, or raise.
    Raises TrainingDiverged when an epoch's mean training loss is not finite.
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    if keep == "best" and validate is None:
        raise ValueError("keep='best' needs a validate function")
    history, kept, kept_epoch, best = [], None, 0, np.inf
    current = state
    for epoch in epochs:
        t0 = time.perf_counter()
        losses = []
        for batch in batches(epoch):
            state, value = step(state, batch)
            losses.append(value)
            if on_batch is not None:
                on_batch()
        train_loss = float(np.mean(jax.device_get(losses))) if losses else float("nan")
        if not np.isfinite(train_loss):
            raise TrainingDiverged(f"{what} diverged at epoch {epoch} (train loss {train_loss}); nothing of this "
                                   "epoch was saved; lower the learning rate")
        current = view(state) if view is not None else state
        row = dict(epoch=epoch, train_loss=train_loss, **(validate(current) if validate is not None else {}))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        score = row.get("val_loss", np.nan)
        if keep == "best" and (kept is None or (np.isfinite(score) and score < best)):
            best = score if np.isfinite(score) else np.inf
            kept, kept_epoch = _copy(current), epoch
        if on_epoch is not None:
            on_epoch(row, current)
    if keep == "last" or kept is None:
        kept, kept_epoch = current, (history[-1]["epoch"] if history else 0)
    return EpochsResult(state, kept, kept_epoch, history)
