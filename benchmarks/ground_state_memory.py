"""Peak host memory of `bj.ground_state` on XLA:CPU against the number of starts: the measurement behind
the memory estimate in `ground_state` (state-sized arrays held per start).

Each case runs in its own process (peak RSS is per process); a process with one state and one start gives
the baseline (interpreter, JAX, compiled program) that is subtracted.

    python benchmarks/ground_state_memory.py --out benchmarks/results/ground_state_memory.json
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

CASES = [(128, 1), (128, 4), (128, 16), (256, 1), (256, 16)]  # (n, states); 4 starts each


def measure(n: int, states: int) -> float:
    """Peak RSS in bytes of one ground_state call (run in this process)."""
    import jax

    import bec_jax as bj
    import bec_jax.gpe.sharding as sharding

    sharding.available_memory = lambda backend=None: None  # measure, do not refuse
    res = bj.ground_state(bj.Grid(n, 16.0), [10.0] * states, 0.3, key=jax.random.key(0), max_iter=5,
                          warmup_steps=2, n_starts=4 if states > 1 else 1)
    jax.block_until_ready(res.psi)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/ground_state_memory.json")
    p.add_argument("--cases", default=",".join(f"{n}:{s}" for n, s in CASES),
                   help="n:states,... (each n needs its one-state baseline, n:1)")
    p.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(measure(*args.one))
        return 0
    try:
        cases = [tuple(int(v) for v in c.split(":")) for c in args.cases.split(",")]
        if any(len(c) != 2 or min(c) < 1 for c in cases) or any((n, 1) not in cases for n, _ in cases):
            raise ValueError
    except ValueError:
        p.error(f"--cases must be n:states pairs >= 1, with n:1 for every n, got {args.cases!r}")
    rows = []
    for n, states in cases:
        r = subprocess.run([sys.executable, __file__, "--one", str(n), str(states)], capture_output=True, text=True,
                           check=True)
        rows.append(dict(n=n, states=states, starts=states * 4 if states > 1 else 1,
                         peak_rss_bytes=float(r.stdout.split()[-1])))
    for row in rows:
        base = next(b for b in rows if b["n"] == row["n"] and b["states"] == 1)
        if row is not base:
            extra = row["starts"] - base["starts"]
            row["state_arrays_per_start"] = (row["peak_rss_bytes"] - base["peak_rss_bytes"]) / (extra * row["n"] ** 2 * 8)
        print(f"n={row['n']} starts={row['starts']:3d}: peak {row['peak_rss_bytes'] / 2**30:.2f} GiB"
              + (f", {row['state_arrays_per_start']:.0f} state arrays per extra start"
                 if "state_arrays_per_start" in row else " (baseline)"))
    from common import write_result
    write_result(args.out, dict(benchmark="ground_state_memory", rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
