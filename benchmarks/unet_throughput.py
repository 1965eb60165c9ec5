"""U-Net throughput on CPU: train-step samples/s and inference latency, JAX vs PyTorch.

Same architecture (``UNetConfig``; default: the reference 200×200 network,
17.3 M parameters), same weights (copied into PyTorch), same loss (masked MSE)
and optimizer (Adam, lr 1e-3), same inputs, same process, same threads.

JAX side: the training path bec_jax uses (``make_train_step``: ``jax.jit`` of
a pure function over split NNX state, buffers donated) and ``make_predict``
(eval mode). PyTorch side: ``TorchUNet`` (NCHW), ``torch.optim.Adam``,
``zero_grad(set_to_none=True)``/``backward``/``step``; inference in eval mode
under ``torch.inference_mode``. PyTorch is measured only if importable (the
optional benchmark extra: ``pip install torch``).

Each measurement: ``--warmup`` untimed calls (compilation, allocator warm-up),
then ``--repeats`` timed calls, each synchronised (``block_until_ready``);
reported: median seconds per call, its interquartile range, samples/s =
batch / median. Ratios are JAX over PyTorch from the same run.

    python benchmarks/unet_throughput.py --out benchmarks/results/unet_throughput.json
    python benchmarks/unet_throughput.py --size 64 --repeats 5   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=200, help="image side (reference 200)")
    p.add_argument("--width", type=int, default=8, help="base width (reference 8)")
    p.add_argument("--depth", type=int, default=None, help="depth (default min(7, log2 size))")
    p.add_argument("--train-batches", default="2,8,16",
                   help="train-step batch sizes (>= 2: BatchNorm cannot train on 1 value at the 1x1 bottleneck)")
    p.add_argument("--infer-batches", default="1,16", help="inference batch sizes")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    p.add_argument("--out", default="benchmarks/results/unet_throughput.json")
    args = p.parse_args(argv)
    args.train_batches = [int(b) for b in args.train_batches.split(",") if b.strip()]
    args.infer_batches = [int(b) for b in args.infer_batches.split(",") if b.strip()]
    if args.repeats < 3 or args.warmup < 1:
        p.error("--repeats must be >= 3 and --warmup >= 1")
    if min(args.train_batches + args.infer_batches) < 1:
        p.error("batch sizes must be >= 1")
    return args


def timed(fn, sync, repeats: int, warmup: int) -> dict:
    """Median/IQR seconds per call of fn() (sync(result) blocks until done)."""
    for _ in range(warmup):
        sync(fn())
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sync(fn())
        ts.append(time.perf_counter() - t0)
    q = np.percentile(ts, [25, 50, 75])
    return dict(median_s=float(q[1]), iqr_s=float(q[2] - q[0]), min_s=float(min(ts)), repeats=repeats)


def inputs(batch: int, size: int, seed: int = 0):
    """Log-density-like input, a target and a disc mask (numpy, channels-last)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r2 = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size / 3) ** 2
    x = (np.log(np.clip(1 - r2, 0, None) + 1e-9)[None, :, :, None] + 0.01 * rng.normal(size=(batch, size, size, 1)))
    y = rng.normal(scale=0.3, size=(batch, size, size, 2))
    mask = np.broadcast_to(r2 < 1, (batch, size, size)).copy()
    return x.astype(np.float32), y.astype(np.float32), mask


def bench_jax(config, args) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from bec_jax.models.unet import init_model
    from bec_jax.train.losses import masked_mse
    from bec_jax.train.trainer import init_state, make_predict, make_train_step

    model = init_model(config, 0)
    tx = optax.adam(1e-3)
    gd_train, gd_eval, state = init_state(model, tx)
    step = make_train_step(gd_train, tx, masked_mse)
    predict = make_predict(gd_eval)
    out = dict(train={}, infer={})
    holder = dict(state=state)

    def run_step(x, y, m):
        holder["state"], loss = step(holder["state"], x, y, m)
        return loss

    for b in args.train_batches:
        x, y, m = (jnp.asarray(a) for a in inputs(b, config.input_size))
        r = timed(lambda: run_step(x, y, m), jax.block_until_ready, args.repeats, args.warmup)
        out["train"][b] = dict(r, samples_per_s=b / r["median_s"])
        print(f"  jax   train batch {b:3d}: {r['median_s'] * 1e3:9.1f} ms/step  {b / r['median_s']:8.2f} samples/s",
              flush=True)
    params, stats = holder["state"]["params"], holder["state"]["batch_stats"]
    for b in args.infer_batches:
        x = jnp.asarray(inputs(b, config.input_size)[0])
        r = timed(lambda: predict(params, stats, x), jax.block_until_ready, args.repeats, args.warmup)
        out["infer"][b] = dict(r, latency_ms=r["median_s"] * 1e3, samples_per_s=b / r["median_s"])
        print(f"  jax   infer batch {b:3d}: {r['median_s'] * 1e3:9.1f} ms", flush=True)
    del nnx
    return out


