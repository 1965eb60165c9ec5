"""Training the U-Net: optimizer factory, jit-compiled steps, and a resumable fit loop.

The train state is a plain pytree ``{"params", "batch_stats", "opt_state"}``
(``nnx.State`` leaves): the model is split once with ``nnx.split`` and merged
inside ``jax.jit``-compiled pure functions, which avoids the per-call Python
overhead of ``nnx.jit``. Train and eval modes are two graphdefs of the same
model (BatchNorm ``use_running_average`` False / True).

Exact resume: a checkpoint is written at the end of every epoch; the batch order
of epoch e depends only on (seed, e) (``BatchLoader``) and there is no other
randomness, so killing a run and rerunning the same command continues from the
last completed epoch and ends with bit-identical parameters to an uninterrupted
run on the same machine.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bec_jax.data.loader import BatchLoader
from bec_jax.data.splits import split_by_group
from bec_jax.artifacts import CorruptArtifact, atomic_write_text
from bec_jax.data.storage import load_grid, read_h5
from bec_jax.data.targets import TargetConfig
from bec_jax.models.unet import UNet, UNetConfig, default_depth, init_model
from bec_jax.train.checkpoint import Checkpoints
from bec_jax.train.losses import LOSSES, loss_fn, masked_sq_error_sums

__all__ = [
    "OPTIMIZERS", "TrainConfig", "make_optimizer", "init_state", "make_train_step", "make_predict",
    "evaluate_loader", "load_dataset", "fit", "FitResult", "load_trained", "TRAIN_LOSSES", "make_loss",
    "make_update",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
#: Loss names of ``TrainConfig``: the pixel losses of ``losses.LOSSES`` plus the
#: physics-informed "mse+fidelity" (``physics_informed.physics_informed_loss``).
TRAIN_LOSSES = LOSSES + ("mse+fidelity",)
_PHYSICS_FIELDS = ("fidelity_weight", "fidelity_modified", "fidelity_vortices")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (reference defaults: Adam, lr 1e-3, batch 8, 50 epochs).

    optimizer: "sgd" (momentum ``momentum``), "adam", or "adamw" (decoupled
      weight decay ``weight_decay``; PyTorch's default 1e-2).
    learning_rate: > 0. batch_size: >= 1. epochs: >= 1 (may be raised on resume).
    seed: model initialisation and batch order.
    loss: "masked_mse" (mean over valid pixels, default), "reference"
      (mean over all pixels of the masked squared error, the paper's), or
      "mse+fidelity" (masked MSE + fidelity_weight · quantum fidelity of the
      integrated phase, ``bec_jax.train.physics_informed``).
    fidelity_weight (λ ≥ 0), fidelity_modified (modified gradient ∇L/√(1−L)),
      fidelity_vortices (vortex-aware integration): used by "mse+fidelity" only.
    target, mask_threshold: how ψ becomes targets and masks (``TargetConfig``).
    augment: random 90° rotations of training samples.
    split_seed, split: group-wise train/val/test split of the dataset.
    drop_last: drop the last partial training batch (reference: keep it).
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
        if self.loss not in TRAIN_LOSSES:
            raise ValueError(f"loss must be one of {TRAIN_LOSSES}, got {self.loss!r}")
        if not (self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
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


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax transformation of ``config`` (PyTorch semantics for each optimizer)."""
    lr = config.learning_rate
    if config.optimizer == "sgd":
        return optax.sgd(lr, momentum=config.momentum or None)
    if config.optimizer == "adam":
        return optax.adam(lr)
    return optax.adamw(lr, weight_decay=config.weight_decay)


def make_loss(config: TrainConfig, grid) -> Callable:
    """The training loss of ``config`` on ``grid``: loss(pred, y, mask[, x]) -> float32 scalar.

    Pixel losses come from ``losses.loss_fn``; "mse+fidelity" is
    ``physics_informed_loss(grid, config.physics_config)`` (needs the input x).
    """
    if config.loss != "mse+fidelity":
        return loss_fn(config.loss)
    from bec_jax.train.physics_informed import physics_informed_loss

    return physics_informed_loss(grid, config.physics_config)


