"""CPU inference latency of compressed U-Nets vs fp32, and the accuracy cost of structured pruning.

Latency (at the reference size by default: width 8, depth 7, 200²; every batch
size of ``--batches``): fp32; int8 (``Int8Conv``: int8 × int8 → int32 convs)
with per-channel scales on all convs and "mixed" (first/last two convs fp32);
structured channel pruning keeping each ``--keep`` fraction of the inner
DoubleConv channels (``shrink_model``: "structured_keep…") and of the inner and
output channels (``shrink_model(outer=True)``: "structured_all_keep…"). Every
variant is a jax.jit-compiled eval-mode
forward; after ``--warmup`` calls each, ``--repeats`` rounds call the variants
in turn (``latency_table``), so all see the same machine load; medians and
quartiles in ms. Latency does not depend on the weight values, so these models
are freshly initialised.

Accuracy (with ``--run``, a trained run such as the compression study's
baseline): test MSE of the run's model structurally pruned to each keep
fraction, before and after ``--ft-epochs`` of fine-tuning at ``--ft-lr``,
relative to the dense model fine-tuned for the same epochs (same lr), each
keeping its epoch of lowest validation MSE (``--keep best``, the rule of the
pruning study) or its last, plus the latency of those models at the run's size
and batch size.

    python benchmarks/compression_latency.py --run runs/compression_study_e50 --data data/quick.h5 \
        --ft-epochs 30 --ft-lr 1e-3   # the committed result (the run: pruning_variants, 50 epochs)
    python benchmarks/compression_latency.py --width 4 --depth 3 --size 64 --batches 8 --repeats 5   # smoke
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--depth", type=int, default=7)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--batches", default="1,8", help="batch sizes of the latency table")
    p.add_argument("--keep", default="0.75,0.5,0.25", help="structured keep fractions")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--run", default=None, help="trained run folder for the accuracy of structured pruning")
    p.add_argument("--data", default=None, help="dataset of --run (default: the one it was trained on)")
    p.add_argument("--ft-epochs", type=int, default=4, help="fine-tuning epochs of each structured model")
    p.add_argument("--ft-lr", type=float, default=None, help="fine-tuning lr (default: the run's lr / 10)")
    p.add_argument("--keep-epoch", choices=["best", "last"], default="best",
                   help="fine-tuning epoch kept (structured and dense alike): lowest validation MSE, or last")
    p.add_argument("--out", default="benchmarks/results/compression_latency.json")
    args = p.parse_args(argv)
    if args.repeats < 3 or args.warmup < 0:
        p.error(f"--repeats must be >= 3 and --warmup >= 0, got {args.repeats}, {args.warmup}")
    args.batches = [int(b) for b in _floats(args.batches)]
    args.keep = _floats(args.keep)
    if not args.batches or min(args.batches) < 1:
        p.error(f"--batches must be positive integers, got {args.batches}")
    if any(not 0 < k <= 1 for k in args.keep):
        p.error(f"--keep fractions must be in (0, 1], got {args.keep}")
    if args.ft_epochs < 1:
        p.error(f"--ft-epochs must be >= 1, got {args.ft_epochs}")
    return args


def structured_variants(base, keep) -> dict:
    """{name: shrunken copy of base} for each keep fraction: inner channels only, and inner + outer."""
    from bec_jax.compress.structured import shrink_model

    out = {}
    for k in keep:
        out[f"structured_keep{k:g}"] = shrink_model(base, k)
        out[f"structured_all_keep{k:g}"] = shrink_model(base, k, outer=True)
    return out


def _widths(model) -> dict:
    from bec_jax.compress.structured import inner_widths, outer_widths

    return dict(inner_widths=inner_widths(model), outer_widths=outer_widths(model))


def _rows(lat: dict, params: dict, widths: dict) -> dict:
    """Latency rows with speed-up and max |output − fp32 output| vs the "fp32" entry."""
    ref = lat["fp32"]
    out = {}
    for name, r in lat.items():
        r = dict(r)
        y = r.pop("output")
        out[name] = dict(r, speedup_vs_fp32=ref["median_ms"] / r["median_ms"],
                         max_abs_diff_to_fp32=float(np.max(np.abs(y - ref["output"]))), params=params[name],
                         **widths.get(name, {}))
    return out


def latency_section(args) -> dict:
    import jax

    from bec_jax.compress.quantization import QuantConfig, quantize_model
    from bec_jax.compress.workflow import latency_table
    from bec_jax.models import UNetConfig, count_params, init_model

    cfg = UNetConfig(base_width=args.width, depth=args.depth, input_size=args.size)
    base = init_model(cfg, seed=0)
    base.eval()
    variants = {"fp32": base,
                "int8_per_channel": quantize_model(base, QuantConfig.preset("per_channel"), "int8"),
                "int8_mixed": quantize_model(base, QuantConfig.preset("mixed"), "int8")}
    variants.update(structured_variants(base, args.keep))
    params = {n: count_params(base if n.startswith("int8") else m) for n, m in variants.items()}
    widths = {n: _widths(m) for n, m in variants.items() if n.startswith("structured")}
    out = {}
    for b in args.batches:
        x = jax.random.normal(jax.random.key(0), (b, args.size, args.size, 1))
        lat = latency_table(variants, x, warmup=args.warmup, repeats=args.repeats)
        out[str(b)] = rows = _rows(lat, params, widths)
        for name, r in rows.items():
            print(f"batch {b} {name:24s} median {r['median_ms']:9.2f} ms (IQR {r['q25_ms']:.2f}–{r['q75_ms']:.2f}) "
                  f"{r['speedup_vs_fp32']:.2f}x", flush=True)
    return dict(model_config=cfg.to_dict(), batches=out)


def accuracy_section(args) -> dict:
    from bec_jax.compress.workflow import FineTuner, latency_table, load_setup, test_mse
    from bec_jax.models import count_params

    setup = load_setup(args.run, args.data, which="latest")
    lr = args.ft_lr or setup.train_config.learning_rate / 10
    base = setup.model

    select = setup.val if args.keep_epoch == "best" else None

    def tune(model):
        r = FineTuner(model, setup.train, learning_rate=lr, config=setup.train_config).run(model, None, args.ft_epochs, select=select)
        return r.model, r.epoch

    dense_ft, epoch = tune(base)
    rows = dict(dense=dict(params=count_params(base), test_mse_pruned=test_mse(base, setup.test)["mse"],
                           test_mse_finetuned=test_mse(dense_ft, setup.test)["mse"], kept_epoch=epoch))
    models = {"dense": dense_ft}
    for name, small in structured_variants(base, args.keep).items():
        models[name], epoch = tune(small)
        rows[name] = dict(params=count_params(small), **_widths(small), kept_epoch=epoch,
                          test_mse_pruned=test_mse(small, setup.test)["mse"],
                          test_mse_finetuned=test_mse(models[name], setup.test)["mse"])
        print(f"{name}: MSE pruned {rows[name]['test_mse_pruned']:.3e}, fine-tuned "
              f"{rows[name]['test_mse_finetuned']:.3e} (dense same epochs {rows['dense']['test_mse_finetuned']:.3e})",
              flush=True)
    x = next(iter(setup.test.epoch(0))).x
    lat = latency_table(models, x, warmup=args.warmup, repeats=args.repeats)
    for name, r in rows.items():
        r.update(ratio_to_dense_same_epochs=r["test_mse_finetuned"] / rows["dense"]["test_mse_finetuned"],
                 median_ms=lat[name]["median_ms"], q25_ms=lat[name]["q25_ms"], q75_ms=lat[name]["q75_ms"],
                 speedup_vs_dense=lat["dense"]["median_ms"] / lat[name]["median_ms"])
    return dict(run=str(args.run), data=setup.info["data"], model_config=setup.model_config.to_dict(),
                ft_epochs=args.ft_epochs, ft_lr=lr, keep_epoch=args.keep_epoch, latency_batch=int(x.shape[0]),
                rows=rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    from common import write_result
    from report import compression_latency, write_tables

    load0 = os.getloadavg()
    result = dict(settings=vars(args), load_average_start=load0, latency=latency_section(args))
    if args.run:
        result["structured_accuracy"] = accuracy_section(args)
    result["load_average_end"] = os.getloadavg()
    write_result(args.out, result)
    write_tables(args.out, compression_latency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
