"""Compression workflows on a trained run: data, masked fine-tuning, evaluation.

Fine-tuning is the training core's (``bec_jax.train.core``): the run's own
optimizer and loss (``make_optimizer``, ``make_loss``: physics-informed runs
fine-tune physics-informed) chained with ``keep_pruned``, one ``make_train_step``,
and ``run_epochs`` for best/last selection. One ``FineTuner`` compiles its train
step once: the pruning masks live in the optimizer state (``keep_pruned``), so
every sparsity level of a sweep reuses the same compiled step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bec_jax.artifacts import remove_tree
from bec_jax.bench.measure import interleaved_times
from bec_jax.compress.pruning import (DEFAULT_SCHEDULE, PruneConfig, apply_masks, keep_pruned,
                                      magnitude_masks, masks_of, schedule_to, set_masks)
from bec_jax.compress.quantization import SCHEMES, load_quantized, read_model_meta, save_quantized
from bec_jax.data.loader import BatchLoader
from bec_jax.models.unet import UNet, UNetConfig
from bec_jax.optim import check_learning_rate
from bec_jax.train.core import (TrainConfig, TrainState, evaluate_loader, init_state, make_loss, make_optimizer,
                                make_predict, make_train_step, run_epochs)
from bec_jax.train.trainer import (check_dataset_grid, check_run_folder, load_dataset, load_trained, run_data_path,
                                   run_imaging)

__all__ = ["CompressConfig", "ShrinkConfig", "QuantizeConfig", "Setup", "load_setup", "test_mse", "FineTuner",
           "FineTuneResult", "cosine_cycles", "precise_batch_stats", "prune_once", "prune_and_finetune",
           "eval_to_train_ratio", "stale_statistics_warning", "STALE_BN_RATIO", "clear_stages", "dense_control",
           "best_so_far", "latency_table", "forward_latency", "METHODS", "KEEP"]

METHODS = ("prune", "finetune", "iterative")
#: Which fine-tuning epoch a stage keeps: the one of lowest validation MSE, or the last.
KEEP = ("best", "last")


@dataclasses.dataclass(frozen=True)
class CompressConfig:
    """Compression stage settings.

    sparsity: magnitude-pruning target in [0, 1) (conv kernels and, with
      include_bn_scale, BatchNorm scales).
    include_bn_scale: BatchNorm scales take part in the pruning (reference: they do).
    distribution: "global" (one threshold), "lamp" (one threshold on layer-normalised scores) or "erk"
      (per-layer densities).
    reclaim_dead_scales: prune the BatchNorm scales of channels whose kernel
      is pruned (see ``bec_jax.compress.pruning``).
    method: "prune" (one shot, no training), "finetune" (one shot + masked
      fine-tuning) or "iterative" (the schedule's steps below sparsity, then sparsity,
      fine-tuning after each stage).
    schedule: sparsities of the iterative method's stages, strictly increasing in [0, 1)
      (the reference's 80, 90, 97, 99, 99.5, 99.9 %).
    precise_bn: recompute the BatchNorm statistics over the training set after every
      fine-tuning epoch (steadier eval-mode outputs at extreme sparsity).
    ft_epochs: fine-tuning epochs per stage. last_ft_epochs: fine-tuning epochs
      of the last stage (None: ft_epochs); at extreme sparsity a long last stage
      recovers most (experiments/results/pruning_variants). ft_lr: fine-tuning learning rate
      (None: the training learning rate / 10).
    keep: the fine-tuning epoch each stage keeps: "best" (lowest validation
      MSE, as training keeps its best epoch) or "last".
    schemes: int8 post-training quantization schemes applied to the dense model
      (subset of ``bec_jax.compress.SCHEMES``).
    combined_scheme: scheme of the pruned + int8 model (stored sparse).
    """

    sparsity: float = 0.9
    method: str = "finetune"
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    precise_bn: bool = False
    ft_epochs: int = 3
    last_ft_epochs: int | None = None
    ft_lr: float | None = None
    keep: str = "best"
    include_bn_scale: bool = True
    distribution: str = "global"
    reclaim_dead_scales: bool = False
    schemes: tuple[str, ...] = ("per_tensor", "per_channel", "mixed")
    combined_scheme: str = "per_channel"

    def __post_init__(self):
        object.__setattr__(self, "schemes", tuple(self.schemes))
        object.__setattr__(self, "schedule", tuple(self.schedule))
        if not (0 <= self.sparsity < 1):
            raise ValueError(f"compress.sparsity must be in [0, 1), got {self.sparsity}")
        try:
            schedule_to(self.sparsity, self.schedule)
        except ValueError as e:
            raise ValueError(f"compress.{e}") from None
        if self.method not in METHODS:
            raise ValueError(f"compress.method must be one of {METHODS}, got {self.method!r}")
        if self.ft_epochs < (0 if self.method == "prune" else 1):
            raise ValueError(f"compress.ft_epochs must be >= 1 for method {self.method!r}, got {self.ft_epochs}")
        _check_last_ft_epochs(self.method, self.ft_epochs, self.last_ft_epochs, "compress.")
        try:
            self.prune_config()
        except ValueError as e:
            raise ValueError(f"compress.{e}") from None
        if self.ft_lr is not None:
            check_learning_rate(self.ft_lr, "compress.ft_lr")
        if self.keep not in KEEP:
            raise ValueError(f"compress.keep must be one of {KEEP}, got {self.keep!r}")
        for s in (*self.schemes, self.combined_scheme):
            if s not in SCHEMES:
                raise ValueError(f"unknown quantization scheme {s!r}; allowed: {SCHEMES}")
        if not self.schemes:
            raise ValueError("compress.schemes must name at least one scheme")

    def prune_config(self):
        """The ``PruneConfig`` of these settings (sparsity: the target)."""
        return PruneConfig(self.sparsity, self.include_bn_scale, self.distribution, self.reclaim_dead_scales)


@dataclasses.dataclass(frozen=True)
class ShrinkConfig:
    """Structured channel pruning (``bec-jax shrink``): a smaller dense U-Net, fine-tuned.

    keep: fraction of channels kept, in (0, 1].
    outer: prune the blocks' output channels too (faster; skips and consumers shrink with them);
      false: only the channels inside each DoubleConv.
    ft_epochs: fine-tuning epochs in all (0: none), split over the steps.
    steps: gradual pruning: cut in this many steps of equal ratio, fine-tuning after each
      (channels re-ranked after every step).
    ft_lr: fine-tuning learning rate (None: the training learning rate).
    keep_epoch: the fine-tuning epoch kept: "best" (lowest validation MSE, as training does) or "last".
    repeats: interleaved latency calls, dense against shrunk (medians).
    """

    keep: float = 0.5
    outer: bool = False
    ft_epochs: int = 30
    steps: int = 1
    ft_lr: float | None = None
    keep_epoch: str = "best"
    repeats: int = 10

    def __post_init__(self):
        if not (0 < self.keep <= 1):
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")
        for name, low in (("ft_epochs", 0), ("steps", 1), ("repeats", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.steps > 1 and self.ft_epochs < self.steps:
            raise ValueError(f"steps {self.steps} needs ft_epochs >= {self.steps} (split over the steps)")
        if self.ft_lr is not None:
            check_learning_rate(self.ft_lr, "ft_lr")
        if self.keep_epoch not in KEEP:
            raise ValueError(f"keep_epoch must be one of {KEEP}, got {self.keep_epoch!r}")

    @property
    def epochs_per_step(self) -> tuple[int, ...]:
        """Fine-tuning epochs after each step (ft_epochs split as evenly as possible)."""
        q, r = divmod(self.ft_epochs, self.steps)
        return tuple(q + (i < r) for i in range(self.steps))


@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    """int8 quantization of a trained model (``bec-jax quantize``).

    scheme: int8 scheme, one of ``bec_jax.compress.SCHEMES`` (per_tensor, per_channel, mixed, mixed_full_res,
      reference_per_tensor: the reference's one asymmetric scale over all convs, post-training only).
    qat_epochs: quantization-aware fine-tuning epochs (0: post-training quantization only).
    qat_lr: QAT learning rate (None: the training learning rate / 10).
    sparse: store the kernels sparse (non-zero values + 1-byte index gaps; for pruned models).
    """

    scheme: str = "mixed"
    qat_epochs: int = 0
    qat_lr: float | None = None
    sparse: bool = False

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {self.scheme!r}; allowed: {SCHEMES}")
        if self.qat_epochs < 0:
            raise ValueError(f"qat_epochs must be >= 0, got {self.qat_epochs}")
        if self.qat_epochs and self.scheme == "reference_per_tensor":
            raise ValueError(f"scheme reference_per_tensor is post-training only, as the reference ran it: "
                             f"qat_epochs must be 0, got {self.qat_epochs}")
        if self.qat_lr is not None:
            check_learning_rate(self.qat_lr, "qat_lr")



@dataclasses.dataclass
class Setup:
    """A trained model with its data: model (eval mode), configs and the loaders of the run's splits."""

    model: UNet
    model_config: UNetConfig
    train_config: TrainConfig
    train: BatchLoader
    val: BatchLoader
    test: BatchLoader
    info: dict


def load_setup(run_dir, data=None, which: str = "best", eval_batch_size: int | None = None) -> Setup:
    """Trained model of ``run_dir`` and loaders of its dataset (``data`` overrides the path).

    The train loader (fine-tuning) has the run's training batch size; the
    validation and test loaders have ``eval_batch_size`` (default: the same).
    Raises ValueError when the dataset's grid differs from the model's input size.
    """
    run_dir = check_run_folder(run_dir)
    model, info = load_trained(run_dir, which)
    tc = info["train_config"]
    data = data or run_data_path(run_dir)
    grid, arrays, _, splits = load_dataset(data, tc)
    check_dataset_grid(data, info["model_config"].input_size, grid.n)
    if len(splits["test"]) == 0:
        raise ValueError(f"the test split of {str(data)!r} is empty")
    bs = eval_batch_size or tc.batch_size
    tcfg = tc.target_config
    imaging = run_imaging(info["run"])  # a model trained on camera images is fine-tuned and tested on them
    train = BatchLoader(grid, arrays["psi"][splits["train"]], tc.batch_size, tcfg, shuffle=True, augment=tc.augment,
                        drop_last=tc.drop_last, seed=tc.seed + 1000, imaging=imaging)
    val, test = (BatchLoader(grid, arrays["psi"][splits[k]], bs, tcfg, shuffle=False, imaging=imaging)
                 for k in ("val", "test"))
    return Setup(model, info["model_config"], tc, train, val, test, dict(info, data=str(data)))


def test_mse(model: UNet, loader: BatchLoader, predict=None) -> dict:
    """Exact masked test MSEs of ``model`` ({"mse", "mse_ref", "valid_fraction"}), eval mode."""
    model.eval()
    # everything that is not a Param (BatchNorm statistics, Int8Conv's int8 kernels and scales) rides along
    gd, params, stats = nnx.split(model, nnx.Param, ...)
    predict = predict or make_predict(gd)
    return evaluate_loader(predict, params, stats, loader)


def prune_once(model: UNet, config: PruneConfig, previous=None):
    """(pruned copy of ``model``, masks): magnitude masks (``config``) applied to the params."""
    model = nnx.clone(model)
    params = nnx.state(model, nnx.Param)
    masks = magnitude_masks(params, config, previous)
    nnx.update(model, apply_masks(params, masks))
    return model, masks


#: A fine-tuned stage whose eval-mode test MSE is over this multiple of its training loss: BatchNorm statistics
#: that do not fit the weights (``eval_to_train_ratio``); healthy models stay within tens of percent of 1.
STALE_BN_RATIO = 10.0

#: training loss -> the row's test MSE measured the same way (the reference's loss: the all-pixel mean)
_SAME_MEASURE = {"masked_mse": "test_mse_finetuned", "reference": "test_mse_finetuned_ref"}


def eval_to_train_ratio(row: dict, loss: str = "masked_mse") -> float | None:
    """A fine-tuned stage's eval-mode test MSE over the training loss of the epoch it kept (a row of
    ``prune_and_finetune``; the loss in train mode, on training batches; ``loss``: the run's loss, and the
    MSE is taken in its convention). Within tens of percent of 1 on a healthy model; over ``STALE_BN_RATIO``
    the same weights fail only with BatchNorm's running statistics (training's running average follows the
    last few batches, and in a model pruned far a channel resting on a few weights swings between them), or
    the model overfits badly. None for a stage without fine-tuning, a loss that is not an MSE (a fidelity
    term has another scale) or a training loss that is not finite and positive."""
    losses, kept, key = row.get("train_losses"), row.get("kept_epoch"), _SAME_MEASURE.get(loss)
    if not losses or not kept or key not in row:
        return None
    train = losses[kept - 1]
    return row[key] / train if math.isfinite(train) and train > 0 else None


def stale_statistics_warning(row: dict, precise_bn: bool, loss: str = "masked_mse",
                             flag: str = "--precise-bn") -> str | None:
    """One line for the user when a stage's ``eval_to_train_ratio`` (``row``: the last stage, the saved model;
    ``loss``: the run's) is over ``STALE_BN_RATIO`` and its statistics are training's running averages
    (``precise_bn`` False; with precise statistics the gap has another cause); else None. flag: the
    setting's name in the caller's command line."""
    ratio = eval_to_train_ratio(row, loss)
    if precise_bn or ratio is None or not ratio > STALE_BN_RATIO:
        return None
    return (f"the pruned model's test MSE in eval mode is {ratio:.3g}x its training loss in train mode, a gap that "
            f"points at its BatchNorm running statistics, not its weights: {flag} recomputes them after "
            "every fine-tuning epoch (experiments/bn_recalibration.py does it for a saved model)")


def _check_last_ft_epochs(method: str, ft_epochs: int, last_ft_epochs: int | None, prefix: str = "") -> None:
    """ValueError unless last_ft_epochs is None, or >= 1 for the iterative method (whose last stage it sets);
    a one-shot method has a single stage, whose epochs are ft_epochs (equal values pass)."""
    if last_ft_epochs is None or last_ft_epochs == ft_epochs:
        return
    if method != "iterative":
        raise ValueError(f"{prefix}last_ft_epochs sets the last stage of the iterative method; method {method!r} "
                         f"has one stage of ft_epochs = {ft_epochs} epochs (got last_ft_epochs {last_ft_epochs})")
    if last_ft_epochs < 1:
        raise ValueError(f"{prefix}last_ft_epochs must be >= 1, got {last_ft_epochs}")


def prune_and_finetune(setup: Setup, sparsity: float, method: str = "finetune", *, ft_epochs: int = 1,
                       last_ft_epochs: int | None = None, learning_rate: float | None = None,
                       prune: PruneConfig = PruneConfig(), schedule=DEFAULT_SCHEDULE, keep: str = "best",
                       precise_bn: bool = False, on_stage=None, progress: bool = False, resume_dir=None,
                       log=None):
    """Prune ``setup.model`` to ``sparsity`` by ``method`` (one of METHODS).

    "prune": one shot; "finetune": one shot + ``ft_epochs`` of masked
    fine-tuning; "iterative": the ``schedule`` steps below ``sparsity``, then
    ``sparsity``, fine-tuning after each (``ft_epochs`` epochs; ``last_ft_epochs``
    in the last stage, None: ft_epochs). learning_rate: fine-tuning rate
    (default: the run's / 10). prune: which weights take part and how
    (its sparsity is replaced by each stage's). keep (one of KEEP): each
    fine-tuning stage ends with its epoch of lowest validation MSE ("best",
    the rule ``fit`` applies to training) or its last epoch. precise_bn:
    ``FineTuner(precise_bn=True)`` (BatchNorm statistics recomputed over the
    training set after every epoch). on_stage(row) is
    called after each stage. Returns (model, masks, rows) with one row per
    stage: {"sparsity", "test_mse_pruned"[, "test_mse_finetuned",
    "train_losses", "val_mse", "kept_epoch"]} (MSEs masked; "…_ref" beside each: the
    reference's all-pixel convention).
    resume_dir: a folder where every finished stage is saved (``save_quantized``, its row
    and these settings with it), and the stage in progress checkpoints each fine-tuning
    epoch (``stage_<i>.epochs``, ``FineTuner.run(checkpoint_dir=...)``); a rerun with the
    same settings and model continues after the last saved epoch, exactly as an
    uninterrupted run (masks from the stage's zeros, ``pruning.masks_of``; the fine-tuning
    batch order of the epochs it skips). Other settings raise ValueError. None: nothing
    is saved. log(message): told where a rerun resumes (None: silent).
    """
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "prune" and ft_epochs < 1:
        raise ValueError(f"ft_epochs must be >= 1 for method {method!r}, got {ft_epochs}")
    _check_last_ft_epochs(method, ft_epochs, last_ft_epochs)
    last = ft_epochs if last_ft_epochs is None else last_ft_epochs
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}, got {keep!r}")
    dataclasses.replace(prune, sparsity=sparsity)  # bad settings fail before any work
    stages = schedule_to(sparsity, schedule) if method == "iterative" else (sparsity,)
    lr = learning_rate if learning_rate is not None else setup.train_config.learning_rate / 10
    tuner = (FineTuner(setup.model, setup.train, learning_rate=lr, config=setup.train_config,
                       precise_bn=precise_bn) if method != "prune" else None)
    epochs = [ft_epochs] * (len(stages) - 1) + [last] if tuner else [1] * len(stages)  # bar units per stage
    bar = tqdm(total=sum(epochs), desc="prune", unit="epoch" if tuner else "stage", disable=not progress,
               dynamic_ncols=True)
    model, masks, rows = setup.model, None, []
    settings = dict(stages=list(stages), method=method,
                    prune=dataclasses.asdict(dataclasses.replace(prune, sparsity=sparsity)),
                    model=_fingerprint(setup.model))
    if tuner:  # what shapes a fine-tuned stage (_FINE_TUNING); a one-shot stage resumes whatever they are
        settings.update(ft_epochs=ft_epochs, learning_rate=lr, keep=keep, precise_bn=precise_bn)
    if last != ft_epochs:  # only then: stages saved before the setting existed still resume
        settings["last_ft_epochs"] = last
    if resume_dir is not None:
        model, rows = _resume_stages(Path(resume_dir), settings, setup)
        for i in range(len(rows)):  # a kill between a stage's save and the removal of its epochs
            remove_tree(_epochs_dir(resume_dir, i))
        if rows:
            masks = masks_of(nnx.state(model, nnx.Param), prune.include_bn_scale or prune.reclaim_dead_scales)
            if tuner is not None:
                tuner.epoch_counter = sum(epochs[:len(rows)])  # the batch order the finished stages used
            bar.update(sum(epochs[:len(rows)]))
            if log is not None:
                log(f"resuming after stage {len(rows)} of {len(stages)} in {str(resume_dir)!r}")
    for i, s in enumerate(stages[len(rows):], start=len(rows)):
        model, masks = prune_once(model, dataclasses.replace(prune, sparsity=s), masks)
        m = test_mse(model, setup.test)
        row = dict(sparsity=s, test_mse_pruned=m["mse"], test_mse_pruned_ref=m["mse_ref"])
        if tuner is not None:
            # the stage's epochs are checkpointed beside the stages: a kill inside a stage loses one epoch
            before = sum(epochs[:i])
            r = tuner.run(model, masks, epochs[i], on_epoch=lambda k, m: bar.update(before + k - bar.n),
                          select=setup.val if keep == "best" else None, resume_key=dict(settings, stage=i),
                          checkpoint_dir=None if resume_dir is None else _epochs_dir(resume_dir, i), log=log)
            model = r.model
            m = test_mse(model, setup.test)
            row.update(test_mse_finetuned=m["mse"], test_mse_finetuned_ref=m["mse_ref"],
                       train_losses=r.train_losses, val_mse=r.val_mse, kept_epoch=r.epoch)
        else:
            bar.update()
        rows.append(row)
        if resume_dir is not None:
            save_quantized(Path(resume_dir) / f"stage_{i}", model, None, sparse=True, overwrite=True,
                           extra=dict(kind="pruning_stage", stage=i, row=row, settings=settings))
            remove_tree(_epochs_dir(resume_dir, i))  # the stage is saved: its epochs are not needed
        if on_stage is not None:
            on_stage(row)
    bar.close()
    return model, masks, rows


def _epochs_dir(resume_dir, stage: int) -> Path:
    """Where ``prune_and_finetune`` checkpoints the epochs of a stage in progress (``clear_stages`` removes it)."""
    return Path(resume_dir) / f"stage_{stage}.epochs"


def _fingerprint(model) -> str:
    """sha256 of a model's parameters and statistics: which model a saved pruning stage started from."""
    return _digest(nnx.state(model))


def _digest(tree) -> str:
    """sha256 of a pytree's array leaves (their bytes, in leaf order)."""
    import hashlib

    h = hashlib.sha256()
    for a in jax.tree_util.tree_leaves(tree):
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()


#: the stage settings of fine-tuning alone
_FINE_TUNING = ("ft_epochs", "learning_rate", "keep", "precise_bn")


def _resume_stages(folder: Path, settings: dict, setup: Setup):
    """(model, rows) after the last stage saved in ``folder`` (``prune_and_finetune``'s resume_dir), or
    (setup.model, []) when none is. A stage saved with other settings or from another model is an error."""
    from bec_jax.artifacts import has_manifest, read_manifest

    last = None
    for i in range(len(settings["stages"])):
        stage = folder / f"stage_{i}"
        # a save stopped halfway leaves an incomplete manifest: that stage runs again (and replaces it)
        if not (has_manifest(stage) and read_manifest(stage).get("complete") is not False):
            break
        last = i
    if last is None:
        return setup.model, []
    model, meta = load_quantized(folder / f"stage_{last}", setup.model_config)
    stored, wanted = meta["extra"]["settings"], json.loads(json.dumps(settings))  # as JSON: tuples are lists
    if wanted["method"] == "prune":  # one-shot stages saved when they recorded the fine-tuning settings resume too
        stored = {k: v for k, v in stored.items() if k not in _FINE_TUNING}
    if stored != wanted:
        diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        raise ValueError(f"{str(folder)!r} holds the stages of another pruning run (different {', '.join(diff)}); "
                         "use another output folder, or --overwrite to start over")
    rows = [read_model_meta(folder / f"stage_{i}", verify=False)["extra"]["row"] for i in range(last + 1)]
    return model, rows


def clear_stages(folder) -> None:
    """Delete the stages ``prune_and_finetune`` saved in ``folder`` (its resume_dir) and the epoch checkpoints
    of a stage in progress, then the folder if that leaves it empty; anything else in it stays."""
    folder = Path(folder)
    for stage in sorted(folder.glob("stage_*")):
        remove_tree(stage)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def dense_control(setup: Setup, tuner: "FineTuner", epochs: int, keep: str = "best") -> list[float]:
    """Test MSEs of the dense baseline trained ``E`` more epochs, for E = 0..epochs (list of epochs + 1).

    The control a pruned model is compared against: the same extra epochs at
    the same lr (``tuner``). keep="best": for each E, the test MSE of the epoch
    of lowest validation MSE among 0..E (the rule ``prune_and_finetune`` applies
    per stage); "last": of epoch E.
    """
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}, got {keep!r}")
    test, val = [test_mse(setup.model, setup.test)["mse"]], [test_mse(setup.model, setup.val)["mse"]]

    def record(k, model):
        test.append(test_mse(model, setup.test)["mse"])
        val.append(test_mse(model, setup.val)["mse"])

    tuner.run(setup.model, None, epochs, on_epoch=record)
    return test if keep == "last" else best_so_far(test, val)