def init_state(model: UNet, tx: optax.GradientTransformation):
    """(train_graphdef, eval_graphdef, state) of a freshly built model.

    state = {"params": nnx.State, "batch_stats": nnx.State, "opt_state": optax state}.
    An abstract model (``nnx.eval_shape``) gives an abstract state (ShapeDtypeStructs).
    """
    model.train()
    gd_train, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.eval()
    gd_eval = nnx.split(model, nnx.Param, nnx.BatchStat)[0]
    model.train()
    abstract = any(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree_util.tree_leaves(params))
    opt_state = jax.eval_shape(tx.init, params) if abstract else tx.init(params)
    return gd_train, gd_eval, dict(params=params, batch_stats=batch_stats, opt_state=opt_state)


def make_update(gd_train, tx: optax.GradientTransformation, loss: Callable):
    """The pure (un-jitted) ``update(state, x, y, mask) -> (state, loss)`` of one batch.

    The body of ``make_train_step``, exposed so that other compiled steps
    (``online.make_online_step``: solver + update in one program) reuse the
    same code path. Arguments as in ``make_train_step``.
    """
    call = (lambda p, x, y, m: loss(p, y, m, x)) if getattr(loss, "uses_input", False) else \
        (lambda p, x, y, m: loss(p, y, m))

    def update(state, x, y, mask):
        model = nnx.merge(gd_train, state["params"], state["batch_stats"], copy=True)
        value, grads = nnx.value_and_grad(lambda m: call(m(x), x, y, mask))(model)
        params, batch_stats = nnx.state(model, nnx.Param, nnx.BatchStat)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        params = optax.apply_updates(params, updates)
        return dict(params=params, batch_stats=batch_stats, opt_state=opt_state), value

    return update


def make_train_step(gd_train, tx: optax.GradientTransformation, loss: Callable):
    """A jitted ``step(state, x, y, mask) -> (state, loss)`` (state buffers donated).

    x (B, n, n, C_in) float32, y (B, n, n, 2) float32, mask (B, n, n) bool;
    loss: float32 scalar of the batch before the update. ``loss(pred, y, mask)``,
    or ``loss(pred, y, mask, x)`` if it has ``uses_input = True`` (the
    physics-informed loss needs the density).
    """
    return jax.jit(make_update(gd_train, tx, loss), donate_argnums=(0,))


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


def evaluate_loader(predict, state, loader: BatchLoader) -> dict:
    """Exact masked MSEs over all batches of ``loader`` (epoch 0 order).

    Returns {"mse": Σsq / (C Σvalid), "mse_ref": Σsq / (C Σpixels), "valid_fraction"}.
    """
    total = np.zeros(3)
    n_channels = 1
    for batch in loader.epoch(0):
        pred = predict(state["params"], state["batch_stats"], batch["x"])
        n_channels = pred.shape[-1]
        total += np.asarray(_sums(pred, batch["y"], batch["mask"]), np.float64)
    sq, valid, pixels = total
    return dict(mse=sq / (n_channels * max(valid, 1.0)), mse_ref=sq / (n_channels * max(pixels, 1.0)),
                valid_fraction=valid / max(pixels, 1.0))


def _dataset_id(path: Path, attrs: dict) -> dict:
    cfg = attrs.get("config", "")
    return dict(grid_n=int(attrs["grid_n"]), grid_length=float(attrs["grid_length"]),
                config_sha1=hashlib.sha1(str(cfg).encode()).hexdigest()[:16])


def run_data_path(run_dir) -> Path:
    """The dataset a training run folder was trained on, found from its metrics.json (the path is
    stored relative to the run folder, so a moved or copied run finds the data beside it) and
    checked to be that dataset (its grid and config). ValueError otherwise."""
    run_dir = Path(run_dir)
    mfile = run_dir / "metrics.json"
    if not mfile.is_file():
        raise ValueError(f"{str(mfile)!r} is missing: pass the dataset path explicitly")
    try:
        info = json.loads(mfile.read_text())
        stored, ident = info["data"], info.get("dataset")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise CorruptArtifact(f"{str(mfile)!r} is damaged (no dataset entry)") from None
    path = run_dir / stored
    if not path.exists() and Path(stored).exists():  # runs written before paths were relative: cwd-relative
        path = Path(stored)
    if not path.exists():
        raise ValueError(f"the dataset of {str(run_dir)!r} ({stored!r}) is not found: pass it explicitly")
    if ident is not None and _dataset_id(path, read_h5(path, psi=False)[1]) != ident:
        raise ValueError(f"{str(path)!r} is not the dataset {str(run_dir)!r} was trained on; pass the right one")
    return path


