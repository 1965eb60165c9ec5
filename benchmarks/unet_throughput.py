"""U-Net throughput on CPU: train-step samples/s and inference latency, JAX vs PyTorch.

Same architecture (``UNetConfig``; default: the reference 200×200 network,
17.3 M parameters), same weights (copied into PyTorch), same loss (masked MSE)
and optimizer (Adam, lr 1e-3), same inputs, same process, same threads.

JAX side: the training path bec_jax uses (``make_train_step``: ``jax.jit`` of
a pure function over split NNX state, buffers donated) and ``make_predict``
(eval mode). PyTorch side: ``TorchUNet`` (NCHW), ``torch.optim.Adam``,
``zero_grad(set_to_none=True)``/``backward``/``step``; inference in eval mode
under ``torch.inference_mode``; "torch_tuned" the same with channels_last tensors and
the fused Adam step. Ratios are against the faster PyTorch setting at each batch. PyTorch is
measured only if importable (the optional benchmark extra: ``pip install torch``).

Each measurement: ``--warmup`` untimed calls (compilation, allocator warm-up),
then ``--repeats`` timed calls, each synchronised (``block_until_ready``);
reported: median seconds per call, its interquartile range, samples/s =
batch / median, from rounds in shuffled order. Ratios are JAX over PyTorch from the same run.

    python benchmarks/unet_throughput.py --ablation --out benchmarks/results/unet_throughput.json
    python benchmarks/unet_throughput.py --size 64 --repeats 5   # quicker

Writes the JSON and, beside it, the markdown table (same name, .md).
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

from bec_jax.bench.measure import interleaved_times


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
    p.add_argument("--ablation", action="store_true",
                   help="also time JAX with XLA's convolution everywhere (GEMM path off)")
    p.add_argument("--out", default="benchmarks/results/unet_throughput.json")
    args = p.parse_args(argv)
    args.train_batches = [int(b) for b in args.train_batches.split(",") if b.strip()]
    args.infer_batches = [int(b) for b in args.infer_batches.split(",") if b.strip()]
    if args.repeats < 3 or args.warmup < 1:
        p.error("--repeats must be >= 3 and --warmup >= 1")
    if min(args.train_batches + args.infer_batches) < 1:
        p.error("batch sizes must be >= 1")
    return args


def _summary(ts) -> dict:
    q = np.percentile(ts, [25, 50, 75])
    return dict(median_s=float(q[1]), iqr_s=float(q[2] - q[0]), min_s=float(min(ts)), repeats=len(ts))


def timed(calls: dict, repeats: int, warmup: int) -> dict:
    """Median/IQR seconds per call for each of ``calls`` = {name: (fn, sync)}; sync(result) blocks until the
    work is done. After ``warmup`` calls each, the calls are interleaved so that all see the same machine load
    on a shared CPU, in an order shuffled every round (``interleaved_times``)."""
    for fn, sync in calls.values():
        for _ in range(warmup):
            sync(fn())
    fns = {name: (lambda fn, sync: lambda: sync(fn()))(fn, sync) for name, (fn, sync) in calls.items()}
    return {name: _summary(list(v)) for name, v in interleaved_times(fns, repeats, warmup=False).items()}


def inputs(batch: int, size: int, seed: int = 0):
    """Log-density-like input, a target and a disc mask (numpy, channels-last)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r2 = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size / 3) ** 2
    x = (np.log(np.clip(1 - r2, 0, None) + 1e-9)[None, :, :, None] + 0.01 * rng.normal(size=(batch, size, size, 1)))
    y = rng.normal(scale=0.3, size=(batch, size, size, 2))
    mask = np.broadcast_to(r2 < 1, (batch, size, size)).copy()
    return x.astype(np.float32), y.astype(np.float32), mask


