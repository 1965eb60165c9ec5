"""``fit``: resumable training of the U-Net on a dataset file (``bec-jax train``).

A thin caller of the training core (``bec_jax.train.core``): the dataset's
group-wise splits become ``BatchLoader``s, ``run_epochs`` drives the epochs, and
an ``on_epoch`` callback checkpoints (orbax: best and latest) and writes
metrics.csv / metrics.json.

Exact resume: the batch order of epoch e depends only on (seed, e)
(``BatchLoader``), and so do the camera images of training under the imaging
model (``imaging=``: keys of (seed, e, batch index)); there is no other randomness, so killing a run and
rerunning the same command continues from the last saved epoch and ends with
bit-identical parameters to an uninterrupted run on the same machine.

Several processes (``bec_jax.distributed``): every process runs ``fit`` with the same
arguments. Batches are global arrays split over every process's devices (each process
computes only its rows), parameters and optimizer state are replicated, and ``jit``
inserts the gradient all-reduce, so the run computes what one process computes at the
same global batch (to round-off). Every process validates on the whole split; all save
and restore the orbax checkpoints together; process 0 writes the metrics.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
from flax import nnx

from bec_jax import distributed as dist
from bec_jax.artifacts import CorruptArtifact, atomic_write_text
from bec_jax.data.loader import BatchLoader
from bec_jax.data.splits import split_by_group
from bec_jax.data.storage import config_of, content_sha256, load_grid, read_h5
from bec_jax.models.unet import UNet, UNetConfig, default_depth, init_model
from bec_jax.train.checkpoint import CheckpointMismatch, Checkpoints
from bec_jax.train.core import (TrainConfig, TrainingDiverged, TrainState, evaluate_loader, init_state, make_loss,
                                make_optimizer, make_predict, make_train_step, run_epochs)

__all__ = ["load_dataset", "fit", "FitResult", "load_trained", "check_run_folder", "run_settings", "run_data_path",
           "model_config_for", "run_imaging", "check_dataset_grid", "data_ranges"]


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
    short = Path(os.path.normpath(path))  # run/train/../data.h5 reads as run/data.h5 (unless a link says otherwise)
    if short.exists() and os.path.samefile(short, path):
        path = short
    if ident is not None and _dataset_id(path, read_h5(path, psi=False)[1]) != ident:
        raise ValueError(f"{str(path)!r} is not the dataset {str(run_dir)!r} was trained on; pass the right one")
    return path


def data_ranges(attrs: dict) -> dict | None:
    """{"g_range", "omega_range"} of a dataset's generation config (None where it has none): kept in the run,
    so that a run copied without its data still knows the (g, Ω) its model saw."""
    try:
        cfg = config_of(attrs)
        return dict(g_range=[float(v) for v in cfg["g_range"]], omega_range=[float(v) for v in cfg["omega_range"]])
    except (KeyError, TypeError, ValueError):
        return None


def check_dataset_grid(data, input_size: int, n: int | None = None) -> None:
    """ValueError unless the dataset ``data`` is on the grid a model of ``input_size`` takes (a U-Net runs on its
    own image size only). n: the dataset's grid size, where already read (else read from ``data``)."""
    if n is None:
        n = load_grid(read_h5(data, fields=[], psi=False)[1]).n
    if n != input_size:
        raise ValueError(f"dataset grid n={n} of {str(data)!r} differs from the model's input_size {input_size}: "
                         f"give a dataset generated with n={input_size}")


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


def run_imaging(run: dict):
    """The ``ImagingTrainConfig`` a training run was trained under (from its stored run settings), or None
    for clean inputs."""
    d = (run or {}).get("imaging")
    if not d:
        return None
    from bec_jax.imaging.training import ImagingTrainConfig

    return ImagingTrainConfig(**d)


