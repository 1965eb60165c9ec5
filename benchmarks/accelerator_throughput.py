"""Accelerator throughput: the solver against the memory roofline, ground states per second, the U-Net
in float32 and bfloat16, and saved compressed models against their float32 source.

Meant for a GPU (``benchmarks/gpu_check.sh`` runs it there); every part also runs on a CPU at small
sizes (``--smoke``), which is how the test suite checks it. Parts (``--parts``, comma-separated):

  solver  ``bj.imaginary_time`` state-steps/s at grid n for each batch, beside
          - the same run's copy bandwidth (read + write of one ψ batch, ``2 * 8 * B * n²`` bytes),
          - the roofline of a step: its four 1-D FFT passes each read and write ψ once (64 B a point;
            cuFFT runs as its own kernels, so no elementwise work fuses into them), over that bandwidth,
          - the FFT floor: the same four passes and the transpose alone, timed the same way.
  pcg     ``bj.ground_state`` of the paper preset's states (n, box, starts, tolerances as
          ``bec-jax generate --preset paper``) for each batch as one program: compile time apart,
          then one solve (it is deterministic: a second would repeat the first), ground states/s,
          converged fraction, peak device memory.
  unet    U-Net train-step samples/s and inference latency (the training path bec_jax uses), for each
          compute dtype, at the train and inference batches given; medians of interleaved calls.
  models  every model folder under ``--models`` (``bec-jax pipeline``'s ``models/``): forward latency
          of the float path and, for int8 models, of the int8 path, at each inference batch, interleaved,
          with the ratio to the dense model.

    python benchmarks/accelerator_throughput.py --out benchmarks/results/gpu_h200/accelerator_throughput.json
    python benchmarks/accelerator_throughput.py --parts models --models RUN/models --out models.json  # latencies
    python benchmarks/accelerator_throughput.py --smoke --out /tmp/smoke.json     # CPU, seconds

Each timing is the median of ``--repeats`` calls after a warm-up (compiling) call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import bec_jax as bj
from common import write_result
from unet_throughput import inputs, jax_calls, timed

FFT_BYTES_PER_POINT = 4 * 2 * 8  # four passes, each reads and writes one complex64


def _ints(text: str) -> list[int]:
    vals = [int(v) for v in text.split(",") if v.strip()]
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return vals


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default=None, help="default: solver,pcg,unet, and models with --models")
    p.add_argument("--n", type=int, default=200, help="solver grid points per side")
    p.add_argument("--solver-batches", type=_ints, default=_ints("256,512,1024,2048,4096"))
    p.add_argument("--steps", type=int, default=20, help="split steps per timed solver call")
    p.add_argument("--pcg-batches", type=_ints, default=_ints("240"))
    p.add_argument("--unet-size", type=int, default=200)
    p.add_argument("--train-batches", type=_ints, default=_ints("8"))
    p.add_argument("--infer-batches", type=_ints, default=_ints("1,8"))
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--models", default=None, help="folder of saved models (a pipeline run's models/)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CPU check of the script)")
    p.add_argument("--out", default="benchmarks/results/accelerator_throughput.json")
    args = p.parse_args(argv)
    if args.parts is None:
        args.parts = "solver,pcg,unet" + (",models" if args.models else "")
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = set(args.parts) - {"solver", "pcg", "unet", "models"}
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; allowed: solver, pcg, unet, models")
    args.dtypes = [s.strip() for s in args.dtypes.split(",") if s.strip()]
    if args.repeats < 3 or args.steps < 2 or args.steps % 2:
        p.error("--repeats must be >= 3 and --steps even and >= 2")
    if "models" in args.parts and args.models is None:
        p.error("the models part needs --models DIR")
    if args.smoke:
        args.n, args.solver_batches, args.steps, args.pcg_batches = 32, [2, 4], 4, [2]
        args.unet_size, args.train_batches, args.infer_batches = 32, [2], [1, 2]
    return args


def _median_s(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile, warm up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def solver_part(args) -> dict:
    n, steps = args.n, args.steps
    grid = bj.Grid(n, 20.842)

    @jax.jit
    def copy(a):  # one read and one write of a
        return a * jnp.complex64(1.0)

    @jax.jit
    def fft_floor(p):  # a step's four FFT passes and its transpose, `steps` times
        def step(q, _):
            q = jnp.fft.ifft(jnp.fft.fft(q, axis=-1), axis=-1)
            q = jnp.swapaxes(q, -1, -2)
            return jnp.fft.ifft(jnp.fft.fft(q, axis=-1), axis=-1), None
        return jax.lax.scan(step, p, None, length=steps)[0]

    rows = []
    for b in args.solver_batches:
        key = jax.random.key(b)
        psi = (jax.random.normal(key, (b, n, n)) + 1j).astype(jnp.complex64)
        g = jnp.linspace(50.0, 500.0, b)
        om = jnp.linspace(0.45, 0.85, b)
        t_step = _median_s(lambda: bj.imaginary_time(grid, psi, g, om, dt=1e-3, steps=steps), args.repeats) / steps
        t_fft = _median_s(lambda: fft_floor(psi), args.repeats) / steps
        t_copy = _median_s(lambda: copy(psi), args.repeats)
        rows.append(dict(batch=b, state_steps_per_s=b / t_step, fft_floor_state_steps_per_s=b / t_fft,
                         copy_bandwidth_gb_s=2 * psi.nbytes / t_copy / 1e9, step_over_fft_floor=t_step / t_fft,
                         step_ms=t_step * 1e3))
        print(f"  solver n={n} batch {b:5d}: {b / t_step:12,.0f} state-steps/s (FFT floor {b / t_fft:,.0f}; "
              f"copy {rows[-1]['copy_bandwidth_gb_s']:.0f} GB/s)", flush=True)
        del psi
    # Small copies are launch-bound: the roofline uses the best bandwidth of the run.
    bandwidth = max(r["copy_bandwidth_gb_s"] for r in rows) * 1e9
    roofline = bandwidth / (FFT_BYTES_PER_POINT * n * n)
    for r in rows:
        r["fraction_of_roofline"] = r["state_steps_per_s"] / roofline
    print(f"  roofline {roofline:,.0f} state-steps/s at {bandwidth / 1e9:.0f} GB/s; the largest batch reaches "
          f"{rows[-1]['fraction_of_roofline']:.0%}", flush=True)
    return dict(n=n, steps_per_call=steps, bytes_per_point_step_model=FFT_BYTES_PER_POINT,
                peak_copy_bandwidth_gb_s=bandwidth / 1e9, roofline_state_steps_per_s=roofline, rows=rows)


def pcg_part(args) -> dict:
    from bec_jax.data.generate import PRESETS, sample_keys, sample_parameters
    from bec_jax.gpe.groundstate import _solve_jit, start_keys

    cfg = PRESETS["paper"]
    if args.smoke:
        import dataclasses
        cfg = dataclasses.replace(cfg, n=args.n, n_groups=4, max_iter=200)
    g_all, om_all, _, _ = sample_parameters(cfg)
    grid = cfg.grid
    method = cfg.solver  # the generation's own method object, tolerances resolved by dtype
    rows = []
    for b in args.pcg_batches:
        sel = np.resize(np.arange(len(g_all)), b)
        keys = start_keys(sample_keys(cfg.seed, sel), b, cfg.n_starts)
        g, om = jnp.asarray(g_all[sel], jnp.float32), jnp.asarray(om_all[sel], jnp.float32)
        t0 = time.perf_counter()
        compiled = _solve_jit.lower(grid, g, om, keys, method).compile()
        t_compile = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = jax.block_until_ready(compiled(g, om, keys))
        t_run = time.perf_counter() - t0
        stats = jax.devices()[0].memory_stats() or {}
        row = dict(batch=b, starts=b * cfg.n_starts, compile_s=t_compile, solve_s=t_run,
                   ground_states_per_s=b / t_run, converged_fraction=float(np.mean(res.converged)),
                   mean_steps=float(np.mean(res.steps)), max_start_steps=int(np.max(res.start_steps)),
                   peak_device_bytes=stats.get("peak_bytes_in_use"))
        rows.append(row)
        print(f"  pcg batch {b:5d} ({b * cfg.n_starts} starts): {t_run:.1f} s ({row['ground_states_per_s']:.1f} "
              f"ground states/s), compile {t_compile:.1f} s, converged {row['converged_fraction']:.3f}, "
              f"peak memory {(row['peak_device_bytes'] or 0) / 2**30:.1f} GiB", flush=True)
        del res, compiled
    return dict(n=cfg.n, length=grid.length, n_starts=cfg.n_starts, max_iter=cfg.max_iter, rows=rows)


def unet_part(args) -> dict:
    from bec_jax.models.unet import UNetConfig, count_params, default_depth

    out = {}
    for dtype in args.dtypes:
        config = UNetConfig(base_width=8, depth=default_depth(args.unet_size), input_size=args.unet_size, dtype=dtype)
        calls = jax_calls(config)
        train = {b: v for b in args.train_batches for v in [timed({"t": calls["train"](b)}, args.repeats, 2)["t"]]}
        infer = {b: v for b in args.infer_batches for v in [timed({"i": calls["infer"](b)}, args.repeats, 2)["i"]]}
        out[dtype] = dict(
            train={b: dict(v, samples_per_s=b / v["median_s"]) for b, v in train.items()},
            infer={b: dict(v, latency_ms=v["median_s"] * 1e3) for b, v in infer.items()})
        print(f"  unet {args.unet_size}² {dtype}: train " + ", ".join(
            f"b{b} {v['samples_per_s']:.0f}/s" for b, v in out[dtype]["train"].items()) + "; inference " + ", ".join(
            f"b{b} {v['latency_ms']:.2f} ms" for b, v in out[dtype]["infer"].items()), flush=True)
    config = UNetConfig(base_width=8, depth=default_depth(args.unet_size), input_size=args.unet_size)
    return dict(input_size=args.unet_size, n_params=count_params(config), results=out)


def models_part(args) -> dict:
    from bec_jax.compress.quantization import load_quantized
    from bec_jax.compress.workflow import latency_table

    root = Path(args.models)
    folders = sorted(p.parent for p in root.glob("*/quantized.json"))
    if not folders:
        raise SystemExit(f"no saved models (*/quantized.json) under {root}")
    models = {}
    for f in folders:
        model, meta = load_quantized(f)
        models[f.name] = model
        if meta.get("quant"):
            models[f"{f.name} (int8 path)"], _ = load_quantized(f, mode="int8")
    size = next(iter(models.values())).config.input_size
    rows = {}
    for b in args.infer_batches:
        x = jnp.asarray(inputs(b, size)[0])
        table = latency_table(models, x, repeats=args.repeats * 4)
        dense = table.get("dense", next(iter(table.values())))["median_ms"]
        rows[b] = {name: dict(median_ms=v["median_ms"], q25_ms=v["q25_ms"], q75_ms=v["q75_ms"],
                              speed_vs_dense=dense / v["median_ms"]) for name, v in table.items()}
        print(f"  models batch {b}: " + ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in rows[b].items()),
              flush=True)
    return dict(input_size=size, batches=rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"backend {jax.default_backend()}, {jax.devices()[0].device_kind}; parts {args.parts}", flush=True)
    result = dict(benchmark="accelerator_throughput", settings=dict(repeats=args.repeats, smoke=args.smoke))
    parts = dict(solver=solver_part, pcg=pcg_part, unet=unet_part, models=models_part)
    for name in args.parts:
        t0 = time.perf_counter()
        result[name] = parts[name](args)
        result[name]["part_seconds"] = time.perf_counter() - t0
        write_result(args.out, result)  # after each part: a later part's crash or timeout keeps the earlier ones
    return 0


if __name__ == "__main__":
    sys.exit(main())
