"""Dataset generation throughput (states/s) at the quick and paper presets.

quick: the whole preset (240 states, 64²) through `bec_jax.data.generate`,
wall time including compilation and HDF5 writes.
paper: the paper preset's grid and solver (200², 4 starts) on the first
--paper-states samples, batch = --paper-states (CPU cannot do 1,680 states in a
benchmark's time). Both are single runs, compilation included (seconds
against minutes).

    python benchmarks/generation_throughput.py --out benchmarks/results/generation_throughput.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time


import bec_jax.data as bd
from common import write_result


def time_generate(config, repeat_compiled: bool) -> dict:
    with tempfile.TemporaryDirectory() as d:
        runs = []
        for r in range(2 if repeat_compiled else 1):
            path = os.path.join(d, f"run{r}.h5")
            t0 = time.perf_counter()
            summary = bd.generate(config, path, progress=False)
            runs.append(time.perf_counter() - t0)
    wall = runs[-1]
    return dict(states=config.n_samples, wall_s=wall, wall_s_first_run=runs[0], states_per_s=config.n_samples / wall,
                stored=summary["n_samples"], failed=summary["n_failed"], n=config.n, batch_size=config.batch_size,
                n_starts=config.n_starts, method=config.method)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/generation_throughput.json")
    ap.add_argument("--paper-states", type=int, default=8)
    args = ap.parse_args()
    quick = bd.PRESETS["quick"]
    paper = dataclasses.replace(bd.PRESETS["paper"], n_groups=max(1, args.paper_states // 4),
                                batch_size=args.paper_states)
    rows = dict(quick=time_generate(quick, repeat_compiled=False), paper_subset=time_generate(paper, False))
    for k, r in rows.items():
        print(f"{k:13s} {r['states']:5d} states at {r['n']}²: {r['wall_s']:.1f} s  {r['states_per_s']:.2f} states/s "
              f"({r['stored']} stored, {r['failed']} failed)", flush=True)
    hours = 1680 / rows["paper_subset"]["states_per_s"] / 3600
    print(f"paper preset (1,680 states) at this rate: {hours:.2f} h")
    write_result(args.out, dict(benchmark="generation_throughput", rows=rows, paper_full_estimate_hours=hours))


if __name__ == "__main__":
    main()