def model_config_for(data_path, base_width: int = 8, depth: int | None = None) -> UNetConfig:
    """The UNetConfig for a dataset file: input_size = its grid n, depth default
    ``default_depth(n)``. ValueError if there is no dataset at ``data_path``."""
    path = Path(data_path)
    if not path.exists():
        raise ValueError(f"no dataset at {str(path)!r} (make one with `bec-jax generate --preset quick --out {path}`)")
    n = load_grid(read_h5(path, psi=False)[1]).n
    return UNetConfig(base_width=base_width, depth=default_depth(n) if depth is None else depth, input_size=n)


def load_dataset(path, config: TrainConfig):
    """(grid, arrays, attrs, splits) of an HDF5 dataset; clear errors for bad input."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no dataset at {str(path)!r} (make one with `bec-jax generate`)")
    arrays, attrs = read_h5(path)
    grid = load_grid(attrs)
    splits = split_by_group(arrays["group"], config.split, config.split_seed)
    for name in ("train", "val"):
        if len(splits[name]) == 0:
            raise ValueError(f"dataset {str(path)!r} has {len(np.unique(arrays['group']))} groups: "
                             f"too few for a non-empty {name} split with fractions {config.split}")
    return grid, arrays, attrs, splits


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What ``fit`` leaves behind: the trained model (latest epoch, eval mode), its
    history (one dict per epoch), the best epoch and the run folder."""

    model: UNet
    history: list
    best_epoch: int
    out_dir: Path


def _write_metrics(out: Path, history: list, info: dict):
    if history:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
        atomic_write_text(out / "metrics.csv", buf.getvalue())
    atomic_write_text(out / "metrics.json", json.dumps(dict(info, history=history), indent=2))