def bench_torch(config, args) -> dict:
    import torch

    from bec_jax.models.torch_unet import TorchUNet, copy_weights_to_torch
    from bec_jax.models.unet import init_model

    tmodel = copy_weights_to_torch(init_model(config, 0), TorchUNet(config))
    opt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)

    def loss_fn(pred, y, m):
        m = m.to(pred.dtype)[:, None]
        return ((pred - y) ** 2 * m).sum() / (pred.shape[1] * m.sum().clamp(min=1))

    out = dict(train={}, infer={})
    tmodel.train()
    for b in args.train_batches:
        x, y, m = inputs(b, config.input_size)
        x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        y = torch.from_numpy(y.transpose(0, 3, 1, 2).copy())
        m = torch.from_numpy(m)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(tmodel(x), y, m)
            loss.backward()
            opt.step()
            return loss

        r = timed(step, lambda v: v.item(), args.repeats, args.warmup)
        out["train"][b] = dict(r, samples_per_s=b / r["median_s"])
        print(f"  torch train batch {b:3d}: {r['median_s'] * 1e3:9.1f} ms/step  {b / r['median_s']:8.2f} samples/s",
              flush=True)
    tmodel.eval()
    for b in args.infer_batches:
        x = torch.from_numpy(inputs(b, config.input_size)[0].transpose(0, 3, 1, 2).copy())

        def infer():
            with torch.inference_mode():
                return tmodel(x)

        r = timed(infer, lambda v: v.sum().item(), args.repeats, args.warmup)
        out["infer"][b] = dict(r, latency_ms=r["median_s"] * 1e3, samples_per_s=b / r["median_s"])
        print(f"  torch infer batch {b:3d}: {r['median_s'] * 1e3:9.1f} ms", flush=True)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import flax

    from bec_jax.models.unet import UNetConfig, count_params, default_depth, init_model

    depth = args.depth or default_depth(args.size)
    config = UNetConfig(base_width=args.width, depth=depth, input_size=args.size)
    n_params = count_params(init_model(config, 0))
    torch_version = None
    if not args.no_torch:
        try:
            import torch

            torch_version = torch.__version__
        except ImportError:
            print("PyTorch not installed: JAX only (pip install torch for the comparison)", flush=True)
    print(f"U-Net {args.size}² width {args.width} depth {depth} ({n_params:,} params); CPU, "
          f"{os.cpu_count()} cores; jax {jax.__version__}" + (f", torch {torch_version}" if torch_version else ""),
          flush=True)
    load_before = os.getloadavg()
    results = dict(jax=bench_jax(config, args))
    if torch_version:
        results["torch"] = bench_torch(config, args)
        results["ratio_jax_over_torch"] = dict(
            train_samples_per_s={b: results["jax"]["train"][b]["samples_per_s"] / results["torch"]["train"][b][
                "samples_per_s"] for b in args.train_batches},
            infer_speed={b: results["torch"]["infer"][b]["median_s"] / results["jax"]["infer"][b]["median_s"]
                         for b in args.infer_batches},
        )
        import torch

        torch_threads = torch.get_num_threads()
    report = dict(
        benchmark="unet_throughput", config=config.to_dict(), n_params=n_params,
        settings=dict(repeats=args.repeats, warmup=args.warmup, train_batches=args.train_batches,
                      infer_batches=args.infer_batches, optimizer="adam", lr=1e-3, loss="masked_mse"),
        machine=dict(platform=platform.platform(), processor=platform.processor(), cpu_count=os.cpu_count(),
                     python=sys.version.split()[0], backend=jax.default_backend(),
                     loadavg_1_5_15_before=load_before, loadavg_1_5_15_after=os.getloadavg()),
        versions=dict(jax=jax.__version__, flax=flax.__version__, torch=torch_version),
        torch_threads=torch_threads if torch_version else None,
        results=results,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    if torch_version:
        r = results["ratio_jax_over_torch"]
        print("JAX/PyTorch train samples/s: "
              + ", ".join(f"b{b} {v:.2f}x" for b, v in r["train_samples_per_s"].items()))
        print("JAX/PyTorch inference speed: " + ", ".join(f"b{b} {v:.2f}x" for b, v in r["infer_speed"].items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
