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
reads the last stage at shorter lengths too, from the same run (and draws
it per seed). Writes REPORT_DIR/pruning_variants.{json,md} (and .png with
--report-at). --merge pools the seeds of earlier runs made with the same
settings into one report, as if one run had made them all.

    python experiments/pruning_variants.py --data data/quick.h5 --ft-lr 1e-3   # ~10 min on 2 CPU cores
    python experiments/pruning_variants.py --merge DIR_A,DIR_B --report-dir DIR_AB
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
    p.add_argument("--merge", default=None,
                   help="report dirs of earlier runs, comma-separated: pool their seeds into --report-dir (no training); "
                        "the runs must share every setting but their seeds, and no seed")
    args = p.parse_args(argv)
    if args.merge is not None:
        args.merge = [d.strip() for d in args.merge.split(",") if d.strip()]
        try:
            args.merged = merge_runs(args.merge)
        except ValueError as e:
            p.error(str(e))
        return args
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


def merge_runs(dirs: list[str]) -> dict:
    """One result dict from the pruning_variants.json of several runs that differ only in their seeds."""
    if len(dirs) < 2:
        raise ValueError(f"--merge needs at least two report dirs, got {dirs}")
    runs = []
    for d in dirs:
        f = Path(d) / "pruning_variants.json"
        if not f.is_file():
            raise ValueError(f"--merge: no pruning_variants.json in {d!r}")
        runs.append(json.loads(f.read_text()))
    same = lambda s: {k: v for k, v in s.items() if k not in ("seeds", "report_dir", "merge", "merged_from")}
    for d, r in zip(dirs[1:], runs[1:]):
        if same(r["settings"]) != same(runs[0]["settings"]):
            diff = sorted(k for k in same(r["settings"]) | same(runs[0]["settings"])
                          if r["settings"].get(k) != runs[0]["settings"].get(k))
            raise ValueError(f"--merge: {d!r} was run with other settings than {dirs[0]!r}: {', '.join(diff)}")
    seeds = [s for r in runs for s in r["settings"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--merge: the runs share seeds: {sorted(seeds)}")
    order = {s: i for i, s in enumerate(sorted(seeds))}
    return dict(settings=dict(runs[0]["settings"], seeds=sorted(seeds), merged_from=dirs),
                dense_control_mse={k: v for r in runs for k, v in r["dense_control_mse"].items()},
                rows=sorted((row for r in runs for row in r["rows"]), key=lambda row: order[row["seed"]]),
                seconds=sum(r["seconds"] for r in runs))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge is not None:
        rep = Path(args.report_dir)
        rep.mkdir(parents=True, exist_ok=True)
        write_report(rep, dict(args.merged, settings=dict(args.merged["settings"], report_dir=str(rep))))
        return 0
    from bec_jax.compress.pruning import DEFAULT_SCHEDULE, PruneConfig
    from bec_jax.compress.workflow import FineTuner, best_so_far, dense_control, load_setup, prune_once, test_mse
    from bec_jax.train import TrainConfig
    from bec_jax.train.trainer import fit, model_config_for

    t0 = time.perf_counter()
    rep = Path(args.report_dir)
    rep.mkdir(parents=True, exist_ok=True)
    fit(args.data, args.out, model_config_for(args.data, args.width, None),
        TrainConfig(learning_rate=args.lr, epochs=args.epochs), checkpoint_every=max(1, args.epochs // 5),
        progress=False, log=print)
    setup = load_setup(args.out, args.data, which="latest")
    tuner = FineTuner(setup.model, setup.train, learning_rate=args.ft_lr, config=setup.train_config,
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
    write_report(rep, result)
    return 0


def write_report(rep: Path, result: dict) -> None:
    """REPORT_DIR/pruning_variants.{json,md}, and .png when the last stage was read at several lengths."""
    from bec_jax.compress.pruning import DEFAULT_SCHEDULE

    text = json.dumps(result, indent=2)
    (rep / "pruning_variants.json").write_text(text)
    result = json.loads(text)  # the keys of "at" as a reader of the JSON sees them (strings)
    a, rows = result["settings"], result["rows"]
    ft, stages, report_at = a["ft_epochs"], tuple(a["schedule"] or DEFAULT_SCHEDULE), a["report_at"]
    by = {}
    for r in rows:
        by.setdefault(r["variant"], {}).setdefault(r["sparsity"], []).append(r["ratio"])
    last = f", last stage {a['last_epochs']}" if a["last_epochs"] != ft else ""
    last += ", precise BN statistics" if a["precise_bn"] else ""
    md = [f"# Iterative pruning variants (ft {ft} epochs/stage{last} at lr {a['ft_lr']:g} ({a['lr_schedule']}), "
          f"keep {a['keep']} epoch; test MSE / dense same epochs"
          + (f"; median [min–max] over seeds {a['seeds']}" if len(a["seeds"]) > 1 else "") + ")",
          "", "| variant | " + " | ".join(f"{s:.2%}" for s in stages) + " |", "|---|" + "---|" * len(stages)]
    if "merged_from" in a:
        md[1:1] = ["", "Seeds pooled from the runs " + ", ".join(f"`{d}`" for d in a["merged_from"]) + "."]
    md += [f"| {v} | " + " | ".join(_cell(d[s]) for s in stages) + " |" for v, d in by.items()]
    if len(a["seeds"]) == 1:  # the absolute MSEs too
        mses = {(r["variant"], r["sparsity"]): r["mse"] for r in rows}
        md += ["", "| variant (test MSE) | " + " | ".join(f"{s:.2%}" for s in stages) + " |",
               "|---|" + "---|" * len(stages)]
        md += [f"| {v} | " + " | ".join(f"{mses[v, s]:.2e}" for s in stages) + " |" for v in by]
    if len(report_at) > 1:
        md += ["", f"Last stage ({stages[-1]:.2%}) read at other lengths (epochs of the last stage; the control at the "
               "same total):", "", "| variant | " + " | ".join(f"{e}" for e in report_at) + " |",
               "|---|" + "---|" * len(report_at)]
        at = {}  # variant -> seed -> ratios at report_at (JSON keys are strings)
        for r in rows:
            if "at" in r:
                at.setdefault(r["variant"], {})[r["seed"]] = [r["at"][str(e)]["ratio"] for e in report_at]
        md += [f"| {v} | " + " | ".join(_cell(col) for col in zip(*d.values())) + " |" for v, d in at.items()]
        _plot_lengths(rep / "pruning_variants.png", at, report_at, stages[-1])
        md += ["", "![last stage per seed](pruning_variants.png)"]
    (rep / "pruning_variants.md").write_text("\n".join(md) + "\n")
    print(f"wrote {rep / 'pruning_variants.json'} ({result['seconds']:.0f} s of runs)")


def _cell(ratios) -> str:
    if len(ratios) == 1:
        return f"{ratios[0]:.3g}×"
    return f"{np.median(ratios):.3g}× [{min(ratios):.3g}–{max(ratios):.3g}]"


def _plot_lengths(path: Path, at: dict, report_at: list, sparsity: float) -> None:
    """Ratio to the dense control vs last-stage length: one thin line per seed, the median bold; one panel per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(at), figsize=(5.2 * len(at), 3.8), squeeze=False, sharey=True)
    for ax, (variant, by_seed) in zip(axes[0], at.items()):
        for seed, ratios in by_seed.items():
            ax.plot(report_at, ratios, "o-", lw=0.8, ms=3, alpha=0.6, label=f"seed {seed}")
        ax.plot(report_at, np.median(list(by_seed.values()), axis=0), "k-", lw=2.5, label="median")
        ax.axhline(1.0, color="r", ls="--", lw=1, label="dense control")
        ax.set(title=f"{variant} at {sparsity:.2%}", xlabel="epochs of the last stage",
               ylabel="test MSE / dense (same total epochs)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Iterative pruning, last stage read at several lengths ({len(next(iter(at.values())))} seeds)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