def best_so_far(test, val) -> list[float]:
    """For each prefix 0..E of per-epoch scores: ``test`` at the epoch of lowest
    ``val`` (the earliest on ties; a non-finite val is never best unless all are).
    The keep="best" rule read at every length of a run, shape (len(test),)."""
    val = np.where(np.isfinite(val), val, np.inf)
    return [test[int(np.argmin(val[:e + 1]))] for e in range(len(test))]


@functools.lru_cache(maxsize=32)
def _train_mode_stats(gd_train):
    """Jitted (params, batch_stats, x) -> batch_stats after one train-mode forward."""

    @jax.jit
    def stats(params, batch_stats, x):
        model = nnx.merge(gd_train, params, batch_stats)
        model(x)
        return nnx.state(model, nnx.BatchStat)

    return stats


def precise_batch_stats(model: UNet, loader: BatchLoader, epoch: int = 0) -> UNet:
    """Copy of ``model`` (eval mode) whose BatchNorm running statistics are the
    means over one epoch of ``loader`` of each batch's train-mode statistics
    (mean, unbiased variance): "precise BN" (Wu & Johnson, "Rethinking 'Batch'
    in BatchNorm", 2021). Training's running average weights the last few
    batches (PyTorch momentum 0.2: about the last 5, of 8 samples each), which in
    a pruned network, where a channel may rest on one or two weights, leaves
    eval-mode outputs that swing by orders of magnitude between epochs.
    Params are untouched. Raises ValueError if the BatchNorms' momenta differ.
    """
    model = nnx.clone(model)
    momenta = {bn.momentum for _, bn in model.iter_modules() if isinstance(bn, nnx.BatchNorm)}
    if len(momenta) != 1:
        raise ValueError(f"precise_batch_stats needs one BatchNorm momentum, got {sorted(momenta)}")
    keep = 1.0 - momenta.pop()  # running ← momentum·0 + (1 − momentum)·batch from zero statistics
    model.train()
    gd, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    zeros = jax.tree.map(jnp.zeros_like, stats)
    f, total, count = _train_mode_stats(gd), None, 0
    for batch in loader.epoch(epoch):
        s = f(params, zeros, batch.x)
        total = s if total is None else jax.tree.map(jnp.add, total, s)
        count += 1
    if count == 0:
        raise ValueError("precise_batch_stats: the loader yields no batch")
    nnx.update(model, jax.tree.map(lambda t: t / (keep * count), total))
    model.eval()
    return model


