"""CPU inference latency of compressed U-Nets vs the same-run fp32 baseline.

Variants: fp32; int8 (Int8Conv: int8 × int8 → int32 convs) with per-channel
scales on all convs and "mixed" (first/last two convs fp32); structured channel
pruning (inner DoubleConv channels) keeping KEEP fractions. Each variant is a
jax.jit-compiled eval-mode forward (nnx.split / merge); after WARMUP calls,
REPEATS timed calls (block_until_ready); medians and quartiles reported.
Latency does not depend on the weight values, so the model is freshly
initialised (structured pruning ranks channels by that model's weights).

    python benchmarks/compression_latency.py                      # reference U-Net, 200², batch 1
    python benchmarks/compression_latency.py --width 4 --depth 3 --size 64 --batch 8 --repeats 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--depth", type=int, default=7)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--keep", default="0.5,0.25", help="structured keep fractions")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default="benchmarks/results/compression_latency.json")
    args = p.parse_args(argv)
    if args.repeats < 3:
        p.error(f"--repeats must be >= 3, got {args.repeats}")

    import jax

    from bec_jax.compress.quantization import QuantConfig, quantize_model
    from bec_jax.compress.structured import inner_widths, shrink_model
    from bec_jax.compress.workflow import forward_latency
    from bec_jax.models import UNetConfig, count_params, init_model

    cfg = UNetConfig(base_width=args.width, depth=args.depth, input_size=args.size)
    base = init_model(cfg, seed=0)
    base.eval()
    x = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, 1))
    variants = {"fp32": base,
                "int8_per_channel": quantize_model(base, QuantConfig.preset("per_channel"), "int8"),
                "int8_mixed": quantize_model(base, QuantConfig.preset("mixed"), "int8")}
    for k in [float(v) for v in args.keep.split(",") if v.strip()]:
        variants[f"structured_keep{k:g}"] = shrink_model(base, k)
    ref = None
    rows = {}
    for name, model in variants.items():
        lat = forward_latency(model, x, warmup=args.warmup, repeats=args.repeats)
        y = lat.pop("output")
        ref = y if ref is None else ref
        rows[name] = dict(lat, max_abs_diff_to_fp32=float(np.max(np.abs(y - ref))),
                          params=count_params(model) if not name.startswith("int8") else count_params(base))
        if name.startswith("structured"):
            rows[name]["inner_widths"] = inner_widths(model)
        print(f"{name:24s} median {rows[name]['median_ms']:9.2f} ms  (IQR {rows[name]['q25_ms']:.2f}–"
              f"{rows[name]['q75_ms']:.2f})", flush=True)
    for r in rows.values():
        r["speedup_vs_fp32"] = rows["fp32"]["median_ms"] / r["median_ms"]
    result = dict(settings=vars(args), model_config=cfg.to_dict(), backend=jax.default_backend(),
                  cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                  load_average=os.getloadavg(), jax_version=jax.__version__, variants=rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
