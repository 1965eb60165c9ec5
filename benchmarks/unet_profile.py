"""Where the time of one U-Net train step goes on XLA:CPU: per-kind totals of XLA thunks.

Runs the bec_jax train step (reference U-Net by default, batch 8) a few times
under ``jax.profiler`` (perfetto trace), sums the durations of the executed XLA
operations by kind (the op name without its numeric suffix: ``ynn_fusion`` =
convolutions run by the YNNPACK library, ``transpose_copy_fusion`` = layout
changes, mostly around the backward convolutions, ``wrapped_scatter`` = the
gradient of the bilinear upsampling's gather, …) and writes a JSON and a
table (`report.py`). Also reports wall time and CPU utilisation (process CPU time /
wall time) of the step.

    python benchmarks/unet_profile.py --out benchmarks/results/unet_profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after 2 warm-up steps)")
    p.add_argument("--out", default="benchmarks/results/unet_profile.json")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 2:
        p.error("--steps must be >= 1 and --batch >= 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    import optax

    from bec_jax.models.unet import UNetConfig, count_params, default_depth, init_model
    from bec_jax.train.core import Batch, TrainConfig, init_state, make_loss, make_train_step

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import op_kind_totals

    depth = args.depth or default_depth(args.size)
    config = UNetConfig(base_width=args.width, depth=depth, input_size=args.size)
    model = init_model(config, 0)
    tx = optax.adam(1e-3)
    gd, _, state = init_state(model, tx)
    step = make_train_step(gd, tx, make_loss(TrainConfig(), None))
    rng = np.random.default_rng(0)
    n, B = args.size, args.batch
    x = jnp.asarray(rng.normal(size=(B, n, n, 1)).astype(np.float32))
    y = jnp.asarray(rng.normal(scale=0.3, size=(B, n, n, 2)).astype(np.float32))
    m = jnp.ones((B, n, n), bool)
    for _ in range(2):
        state, loss = step(state, Batch(x, y, m))
        jax.block_until_ready(loss)

    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        state, loss = step(state, Batch(x, y, m))
        jax.block_until_ready(loss)
    wall, cpu = (time.perf_counter() - wall) / args.steps, (time.process_time() - cpu) / args.steps

    def call():
        nonlocal state
        state, loss = step(state, Batch(x, y, m))
        jax.block_until_ready(loss)

    kinds, counts = op_kind_totals(call, args.steps)
    total = sum(kinds.values())
    rows = [dict(kind=k, ms_per_step=v, share=v / total, ops_per_step=counts[k])
            for k, v in kinds.most_common()]
    report = dict(benchmark="unet_profile", config=config.to_dict(), n_params=count_params(model), batch=B,
                  steps=args.steps, wall_ms_per_step=wall * 1e3, cpu_ms_per_step=cpu * 1e3,
                  cpu_utilisation=cpu / wall, cpu_count=os.cpu_count(), loadavg_1_5_15=os.getloadavg(),
                  jax_version=jax.__version__, ops_total_ms_per_step=total,
                  ops_per_step=sum(counts.values()), kinds=rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    from report import unet_profile, write_tables

    write_tables(out, unet_profile)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
