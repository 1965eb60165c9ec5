"""Seeding rules on paper-preset states: energy, vortex count and ground_state time, previous vs current.

The states are the first --batches × --batch groups of ``PRESETS["paper"]`` (one state per group: its first
sample, the key the data generator gives it), on the preset's grid (n = 200, its box), float32 and the
solver's defaults (PCG, 4 starts). Each batch is solved twice by ``ground_state`` with its starts given as
``psi0`` (B, 4, n, n), so both rules run the same compiled program:

  * previous: the seeds before this change (counts N, N − d, N + d, N − 2d around 0.74ΩR² − 0.92R − 0.69,
    lattice patches around random points; ``experiments/start_count.py``'s "previous" rule);
  * current: ``groundstate.seeded_guesses`` as ``ground_state`` builds it by default.

One warm-up call compiles; then each batch runs both rules back to back, the order alternating per batch, so
load falls on both alike. Reported per state: energies, ΔE = E(current) − E(previous) (absolute, relative),
vortex counts, convergence, and ΔE of the best of the current rule's first two starts (an ``n_starts=2``
run) against the previous 4; per batch: wall time of each rule; over batches: median times and the median
of the per-batch ratios current / previous, and the iterations of all starts (a load-free cost).

    nice python benchmarks/seeding.py --out benchmarks/results/seeding.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

import bec_jax as bj
from bec_jax.data.generate import PRESETS, sample_keys, sample_parameters
from bec_jax.gpe.groundstate import seeded_guesses, start_keys
from common import write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from start_count import RULES  # noqa: E402

N_STARTS = 4


def batch_inputs(cfg, states: np.ndarray):
    """(g, omega, per-state typed keys) of the given sample indices, as ``generate`` solves them."""
    g, om, _, _ = sample_parameters(cfg)
    return g[states], om[states], sample_keys(cfg.seed, states)


def guesses(grid, g, om, keys, rule: str):
    """Starts (B, N_STARTS, n, n) of ``rule``; ``current`` is ``ground_state``'s own default seeding."""
    k = start_keys(keys, len(g), N_STARTS)
    if rule == "current":
        return seeded_guesses(grid, g, om, k)
    counts_of, centre = RULES[rule]
    counts = np.stack([counts_of(float(gi), float(oi), N_STARTS) for gi, oi in zip(g, om)])
    return seeded_guesses(grid, g, om, k, counts, centre)


def solve(grid, g, om, keys, psi0):
    t = time.perf_counter()
    res = jax.block_until_ready(bj.ground_state(grid, g, om, key=keys, psi0=psi0))
    return res, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=6, help="timed batches (>= 5 for a median; default 6)")
    ap.add_argument("--batch", type=int, default=2, help="states per batch (default 2)")
    ap.add_argument("--out", default="benchmarks/results/seeding.json")
    args = ap.parse_args(argv)
    if args.batches < 1 or args.batch < 1:
        ap.error(f"--batches and --batch must be >= 1, got {args.batches}, {args.batch}")
    bj.use_cpu_cores()
    cfg = PRESETS["paper"]
    grid = cfg.grid
    per_group = cfg.states_per_group
    load0 = os.getloadavg()
    rules = ("previous", "current")
    # warm-up: compile the one program both rules use
    g, om, keys = batch_inputs(cfg, np.arange(args.batch) * per_group)
    solve(grid, g, om, keys, guesses(grid, g, om, keys, "current"))
    states, batches = [], []
    for b in range(args.batches):
        idx = (b * args.batch + np.arange(args.batch)) * per_group
        g, om, keys = batch_inputs(cfg, idx)
        out, wall = {}, {}
        for rule in (rules if b % 2 == 0 else rules[::-1]):
            out[rule], wall[rule] = solve(grid, g, om, keys, guesses(grid, g, om, keys, rule))
        batches.append(dict(states=idx.tolist(), wall_s=wall, ratio=wall["current"] / wall["previous"],
                            iterations={r: int(np.sum(np.asarray(out[r].start_steps))) for r in rules}))
        for i in range(args.batch):
            e = {r: float(out[r].energy[i]) for r in rules}
            states.append(dict(
                sample=int(idx[i]), g=float(g[i]), omega=float(om[i]), energy=e,
                delta=e["current"] - e["previous"], relative_delta=(e["current"] - e["previous"]) / abs(e["previous"]),
                vortices={r: int(out[r].vortices[i]) for r in rules},
                converged={r: bool(out[r].converged[i]) for r in rules},
                start_vortices={r: np.asarray(out[r].start_vortices[i]).tolist() for r in rules},
                start_energies={r: np.asarray(out[r].start_energies[i], float).tolist() for r in rules}))
            # the first two starts are exactly those of an n_starts=2 run of the current rule
            s2 = min(states[-1]["start_energies"]["current"][:2])
            states[-1]["relative_delta_current_2_starts"] = (s2 - e["previous"]) / abs(e["previous"])
            s = states[-1]
            print(f"sample {s['sample']}: g={s['g']:.1f} Ω={s['omega']:.3f} E {e['previous']:.7f} -> {e['current']:.7f} "
                  f"(rel {s['relative_delta']:+.1e}) vortices {s['vortices']['previous']} -> {s['vortices']['current']}",
                  flush=True)
        print(f"batch {b}: {wall['previous']:.1f} s previous, {wall['current']:.1f} s current", flush=True)
    rel = np.array([s["relative_delta"] for s in states])
    summary = dict(
        states=len(states),
        higher_than_1e_5=int(np.sum(rel > 1e-5)), lower_than_minus_1e_5=int(np.sum(rel < -1e-5)),
        max_relative_delta=float(rel.max()), min_relative_delta=float(rel.min()),
        vortices_changed=int(sum(s["vortices"]["previous"] != s["vortices"]["current"] for s in states)),
        current_2_starts_higher_than_1e_5=int(sum(s["relative_delta_current_2_starts"] > 1e-5 for s in states)),
        current_2_starts_max_relative_delta=float(max(s["relative_delta_current_2_starts"] for s in states)),
        all_converged={r: all(s["converged"][r] for s in states) for r in rules},
        median_wall_s={r: float(np.median([b["wall_s"][r] for b in batches])) for r in rules},
        median_ratio_current_over_previous=float(np.median([b["ratio"] for b in batches])),
        iterations={r: int(sum(b["iterations"][r] for b in batches)) for r in rules},
    )
    print(summary)
    write_result(args.out, dict(
        benchmark="seeding", argv=sys.argv[1:] if argv is None else list(argv),
        settings=dict(preset="paper", n=grid.n, length=grid.length, batches=args.batches, batch=args.batch,
                      n_starts=N_STARTS, dtype="float32"),
        summary=summary, batches=batches, per_state=states, load_average=[list(load0), list(os.getloadavg())]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