def fit(data_path, out_dir, model_config: UNetConfig, config: TrainConfig = TrainConfig(), *,
        imaging=None, checkpoint_every: int = 1, progress: bool = True,
        log: Callable[[str], None] | None = print) -> FitResult:
    """Train (or resume training) a U-Net on the train split of ``data_path``.

    Writes ``out_dir/checkpoints`` (orbax: best and latest epoch),
    ``out_dir/metrics.csv`` and ``out_dir/metrics.json`` (config, history, best
    epoch). If ``out_dir`` holds checkpoints of the same settings, training
    continues after the latest one; other settings raise CheckpointMismatch.
    ``model_config.input_size`` must equal the dataset's grid size.
    checkpoint_every: save every this many epochs and at the last epoch (a
    kill loses at most the epochs since the last save; "best" is the best
    saved epoch). Validation runs every epoch regardless.
    imaging: an enabled ``bec_jax.imaging.training.ImagingTrainConfig``: training and validation inputs
    are camera images rendered on the fly inside the compiled training step (``BatchLoader(imaging=...)``,
    ``data.loader.render_batch``), part of the run's settings.
    None or disabled: clean inputs, exactly as without it.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid, arrays, attrs, splits = load_dataset(data_path, config)
    check_dataset_grid(data_path, model_config.input_size, grid.n)
    tcfg = config.target_config
    imaging = imaging if imaging is not None and imaging.enabled else None
    # several processes (jax.distributed): data-parallel over every process's devices; one process: unchanged
    mesh = dist.global_mesh() if dist.process_count() > 1 else None
    lead = dist.process_index() == 0
    progress, log = progress and lead, log if lead else None
    train = BatchLoader(grid, arrays["psi"][splits["train"]], config.batch_size, tcfg, shuffle=True,
                        augment=config.augment, drop_last=config.drop_last, seed=config.seed, imaging=imaging,
                        mesh=mesh)
    val = BatchLoader(grid, arrays["psi"][splits["val"]], config.batch_size, tcfg, shuffle=False, imaging=imaging)
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
    if mesh is not None:  # replicated parameters and optimizer state; jit all-reduces the gradients
        state = dist.replicate(state, mesh)
    step = make_train_step(gd_train, tx, make_loss(config, grid), render=train.render)  # batches made in the step
    predict = make_predict(gd_eval)

    run = dict(train=config.resume_key(), data=_dataset_id(Path(data_path), attrs))
    if imaging is not None:  # absent for clean inputs: runs without it resume unchanged
        run["imaging"] = dataclasses.asdict(imaging)
    info = dict(model_config=model_config.to_dict(), train_config=dataclasses.asdict(config),
                data=os.path.relpath(Path(data_path).resolve(), out.resolve()), dataset=run["data"],
                # the states' own digest (the generation summary's content_sha256; computed, so that datasets
                # generated before the summary had it get one too): which generation trained this run
                data_content_sha256=content_sha256(arrays),
                split_sizes={k: int(len(v)) for k, v in splits.items()}, data_ranges=data_ranges(attrs))
    history, start = [], 0

    def validate(s: TrainState) -> dict:
        s = dist.local_copy(s)  # every process validates alone on the whole split: no collectives
        m = evaluate_loader(predict, s.params, s.batch_stats, val)
        # model selection on the pixel metric of the loss ("mse+fidelity": the masked MSE)
        return dict(val_loss=m["mse_ref"] if config.loss == "reference" else m["mse"], val_mse=m["mse"],
                    val_mse_ref=m["mse_ref"])

    with Checkpoints(out / "checkpoints", model_config, run) as ckpt:
        latest = ckpt.latest_step()
        if latest is not None and latest > config.epochs:  # a rerun trains on: it cannot take epochs back
            raise CheckpointMismatch(f"{str(out)!r} holds {latest} trained epochs, more than epochs={config.epochs}: "
                                     f"use another output folder, or epochs >= {latest} to resume it")
        if latest is not None:
            restored, meta = ckpt.restore(latest, state.as_dict())
            state = TrainState(**restored)
            history, start = list(meta["history"]), int(meta["epoch"])
            if log and start < config.epochs:
                log(f"resuming from epoch {start} in {str(out / 'checkpoints')!r}")
        bar = tqdm(total=config.epochs * len(train), initial=min(start, config.epochs) * len(train),
                   unit="step", desc="train", disable=not progress, dynamic_ncols=True)

        def on_epoch(row: dict, s: TrainState):
            epoch = row["epoch"]
            if not np.isfinite(row["val_loss"]):  # stop before a NaN state is saved
                raise TrainingDiverged(f"training diverged at epoch {epoch} (train loss {row['train_loss']}, "
                                       f"validation loss {row['val_loss']}); nothing of this epoch was saved; "
                                       "lower the learning rate")
            row["samples_per_s"] = len(train) * config.batch_size / row["seconds"]
            history.append(row)
            save = epoch % checkpoint_every == 0 or epoch == config.epochs
            saved = [r for r in history if r["epoch"] in set(ckpt.all_steps()) | ({epoch} if save else set())]
            best = min(saved, key=lambda r: r["val_loss"])["epoch"] if saved else None
            if save:
                ckpt.save(epoch, s.as_dict(), dict(epoch=epoch, history=history, best_epoch=best), row["val_loss"])
            if lead:
                _write_metrics(out, history, dict(info, best_epoch=best, checkpointed_epoch=ckpt.latest_step()))
            bar.set_postfix(epoch=epoch, train=f"{row['train_loss']:.3e}", val=f"{row['val_loss']:.3e}")

        state = run_epochs(step, state, train.sources, range(start + 1, config.epochs + 1), validate=validate,
                           on_batch=lambda: bar.update(1), on_epoch=on_epoch).state
        bar.close()
        best = ckpt.read_meta(ckpt.latest_step())["best_epoch"] if ckpt.latest_step() else 0
        if lead:
            _write_metrics(out, history, dict(info, best_epoch=best, checkpointed_epoch=ckpt.latest_step()))
    state = dist.local_copy(state)
    model = nnx.merge(gd_eval, state.params, state.batch_stats)
    return FitResult(model=model, history=history, best_epoch=best, out_dir=out)


def check_run_folder(run_dir) -> Path:
    """``run_dir`` as a Path; ValueError unless it is a training run folder (it holds checkpoints/), naming
    RUN/train for a pipeline run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoints").is_dir():
        hint = (f"; {str(run_dir)!r} is a pipeline run: its training run is {str(run_dir / 'train')!r}"
                if (run_dir / "train" / "checkpoints").is_dir() else "")
        raise ValueError(f"no training run at {str(run_dir)!r} (expected {str(run_dir / 'checkpoints')!r}){hint}")
    return run_dir