def fit(data_path, out_dir, model_config: UNetConfig, config: TrainConfig = TrainConfig(), *,
        checkpoint_every: int = 1, progress: bool = True, log: Callable[[str], None] | None = print) -> FitResult:
    """Train (or resume training) a U-Net on the train split of ``data_path``.

    Writes ``out_dir/checkpoints`` (orbax: best and latest epoch),
    ``out_dir/metrics.csv`` and ``out_dir/metrics.json`` (config, history, best
    epoch). If ``out_dir`` holds checkpoints of the same settings, training
    continues after the latest one; other settings raise CheckpointMismatch.
    ``model_config.input_size`` must equal the dataset's grid size.
    checkpoint_every: save every this many epochs and at the last epoch (a
    kill loses at most the epochs since the last save; "best" is the best
    saved epoch). Validation runs every epoch regardless.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid, arrays, attrs, splits = load_dataset(data_path, config)
    if model_config.input_size != grid.n:
        raise ValueError(f"model input_size {model_config.input_size} differs from the dataset grid n={grid.n}")
    tcfg = config.target_config
    train = BatchLoader(grid, arrays["psi"][splits["train"]], config.batch_size, tcfg, shuffle=True,
                        augment=config.augment, drop_last=config.drop_last, seed=config.seed)
    val = BatchLoader(grid, arrays["psi"][splits["val"]], config.batch_size, tcfg, shuffle=False)
    if len(train) == 0:
        raise ValueError(f"train split has {len(splits['train'])} samples: fewer than one batch of "
                         f"{config.batch_size} with drop_last")
    bottleneck = grid.n
    for _ in range(model_config.depth):
        bottleneck //= 2
    n_train = len(splits["train"])
    if bottleneck == 1 and (config.batch_size == 1 or (not config.drop_last and n_train % config.batch_size == 1)):
        raise ValueError(f"{n_train} training samples in batches of {config.batch_size} leave a batch of 1, which "
                         "BatchNorm cannot train at the 1x1 bottleneck; use another batch size or drop_last")

    model = init_model(model_config, config.seed)
    tx = make_optimizer(config)
    gd_train, gd_eval, state = init_state(model, tx)
    step_fn = make_train_step(gd_train, tx, make_loss(config, grid))
    predict = make_predict(gd_eval)

    run = dict(train=config.resume_key(), data=_dataset_id(Path(data_path), attrs))
    info = dict(model_config=model_config.to_dict(), train_config=dataclasses.asdict(config),
                data=os.path.relpath(Path(data_path).resolve(), out.resolve()), dataset=run["data"],
                split_sizes={k: int(len(v)) for k, v in splits.items()})
    history, start = [], 0
    with Checkpoints(out / "checkpoints", model_config, run) as ckpt:
        latest = ckpt.latest_step()
        if latest is not None:
            state, meta = ckpt.restore(latest, state)
            history, start = list(meta["history"]), int(meta["epoch"])
            if log and start < config.epochs:
                log(f"resuming from epoch {start} in {str(out / 'checkpoints')!r}")
        bar = tqdm(total=config.epochs * len(train), initial=min(start, config.epochs) * len(train),
                   unit="step", desc="train", disable=not progress, dynamic_ncols=True)
        for epoch in range(start + 1, config.epochs + 1):
            t0 = time.perf_counter()
            losses = []
            for batch in train.epoch(epoch):
                state, value = step_fn(state, batch["x"], batch["y"], batch["mask"])
                losses.append(value)
                bar.update(1)
            train_loss = float(np.mean(jax.device_get(losses)))
            metrics = evaluate_loader(predict, state, val)
            # model selection on the pixel metric of the loss ("mse+fidelity": the masked MSE)
            val_loss = metrics["mse_ref"] if config.loss == "reference" else metrics["mse"]
            if not (np.isfinite(train_loss) and np.isfinite(val_loss)):  # stop before a NaN state is saved
                raise TrainingDiverged(f"training diverged at epoch {epoch} (train loss {train_loss}, validation "
                                       f"loss {val_loss}); nothing of this epoch was saved; lower the learning rate")
            seconds = time.perf_counter() - t0
            history.append(dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_mse=metrics["mse"],
                                val_mse_ref=metrics["mse_ref"], seconds=seconds,
                                samples_per_s=len(train) * config.batch_size / seconds))
            save = epoch % checkpoint_every == 0 or epoch == config.epochs
            saved = [r for r in history if r["epoch"] in set(ckpt.all_steps()) | ({epoch} if save else set())]
            best = min(saved, key=lambda r: r["val_loss"])["epoch"] if saved else None
            if save:
                ckpt.save(epoch, state, dict(epoch=epoch, history=history, best_epoch=best), val_loss)
            _write_metrics(out, history, dict(info, best_epoch=best, checkpointed_epoch=ckpt.latest_step()))
            bar.set_postfix(epoch=epoch, train=f"{train_loss:.3e}", val=f"{val_loss:.3e}")
        bar.close()
        best = ckpt.read_meta(ckpt.latest_step())["best_epoch"] if ckpt.latest_step() else 0
        _write_metrics(out, history, dict(info, best_epoch=best, checkpointed_epoch=ckpt.latest_step()))
    model = nnx.merge(gd_eval, state["params"], state["batch_stats"])
    return FitResult(model=model, history=history, best_epoch=best, out_dir=out)


def load_trained(run_dir, which: str = "best") -> tuple[UNet, dict]:
    """(model in eval mode, info) of a finished or partial run folder.

    which: "best" (lowest validation loss) or "latest". info holds the stored
    model_config, run settings, epoch and history. Model configuration comes from
    the checkpoint metadata, so no settings need repeating.
    """
    from bec_jax.train.checkpoint import read_run_metadata

    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    ck_dir = Path(run_dir) / "checkpoints"
    meta = read_run_metadata(ck_dir)
    model_config = UNetConfig.from_dict(meta["model_config"])
    tcfg = meta["run"]["train"]
    model = nnx.eval_shape(lambda: UNet(model_config, rngs=nnx.Rngs(0)))
    with Checkpoints(ck_dir, model_config, read_only=True) as ckpt:
        latest = ckpt.latest_step()
        step_meta = ckpt.read_meta(latest)
        step = step_meta["best_epoch"] if which == "best" else latest
        # epochs is not part of the stored run key; record how far this run went.
        config = TrainConfig(**{**tcfg, "split": tuple(tcfg["split"]), "epochs": latest})
        _, gd_eval, like = init_state(model, make_optimizer(config))
        state, step_meta = ckpt.restore(step, like)
    model = nnx.merge(gd_eval, state["params"], state["batch_stats"])
    return model, dict(model_config=model_config, train_config=config, epoch=step, run=meta["run"],
                       history=step_meta["history"])
