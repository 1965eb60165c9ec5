"""Iterative pruning to 99.9 %: how the pruned weights are spread, compared on one baseline.

For each variant — "global" (one magnitude threshold, the reference),
"global+reclaim" (BatchNorm scales of dead channels pruned, their places given
to kernel weights) and "erk" (Erdős–Rényi-Kernel layer densities) — runs the
iterative schedule 80, 90, 97, 99, 99.5, 99.9 % with FT epochs of masked
fine-tuning per stage, and reports test MSE over a dense control fine-tuned for
the same total epochs at the same lr. Writes REPORT_DIR/pruning_variants.{json,md}.

    python experiments/pruning_variants.py --data data/quick.h5 --ft-lr 1e-3   # ~10 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

VARIANTS = {"global": dict(distribution="global"),
            "global+reclaim": dict(distribution="global", reclaim_dead_scales=True),
            "erk": dict(distribution="erk")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/quick.h5")
    p.add_argument("--out", default="runs/compression_study", help="baseline training run (shared with the study)")
    p.add_argument("--report-dir", default="experiments/results/pruning_variants")
    p.add_argument("--epochs", type=int, default=20, help="baseline epochs")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="baseline lr")
    p.add_argument("--ft-epochs", type=int, default=4)
    p.add_argument("--ft-lr", type=float, default=1e-3)
    p.add_argument("--keep", choices=["best", "last"], default="best",
                   help="fine-tuning epoch kept per stage (and by the dense control): lowest validation MSE, or last")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="fine-tuning lr per stage: constant, or cosine decay to 1%% restarting each stage "
                        "(the dense control restarts every --ft-epochs too)")
    p.add_argument("--schedule", default=None,
                   help="increasing sparsities of the chain, comma-separated (default: 80,90,97,99,99.5,99.9 %%)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.schedule is not None:
        sched = args.schedule = [float(x) for x in args.schedule.split(",") if x.strip()]
        if not sched or not all(0 < a < 1 for a in sched) or sched != sorted(set(sched)):
            p.error(f"--schedule must be increasing sparsities in (0, 1), got {args.schedule}")
    for v in args.variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v!r}; allowed: {', '.join(VARIANTS)}")
    if args.ft_epochs < 1 or not args.ft_lr > 0:
        p.error(f"--ft-epochs must be >= 1 and --ft-lr > 0, got {args.ft_epochs}, {args.ft_lr}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from bec_jax.compress.pruning import DEFAULT_SCHEDULE, PruneConfig
    from bec_jax.compress.workflow import FineTuner, dense_control, load_setup, prune_once, test_mse
    from bec_jax.train.trainer import TrainConfig, fit, model_config_for

    t0 = time.perf_counter()
    rep = Path(args.report_dir)
    rep.mkdir(parents=True, exist_ok=True)
    fit(args.data, args.out, model_config_for(args.data, args.width, None),
        TrainConfig(learning_rate=args.lr, epochs=args.epochs), checkpoint_every=max(1, args.epochs // 5),
        progress=False, log=print)
    setup = load_setup(args.out, args.data, which="latest")
    tuner = FineTuner(setup.model, setup.train, learning_rate=args.ft_lr, loss=setup.train_config.loss,
                      cycle_epochs=args.ft_epochs if args.lr_schedule == "cosine" else None)
    ft, stages = args.ft_epochs, tuple(args.schedule or DEFAULT_SCHEDULE)
    dense = dense_control(setup, tuner, ft * len(stages), args.keep)
    rows = []
    for name in args.variants:
        model, masks = setup.model, None
        for k, s in enumerate(stages, start=1):
            pruned, masks = prune_once(model, PruneConfig(s, **VARIANTS[name]), masks)
            r = tuner.run(pruned, masks, ft, select=setup.val if args.keep == "best" else None)
            model = r.model
            mse = test_mse(model, setup.test)["mse"]
            rows.append(dict(variant=name, sparsity=s, mse=mse, ratio=mse / dense[ft * k],
                             mse_before_finetune=test_mse(pruned, setup.test)["mse"], kept_epoch=r.epoch))
            print(f"{name} {s:.3f}: {mse:.3e} ({rows[-1]['ratio']:.3g}x dense)", flush=True)
    result = dict(settings=vars(args), dense_control_mse=dense, rows=rows, seconds=time.perf_counter() - t0,
                  load_average_end=os.getloadavg())
    (rep / "pruning_variants.json").write_text(json.dumps(result, indent=2))
    by = {}
    for r in rows:
        by.setdefault(r["variant"], {})[r["sparsity"]] = r
    md = [f"# Iterative pruning variants (ft {ft} epochs/stage at lr {args.ft_lr:g} ({args.lr_schedule}), "
          f"keep {args.keep} epoch; "
          "test MSE / dense same epochs)",
          "", "| variant | " + " | ".join(f"{s:.1%}" for s in stages) + " |", "|---|" + "---|" * len(stages)]
    md += [f"| {v} | " + " | ".join(f"{d[s]['ratio']:.3g}× ({d[s]['mse']:.2e})" for s in stages) + " |"
           for v, d in by.items()]
    (rep / "pruning_variants.md").write_text("\n".join(md) + "\n")
    print(f"wrote {rep / 'pruning_variants.json'} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
