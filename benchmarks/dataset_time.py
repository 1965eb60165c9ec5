"""The paper-preset dataset on this CPU: ground states on the fine grid alone vs coarse-to-fine.

--states random samples (seed --subset-seed) of ``PRESETS["paper"]``'s 1,680 (n = 200, its box, float32,
the generator's keys, tolerances and max_iter) are solved in batches of --batch, as ``bec-jax generate``
solves them (``ground_state`` with one typed key per state, chunk "auto": on a CPU each start runs and stops
alone), by each contender:

  * fine: ``PCG(coarsen=1)``, 4 starts: every start relaxes on 200² (the preset before coarse-to-fine);
  * coarse: the preset's solver, ``PCG(coarsen=2)``, 4 starts: each start relaxes on 100² first and is
    finished on 200²;
  * coarse_8: the same with 8 starts.

Each contender is compiled on a warm-up batch first; then every batch runs all contenders back to back, in an
order shuffled per batch (``round_orders``), so load falls on each alike. Reported: wall time per batch and contender, medians of
the per-batch ratios to fine, the whole dataset EXTRAPOLATED as 1,680 × (total wall / states), per state the
energy, vortex count and storage flags, and ΔE relative to fine (positive: a higher energy than fine found).

    nice python benchmarks/dataset_time.py --out benchmarks/results/dataset_time.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import jax
import numpy as np

import bec_jax as bj
from bec_jax.bench.measure import round_orders
from bec_jax.data.generate import PRESETS, sample_keys, sample_parameters
from common import write_result

CONTENDERS = {"fine": (dict(coarsen=1), 4), "coarse": ({}, 4), "coarse_8": ({}, 8)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--states", type=int, default=48, help="random paper-preset states (>= 24; default 48)")
    ap.add_argument("--batch", type=int, default=8, help="states per batch (default 8)")
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/dataset_time.json")
    args = ap.parse_args(argv)
    if args.states < 1 or args.batch < 1 or args.states % args.batch:
        ap.error(f"--states must be a positive multiple of --batch, got {args.states}, {args.batch}")
    bj.use_cpu_cores()
    cfg = PRESETS["paper"]
    grid = cfg.grid
    g, om, _, _ = sample_parameters(cfg)
    idx = np.sort(np.random.default_rng(args.subset_seed).choice(cfg.n_samples, args.states, replace=False))
    solvers = {k: (dataclasses.replace(cfg.solver, **kw), s) for k, (kw, s) in CONTENDERS.items()}

    def solve(name, states):
        method, n_starts = solvers[name]
        keys = sample_keys(cfg.seed, states)
        t = time.perf_counter()
        res = jax.device_get(jax.block_until_ready(
            bj.ground_state(grid, g[states], om[states], key=keys, n_starts=n_starts, method=method)))
        return res, time.perf_counter() - t

    load0 = os.getloadavg()[0]
    batches = np.split(idx, args.states // args.batch)
    compile_s = {k: solve(k, batches[0])[1] for k in CONTENDERS}  # compile (and a first run)
    names = list(CONTENDERS)
    per_state = {k: [] for k in names}
    rows = []
    for b, (states, order) in enumerate(zip(batches, round_orders(names, len(batches)))):
        wall = {}
        for k in order:
            res, wall[k] = solve(k, states)
            per_state[k] += [dict(sample=int(i), energy=float(res.energy[j]), vortices=int(res.vortices[j]),
                                  converged=bool(res.converged[j]), stored=bool(res.converged[j] and not res.touches_edge[j]),
                                  iterations=int(np.sum(res.start_steps[j])))
                             for j, i in enumerate(states)]
        rows.append(dict(states=states.tolist(), order=order, wall_s=wall, load_avg=os.getloadavg()[0]))
        print(f"batch {b + 1}/{len(batches)}: " + "  ".join(f"{k} {wall[k]:.1f} s" for k in names), flush=True)

    ref = per_state["fine"]
    summary = {}
    for k in names:
        walls = np.array([r["wall_s"][k] for r in rows])
        de = np.array([(s["energy"] - f["energy"]) / abs(f["energy"]) for s, f in zip(per_state[k], ref)])
        summary[k] = dict(
            n_starts=solvers[k][1], coarsen=solvers[k][0].coarsen, compile_and_first_batch_s=compile_s[k],
            s_per_state=float(walls.sum() / args.states),
            median_ratio_to_fine=float(np.median([r["wall_s"][k] / r["wall_s"]["fine"] for r in rows])),
            extrapolated_minutes_1680=float(cfg.n_samples * walls.sum() / args.states / 60),
            max_relative_energy_above_fine=float(de.max()), min_relative_energy_below_fine=float(de.min()),
            higher_than_1e_5=int(np.sum(de > 1e-5)), lower_than_minus_1e_5=int(np.sum(de < -1e-5)),
            vortex_counts_changed=int(sum(s["vortices"] != f["vortices"] for s, f in zip(per_state[k], ref))),
            stored=int(sum(s["stored"] for s in per_state[k])),
            mean_iterations_per_state=float(np.mean([s["iterations"] for s in per_state[k]])))
        print(f"{k:9s} {summary[k]['s_per_state']:.2f} s/state  ×{summary[k]['median_ratio_to_fine']:.3f} of fine  "
              f"1,680 states ≈ {summary[k]['extrapolated_minutes_1680']:.1f} min  ΔE/E max {de.max():+.1e} "
              f"min {de.min():+.1e}  vortices changed {summary[k]['vortex_counts_changed']}", flush=True)
    write_result(args.out, dict(
        benchmark="dataset_time", argv=sys.argv[1:] if argv is None else list(argv),
        settings=dict(preset="paper", devices=len(jax.devices()), n=cfg.n, length=grid.length, coarse_n=cfg.n // cfg.resolved_coarsen, states=args.states,
                      batch=args.batch, subset_seed=args.subset_seed, total_states=cfg.n_samples,
                      max_iter=cfg.max_iter, dtype=str(np.dtype(jax.numpy.zeros(()).dtype))),
        load_avg=dict(start=load0, end=os.getloadavg()[0]), summary=summary, batches=rows, states=per_state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
