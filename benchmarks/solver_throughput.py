"""Solver throughput: state-steps/s of `bj.imaginary_time`, with same-run baselines.

The host CPU is first split into one XLA device per core (``bj.use_cpu_cores``;
XLA:CPU runs each FFT on one thread, so this is how the solver uses all cores).
For every (n, batch) it times, in the same process:
  jax      bj.imaginary_time (jit, lax.scan of split steps), complex64, as a user
           calls it: the batch split over all devices when they divide it, and
           each device's slice run a chunk of states at a time (``cpu_chunk``)
  whole    the same with the whole slice in every pass (``chunk=None``: the
           solver before chunking, and what runs on a GPU)
  fft      the bare four 1-D FFT passes one step needs, in JAX (lax.scan), split
           alike, over the whole slice (the step's floor)
  fft_chunked  the same FFT passes chunked as jax is (like with like)
  ..._one_device  all of these again with shard=False
  numpy    the same split-step scheme in NumPy + scipy.fft (workers=-1: all cores)
and reports medians and the ratios jax/fft (step cost over its FFT floor) and
numpy/jax (speed-up). It also times ground_state for g = 500, Ω = 0.85, n = 128
(its 4 starts split over the devices, and on one device; one start at a time
and all at once), a batch of --batch-states (default 1024) ground states at 32²
as one program, and batches of 16-128 states with their starts relaxed one at a
time (the CPU default) and all at once.

    python benchmarks/solver_throughput.py --out benchmarks/results/solver_throughput.json
    python benchmarks/solver_throughput.py --quick      # a small subset

Timings are medians of --repeats calls after a warm-up (compile) call; the calls of one
(n, batch) are interleaved and each ratio is the median of the ratios within a round.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft as sfft

import bec_jax as bj
from bec_jax.gpe.sharding import batch_mesh, cpu_chunk, map_batch, shard_batch
from bec_jax.gpe.splitstep import _run as run_split_steps
from common import write_result


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up / compile
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def numpy_imaginary_time(grid, psi, g, omega, dt, steps):
    """Reference NumPy/SciPy implementation of the same scheme as bec_jax.gpe.splitstep."""
    x, k = grid.x.astype(np.float32), grid.k.astype(np.float32)
    a = (0.5 * k[None, :] ** 2 + omega * x[:, None] * k[None, :]).astype(np.float32)
    b = (0.5 * k[:, None] ** 2 - omega * k[:, None] * x[None, :]).astype(np.float32)
    ea, eb = np.exp(-dt * a).astype(np.complex64), np.exp(-dt * b).astype(np.complex64)
    ev = np.exp(-0.5 * dt * grid.potential()).astype(np.float32)
    area = grid.cell_area
    # normalised first, as bj.imaginary_time does: g|ψ|² of the first step depends on it
    psi = (psi / np.sqrt(np.sum(np.abs(psi) ** 2, axis=(-2, -1), keepdims=True) * area)).astype(np.complex64)
    for s in range(steps):
        ew = ev * np.exp(-0.5 * dt * g * (psi.real**2 + psi.imag**2))
        psi = ew * psi
        if s % 2 == 0:
            psi = sfft.ifft(ea * sfft.fft(psi, axis=-1, workers=-1), axis=-1, workers=-1)
            psi = sfft.ifft(eb * sfft.fft(psi, axis=-2, workers=-1), axis=-2, workers=-1)
        else:
            psi = sfft.ifft(eb * sfft.fft(psi, axis=-2, workers=-1), axis=-2, workers=-1)
            psi = sfft.ifft(ea * sfft.fft(psi, axis=-1, workers=-1), axis=-1, workers=-1)
        psi = ew * psi
        nrm = np.sum(psi.real**2 + psi.imag**2, axis=(-2, -1), keepdims=True) * area
        psi = (psi / np.sqrt(nrm)).astype(np.complex64)
    return psi


def fft_passes(steps, mesh=None, chunk=None):
    """The bare four 1-D FFT passes of ``steps`` steps, split over ``mesh`` as bj.imaginary_time splits;
    with ``chunk``, run over chunks of that many states as the solver runs on a CPU (``map_batch``)."""

    def run(psi):
        def body(p, _):
            p = jnp.fft.ifft(jnp.fft.fft(p, axis=-1), axis=-1)
            return jnp.fft.ifft(jnp.fft.fft(p, axis=-2), axis=-2), None

        return jax.lax.scan(body, psi, None, length=steps)[0]

    return jax.jit(shard_batch(run if chunk is None else map_batch(run, chunk), mesh))


def interleaved_times(fns: dict, repeats: int, warmup: bool = True) -> dict:
    """Per-call wall times of each function in ``fns``, calls interleaved round by round
    (after one warm-up call each unless ``warmup=False``), so that every ratio of two of them is taken
    in the same moment."""
    for f in fns.values() if warmup else ():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: np.asarray(v) for k, v in times.items()}


def bench_point(n: int, batch: int, steps: int, repeats: int, numpy_steps: int, chunk="auto") -> dict:
    """One (n, batch): bec_jax and bare FFTs split over all devices (as a user calls it) and on one
    device, and the NumPy baseline; ms per step (medians) and ratios (medians of the ratios of calls
    made in the same round: this machine's speed drifts within minutes).

    On a CPU bec_jax runs each device's slice a chunk of states at a time (``cpu_chunk``). Two more
    programs show what that does: ``whole`` is bec_jax with the whole slice in every pass (the solver
    before chunking, and what it runs on a GPU), ``fft_chunked`` the bare FFT passes chunked alike."""
    grid = bj.Grid(n, 16.0)
    g, om, dt = 100.0, 0.8, 0.01
    X, Y = grid.mesh()
    psi = np.broadcast_to(np.exp(-(X**2 + Y**2) / 8), (batch, n, n)).astype(np.complex64)
    psi_j = jax.device_put(jnp.asarray(psi))
    mesh = batch_mesh(batch)
    chunk = cpu_chunk(n, np.complex64) if chunk == "auto" else chunk
    fns = {}
    for split in (True, False) if mesh is not None else (False,):
        for kind, c in (("jax", chunk), ("whole", None)):
            fns[kind, split] = (lambda s, c: lambda: run_split_steps(
                grid, psi_j, g, om, dt, steps, True, s, c).block_until_ready())(split, c)
        for kind, c in (("fft", None), ("fft_chunked", chunk)):
            run_fft = fft_passes(steps, mesh if split else None, c)
            fns[kind, split] = (lambda f: lambda: f(psi_j).block_until_ready())(run_fft)
    fns["numpy"] = lambda: numpy_imaginary_time(grid, psi, g, om, dt, numpy_steps)
    t = interleaved_times(fns, repeats)
    if mesh is None:
        for k in ("jax", "whole", "fft", "fft_chunked"):
            t[k, True] = t[k, False]
    # Same scheme: the NumPy result after numpy_steps equals jax's to float32 round-off.
    ref = numpy_imaginary_time(grid, psi[:1], g, om, dt, 4)
    err = float(np.max(np.abs(ref - np.asarray(bj.imaginary_time(grid, psi_j[:1], g, om, dt=dt, steps=4)))))
    if not err < 1e-4:  # peak |ψ| ≈ 0.26: anything larger is a different scheme, not round-off
        raise RuntimeError(f"NumPy baseline differs from bj.imaginary_time by {err:.3g} at n={n}")
    per_step = {k: v / (numpy_steps if k == "numpy" else steps) for k, v in t.items()}
    ms = {k: 1e3 * float(np.median(v)) for k, v in per_step.items()}
    ratio = lambda a, b: float(np.median(per_step[a] / per_step[b]))
    row = dict(
        n=n, batch=batch, devices=1 if mesh is None else mesh.size, chunk=chunk,
        jax_step_ms=ms["jax", True],
        fft_step_ms=ms["fft", True],
        jax_one_device_step_ms=ms["jax", False],
        fft_one_device_step_ms=ms["fft", False],
        whole_batch_step_ms=ms["whole", True],
        fft_chunked_step_ms=ms["fft_chunked", True],
        numpy_step_ms=ms["numpy"],
        jax_state_steps_per_s=batch / float(np.median(per_step["jax", True])),
        numpy_state_steps_per_s=batch / float(np.median(per_step["numpy"])),
        max_abs_diff_vs_numpy=err,
        jax_over_fft=ratio(("jax", True), ("fft", True)),
        jax_over_fft_one_device=ratio(("jax", False), ("fft", False)),
        # like with like: the step's cost beyond its FFT passes when both run chunked
        jax_over_fft_chunked=ratio(("jax", True), ("fft_chunked", True)),
        jax_over_fft_chunked_one_device=ratio(("jax", False), ("fft_chunked", False)),
        # the step with the whole slice in every pass (no chunks) over the bare FFT passes, and the gain
        whole_over_fft=ratio(("whole", True), ("fft", True)),
        chunking_speedup=ratio(("whole", True), ("jax", True)),
        chunking_speedup_one_device=ratio(("whole", False), ("jax", False)),
        speedup_vs_numpy=ratio("numpy", ("jax", True)),
        speedup_vs_numpy_one_device=ratio("numpy", ("jax", False)),
        # the most a step could gain over NumPy if it cost nothing beyond its FFT passes
        numpy_over_fft=ratio("numpy", ("fft", True)),
    )
    return row


def time_to_ground_state(n=128, g=500.0, omega=0.85, repeats: int = 3) -> dict:
    """One state's ground state (4 starts), compiled: median wall time split over the local devices
    (the starts go 4 / D per device) and on one device, each with the starts relaxed all at once (the
    default for one state) and one at a time (``chunk=1``, the CPU default for several states), interleaved."""
    grid = bj.Grid(n, float(bj.box_length(g, omega)))
    calls = {(shard, chunk): lambda shard=shard, chunk=chunk: jax.block_until_ready(
        bj.ground_state(grid, g, omega, key=jax.random.key(0), method="pcg", shard=shard, chunk=chunk))
        for shard in (True, False) for chunk in ("auto", 1)}
    first, res = {}, {}
    for k, f in calls.items():
        t0 = time.perf_counter()
        res[k] = f()
        first[k] = time.perf_counter() - t0
    times = interleaved_times(calls, repeats, warmup=False)
    wall = {k: float(np.median(v)) for k, v in times.items()}
    r = res[True, "auto"]
    return {"pcg": dict(
        n=n, g=g, omega=omega, length=grid.length, devices=len(r.psi.sharding.device_set),
        wall_s=wall[True, "auto"], wall_s_one_device=wall[False, "auto"],
        wall_s_one_start_at_a_time=wall[True, 1], wall_s_one_device_one_start_at_a_time=wall[False, 1],
        speedup_split=wall[False, "auto"] / wall[True, "auto"],
        wall_s_with_compile=first[True, "auto"], repeats=repeats,
        energy=float(r.energy), residual=float(r.residual), converged=bool(r.converged),
        vortices=int(r.vortices), steps=int(r.steps), n_starts=int(r.start_energies.shape[-1]),
        start_energies=np.asarray(r.start_energies).tolist(), start_steps=np.asarray(r.start_steps).tolist(),
        energy_one_device=float(res[False, "auto"].energy),
    )}


def chunked_ground_states(cases=((32, 128), (64, 16), (128, 16)), repeats: int = 3) -> list:
    """Batches of ground states (3 starts each, (g, Ω) uniform in [50, 250] x [0.45, 0.75], the quick
    data preset's ranges, max_iter 1000) with the starts relaxed one at a time on each device (the
    CPU default for several states, ``chunk="auto"``) and all at once (``chunk=None``): median wall
    times, interleaved."""
    rows = []
    for n, batch in cases:
        rng = np.random.default_rng(0)
        g, om = rng.uniform(50, 250, batch), rng.uniform(0.45, 0.75, batch)
        grid = bj.Grid(n, float(bj.box_length(250.0, 0.75)))
        calls = {c: lambda c=c: jax.block_until_ready(bj.ground_state(
            grid, g, om, key=jax.random.key(0), n_starts=3, max_iter=1000, chunk=c)) for c in ("auto", None)}
        res = {c: f() for c, f in calls.items()}
        t = interleaved_times(calls, repeats, warmup=False)
        steps = {c: np.asarray(r.start_steps) for c, r in res.items()}
        rows.append(dict(
            n=n, batch=batch, n_starts=3, repeats=repeats,
            wall_s_one_at_a_time=float(np.median(t["auto"])), wall_s_all_at_once=float(np.median(t[None])),
            speedup=float(np.median(t[None] / t["auto"])),
            start_iterations_total=int(steps["auto"].sum()), start_iterations_max=int(steps["auto"].max()),
            # all at once, every start of a device's slice runs until its slowest start stops
            converged=[int(np.sum(np.asarray(r.converged))) for r in res.values()],
            max_energy_diff=float(np.max(np.abs(np.asarray(res["auto"].energy) - np.asarray(res[None].energy)))),
        ))
        print(f"ground states n={n} batch {batch}: one start at a time {rows[-1]['wall_s_one_at_a_time']:.2f} s, "
              f"all at once {rows[-1]['wall_s_all_at_once']:.2f} s ({rows[-1]['speedup']:.2f}x)", flush=True)
    return rows


def batch_ground_states(batch: int = 1024, n: int = 32) -> dict:
    """`batch` ground states, (g, Ω) uniform in [10, 50] x [0, 0.5], as one compiled program."""
    rng = np.random.default_rng(0)
    g, om = rng.uniform(10, 50, batch), rng.uniform(0.0, 0.5, batch)
    grid = bj.Grid(n, float(bj.box_length(50.0, 0.5)))
    f = lambda: jax.block_until_ready(bj.ground_state(grid, g, om, key=jax.random.key(0), n_starts=2))
    t0 = time.perf_counter()
    res = f()
    wall = time.perf_counter() - t0
    return dict(batch=batch, n=n, n_starts=2, wall_s_with_compile=wall, states_per_s=batch / wall,
                converged_fraction=float(np.mean(np.asarray(res.converged))),
                max_residual=float(np.max(np.asarray(res.residual))), mean_steps=float(np.mean(np.asarray(res.steps))))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/solver_throughput.json")
    p.add_argument("--sizes", default="64,128,200,256")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--steps", type=int, default=20, help="steps per timed call")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--quick", action="store_true", help="n=64,200 and batch 1,16 only; no ground-state timing")
    p.add_argument("--no-ground-state", action="store_true")
    p.add_argument("--batch-states", type=int, default=1024, help="size of the one-program ground-state batch")
    p.add_argument("--chunk", type=int, default=None,
                   help="states per chunk of the jax rows (default: cpu_chunk, what imaginary_time picks)")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="XLA devices the host CPU is split into (bj.use_cpu_cores; default one per core)")
    args = p.parse_args()
    if args.chunk is not None and args.chunk < 1:
        p.error(f"--chunk must be >= 1, got {args.chunk}")
    if args.steps < 1 or args.repeats < 1 or args.batch_states < 1:
        p.error(f"--steps, --repeats and --batch-states must be >= 1, got {args.steps}, {args.repeats}, "
                f"{args.batch_states}")
    bj.use_cpu_cores(args.cpu_devices)
    sizes = [64, 200] if args.quick else [int(s) for s in args.sizes.split(",")]
    batches = [1, 16] if args.quick else [int(b) for b in args.batches.split(",")]
    rows = []
    for n in sizes:
        for b in batches:
            row = bench_point(n, b, args.steps, args.repeats, numpy_steps=max(2, args.steps // 4),
                              chunk="auto" if args.chunk is None else args.chunk)
            rows.append(row)
            print(f"n={n:4d} B={b:3d} on {row['devices']} device(s): jax {row['jax_step_ms']:8.3f} ms/step  "
                  f"fft {row['fft_step_ms']:8.3f}  numpy {row['numpy_step_ms']:8.3f}  jax/fft {row['jax_over_fft']:.2f}  "
                  f"speed-up vs numpy {row['speedup_vs_numpy']:.2f}x (FFT cap {row['numpy_over_fft']:.2f}x) | "
                  f"one device: jax/fft {row['jax_over_fft_one_device']:.2f}, "
                  f"vs numpy {row['speedup_vs_numpy_one_device']:.2f}x | "
                  f"{row['jax_state_steps_per_s']:,.0f} state-steps/s | chunks of {row['chunk']}: "
                  f"{row['chunking_speedup']:.2f}x the whole batch, jax/fft_chunked {row['jax_over_fft_chunked']:.2f}",
                  flush=True)
    result = dict(
        benchmark="solver_throughput",
        steps_per_call=args.steps, repeats=args.repeats, dtype="complex64", rows=rows,
        local_devices=jax.local_device_count(),
    )
    if not (args.quick or args.no_ground_state):
        result["time_to_ground_state"] = time_to_ground_state()
        print("time to ground state:", json.dumps(result["time_to_ground_state"], indent=1), flush=True)
        result["batch_ground_states"] = batch_ground_states(args.batch_states)
        print("batch of ground states:", json.dumps(result["batch_ground_states"]), flush=True)
        result["chunked_ground_states"] = chunked_ground_states()
    write_result(args.out, result)


if __name__ == "__main__":
    main()