def cosine_cycles(peak: float, period: int, floor: float = 0.01):
    """optax schedule: cosine decay from ``peak`` to ``floor·peak`` over ``period``
    steps, restarting every ``period`` steps (SGDR). A run of k·period steps
    thus sees the schedule of k fine-tuning stages of ``period`` steps each.
    """

    def schedule(count):
        t = (count % period) / period
        return peak * (floor + (1 - floor) * 0.5 * (1 + jnp.cos(jnp.pi * t)))

    return schedule


class FineTuneResult(NamedTuple):
    """What ``FineTuner.run`` returns: the kept model (eval mode), per-epoch train
    losses and validation MSEs (empty without ``select``), and the kept epoch (1-based)."""

    model: UNet
    train_losses: list
    val_mse: list
    epoch: int


class FineTuner:
    """Masked fine-tuning of models of one architecture with one compiled step.

    tx = chain(make_optimizer(config, lr), keep_pruned(masks)): the run's optimizer
    (``config.optimizer``, its momentum and weight decay) at the fine-tuning rate, and
    the run's loss (``make_loss(config, loader.grid)``). ``run(model, masks, epochs)``
    returns a ``FineTuneResult``. Pass ``masks=None`` for dense training (all-True masks).
    cycle_epochs: None for a constant lr, else ``cosine_cycles`` with this
    period in epochs (each ``run`` starts a new cycle: one per pruning stage).
    precise_bn: after every epoch, the model that is validated, passed to
    ``on_epoch`` and returned gets ``precise_batch_stats`` over the training
    loader (the training itself is unchanged: train mode never reads them).
    """

    def __init__(self, model: UNet, loader: BatchLoader, *, learning_rate: float, config: TrainConfig = TrainConfig(),
                 cycle_epochs: int | None = None, precise_bn: bool = False):
        if not (learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if cycle_epochs is not None and cycle_epochs < 1:
            raise ValueError(f"cycle_epochs must be None or >= 1, got {cycle_epochs}")
        self.loader = loader
        params = nnx.state(model, nnx.Param)
        self._ones = jax.tree.map(lambda p: np.ones(p.shape, bool), params)
        lr = learning_rate if cycle_epochs is None else cosine_cycles(learning_rate, cycle_epochs * len(loader))
        self.tx = optax.chain(make_optimizer(config, lr), keep_pruned(self._ones))
        self._model_like = nnx.clone(model)
        gd_train, self.gd_eval, _ = init_state(nnx.clone(model), self.tx)
        self.step = make_train_step(gd_train, self.tx, make_loss(config, loader.grid), render=loader.render)
        self.predict = make_predict(self.gd_eval)
        self.epoch_counter = 0
        self.precise_bn = precise_bn
        # what a resumed run must share with the one that saved (``run(checkpoint_dir=...)``)
        self._settings = dict(learning_rate=learning_rate, cycle_epochs=cycle_epochs, precise_bn=precise_bn,
                              train=config.resume_key())

    def _model(self, state) -> UNet:
        return nnx.merge(self.gd_eval, state.params, state.batch_stats)

    def _view(self, state):
        """The state that is validated and kept: with precise BatchNorm statistics if asked."""
        if not self.precise_bn:
            return state
        precise = precise_batch_stats(self._model(state), self.loader)
        return state.replace(batch_stats=nnx.state(precise, nnx.BatchStat))

    def _batches(self, epoch: int):
        self.epoch_counter += 1  # every run and epoch of this tuner sees a fresh batch order
        return self.loader.sources(self.epoch_counter)

    def run(self, model: UNet, masks=None, epochs: int = 1, on_epoch=None, select: BatchLoader | None = None,
            checkpoint_dir=None, resume_key: dict | None = None, log=None) -> FineTuneResult:
        """Fine-tune a copy of ``model`` for ``epochs`` epochs keeping masked weights at 0.

        on_epoch(k, model) is called after each epoch k = 1..epochs that this call
        trains (model in eval mode). select: a validation loader; the epoch of lowest
        masked MSE on it is kept (the earliest on ties), else the last epoch.
        checkpoint_dir: save the fine-tuning state there after every epoch
        (``bec_jax.train.checkpoint.Checkpoints``: params, BatchNorm statistics, optimizer
        state, history; the latest epoch and the kept one). A rerun with the same model,
        masks, epochs, tuner settings, batch-order counter and ``resume_key`` (JSON-able:
        whatever else the caller's run must agree on) continues after the last saved epoch
        and ends exactly as an uninterrupted run; checkpoints of another run there raise
        ``CheckpointMismatch``. The caller deletes the folder once it is done with it.
        log(message): told where a rerun resumes (None: silent).
        """
        masks = self._ones if masks is None else masks
        if nnx.graphdef(model) != nnx.graphdef(self._model_like):
            raise ValueError("FineTuner.run: model has another structure than the one this tuner was built for")
        model = nnx.clone(model)
        nnx.update(model, apply_masks(nnx.state(model, nnx.Param), masks))
        _, _, state = init_state(model, self.tx)
        # the step donates its state: copy, so the caller's model keeps its buffers
        state = jax.tree.map(lambda a: a.copy(), state)
        state = state.replace(opt_state=set_masks(state.opt_state, masks))
        keep = "best" if select is not None else "last"
        validate = None
        if select is not None:
            validate = lambda s: dict(val_loss=evaluate_loader(self.predict, s.params, s.batch_stats, select)["mse"])
        done, prior, save = [], None, None
        with contextlib.ExitStack() as stack:
            if checkpoint_dir is not None:
                key = dict(resume_key or {}, tuner=self._settings, epochs=epochs, keep=keep,
                           epoch_counter=self.epoch_counter, model=_fingerprint(model), masks=_digest(masks))
                state, done, prior, save = self._checkpointing(stack, Path(checkpoint_dir), key, state, keep)
            first = done[-1]["epoch"] + 1 if done else 1
            if done and log is not None:
                log(f"resuming fine-tuning after epoch {first - 1} of {epochs} in {str(checkpoint_dir)!r}")
            self.epoch_counter += first - 1  # the batch orders of the epochs restored
            raw = {}

            def view(s):
                raw["batch_stats"] = s.batch_stats  # what training continues from, saved beside the viewed state
                return self._view(s)

            def after_epoch(row, s):
                if save is not None:
                    save(row, s, raw["batch_stats"])
                if on_epoch is not None:
                    on_epoch(row["epoch"], self._model(s))

            r = run_epochs(self.step, state, self._batches, range(first, epochs + 1), validate=validate, keep=keep,
                           view=view, what="fine-tuning", on_epoch=after_epoch)
        history = done + r.history
        kept, kept_epoch = r.kept, r.kept_epoch
        if prior is not None:  # the kept epoch may be one restored: the rule over the whole history decides
            scores = [row["val_loss"] for row in history] if keep == "best" else [0.0] * len(history)
            best = history[int(np.argmin(np.where(np.isfinite(scores), scores, np.inf)))]["epoch"]
            chosen = best if keep == "best" else history[-1]["epoch"]
            if chosen < first:
                kept, kept_epoch = prior
        return FineTuneResult(self._model(kept), [row["train_loss"] for row in history],
                              [row["val_loss"] for row in history] if select is not None else [], kept_epoch)

    def _checkpointing(self, stack: contextlib.ExitStack, folder: Path, key: dict, state, keep: str):
        """(state, restored history rows, (kept state, epoch) of the restored epochs or None, save(row, viewed,
        batch_stats)) of ``run``'s per-epoch checkpoints in ``folder`` (open until ``stack`` closes), restored
        from its latest epoch."""
        from bec_jax.artifacts import claim_folder, has_manifest
        from bec_jax.train.checkpoint import Checkpoints

        if not has_manifest(folder):
            claim_folder(folder, "fine-tuning-checkpoints")  # bec_jax's: ``remove_tree`` may delete it
        ckpt = stack.enter_context(Checkpoints(folder, self._model_like.config, key))
        like = dict(state.as_dict(), kept_batch_stats=state.batch_stats)

        def restore(step):
            saved, meta = ckpt.restore(step, like)
            kept = TrainState(saved["params"], saved.pop("kept_batch_stats"), saved["opt_state"])
            return TrainState(**saved), kept, meta

        done, prior = [], None
        latest = ckpt.latest_step()
        if latest is not None:
            state, kept, meta = restore(latest)
            done = list(meta["history"])
            prior = (kept, latest)
            if keep == "best":  # the restored epoch of lowest validation loss that is on disk (the policy's best)
                on_disk = [row for row in done if row["epoch"] in set(ckpt.all_steps())]
                best = on_disk[int(np.argmin([_finite(row["val_loss"]) for row in on_disk]))]["epoch"]
                if best != latest:
                    prior = (restore(best)[1], best)

        def save(row, viewed, batch_stats):
            done.append(row)
            # without validation, minus the epoch: the policy's "best" is then the latest, one step on disk
            score = _finite(row["val_loss"]) if keep == "best" else -float(row["epoch"])
            ckpt.save(row["epoch"], dict(params=viewed.params, batch_stats=batch_stats, opt_state=viewed.opt_state,
                                         kept_batch_stats=viewed.batch_stats), dict(epoch=row["epoch"], history=done),
                      score)

        return state, list(done), prior, save


def _finite(x: float) -> float:
    """A validation score as a checkpoint metric: non-finite ones rank last."""
    return float(x) if np.isfinite(x) else 3e38


@functools.lru_cache(maxsize=32)
def _jitted_forward(gd):
    """One compiled forward per architecture (models of one structure share it)."""
    return jax.jit(lambda state, x: nnx.merge(gd, state)(x))


def latency_table(models: dict, x, *, warmup: int = 3, repeats: int = 20) -> dict:
    """Wall times of jitted eval-mode forwards of several models on ``x`` (B, H, W, C), interleaved.

    models: {name: model}. Each is compiled and run once (timed as
    "first_call_s": compile + run, compile only for the first model of an
    architecture), then run ``warmup`` times; then ``repeats`` rounds call every
    model once, in an order shuffled each round (``bench.measure.interleaved_times``;
    block_until_ready), so all see the same machine load.
    Returns {name: {"median_ms", "q25_ms", "q75_ms", "first_call_s", "output":
    numpy output}}; the models are not modified.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    calls, out = {}, {}
    for name, model in models.items():
        model = nnx.clone(model)
        model.eval()
        gd, state = nnx.split(model)
        fwd = _jitted_forward(gd)
        t0 = time.perf_counter()
        y = jax.block_until_ready(fwd(state, x))
        out[name] = dict(first_call_s=time.perf_counter() - t0, output=np.asarray(y))
        for _ in range(warmup):
            jax.block_until_ready(fwd(state, x))
        calls[name] = functools.partial(lambda f, s: jax.block_until_ready(f(s, x)), fwd, state)
    for name, ts in interleaved_times(calls, repeats, warmup=False).items():
        q25, q50, q75 = np.percentile(ts * 1e3, [25, 50, 75])
        out[name].update(median_ms=float(q50), q25_ms=float(q25), q75_ms=float(q75))
    return out


def forward_latency(model, x, *, warmup: int = 3, repeats: int = 20) -> dict:
    """``latency_table`` of one model: {"median_ms", "q25_ms", "q75_ms", "first_call_s", "output"}."""
    return latency_table({"model": model}, x, warmup=warmup, repeats=repeats)["model"]
