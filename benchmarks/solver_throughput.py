"""Solver throughput: state-steps/s of `bj.imaginary_time`, with same-run baselines.

The host CPU is first split into one XLA device per core (``bj.use_cpu_cores``;
XLA:CPU runs each FFT on one thread, so this is how the solver uses all cores).
For every (n, batch) it times the contenders of ``bec_jax.bench.measure`` (its
module doc says what each is): bec_jax as a user calls it, on one device and
with the whole slice in every pass; the bare FFT passes (the step's floor),
split, on one device and chunked; and the same split step in NumPy with
numpy.fft (one thread) and with scipy.fft (workers=-1), in complex64, four FFT
passes, one exponential and one norm a step. Each contender runs in its own
worker process, warm, and the calls go A, B, C, ... round by round (one at a
time, so background load hits all alike); ratios are medians of same-round
ratios and the speed-up over NumPy is taken against the faster of the two
NumPy steps (``numpy_baseline`` in the JSON). The load average is recorded
before and after each row. This is what ``bec-jax bench`` runs too.

It also times ground_state for g = 500, Ω = 0.85, n = 128 (its 4 starts split
over the devices, and on one device; one start at a time and all at once), a
batch of --batch-states (default 1024) ground states at 32² as one program,
and batches of 16-128 states with their starts relaxed one at a time (the CPU
default) and all at once: JAX programs against each other, in this process.

    python benchmarks/solver_throughput.py --out benchmarks/results/solver_throughput.json
    python benchmarks/solver_throughput.py --quick      # a small subset
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

import bec_jax as bj
from bec_jax.bench.measure import STEP_CONTENDERS, StepWorkload, WorkerPool, interleaved_times, load_average, step_row

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_result  # noqa: E402

#: the ">= 2x NumPy" floor: bec_jax's split step at n = 200, batch 16 against the faster NumPy step
FLOOR = dict(n=200, batch=16, speedup=2.0)


def time_to_ground_state(n=128, g=500.0, omega=0.85, repeats: int = 5) -> dict:
    """One state's ground state (4 starts), compiled: median wall time split over the local devices
    (the starts go 4 / D per device) and on one device, each with the starts relaxed all at once
    (``chunk=None``) and one at a time (``chunk=1``, the CPU default), interleaved."""
    grid = bj.Grid(n, float(bj.box_length(g, omega)))
    calls = {(shard, chunk): lambda shard=shard, chunk=chunk: jax.block_until_ready(
        bj.ground_state(grid, g, omega, key=jax.random.key(0), method="pcg", shard=shard, chunk=chunk))
        for shard in (True, False) for chunk in (None, 1)}
    first, res = {}, {}
    for k, f in calls.items():
        t0 = time.perf_counter()
        res[k] = f()
        first[k] = time.perf_counter() - t0
    times = interleaved_times(calls, repeats, warmup=False)
    wall = {k: float(np.median(v)) for k, v in times.items()}
    r = res[True, None]
    return {"pcg": dict(
        n=n, g=g, omega=omega, length=grid.length, devices=len(r.psi.sharding.device_set),
        wall_s=wall[True, None], wall_s_one_device=wall[False, None],
        wall_s_one_start_at_a_time=wall[True, 1], wall_s_one_device_one_start_at_a_time=wall[False, 1],
        speedup_split=wall[False, None] / wall[True, None],
        wall_s_with_compile=first[True, None], repeats=repeats,
        energy=float(r.energy), residual=float(r.residual), converged=bool(r.converged),
        vortices=int(r.vortices), steps=int(r.steps), n_starts=int(r.start_energies.shape[-1]),
        start_energies=np.asarray(r.start_energies).tolist(), start_steps=np.asarray(r.start_steps).tolist(),
        energy_one_device=float(res[False, None].energy),
    )}


def chunked_ground_states(cases=((32, 128), (64, 16), (128, 16)), repeats: int = 5) -> list:
    """Batches of ground states (3 starts each, (g, Ω) uniform in [50, 250] x [0.45, 0.75], the quick
    data preset's ranges, max_iter 1000) with the starts relaxed one at a time on each device (the
    CPU default, ``chunk="auto"``) and all at once (``chunk=None``): median wall
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


