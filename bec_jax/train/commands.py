"""`bec-jax train` and `bec-jax evaluate`."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bec_jax.cli import UsageError, out_dir


def _model_config(args, n: int):
    from bec_jax.models.unet import UNetConfig, default_depth

    max_depth = int(math.floor(math.log2(n)))
    depth = default_depth(n) if args.depth is None else args.depth
    if not (1 <= depth <= max_depth):
        raise UsageError(f"--depth must be in [1, {max_depth}] for {n}x{n} images, got {depth}")
    return UNetConfig(base_width=args.width, depth=depth, input_size=n)


def cmd_train(args) -> int:
    from bec_jax.data.storage import load_grid, read_h5
    from bec_jax.train.plots import plot_history
    from bec_jax.train.core import TrainConfig
    from bec_jax.train.trainer import fit

    if not Path(args.data).exists():
        raise UsageError(f"no dataset at {args.data!r} (make one with `bec-jax generate`)")
    _, attrs = read_h5(args.data, psi=False)  # the per-sample fields too: a foreign file is named here
    model_config = _model_config(args, load_grid(attrs).n)
    config = TrainConfig(optimizer=args.optimizer, learning_rate=args.lr, batch_size=args.batch_size,
                         epochs=args.epochs, seed=args.seed, weight_decay=args.weight_decay, momentum=args.momentum,
                         loss=args.loss, target=args.target, augment=args.augment, split_seed=args.split_seed,
                         drop_last=args.drop_last)
    out = out_dir(args.out)
    print(f"bec-jax train: U-Net width {model_config.base_width}, depth {model_config.depth}, "
          f"{model_config.input_size}² input; {config.optimizer} lr={config.learning_rate:g}, "
          f"batch {config.batch_size}, {config.epochs} epochs, loss {config.loss} -> {out}", flush=True)
    if args.checkpoint_every < 1:
        raise UsageError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    result = fit(args.data, out, model_config, config, checkpoint_every=args.checkpoint_every,
                 progress=not args.no_progress)
    png = plot_history(result.history, out / "loss.png",
                       title=f"{config.optimizer}, lr {config.learning_rate:g}, seed {config.seed}")
    last = result.history[-1]
    print(json.dumps(dict(epochs=last["epoch"], train_loss=last["train_loss"], val_loss=last["val_loss"],
                          best_epoch=result.best_epoch, metrics=str(out / "metrics.json"), plot=str(png))))
    return 0


def cmd_evaluate(args) -> int:
    from bec_jax.train.evaluate import EvalConfig, evaluate_run
    from bec_jax.train.plots import plot_predictions

    run = Path(args.run)
    if not (run / "checkpoints").is_dir():
        raise UsageError(f"no training run at {args.run!r} (expected {str(run / 'checkpoints')!r})")
    if args.samples < 0:
        raise UsageError(f"--samples must be >= 0, got {args.samples}")
    out = out_dir(args.out or str(run / "eval"))
    res = evaluate_run(run, data=args.data, which=args.checkpoint, split=args.split, batch_size=args.batch_size,
                       ecfg=EvalConfig(match_radius=args.match_radius), progress=not args.no_progress,
                       keep=args.samples)
    report = dict(config=res["config"], summary=res["summary"])
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    files = [str(out / "evaluation.json")]
    if args.samples:
        s = res["summary"]
        files.append(str(plot_predictions(
            res["samples"], out / "predictions.png",
            title=f"{args.split} split, {args.checkpoint} checkpoint (epoch {res['config']['epoch']}): "
                  f"masked MSE {s['mse']:.2e}, mean fidelity {s['fidelity_mean']:.4f}")))
    print(json.dumps(dict(res["summary"], files=files)))
    return 0


def register(sub) -> None:
    t = sub.add_parser("train", help="train the U-Net (density -> phase gradient); rerun to resume")
    t.add_argument("--data", default="data/quick.h5", help="dataset .h5 from `bec-jax generate`")
    t.add_argument("--out", default="runs/train", help="run folder: checkpoints, metrics.csv/json, loss.png")
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="adam")
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--epochs", type=int, default=50)
    t.add_argument("--seed", type=int, default=0, help="initialisation and batch-order seed")
    t.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW decoupled weight decay")
    t.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (reference: 0)")
    t.add_argument("--loss", choices=["masked_mse", "reference"], default="masked_mse",
                   help="masked_mse: mean over valid pixels; reference: mean over all pixels (paper)")
    t.add_argument("--target", choices=["phase_diff", "velocity"], default="phase_diff")
    t.add_argument("--augment", action="store_true", help="random 90° rotations of training samples")
    t.add_argument("--width", type=int, default=8, help="channels of the first level (reference 8)")
    t.add_argument("--depth", type=int, default=None,
                   help="max-pool levels (default min(7, log2 n): a 1x1 bottleneck)")
    t.add_argument("--split-seed", type=int, default=0, help="group-wise 60/20/20 split seed")
    t.add_argument("--drop-last", action="store_true", help="drop the last partial training batch")
    t.add_argument("--checkpoint-every", type=int, default=1,
                   help="save a checkpoint every N epochs and at the end (default 1)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test MSE, phase reconstruction, vortices and fidelity of a trained run")
    e.add_argument("--run", default="runs/train", help="run folder written by `bec-jax train`")
    e.add_argument("--data", default=None, help="dataset .h5 (default: the run's)")
    e.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    e.add_argument("--split", choices=["test", "val", "train", "all"], default="test")
    e.add_argument("--out", default=None, help="output folder (default RUN/eval)")
    e.add_argument("--samples", type=int, default=4, help="test samples in predictions.png (0: no figure)")
    e.add_argument("--match-radius", type=float, default=3.0, help="vortex match radius in healing lengths")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_evaluate)
