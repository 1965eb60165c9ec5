"""Optimizer study (paper Fig. 3): SGD, Adam, AdamW × seeds, validation loss vs epoch.

Each (optimizer, seed) run is an ordinary ``bec_jax.train.fit`` run in
``OUT/<optimizer>/seed<k>`` (resumable: rerunning the script continues where
it stopped and skips finished runs). Writes to REPORT_DIR (default OUT):

    optimizer_comparison.json   settings, dataset, per-run curves and final losses
    optimizer_comparison.md     table of final validation losses (mean ± std over seeds)
    optimizer_comparison.png    validation loss (reference convention) vs epoch, mean and min–max band
    optimizer_comparison_masked.png   the same for the masked MSE over valid pixels

Both loss conventions are recorded every epoch: "reference" = mean over all
pixels of the masked squared error (the paper's numbers: Adam 9.2e-4, AdamW
7.7e-4, SGD 1.24e-2 at epoch 50, on *their* 200² data), and "masked" = mean
over valid pixels only. The paper trained on the reference loss, so that is the
default here (it matters for SGD, whose step scales with the loss).

    python experiments/optimizer_comparison.py --data data/quick.h5 --epochs 50
    python experiments/optimizer_comparison.py --data data/quick.h5 --quick   # smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _seed_study import add_flags, check, prepare, seed_stats, train_runs

PAPER_EPOCH50 = {"adam": 9.2e-4, "adamw": 7.7e-4, "sgd": 1.24e-2}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_flags(p, out="runs/optimizer_comparison", report_dir=None, epochs=50, seeds="0,1,2")
    p.add_argument("--optimizers", default="sgd,adam,adamw")
    p.add_argument("--loss", choices=["reference", "masked_mse"], default="reference")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 3 epochs, seeds 0,1, width 4, depth 2 (overrides those flags)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds, args.width, args.depth = 3, "0,1", 4, 2
    check(p, args, "optimizers", ("sgd", "adam", "adamw"))
    return args


def _fmt(s: dict) -> str:
    return f"{s['mean']:.3e} ± {s['std']:.1e}"


def main(argv=None) -> int:
    args = parse_args(argv)
    from bec_jax.train import TrainConfig
    from bec_jax.train.plots import plot_optimizer_comparison

    study = prepare(args, f"optimizer study: {args.optimizers} x seeds {args.seeds}, {args.epochs} epochs, "
                          f"loss {args.loss}")
    data, attrs, n, depth, n_params, rep = (study.data, study.attrs, study.n, study.depth, study.n_params,
                                            study.report_dir)
    runs, t0 = [], time.perf_counter()

    def config(opt, seed):
        return TrainConfig(optimizer=opt, learning_rate=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                           seed=seed, loss=args.loss)

    for opt, seed, run_dir, res in train_runs(study, args, args.optimizers, config):
        h = res.history
        runs.append(dict(optimizer=opt, seed=seed, run_dir=str(run_dir),
                         val_ref=[r["val_mse_ref"] for r in h], val_masked=[r["val_mse"] for r in h],
                         train_loss=[r["train_loss"] for r in h], seconds=float(sum(r["seconds"] for r in h)),
                         samples_per_s_median=float(np.median([r["samples_per_s"] for r in h[1:] or h]))))
        print(f"    final val: reference {h[-1]['val_mse_ref']:.3e}, masked {h[-1]['val_mse']:.3e}", flush=True)

    summary = {}
    for opt in args.optimizers:
        rs = [r for r in runs if r["optimizer"] == opt]
        summary[opt] = dict(
            final_val_reference=seed_stats([r["val_ref"][-1] for r in rs]),
            final_val_masked=seed_stats([r["val_masked"][-1] for r in rs]),
            best_val_reference=seed_stats([min(r["val_ref"]) for r in rs]),
            best_val_masked=seed_stats([min(r["val_masked"]) for r in rs]),
            paper_epoch50_reference=PAPER_EPOCH50[opt],
        )
    info = json.loads((Path(runs[0]["run_dir"]) / "metrics.json").read_text())
    report = dict(
        settings=dict(epochs=args.epochs, seeds=args.seeds, optimizers=args.optimizers, lr=args.lr,
                      batch_size=args.batch_size, loss=args.loss, checkpoint_every=args.checkpoint_every,
                      quick=args.quick),
        model_config=study.model_config.to_dict(), n_params=n_params,
        dataset=dict(path=str(data), grid_n=n, grid_length=float(attrs["grid_length"]),
                     generate_config=json.loads(attrs["config"]), split_sizes=info["split_sizes"]),
        summary=summary, runs=runs, wall_seconds_this_invocation=time.perf_counter() - t0,
    )
    (rep / "optimizer_comparison.json").write_text(json.dumps(report, indent=2))

    curves_ref = {o: np.array([r["val_ref"] for r in runs if r["optimizer"] == o]) for o in args.optimizers}
    curves_mask = {o: np.array([r["val_masked"] for r in runs if r["optimizer"] == o]) for o in args.optimizers}
    ds = f"{data.name}, {n}², {info['split_sizes']['train']} train / {info['split_sizes']['val']} val states"
    plot_optimizer_comparison(curves_ref, rep / "optimizer_comparison.png",
                              "validation loss (reference: mean over all pixels)",
                              title=f"Validation loss vs epoch, {len(args.seeds)} seeds ({ds})",
                              reference=PAPER_EPOCH50, reference_epoch=50)
    plot_optimizer_comparison(curves_mask, rep / "optimizer_comparison_masked.png",
                              "validation masked MSE (mean over valid pixels)",
                              title=f"Validation masked MSE vs epoch, {len(args.seeds)} seeds ({ds})")

    lines = [
        f"Optimizer study: U-Net width {args.width}, depth {depth} ({n_params:,} parameters), lr {args.lr:g}, "
        f"batch {args.batch_size}, {args.epochs} epochs, loss `{args.loss}`, seeds {args.seeds}.",
        f"Data: `{data}` ({n}×{n}, L = {float(attrs['grid_length']):.3f}; split by (g, Ω) group "
        f"{info['split_sizes']['train']}/{info['split_sizes']['val']}/{info['split_sizes']['test']} states).",
        "",
        f"| optimizer | val loss, reference convention, epoch {args.epochs} | val masked MSE, epoch {args.epochs} "
        "| best val masked MSE | paper, epoch 50 (200² data, reference convention) |",
        "|---|---|---|---|---|",
    ]
    for opt in args.optimizers:
        s = summary[opt]
        lines.append(f"| {opt} | {_fmt(s['final_val_reference'])} | {_fmt(s['final_val_masked'])} "
                     f"| {_fmt(s['best_val_masked'])} | {PAPER_EPOCH50[opt]:.2e} |")
    lines += ["", "Mean ± sample standard deviation over seeds. Written by experiments/optimizer_comparison.py."]
    (rep / "optimizer_comparison.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {rep / 'optimizer_comparison.json'}, .md and .png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
