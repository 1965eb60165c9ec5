"""Dataset generation throughput, and the ground-state methods on paper-preset states.

quick: the whole quick preset (240 states, 64²) through `bec_jax.data.generate`,
wall time including HDF5 writes: the first run (compilation included) and the
median of --repeats more.
paper_subset: the paper preset's grid and solver (200², 4 starts) on its first
--paper-states samples through `generate`, batch = --paper-states, timed alike
(CPU cannot do 1,680 states in a benchmark's time; the whole preset's measured
time is in experiments/results/paper_cpu/stages/generate.json).

paper_methods: --method-states states drawn at random (seed --subset-seed) from the
paper preset's 1,680 (g, Ω) samples, each solved alone (batch 1, the preset's 4
starts, the generator's keys, float32, default tolerances 1e-4 / 1e-7, the
preset's max_iter, imaginary time at the library defaults: dt 0.05 → 0.002,
≤ 20,000 steps per start) by
  pcg (rotating-frame preconditioner, the default of ``ground_state``),
  pcg_kinetic (lab-frame kinetic preconditioner) and imaginary_time.
The methods solve state after state in a shuffled order (``round_orders``).
Per state: wall time (compiled; compilation timed separately), iterations of
every start, 1-D FFT passes executed (the 4 starts run in lockstep, so a
state costs 4 × the slowest start, plus the winner's polish), converged, stored
(converged and not touching the box edge, the generator's rule), energy. The
time for all 1,680 states is EXTRAPOLATED: 1,680 × the mean per-state time of
the N measured states, one state at a time on this machine. Like `bec-jax generate`,
the script splits the CPU into one XLA device per core (``use_cpu_cores``).
The paper preset's own solver (coarse-to-fine) against the fine grid alone, batched as
the generator runs it: benchmarks/dataset_time.py.

    python benchmarks/generation_throughput.py --out benchmarks/results/generation_throughput.json
    python benchmarks/generation_throughput.py --only-methods --method-states 4   # the methods table only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import bec_jax as bj
import bec_jax.data as bd
from bec_jax.bench.measure import round_orders
from bec_jax.gpe.groundstate import ImaginaryTime, solver_method
from bec_jax.gpe.minimize import PRECONDITIONER_PASSES
from common import write_result

METHODS = {"pcg": dict(method="pcg", preconditioner="rotating"), "pcg_kinetic": dict(method="pcg", preconditioner="kinetic"),
           "imaginary_time": dict(method="imaginary_time")}


def time_generate(config, repeats: int) -> dict:
    """`bd.generate` of ``config`` into a temporary folder: the first run (compilation included) and the median
    of ``repeats`` more (compiled)."""
    runs = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(1 + repeats):
            path = os.path.join(d, f"run{r}.h5")
            t0 = time.perf_counter()
            summary = bd.generate(config, path, progress=False)
            runs.append(time.perf_counter() - t0)
    wall = float(np.median(runs[1:]))
    return dict(states=config.n_samples, wall_s=wall, wall_s_first_run=runs[0], wall_s_all=runs[1:], repeats=repeats,
                states_per_s=config.n_samples / wall, stored=summary["n_samples"], failed=summary["n_failed"],
                n=config.n, batch_size=config.batch_size, n_starts=config.n_starts, method=config.method,
                load_avg=os.getloadavg()[0])


def executed_passes(kw: dict, start_steps: np.ndarray, polish: int) -> int:
    """1-D FFT passes a batch-1 solve executes: its starts run in lockstep (n_starts × the slowest),
    plus the winner's polish iterations (pcg, when it hit max_iter)."""
    s = solver_method(**kw)
    n_starts, slowest = len(start_steps), int(start_steps.max())
    if isinstance(s, ImaginaryTime):
        return n_starts * (4 * slowest + 6 * (slowest // s.check_every))
    per_iter = 4 + PRECONDITIONER_PASSES[s.preconditioner] + 2
    return n_starts * (4 * s.warmup_steps + 6 + per_iter * (slowest - s.warmup_steps)) + per_iter * polish


def paper_methods(n_states: int, subset_seed: int) -> dict:
    """The three methods on the same random paper-preset states; per-state table + extrapolation."""
    cfg = bd.PRESETS["paper"]
    g, om, _, _ = bd.sample_parameters(cfg)
    idx = np.sort(np.random.default_rng(subset_seed).choice(cfg.n_samples, n_states, replace=False))
    grid = cfg.grid
    out = dict(n_measured=n_states, subset_seed=subset_seed, sample_ids=idx.tolist(), n=cfg.n, length=grid.length,
               n_starts=cfg.n_starts, max_iter=cfg.max_iter, total_states=cfg.n_samples, dtype=str(jnp.zeros(()).dtype),
               load_avg_start=os.getloadavg()[0], methods={})

    def solver(kw):
        def solve(i):
            key = bd.sample_keys(cfg.seed, [i])  # the generator's key of sample i
            return jax.block_until_ready(bj.ground_state(grid, g[i:i + 1], om[i:i + 1], key=key, n_starts=cfg.n_starts,
                                                         max_iter=cfg.max_iter, **kw))
        return solve

    solvers, first, rows = {name: solver(kw) for name, kw in METHODS.items()}, {}, {name: [] for name in METHODS}
    for name, solve in solvers.items():
        t0 = time.perf_counter()
        solve(int(idx[0]))
        first[name] = time.perf_counter() - t0
    # state by state, the methods in a shuffled order, so that the host's load falls on all alike
    for i, order in zip(idx, round_orders(METHODS, len(idx))):
        for name in order:
            t0 = time.perf_counter()
            res = jax.device_get(solvers[name](int(i)))
            wall = time.perf_counter() - t0
            st = np.asarray(res.start_steps)[0]
            polish = int(res.steps[0]) - int(st[int(res.start_winner[0])])
            rows[name].append(dict(
                sample=int(i), g=float(g[i]), omega=float(om[i]), wall_s=wall, steps=int(res.steps[0]),
                start_steps=st.tolist(), polish_steps=polish, passes=executed_passes(METHODS[name], st, polish),
                energy=float(res.energy[0]), residual=float(res.residual[0]), converged=bool(res.converged[0]),
                stored=bool(res.converged[0] and not res.touches_edge[0]), vortices=int(res.vortices[0]),
                load_avg=os.getloadavg()[0]))
            r = rows[name][-1]
            print(f"  {name:14s} sample {i:4d} g={g[i]:6.1f} Ω={om[i]:.3f}: {wall:6.1f} s  steps {st.tolist()}  "
                  f"E={r['energy']:.5f} r={r['residual']:.1e} conv={r['converged']} v={r['vortices']}", flush=True)
    for name, kw in METHODS.items():
        walls = np.array([r["wall_s"] for r in rows[name]])
        out["methods"][name] = dict(
            settings=kw, rows=rows[name], first_call_with_compile_s=first[name], mean_wall_s=float(walls.mean()),
            median_wall_s=float(np.median(walls)), mean_passes=float(np.mean([r["passes"] for r in rows[name]])),
            stored_fraction=float(np.mean([r["stored"] for r in rows[name]])),
            extrapolated_hours_all_states=float(cfg.n_samples * walls.mean() / 3600))
    m = out["methods"]
    for k in ("pcg_kinetic", "imaginary_time"):
        out[f"{k}_over_pcg"] = dict(wall=m[k]["mean_wall_s"] / m["pcg"]["mean_wall_s"],
                                    passes=m[k]["mean_passes"] / m["pcg"]["mean_passes"])
    out["load_avg_end"] = os.getloadavg()[0]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/generation_throughput.json")
    ap.add_argument("--paper-states", type=int, default=8)
    ap.add_argument("--method-states", type=int, default=12)
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="compiled runs of each generate row, after the first")
    ap.add_argument("--only-methods", action="store_true", help="skip the quick / paper_subset generate runs")
    args = ap.parse_args()
    if args.repeats < 1 or args.paper_states < 1 or args.method_states < 1:
        ap.error(f"--repeats, --paper-states and --method-states must be >= 1, got {args.repeats}, "
                 f"{args.paper_states}, {args.method_states}")
    bj.use_cpu_cores()  # as `bec-jax generate` does: one XLA device per core
    result = dict(benchmark="generation_throughput")
    if args.only_methods and os.path.exists(args.out):  # keep the generate rows of the last full run
        with open(args.out) as f:
            rows = json.load(f).get("rows", {})
        if rows and all("repeats" in r for r in rows.values()):  # rows of a script timing them as now
            result["rows"] = rows
    if not args.only_methods:
        quick = bd.PRESETS["quick"]
        paper = dataclasses.replace(bd.PRESETS["paper"], n_groups=max(1, args.paper_states // 4),
                                    batch_size=args.paper_states)
        rows = dict(quick=time_generate(quick, args.repeats), paper_subset=time_generate(paper, args.repeats))
        for k, r in rows.items():
            print(f"{k:13s} {r['states']:5d} states at {r['n']}²: {r['wall_s']:.1f} s  {r['states_per_s']:.2f} states/s "
                  f"({r['stored']} stored, {r['failed']} failed)", flush=True)
        result.update(rows=rows)
    pm = paper_methods(args.method_states, args.subset_seed)
    for k, v in pm["methods"].items():
        print(f"{k:14s} mean {v['mean_wall_s']:.1f} s/state, {v['mean_passes']:.0f} passes/state, "
              f"stored {100 * v['stored_fraction']:.0f} %, 1,680 states ≈ {v['extrapolated_hours_all_states']:.2f} h "
              "(extrapolated)", flush=True)
    result["paper_methods"] = pm
    write_result(args.out, result)


if __name__ == "__main__":
    main()
