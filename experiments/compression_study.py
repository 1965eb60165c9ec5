"""Compression study (paper §IV.B–C, Figs. 4–7): pruning sweep, PTQ, QAT, pruning + int8.

Trains (or resumes) a dense baseline with ``bec_jax.train.fit``, then:

- pruning sweep over SPARSITIES for three methods — prune only, prune +
  fine-tune, iterative prune + fine-tune (schedule 80, 90, 97, 99, 99.5, 99.9 %)
  — with test MSE relative to a *dense control trained for the same total
  number of epochs* (the baseline continued with the fine-tune lr for the same
  extra epochs);
- weight histograms dense / pruned / fine-tuned (Fig. 4), error vs sparsity
  (Fig. 5), per-layer sparsity table;
- PTQ with each scheme: orbax int8 save, reload, evaluate the reloaded model;
  size, MSE change, weight errors; residual-percentile heat maps (Fig. 6) and
  predictions (Fig. 7);
- QAT (fake-quant, straight-through gradient) per scheme;
- pruning + int8 stored sparse: size ratio and MSE vs dense.

Writes REPORT_DIR/compression_study.{json,md} and PNGs.

    python experiments/compression_study.py --quick       # small U-Net, data/quick.h5, minutes on a CPU → REPORT_DIR/quick
    python experiments/compression_study.py --data data/quick.h5 --width 8 --epochs 20 --keep last   # ~9 min
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SPARSITIES = (0.4, 0.6, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/quick.h5")
    p.add_argument("--out", default="runs/compression_study", help="baseline training run folder")
    p.add_argument("--report-dir", default="experiments/results/compression_study")
    p.add_argument("--epochs", type=int, default=50, help="baseline epochs")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ft-epochs", type=int, default=None, help="fine-tune epochs per stage (default epochs/5)")
    p.add_argument("--ft-lr", type=float, default=None, help="fine-tune lr (default lr/10)")
    p.add_argument("--keep", choices=["best", "last"], default="best",
                   help="fine-tuning epoch kept per stage (and by the dense control): lowest validation MSE, or last")
    p.add_argument("--sparsities", default=",".join(str(s) for s in SPARSITIES))
    p.add_argument("--no-bn-scale", action="store_true")
    p.add_argument("--distribution", choices=["global", "erk"], default="global",
                   help="how pruning spreads over layers (bec_jax.compress.pruning)")
    p.add_argument("--reclaim-dead-scales", action="store_true",
                   help="prune the BatchNorm scales of channels whose kernel is pruned (default: rank them by "
                        "magnitude, as the reference)")
    p.add_argument("--quick", action="store_true", help="width 4, depth 3, 10 epochs (overrides those flags); report in REPORT_DIR/quick")
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.depth, args.epochs = 4, 3, 10
        args.out = args.out + "_quick"
        args.report_dir = os.path.join(args.report_dir, "quick")   # a sub-result of the study folder
    args.ft_epochs = args.ft_epochs or max(1, args.epochs // 5)
    args.ft_lr = args.ft_lr or args.lr / 10
    args.sparsities = [float(s) for s in args.sparsities.split(",") if s.strip()]
    for s in args.sparsities:
        if not 0 <= s < 1:
            p.error(f"sparsities must be in [0, 1), got {s}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from flax import nnx

    from bec_jax.compress import plots
    from bec_jax.compress.pruning import DEFAULT_SCHEDULE, PruneConfig, named_leaves, sparsity_report
    from bec_jax.compress.quantization import (SCHEMES, QuantConfig, load_quantized, quantize_model,
                                               save_quantized, weight_error_stats)
    from bec_jax.compress.workflow import FineTuner, dense_control, load_setup, prune_once, test_mse
    from bec_jax.train import TrainConfig
    from bec_jax.train.trainer import fit, model_config_for

    t_start = time.perf_counter()
    rep = Path(args.report_dir)
    rep.mkdir(parents=True, exist_ok=True)
    mcfg = model_config_for(args.data, args.width, args.depth)
    depth = mcfg.depth
    tcfg = TrainConfig(learning_rate=args.lr, epochs=args.epochs)
    fit(args.data, args.out, mcfg, tcfg, checkpoint_every=max(1, args.epochs // 5), progress=False, log=print)
    setup = load_setup(args.out, args.data, which="latest")
    base = setup.model
    bn = not args.no_bn_scale

    def prune_cfg(s):
        return PruneConfig(s, bn, args.distribution, reclaim_dead_scales=args.reclaim_dead_scales)

    ft = args.ft_epochs
    print(f"baseline: {args.epochs} epochs, width {args.width}, depth {depth}; fine-tune {ft} epochs/stage, "
          f"lr {args.ft_lr:g}", flush=True)

    tuner = FineTuner(base, setup.train, learning_rate=args.ft_lr, config=setup.train_config)
    targets = sorted(args.sparsities)
    max_stages = max(len([s for s in DEFAULT_SCHEDULE if s < t]) + 1 for t in targets)
    dense_curve = dense_control(setup, tuner, ft * max_stages, args.keep)
    select = setup.val if args.keep == "best" else None
    print("dense control MSE by extra epochs:", [f"{v:.3e}" for v in dense_curve], flush=True)

    rows, models = [], {}
    hist = {}
    for s in targets:
        pruned, masks = prune_once(base, prune_cfg(s))
        m_prune = test_mse(pruned, setup.test)["mse"]
        tuned = tuner.run(pruned, masks, ft, select=select).model
        m_ft = test_mse(tuned, setup.test)["mse"]
        rows.append(dict(sparsity=s, method="prune", extra_epochs=0, mse=m_prune, ratio=m_prune / dense_curve[0]))
        rows.append(dict(sparsity=s, method="finetune", extra_epochs=ft, mse=m_ft, ratio=m_ft / dense_curve[ft]))
        if s == 0.8:
            hist = dict(dense=base, pruned=pruned, finetuned=tuned)
        print(f"sparsity {s:.3f}: prune {m_prune:.3e}, prune+ft {m_ft:.3e}", flush=True)
    # iterative: one chain through the schedule; targets off the schedule branch from their prefix
    model, masks = base, None
    stages = sorted(set(DEFAULT_SCHEDULE) | set(targets))
    for s in stages:
        on_schedule = s in DEFAULT_SCHEDULE
        start_model, start_masks = model, masks
        pm, pmask = prune_once(start_model, prune_cfg(s), start_masks)
        tuned = tuner.run(pm, pmask, ft, select=select).model
        depth_k = len([d for d in DEFAULT_SCHEDULE if d < s]) + 1
        if s in targets:
            m_it = test_mse(tuned, setup.test)["mse"]
            rows.append(dict(sparsity=s, method="iterative", extra_epochs=ft * depth_k, mse=m_it,
                             ratio=m_it / dense_curve[ft * depth_k]))
            models[s] = tuned
            print(f"sparsity {s:.3f}: iterative ({depth_k} stages) {m_it:.3e}", flush=True)
        if on_schedule:
            model, masks = tuned, pmask
    layer_table = {s: sparsity_report(nnx.state(models[s], nnx.Param), bn) for s in models if s in (0.9, 0.99, 0.999)}

    # ---------------- quantization (PTQ of the dense baseline, reload, evaluate)
    qdir = Path(args.out) / "quantized"
    fp = save_quantized(qdir / "fp32", base, None, overwrite=True)
    fp_reload, _ = load_quantized(qdir / "fp32", mcfg)
    fp_mse = test_mse(fp_reload, setup.test)["mse"]
    qrows, residuals, preds = [], {}, {}
    batch = next(iter(setup.test.epoch(0)))
    x = batch.x[:1]
    preds["fp32"] = np.asarray(base(x))[0]
    # bec_jax's schemes: each has an int8 path and QAT (the reference's asymmetric scheme has neither)
    for scheme in [s for s in SCHEMES if QuantConfig.preset(s).integer_path]:
        qc = QuantConfig.preset(scheme)
        sz = save_quantized(qdir / scheme, base, qc, overwrite=True)
        reloaded, _ = load_quantized(qdir / scheme, mcfg)
        mse = test_mse(reloaded, setup.test)["mse"]
        int8_model, _ = load_quantized(qdir / scheme, mcfg, mode="int8")
        mse_int8 = test_mse(int8_model, setup.test)["mse"]
        werr = weight_error_stats(base, qc)
        residuals[scheme] = werr
        preds[scheme] = np.asarray(reloaded(x))[0]
        fq = quantize_model(base, qc, "fake")
        qat_model = FineTuner(fq, setup.train, learning_rate=args.ft_lr, config=setup.train_config).run(
            fq, None, ft, select=select).model
        qat_mse = test_mse(qat_model, setup.test)["mse"]
        qrows.append(dict(scheme=scheme, bytes_on_disk=sz["bytes_on_disk"], payload_bytes=sz["payload_bytes"],
                          mse=mse, mse_change=mse / fp_mse - 1, mse_int8_path=mse_int8,
                          max_abs_weight_err=werr["max_abs"], mean_abs_weight_err=werr["mean_abs"],
                          qat_mse=qat_mse, qat_change_vs_fp32=qat_mse / fp_mse - 1,
                          qat_change_vs_dense_same_epochs=qat_mse / dense_curve[ft] - 1))
        print(f"{scheme}: PTQ {mse:.3e} ({mse / fp_mse - 1:+.1%}), int8 path {mse_int8:.3e}, "
              f"QAT {qat_mse:.3e}", flush=True)

    # ---------------- pruning + int8, stored sparse
    combo = []
    for s in [s for s in (0.95, 0.97, 0.99, 0.995, 0.999) if s in models]:
        for scheme in ("per_channel", "mixed"):
            d = qdir / f"pruned{s}_{scheme}"
            sz = save_quantized(d, models[s], QuantConfig.preset(scheme), sparse=True, overwrite=True)
            rl, _ = load_quantized(d, mcfg)
            mse = test_mse(rl, setup.test)["mse"]
            k = len([t for t in DEFAULT_SCHEDULE if t < s]) + 1
            combo.append(dict(sparsity=s, scheme=scheme, bytes_on_disk=sz["bytes_on_disk"],
                              payload_bytes=sz["payload_bytes"],
                              disk_ratio=fp["bytes_on_disk"] / sz["bytes_on_disk"],
                              payload_ratio=fp["payload_bytes"] / sz["payload_bytes"], mse=mse,
                              ratio_to_dense_same_epochs=mse / dense_curve[ft * k],
                              ratio_to_baseline=mse / dense_curve[0]))

    figs = [plots.plot_error_vs_sparsity(rows, rep / "pruning_error_vs_sparsity.png"),
            plots.plot_weight_histograms({k: named_leaves(nnx.state(v, nnx.Param)) for k, v in hist.items()},
                                         rep / "pruning_weight_histograms.png", sparsity=0.8) if hist else None,
            plots.plot_residual_percentiles(residuals, rep / "quantization_residuals.png"),
            plots.plot_quantized_predictions(np.asarray(x)[0], np.asarray(batch.y[0]),
                                             np.asarray(batch.mask[0]), preds,
                                             rep / "quantization_predictions.png")]
    result = dict(settings=vars(args), model_config=mcfg.to_dict(), depth=depth,
                  n_params=int(sum(v.size for v in named_leaves(nnx.state(base, nnx.Param)).values())),
                  dense_control_mse=dense_curve, pruning=rows, layer_sparsity={str(k): v for k, v in layer_table.items()},
                  fp32=dict(bytes_on_disk=fp["bytes_on_disk"], payload_bytes=fp["payload_bytes"], mse=fp_mse),
                  quantization=qrows, pruned_int8=combo, figures=[str(f) for f in figs if f],
                  seconds=time.perf_counter() - t_start, load_average_end=os.getloadavg())
    (rep / "compression_study.json").write_text(json.dumps(result, indent=2))
    (rep / "compression_study.md").write_text(markdown(result))
    print(f"wrote {rep / 'compression_study.json'} and .md in {result['seconds']:.0f} s")
    return 0


def markdown(r: dict) -> str:
    L = [f"# Compression study ({'quick' if r['settings']['quick'] else 'full'})", "",
         f"U-Net width {r['model_config']['base_width']}, depth {r['depth']}, {r['n_params']} parameters; "
         f"baseline {r['settings']['epochs']} epochs, fine-tune {r['settings']['ft_epochs']} epochs/stage at lr "
         f"{r['settings']['ft_lr']:g}, keeping the {r['settings'].get('keep', 'last')} epoch of each stage "
         "(best: lowest validation MSE). Ratios are test MSE / dense control trained for the same total epochs under the same "
         "rule.", "",
         "## Pruning: test MSE ratio to dense", "", "| sparsity | prune | prune + fine-tune | iterative |",
         "|---|---|---|---|"]
    by = {}
    for row in r["pruning"]:
        by.setdefault(row["sparsity"], {})[row["method"]] = row
    for s, d in sorted(by.items()):
        L.append(f"| {s:.3f} | " + " | ".join(f"{d[m]['ratio']:.3g} ({d[m]['mse']:.2e})" if m in d else "–"
                                               for m in ("prune", "finetune", "iterative")) + " |")
    for s, t in r["layer_sparsity"].items():
        L += ["", f"## Per-layer sparsity, iterative {float(s):.3f}", "", "| leaf | size | sparsity |", "|---|---|---|"]
        L += [f"| {x['name']} | {x['size']} | {x['sparsity']:.4f} |" for x in t["layers"]]
        L.append(f"| **total** | {t['total']['size']} | {t['total']['sparsity']:.4f} |")
    L += ["", "## Quantization (dense baseline; reloaded from orbax and evaluated)", "",
          f"fp32 file: {r['fp32']['bytes_on_disk']} B on disk, {r['fp32']['payload_bytes']} B of arrays; "
          f"test MSE {r['fp32']['mse']:.3e}.", "",
          "| scheme | disk B | array B | PTQ MSE change | int8-path MSE | max/mean abs w err | QAT MSE change |",
          "|---|---|---|---|---|---|---|"]
    for q in r["quantization"]:
        L.append(f"| {q['scheme']} | {q['bytes_on_disk']} | {q['payload_bytes']} | {q['mse_change']:+.1%} | "
                 f"{q['mse_int8_path']:.3e} | {q['max_abs_weight_err']:.2e} / {q['mean_abs_weight_err']:.2e} | "
                 f"{q['qat_change_vs_fp32']:+.1%} |")
    L += ["", "## Pruning + int8, stored sparse", "",
          "| sparsity | scheme | disk B (ratio) | array B (ratio) | MSE / dense same epochs |", "|---|---|---|---|---|"]
    for c in r["pruned_int8"]:
        L.append(f"| {c['sparsity']} | {c['scheme']} | {c['bytes_on_disk']} ({c['disk_ratio']:.1f}×) | "
                 f"{c['payload_bytes']} ({c['payload_ratio']:.1f}×) | {c['ratio_to_dense_same_epochs']:.3g} |")
    L += ["", "## Targets", "", "| floor | measured | met |", "|---|---|---|"]
    L += [f"| {name} | {value} | {'yes' if ok else 'no'} |" for name, value, ok in floors(r)]
    return "\n".join(L) + "\n"


def floors(r: dict) -> list[tuple[str, str, bool]]:
    """(floor, measured value, met) for the compression targets (ratios to the same-epochs dense control)."""
    out = []
    it = {row["sparsity"]: row for row in r["pruning"] if row["method"] == "iterative"}
    for s, bound in ((0.995, 1.0), (0.999, 1.5)):
        if s in it:
            out.append((f"iterative {s:.1%}: MSE <= {bound}x dense", f"{it[s]['ratio']:.3g}x",
                        it[s]["ratio"] <= bound))
    q = {row["scheme"]: row for row in r["quantization"]}
    for scheme, bound in (("per_tensor", 0.05), ("mixed", 0.01)):
        if scheme in q:
            v, w = q[scheme]["qat_change_vs_fp32"], q[scheme]["qat_change_vs_dense_same_epochs"]
            out.append((f"QAT {scheme}: MSE within +{bound:.0%} of fp32",
                        f"{v:+.1%} vs fp32 baseline, {w:+.1%} vs dense same epochs", max(v, w) <= bound))
    ok = [c for c in r["pruned_int8"] if c["disk_ratio"] >= 50 and c["ratio_to_dense_same_epochs"] <= 1.1]
    if r["pruned_int8"]:
        best = (max(ok, key=lambda c: c["disk_ratio"]) if ok
                else min(r["pruned_int8"], key=lambda c: c["ratio_to_dense_same_epochs"]))
        out.append(("pruned + int8 sparse: >= 50x smaller on disk at MSE <= 1.1x dense",
                    f"{best['sparsity']:.1%} {best['scheme']}: {best['disk_ratio']:.1f}x, "
                    f"{best['ratio_to_dense_same_epochs']:.3g}x MSE", bool(ok)))
    return out


if __name__ == "__main__":
    sys.exit(main())
