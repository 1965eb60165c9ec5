"""Where one PCG iteration of ``ground_state`` spends its time on XLA:CPU: per-kind totals of XLA thunks.

Runs ``make_pcg``'s step (rotating preconditioner, the default) vmapped over a
batch of copies of one state for a fixed number of iterations, once under
``jax.profiler``, and sums the durations of the executed XLA operations by
kind (``fft``, ``transpose_copy_fusion`` = layout changes around FFTs along
axis −2, ``wrapped_reduce-window`` / ``ynn_fusion`` = reductions such as the
inner products, …). Nested "Transpose…" events of copy ops are left out so
that nothing is counted twice. Writes JSON and a markdown table.

    python benchmarks/pcg_profile.py      # -> benchmarks/results/pcg_profile.{json,md}
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import bec_jax as bj
from bec_jax.gpe.minimize import make_pcg
from bec_jax.gpe.splitstep import check_parameters

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BOOKKEEPING, op_kind_totals, write_result  # noqa: E402
from report import pcg_profile, write_tables  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--g", type=float, default=500.0)
    p.add_argument("--omega", type=float, default=0.85)
    p.add_argument("--iters", type=int, default=50, help="PCG iterations per call")
    p.add_argument("--repeats", type=int, default=5, help="timed calls (wall time), then one profiled call")
    p.add_argument("--out", default="benchmarks/results/pcg_profile.json")
    args = p.parse_args()
    if args.iters < 1 or args.repeats < 1 or args.batch < 1:
        p.error(f"--iters, --repeats and --batch must be >= 1, got {args.iters}, {args.repeats}, {args.batch}")
    try:
        check_parameters(args.g, args.omega)
        grid = bj.Grid(args.n, float(bj.box_length(args.g, args.omega)))
    except ValueError as e:
        p.error(str(e))
    X, Y = grid.mesh()
    psi = bj.normalize(grid, jnp.asarray(np.exp(-(X**2 + Y**2) / 20) * np.exp(0.3j * X), jnp.complex64))
    psi = jnp.broadcast_to(psi, (args.batch, args.n, args.n))
    init, step = make_pcg(grid, args.g, args.omega)

    @jax.jit
    def run(p):
        return jax.vmap(lambda q: jax.lax.fori_loop(0, args.iters, lambda i, c: step(c), init(q))["psi"])(p)

    call = lambda: jax.block_until_ready(run(psi))
    call()
    ts = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t0)
    wall = 1e3 * float(np.median(ts)) / args.iters
    kinds, counts = op_kind_totals(call, 1, skip=BOOKKEEPING + ("Transpose", "while"))
    kinds = {k: v / args.iters for k, v in kinds.items()}
    total = sum(kinds.values())
    rows = [dict(kind=k, ms_per_iter=v, share=v / total, ops_per_iter=counts[k] / args.iters)
            for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])]
    write_result(args.out, dict(benchmark="pcg_profile", n=args.n, batch=args.batch, g=args.g, omega=args.omega,
                                iters=args.iters, wall_ms_per_iter=wall, ops_total_ms_per_iter=total, kinds=rows,
                                loadavg_1_5_15=os.getloadavg()))
    write_tables(args.out, pcg_profile)


if __name__ == "__main__":
    main()