def batch_ground_states(batch: int = 1024, n: int = 32, repeats: int = 5) -> dict:
    """`batch` ground states, (g, Ω) uniform in [10, 50] x [0, 0.5], as one compiled program: the first call
    (compilation included) and the median of ``repeats`` compiled calls."""
    rng = np.random.default_rng(0)
    g, om = rng.uniform(10, 50, batch), rng.uniform(0.0, 0.5, batch)
    grid = bj.Grid(n, float(bj.box_length(50.0, 0.5)))
    f = lambda: jax.block_until_ready(bj.ground_state(grid, g, om, key=jax.random.key(0), n_starts=2))
    t0 = time.perf_counter()
    res = f()
    first = time.perf_counter() - t0
    walls = interleaved_times({"batch": f}, repeats, warmup=False)["batch"]
    wall = float(np.median(walls))
    return dict(batch=batch, n=n, n_starts=2, repeats=repeats, wall_s=wall, wall_s_all=walls.tolist(),
                wall_s_with_compile=first, states_per_s=batch / wall,
                converged_fraction=float(np.mean(np.asarray(res.converged))),
                max_residual=float(np.max(np.asarray(res.residual))), mean_steps=float(np.mean(np.asarray(res.steps))))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/solver_throughput.json")
    p.add_argument("--sizes", default="64,128,200,256")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--steps", type=int, default=20, help="steps per timed call")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per contender (>= 5)")
    p.add_argument("--quick", action="store_true", help="n=64,200 and batch 1,16 only; no ground-state timing")
    p.add_argument("--no-ground-state", action="store_true")
    p.add_argument("--floor-runs", type=int, default=0,
                   help=f"time the floor's row (n={FLOOR['n']}, batch {FLOOR['batch']}) this many more times")
    p.add_argument("--batch-states", type=int, default=1024, help="size of the one-program ground-state batch")
    p.add_argument("--chunk", type=int, default=None,
                   help="states per chunk of the jax rows (default: cpu_chunk, what imaginary_time picks)")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="XLA devices the host CPU is split into (bj.use_cpu_cores; default one per core)")
    args = p.parse_args()
    if args.chunk is not None and args.chunk < 1:
        p.error(f"--chunk must be >= 1, got {args.chunk}")
    if args.steps < 1 or args.repeats < 5 or args.batch_states < 1 or args.floor_runs < 0:
        p.error(f"--steps and --batch-states must be >= 1, --repeats >= 5 and --floor-runs >= 0, got {args.steps}, "
                f"{args.batch_states}, {args.repeats}, {args.floor_runs}")
    bj.use_cpu_cores(args.cpu_devices)
    sizes = [64, 200] if args.quick else [int(s) for s in args.sizes.split(",")]
    batches = [1, 16] if args.quick else [int(b) for b in args.batches.split(",")]
    rows = []
    with WorkerPool(cpu_devices=args.cpu_devices) as pool:
        for n in sizes:
            for b in batches:
                row = step_row(pool, StepWorkload(n, b, steps=args.steps), STEP_CONTENDERS, args.repeats,
                               chunk="auto" if args.chunk is None else args.chunk)
                rows.append(row)
                ms = row["ms_per_step"]
                print(f"n={n:4d} B={b:3d} on {row['info']['bec_jax']['devices']} device(s): bec_jax {ms['bec_jax']:8.3f} "
                      f"ms/step  fft {ms['fft']:8.3f}  numpy {ms['numpy']:8.3f}  scipy {ms['scipy']:8.3f}  "
                      f"bec_jax/fft {row['bec_jax_over_fft']:.2f}  vs {row['numpy_baseline']} "
                      f"{row['speedup_vs_numpy']:.2f}x (FFT cap {row['numpy_over_fft']:.2f}x) | one device: "
                      f"bec_jax/fft {row['bec_jax_over_fft_one_device']:.2f}, vs numpy "
                      f"{row['speedup_vs_numpy_one_device']:.2f}x | load {row['load_average_before'][0]:.1f}",
                      flush=True)
        # The floor's row again, --floor-runs times: how far one row's ratio moves with the host's load.
        floor_runs = [step_row(pool, StepWorkload(FLOOR["n"], FLOOR["batch"], steps=args.steps), STEP_CONTENDERS,
                               args.repeats) for _ in range(args.floor_runs)]
    floor = [r for r in rows if (r["n"], r["batch"]) == (FLOOR["n"], FLOOR["batch"])] + floor_runs
    result = dict(
        benchmark="solver_throughput",
        method="each contender in its own process, warm, one call of each a round, in an order shuffled each round",
        steps_per_call=args.steps, repeats=args.repeats, dtype="complex64", rows=rows,
        local_devices=jax.local_device_count(), load_average_end_of_rows=load_average(),
    )
    if floor_runs:
        result["floor_runs"] = floor_runs
    if floor:
        measured = [r["speedup_vs_numpy"] for r in floor]
        result["floor_vs_numpy"] = dict(**FLOOR, measured=measured, median=float(np.median(measured)),
                                        baselines=[r["numpy_baseline"] for r in floor],
                                        holds=bool(min(measured) >= FLOOR["speedup"]))
        print(f"floor >= {FLOOR['speedup']}x NumPy at n={FLOOR['n']}, batch {FLOOR['batch']}: "
              f"{', '.join(f'{m:.2f}x' for m in measured)}: "
              f"{'holds in every run' if result['floor_vs_numpy']['holds'] else 'FAILS in some run'}", flush=True)
    if not (args.quick or args.no_ground_state):
        result["time_to_ground_state"] = time_to_ground_state()
        print("time to ground state:", json.dumps(result["time_to_ground_state"], indent=1), flush=True)
        result["batch_ground_states"] = batch_ground_states(args.batch_states)
        print("batch of ground states:", json.dumps(result["batch_ground_states"]), flush=True)
        result["chunked_ground_states"] = chunked_ground_states()
    write_result(args.out, result)


if __name__ == "__main__":
    main()
