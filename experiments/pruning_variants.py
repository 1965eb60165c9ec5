"""Iterative pruning to 99.9 %: how the pruned weights are spread, compared on one baseline.

For each variant — "global" (one magnitude threshold, the reference),
"global+reclaim" (BatchNorm scales of dead channels pruned, their places given
to kernel weights), "lamp" (layer-adaptive scores, Lee et al. 2021; also with
reclaim) and "erk" (Erdős–Rényi-Kernel layer densities) — runs the
iterative schedule 80, 90, 97, 99, 99.5, 99.9 % with FT epochs of masked
fine-tuning per stage, and reports test MSE over a dense control fine-tuned for
the same total epochs at the same lr. --last-epochs gives the last stage a
longer fine-tuning (the control trains as long); --seeds repeats the dense
control and every chain with other shuffling orders of the fine-tuning data
(seed 0 is the loader's own) and reports the median ratio; --report-at
reads the last stage at shorter lengths too, from the same run. Writes
REPORT_DIR/pruning_variants.{json,md}.

    python experiments/pruning_variants.py --data data/quick.h5 --ft-lr 1e-3   # ~10 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = {"global": dict(distribution="global"),
            "global+reclaim": dict(distribution="global", reclaim_dead_scales=True),
            "lamp": dict(distribution="lamp"),
            "lamp+reclaim": dict(distribution="lamp", reclaim_dead_scales=True),
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
    p.add_argument("--last-epochs", type=int, default=None,
                   help="fine-tuning epochs of the last stage (default --ft-epochs)")
    p.add_argument("--report-at", default=None,
                   help="last-stage lengths (epochs, comma-separated, each <= --last-epochs) at which the last "
                        "stage's ratio is also reported, read from the one run: the keep rule over its first E epochs "
                        "against the control at the same total")
    p.add_argument("--seeds", default="0",
                   help="shuffling seeds of the fine-tuning data, comma-separated; one dense control and one chain "
                        "per seed and variant")
    p.add_argument("--keep", choices=["best", "last"], default="best",
                   help="fine-tuning epoch kept per stage (and by the dense control): lowest validation MSE, or last")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="fine-tuning lr per stage: constant, or cosine decay to 1%% restarting each stage "
                        "(the dense control restarts every --ft-epochs too)")
    p.add_argument("--precise-bn", action="store_true",
                   help="BatchNorm statistics of every validated / kept model recomputed over the training set "
                        "(workflow.precise_batch_stats), for the dense control too")
    p.add_argument("--schedule", default=None,
                   help="increasing sparsities of the chain, comma-separated (default: 80,90,97,99,99.5,99.9 %%)")
    p.add_argument("--variants", default="global,global+reclaim,erk", help=f"comma-separated, of {', '.join(VARIANTS)}")
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
    if args.last_epochs is None:
        args.last_epochs = args.ft_epochs
    if args.last_epochs < 1:
        p.error(f"--last-epochs must be >= 1, got {args.last_epochs}")
    try:
        args.report_at = sorted({int(x) for x in (args.report_at or "").split(",") if x.strip()} | {args.last_epochs})
    except ValueError:
        p.error(f"--report-at must be comma-separated integers, got {args.report_at!r}")
    if not 1 <= args.report_at[0] or args.report_at[-1] > args.last_epochs:
        p.error(f"--report-at must lie in [1, --last-epochs = {args.last_epochs}], got {args.report_at}")
    if args.lr_schedule == "cosine" and args.last_epochs != args.ft_epochs:
        p.error("--last-epochs needs --lr-schedule constant (a cosine cycle lasts --ft-epochs)")
    try:
        args.seeds = sorted({int(x) for x in args.seeds.split(",") if x.strip()})
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.seeds or min(args.seeds) < 0:
        p.error(f"--seeds must be non-negative integers, got {args.seeds}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from bec_jax.compress.pruning import DEFAULT_SCHEDULE, PruneConfig
    from bec_jax.compress.workflow import FineTuner, best_so_far, dense_control, load_setup, prune_once, test_mse
    from bec_jax.train.trainer import TrainConfig, fit, model_config_for

    t0 = time.perf_counter()
    rep = Path(args.report_dir)
    rep.mkdir(parents=True, exist_ok=True)
    fit(args.data, args.out, model_config_for(args.data, args.width, None),
        TrainConfig(learning_rate=args.lr, epochs=args.epochs), checkpoint_every=max(1, args.epochs // 5),
        progress=False, log=print)
    setup = load_setup(args.out, args.data, which="latest")
    tuner = FineTuner(setup.model, setup.train, learning_rate=args.ft_lr, loss=setup.train_config.loss,
                      cycle_epochs=args.ft_epochs if args.lr_schedule == "cosine" else None, precise_bn=args.precise_bn)
    ft, stages = args.ft_epochs, tuple(args.schedule or DEFAULT_SCHEDULE)
    # epochs of fine-tuning after stage k (1-based); the last stage may be longer
    after = [ft * k for k in range(1, len(stages))] + [ft * (len(stages) - 1) + args.last_epochs]
    rows, dense_by_seed = [], {}
    for seed in args.seeds:
        # another shuffling order: the same loader with its seed moved; seed 0 keeps the loader's own
        tuner.loader = copy.copy(setup.train)
        tuner.loader.seed = setup.train.seed + seed
        tuner.epoch_counter = 0
        dense = dense_by_seed[seed] = dense_control(setup, tuner, after[-1], args.keep)
        for name in args.variants:
            model, masks = setup.model, None
            for k, s in enumerate(stages):
                pruned, masks = prune_once(model, PruneConfig(s, **VARIANTS[name]), masks)
                last = k == len(stages) - 1
                tests = []  # the last stage's test MSE per epoch, to read it at every --report-at length
                r = tuner.run(pruned, masks, args.last_epochs if last else ft,
                              on_epoch=(lambda e, m: tests.append(test_mse(m, setup.test)["mse"])) if last else None,
                              select=setup.val if args.keep == "best" else None)
                model = r.model
                mse = test_mse(model, setup.test)["mse"]
                rows.append(dict(variant=name, seed=seed, sparsity=s, mse=mse, ratio=mse / dense[after[k]],
                                 mse_before_finetune=test_mse(pruned, setup.test)["mse"], kept_epoch=r.epoch,
                                 val_mse=r.val_mse))
                if last:
                    kept = best_so_far(tests, r.val_mse) if args.keep == "best" else tests
                    start = after[k] - args.last_epochs  # the control's epochs before the last stage
                    rows[-1]["at"] = {e: dict(mse=kept[e - 1], ratio=kept[e - 1] / dense[start + e])
                                      for e in args.report_at}
                print(f"seed {seed} {name} {s:.4f}: {mse:.3e} ({rows[-1]['ratio']:.3g}x dense)", flush=True)
    result = dict(settings=vars(args), dense_control_mse=dense_by_seed, rows=rows, seconds=time.perf_counter() - t0,
                  load_average_end=os.getloadavg())
    (rep / "pruning_variants.json").write_text(json.dumps(result, indent=2))
    by = {}
    for r in rows:
        by.setdefault(r["variant"], {}).setdefault(r["sparsity"], []).append(r["ratio"])
    last = f", last stage {args.last_epochs}" if args.last_epochs != ft else ""
    last += ", precise BN statistics" if args.precise_bn else ""
    md = [f"# Iterative pruning variants (ft {ft} epochs/stage{last} at lr {args.ft_lr:g} ({args.lr_schedule}), "
          f"keep {args.keep} epoch; test MSE / dense same epochs"
          + (f"; median [min–max] over seeds {args.seeds}" if len(args.seeds) > 1 else "") + ")",
          "", "| variant | " + " | ".join(f"{s:.2%}" for s in stages) + " |", "|---|" + "---|" * len(stages)]
    md += [f"| {v} | " + " | ".join(_cell(d[s]) for s in stages) + " |" for v, d in by.items()]
    if len(args.seeds) == 1:  # the absolute MSEs too
        mses = {(r["variant"], r["sparsity"]): r["mse"] for r in rows}
        md += ["", "| variant (test MSE) | " + " | ".join(f"{s:.2%}" for s in stages) + " |",
               "|---|" + "---|" * len(stages)]
        md += [f"| {v} | " + " | ".join(f"{mses[v, s]:.2e}" for s in stages) + " |" for v in by]
    if len(args.report_at) > 1:
        md += ["", f"Last stage ({stages[-1]:.2%}) read at other lengths (epochs of the last stage; the control at the "
               "same total):", "", "| variant | " + " | ".join(f"{e}" for e in args.report_at) + " |",
               "|---|" + "---|" * len(args.report_at)]
        at = {}
        for r in rows:
            for e, v in r.get("at", {}).items():
                at.setdefault(r["variant"], {}).setdefault(e, []).append(v["ratio"])
        md += [f"| {v} | " + " | ".join(_cell(d[e]) for e in args.report_at) + " |" for v, d in at.items()]
    (rep / "pruning_variants.md").write_text("\n".join(md) + "\n")
    print(f"wrote {rep / 'pruning_variants.json'} in {result['seconds']:.0f} s")
    return 0


def _cell(ratios) -> str:
    if len(ratios) == 1:
        return f"{ratios[0]:.3g}×"
    return f"{np.median(ratios):.3g}× [{min(ratios):.3g}–{max(ratios):.3g}]"


if __name__ == "__main__":
    sys.exit(main())