def jax_calls(config, gemm_max_pixels: int | None = None):
    """{"train": b -> (fn, sync), "infer": b -> (fn, sync)} for the bec_jax U-Net.

    gemm_max_pixels: override ``bec_jax.models.unet.GEMM_MAX_PIXELS`` while
    tracing (0 = always XLA's convolution), for the ablation.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from bec_jax.models import unet
    from bec_jax.train.core import Batch, TrainConfig, init_state, make_loss, make_predict, make_train_step

    model = unet.init_model(config, 0)
    tx = optax.adam(1e-3)
    gd_train, gd_eval, state = init_state(model, tx)
    step = make_train_step(gd_train, tx, make_loss(TrainConfig(), None))
    predict = make_predict(gd_eval)
    holder = dict(state=state)

    def traced(fn):  # compile now, under the requested GEMM threshold
        default = unet.GEMM_MAX_PIXELS
        unet.GEMM_MAX_PIXELS = default if gemm_max_pixels is None else gemm_max_pixels
        try:
            jax.block_until_ready(fn())
        finally:
            unet.GEMM_MAX_PIXELS = default
        return fn

    def train(b):
        x, y, m = (jnp.asarray(a) for a in inputs(b, config.input_size))

        def run():
            holder["state"], loss = step(holder["state"], Batch(x, y, m))
            return loss

        return traced(run), jax.block_until_ready

    def infer(b):
        x = jnp.asarray(inputs(b, config.input_size)[0])
        run = traced(lambda: predict(holder["state"].params, holder["state"].batch_stats, x))
        return run, jax.block_until_ready

    return dict(train=train, infer=infer)


def torch_calls(config, tuned: bool = False):
    """The same for the PyTorch U-Net (weights copied from the JAX model).

    tuned: PyTorch's CPU settings for convolutions instead of its defaults: channels_last tensors (oneDNN's
    native layout) and the fused Adam step.
    """
    import torch

    from bec_jax.models.torch_unet import TorchUNet, copy_weights_to_torch
    from bec_jax.models.unet import init_model

    tmodel = copy_weights_to_torch(init_model(config, 0), TorchUNet(config))
    layout = torch.channels_last if tuned else torch.contiguous_format
    tmodel = tmodel.to(memory_format=layout)
    opt = torch.optim.Adam(tmodel.parameters(), lr=1e-3, **(dict(fused=True) if tuned else {}))

    def loss_fn(pred, y, m):
        m = m.to(pred.dtype)[:, None]
        return ((pred - y) ** 2 * m).sum() / (pred.shape[1] * m.sum().clamp(min=1))

    def train(b):
        x, y, m = inputs(b, config.input_size)
        x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=layout)
        y = torch.from_numpy(y.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=layout)
        m = torch.from_numpy(m)

        def run():
            tmodel.train()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(tmodel(x), y, m)
            loss.backward()
            opt.step()
            return loss

        return run, lambda v: v.item()

    def infer(b):
        x = torch.from_numpy(inputs(b, config.input_size)[0].transpose(0, 3, 1, 2).copy()).contiguous(
            memory_format=layout)

        def run():
            tmodel.eval()
            with torch.inference_mode():
                return tmodel(x)

        return run, lambda v: v.sum().item()

    return dict(train=train, infer=infer)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import flax

    from bec_jax.models.unet import GEMM_MAX_PIXELS, UNetConfig, count_params, default_depth, init_model

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
    frameworks = dict(jax=jax_calls(config))
    if args.ablation:
        frameworks["jax_no_gemm"] = jax_calls(config, gemm_max_pixels=0)
    if torch_version:
        frameworks["torch"] = torch_calls(config)
        frameworks["torch_tuned"] = torch_calls(config, tuned=True)
    results = {name: dict(train={}, infer={}) for name in frameworks}
    for kind, batches in (("train", args.train_batches), ("infer", args.infer_batches)):
        for b in batches:
            r = timed({name: fw[kind](b) for name, fw in frameworks.items()}, args.repeats, args.warmup)
            for name, v in r.items():
                v["samples_per_s"] = b / v["median_s"]
                if kind == "infer":
                    v["latency_ms"] = v["median_s"] * 1e3
                results[name][kind][b] = v
            print(f"  {kind} batch {b:3d}: " + "  ".join(
                f"{name} {v['median_s'] * 1e3:8.1f} ms ({v['samples_per_s']:6.2f}/s)" for name, v in r.items()),
                flush=True)
    torch_threads = None
    if torch_version:
        import torch

        torch_threads = torch.get_num_threads()

        def best(kind, b):  # the faster PyTorch setting at this batch: the baseline
            return min(results[n][kind][b]["median_s"] for n in ("torch", "torch_tuned"))

        results["ratio_jax_over_torch"] = dict(
            train_samples_per_s={b: best("train", b) / results["jax"]["train"][b]["median_s"]
                                 for b in args.train_batches},
            infer_speed={b: best("infer", b) / results["jax"]["infer"][b]["median_s"] for b in args.infer_batches},
        )
    report = dict(
        benchmark="unet_throughput", config=config.to_dict(), n_params=n_params,
        settings=dict(repeats=args.repeats, warmup=args.warmup, train_batches=args.train_batches,
                      infer_batches=args.infer_batches, optimizer="adam", lr=1e-3, loss="masked_mse"),
        machine=dict(platform=platform.platform(), processor=platform.processor(), cpu_count=os.cpu_count(),
                     python=sys.version.split()[0], backend=jax.default_backend(),
                     loadavg_1_5_15_before=load_before, loadavg_1_5_15_after=os.getloadavg()),
        versions=dict(jax=jax.__version__, flax=flax.__version__, torch=torch_version),
        torch_threads=torch_threads, gemm_max_pixels=GEMM_MAX_PIXELS,
        results=results,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    from report import unet_throughput, write_tables

    write_tables(out, unet_throughput)
    if torch_version:
        r = results["ratio_jax_over_torch"]
        print("JAX/PyTorch train samples/s: "
              + ", ".join(f"b{b} {v:.2f}x" for b, v in r["train_samples_per_s"].items()))
        print("JAX/PyTorch inference speed: " + ", ".join(f"b{b} {v:.2f}x" for b, v in r["infer_speed"].items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