def run_settings(run_dir) -> tuple[UNetConfig, TrainConfig, dict]:
    """(model config, training config, stored run settings) of a run folder, read from its checkpoint
    metadata without restoring any checkpoint. The training config's epochs is the default: the stored run
    key does not hold it (``load_trained`` records how far the run went)."""
    from bec_jax.train.checkpoint import read_run_metadata

    meta = read_run_metadata(check_run_folder(run_dir) / "checkpoints")
    tcfg = meta["run"]["train"]
    return (UNetConfig.from_dict(meta["model_config"]), TrainConfig(**{**tcfg, "split": tuple(tcfg["split"])}),
            meta["run"])


def load_trained(run_dir, which: str = "best") -> tuple[UNet, dict]:
    """(model in eval mode, info) of a finished or partial run folder.

    which: "best" (lowest validation loss) or "latest". info holds the stored
    model_config, run settings, epoch and history. Model configuration comes from
    the checkpoint metadata, so no settings need repeating.
    """
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    ck_dir = Path(run_dir) / "checkpoints"
    model_config, config, run = run_settings(run_dir)
    model = nnx.eval_shape(lambda: UNet(model_config, rngs=nnx.Rngs(0)))
    with Checkpoints(ck_dir, model_config, read_only=True) as ckpt:
        latest = ckpt.latest_step()
        step_meta = ckpt.read_meta(latest)
        step = step_meta["best_epoch"] if which == "best" else latest
        # epochs is not part of the stored run key; record how far this run went.
        config = dataclasses.replace(config, epochs=latest)
        _, gd_eval, like = init_state(model, make_optimizer(config))
        state, step_meta = ckpt.restore(step, like.as_dict())
    model = nnx.merge(gd_eval, state["params"], state["batch_stats"])
    return model, dict(model_config=model_config, train_config=config, epoch=step, run=run,
                       history=step_meta["history"])
