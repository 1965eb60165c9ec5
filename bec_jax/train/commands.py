"""`bec-jax train` and `bec-jax evaluate`."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bec_jax.artifacts import atomic_write_text
from bec_jax.flags import UsageError, add_dataclass_flags, config_from_flags, out_dir


#: UNetConfig fields that follow from the dataset (input_size) or are fixed by the task
_MODEL_DERIVED = ("input_size", "in_channels", "out_channels")


def _model_config(args, n: int):
    from bec_jax.models.unet import UNetConfig, default_depth

    max_depth = int(math.floor(math.log2(n)))
    depth = default_depth(n) if args.model__depth is None else args.model__depth
    if not (1 <= depth <= max_depth):
        raise UsageError(f"--model-depth must be in [1, {max_depth}] for {n}x{n} images, got {depth}")
    return config_from_flags(UNetConfig(), args, prefix="model-", exclude=_MODEL_DERIVED, depth=depth,
                             input_size=n)


def cmd_train(args) -> int:
    from bec_jax.data.storage import load_grid, read_h5
    from bec_jax.train.core import TrainConfig
    from bec_jax.train.plots import plot_history
    from bec_jax.train.trainer import fit

    if not Path(args.data).exists():
        raise UsageError(f"no dataset at {args.data!r} (make one with `bec-jax generate`)")
    _, attrs = read_h5(args.data, psi=False)  # the per-sample fields too: a foreign file is named here
    model_config = _model_config(args, load_grid(attrs).n)
    config = config_from_flags(TrainConfig(), args)
    if args.checkpoint_every < 1:
        raise UsageError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    out = out_dir(args.out)
    print(f"bec-jax train: U-Net width {model_config.base_width}, depth {model_config.depth}, "
          f"{model_config.input_size}² input; {config.optimizer} lr={config.learning_rate:g}, "
          f"batch {config.batch_size}, {config.epochs} epochs, loss {config.loss} -> {out}", flush=True)
    result = fit(args.data, out, model_config, config, checkpoint_every=args.checkpoint_every,
                 progress=not args.no_progress)
    from bec_jax.distributed import process_index

    png = None
    if process_index() == 0:  # one figure of the run: the other processes of a multi-process run hold the same
        png = str(plot_history(result.history, out / "loss.png",
                               title=f"{config.optimizer}, lr {config.learning_rate:g}, seed {config.seed}"))
    last = result.history[-1]
    print(json.dumps(dict(epochs=last["epoch"], train_loss=last["train_loss"], val_loss=last["val_loss"],
                          best_epoch=result.best_epoch, metrics=str(out / "metrics.json"), plot=png)))
    return 0


def cmd_evaluate(args) -> int:
    from bec_jax.train.evaluate import EvalConfig, evaluate_run
    from bec_jax.train.plots import plot_predictions
    from bec_jax.train.trainer import check_run_folder

    run = check_run_folder(args.run)
    if not 0 <= args.samples <= 16:
        raise UsageError(f"--samples must be in [0, 16] (rows of predictions.png), got {args.samples}")
    out = out_dir(args.out or str(run / "eval"))
    res = evaluate_run(run, data=args.data, which=args.checkpoint, split=args.split, batch_size=args.batch_size,
                       ecfg=config_from_flags(EvalConfig(), args), progress=not args.no_progress,
                       keep=args.samples)
    report = dict(config=res["config"], summary=res["summary"])
    atomic_write_text(out / "evaluation.json", json.dumps(report, indent=2))
    files = [str(out / "evaluation.json")]
    if not args.samples:  # a figure of an earlier evaluation would sit beside this one's numbers
        (out / "predictions.png").unlink(missing_ok=True)
    else:
        s = res["summary"]
        files.append(str(plot_predictions(
            res["samples"], out / "predictions.png",
            title=f"{args.split} split, {args.checkpoint} checkpoint (epoch {res['config']['epoch']}): "
                  f"masked MSE {s['mse']:.2e}, mean fidelity {s['fidelity_mean']:.4f}")))
    print(json.dumps(dict(res["summary"], files=files)))
    return 0


def register(sub) -> None:
    from bec_jax.models.unet import UNetConfig
    from bec_jax.train.core import TrainConfig
    from bec_jax.train.evaluate import EvalConfig

    t = sub.add_parser("train", help="train the U-Net (density -> phase gradient); rerun to resume",
                       description="Train (or resume) a U-Net on a dataset's train split. Every TrainConfig field is "
                                   "a flag --<field>, every UNetConfig field a flag --model-<field>.")
    t.add_argument("--data", default="data/quick.h5",
                   help="dataset .h5 (or shard folder) from `bec-jax generate` (default data/quick.h5)")
    t.add_argument("--out", default="runs/train",
                   help="run folder: checkpoints, metrics.csv/json, loss.png (default runs/train); a rerun with the "
                        "same settings resumes it")
    t.add_argument("--checkpoint-every", type=int, default=1,
                   help="save a checkpoint every N epochs and at the end (default 1)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_flags(t, TrainConfig, aliases=dict(learning_rate=["--lr"]), title="training (TrainConfig)")
    add_dataclass_flags(t, UNetConfig, prefix="model-", exclude=_MODEL_DERIVED,
                        aliases=dict(base_width=["--width"], depth=["--depth"]), defaults=dict(depth="min(7, log2 n)"),
                        title="model (UNetConfig; input_size follows the dataset)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test MSE, phase reconstruction, vortices and fidelity of a trained run",
                       description="Evaluate a trained run on a dataset split. Every EvalConfig field is a flag.")
    e.add_argument("--run", default="runs/train", help="run folder written by `bec-jax train` (default runs/train)")
    e.add_argument("--data", default=None, help="dataset .h5 (default: the run's)")
    e.add_argument("--checkpoint", choices=["best", "latest"], default="best",
                   help="the saved epoch with the lowest validation loss, or the last saved one (default best)")
    e.add_argument("--split", choices=["test", "val", "train", "all"], default="test",
                   help="samples scored: the run's group-wise test, val or train split, or all samples (for a "
                        "dataset other than the run's) (default test)")
    e.add_argument("--out", default=None, help="output folder (default RUN/eval)")
    e.add_argument("--samples", type=int, default=4,
                   help="samples of the split in predictions.png, 0 to 16 (0: no figure; default 4)")
    e.add_argument("--batch-size", type=int, default=16, help="samples per evaluation batch (default 16)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_flags(e, EvalConfig, title="evaluation (EvalConfig)")
    e.set_defaults(func=cmd_evaluate)
