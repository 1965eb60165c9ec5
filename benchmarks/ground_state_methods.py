"""Ground-state methods head to head: PCG vs imaginary time, to the same residual.

For each case (g, Ω, n), in float64, the seeded starts of ``ground_state`` (same
keys, --starts of them) are relaxed one at a time by

* pcg: ``warmup_steps`` = 200 split steps, then PCG with the rotating-frame
  preconditioner (what ``ground_state(method="pcg", preconditioner="rotating")``
  runs per start);
* pcg_kinetic: the same with ALT's lab-frame kinetic preconditioner (ablation);
* imaginary_time: the split-step dt schedule of ``ground_state(method="imaginary_time")``
  (dt = --dt, halved down to --dt-min whenever E stalls), capped at --it-max-steps.

Each run stops when its residual ‖Hψ − μψ‖ ≤ --tol or at its cap, and records
residual, energy, FFT passes and wall time (compiled; chunks of iterations, so
times have chunk granularity) along the way: passes and seconds to FIRST reach
each tolerance of --report-tols come from one run. The cost unit is the 1-D FFT
pass of length n (n FFTs of length n; a 2-D FFT is 2 passes): a split step is 4,
a convergence check 6 (energy 2 + residual 4), a CG iteration 4 (H ψ) + 6
(rotating preconditioner; kinetic: 4) + 2 (quadratic form), plus 4 for the
first gradient. The same per-state numbers are a Hamiltonian-application count
when divided by 4 (one H application = 4 passes).

Per method the winner is the start with the lowest final energy, as in
``ground_state``; a start "reaches the lowest state" when its final energy is
within --basin-rtol (relative) of the lowest final energy of all methods. The
comparison at a common residual: for each tolerance both winners reached,
passes(imaginary time) / passes(pcg); when imaginary time reaches none of
them, the comparison is made at the best residual it did reach. Also reported:
``ground_state(method="pcg")`` itself on all starts (one batched call, compiled).

    python benchmarks/ground_state_methods.py                       # all cases, imaginary time ≤ 1e5 steps/start
    python benchmarks/ground_state_methods.py --cases 500:0.85:128 --it-max-steps 1000000 \\
        --out benchmarks/results/ground_state_methods_long.json     # imaginary time ≤ 1e6 steps/start
    python benchmarks/ground_state_methods.py --quick
"""

from __future__ import annotations

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bec_jax as bj  # noqa: E402
from bec_jax.gpe.groundstate import ImaginaryTime, make_imaginary_time, seeded_guesses, start_keys  # noqa: E402
from bec_jax.gpe.hamiltonian import density  # noqa: E402
from bec_jax.gpe.minimize import PRECONDITIONER_PASSES, make_pcg  # noqa: E402
from bec_jax.gpe.splitstep import evolve  # noqa: E402
from common import write_result  # noqa: E402

CASES = [(100.0, 0.8), (500.0, 0.6), (500.0, 0.85)]
WARMUP, DT_WARMUP, CHECK_EVERY = 200, 0.05, 200


def _chunked(step, observe, carry, *, chunk: int, cap: int, tol: float, done_at: int = 0):
    """Advance ``carry`` by compiled chunks of ``chunk`` steps until observe's
    residual ≤ tol or ``cap`` steps; returns (carry, residuals, energies, seconds after each step)."""

    def body(c, _):
        c = step(c)
        return c, observe(c)

    run = jax.jit(lambda c: jax.lax.scan(body, c, None, length=chunk)).lower(carry).compile()
    res, ens, wall, t, steps = [], [], [], 0.0, done_at
    while steps < cap:
        t0 = time.perf_counter()
        carry, (r, e) = jax.block_until_ready(run(carry))
        dt = time.perf_counter() - t0
        res += np.asarray(r).tolist()
        ens += np.asarray(e).tolist()
        wall += [t + dt * (i + 1) / chunk for i in range(chunk)]  # uniform within a chunk
        t += dt
        steps += chunk
        if min(res) <= tol or not np.isfinite(res[-1]):
            break
    return carry, np.array(res), np.array(ens), np.array(wall)


def trace_pcg(grid, g, omega, psi0, args, preconditioner: str, warmup: int = WARMUP) -> dict:
    """One start: warm-up split steps, then PCG iterations; residual/energy/passes/seconds per iteration
    (and the final psi)."""
    warm = jax.jit(lambda p: evolve(grid, p, g, omega, DT_WARMUP, warmup, True)).lower(psi0).compile()
    init, step = make_pcg(grid, g, omega, preconditioner=preconditioner)
    init = jax.jit(init).lower(psi0).compile()
    t0 = time.perf_counter()
    c = jax.block_until_ready(init(warm(psi0)))
    t_start = time.perf_counter() - t0

    def observe(c):
        rho = density(c["psi"])
        return c["res"], c["lam"] - 0.5 * g * jnp.sum(rho * rho) * grid.cell_area

    c, r, e, w = _chunked(step, observe, c, chunk=25, cap=args.max_iter, tol=args.tol)
    it = np.arange(1, len(r) + 1)
    per_iter = 4 + PRECONDITIONER_PASSES[preconditioner] + 2
    return dict(iterations=it, residual=r, energy=e, passes=4 * warmup + 4 + per_iter * it, wall=t_start + w,
                psi=c["psi"])


def trace_imaginary_time(grid, g, omega, psi0, args) -> dict:
    """One start: the dt schedule of ground_state(method="imaginary_time"); one record per check."""
    s = ImaginaryTime(dt=args.dt, dt_min=args.dt_min, check_every=CHECK_EVERY, max_steps=args.it_max_steps,
                      tol_residual=args.tol, tol_energy=1e-12)
    init, check = make_imaginary_time(grid, g, omega, s)
    init = jax.jit(init).lower(psi0).compile()
    t0 = time.perf_counter()
    c = jax.block_until_ready(init(psi0))
    t_start = time.perf_counter() - t0
    chunk = 10
    _, r, e, w = _chunked(check, lambda c: (c["r"], c["e"]), c, chunk=chunk, cap=args.it_max_steps // CHECK_EVERY,
                          tol=args.tol)
    checks = np.arange(1, len(r) + 1)
    steps = CHECK_EVERY * checks
    return dict(iterations=steps, residual=r, energy=e, passes=6 + (4 * CHECK_EVERY + 6) * checks, wall=t_start + w)


def first_passage(tr: dict, tol: float):
    """(passes, seconds, energy, iterations) when the residual first reached tol, or None."""
    hit = np.flatnonzero(tr["residual"] <= tol)
    if hit.size == 0:
        return None
    i = hit[0]
    return dict(passes=int(tr["passes"][i]), wall_s=float(tr["wall"][i]), energy=float(tr["energy"][i]),
                iterations=int(tr["iterations"][i]))


def summarise(tr: dict, tols) -> dict:
    i_best = int(np.nanargmin(tr["residual"]))
    return dict(final_energy=float(tr["energy"][-1]), final_residual=float(tr["residual"][-1]),
                best_residual=float(tr["residual"][i_best]), passes_at_best_residual=int(tr["passes"][i_best]),
                wall_s_at_best_residual=float(tr["wall"][i_best]),
                iterations=int(tr["iterations"][-1]), passes=int(tr["passes"][-1]), wall_s=float(tr["wall"][-1]),
                to_tol={f"{t:g}": first_passage(tr, t) for t in tols})


def run_case(g, omega, n, args) -> dict:
    grid = bj.Grid(n, float(bj.box_length(g, omega)))
    load0 = os.getloadavg()[0]
    key = jax.random.key(args.seed)
    keys = start_keys(key, 1, args.starts)
    rdt = jnp.float64
    starts = seeded_guesses(grid, jnp.asarray([g], rdt), jnp.asarray([omega], rdt), keys)[0]
    tols = sorted({*args.report_tols, args.tol}, reverse=True)
    methods = {"pcg": lambda p: trace_pcg(grid, g, omega, p, args, "rotating"),
               "pcg_kinetic": lambda p: trace_pcg(grid, g, omega, p, args, "kinetic"),
               "imaginary_time": lambda p: trace_imaginary_time(grid, g, omega, p, args)}
    traces = {m: [] for m in methods}
    for m, f in methods.items():
        for s in range(args.starts):
            traces[m].append(f(starts[s]))
            tr = traces[m][-1]
            print(f"  {m:14s} start {s}: {tr['iterations'][-1]:7d} it  E={tr['energy'][-1]:.10f}  "
                  f"r={tr['residual'][-1]:.1e}  {tr['wall'][-1]:.1f}s", flush=True)
    out = dict(g=g, omega=omega, n=n, length=grid.length, tol=args.tol, load_avg_start=load0)
    e_low = min(float(tr["energy"][-1]) for trs in traces.values() for tr in trs)
    out["lowest_energy"] = e_low
    for m, trs in traces.items():
        per_start = [summarise(tr, tols) for tr in trs]
        e_fin = np.array([p["final_energy"] for p in per_start])
        win = int(np.argmin(e_fin))
        out[m] = dict(winner=win, per_start=per_start, fraction_starts_at_lowest=float(
            np.mean(np.abs(e_fin - e_low) <= args.basin_rtol * abs(e_low))), **per_start[win])
    p, k, it = (out[m] for m in ("pcg", "pcg_kinetic", "imaginary_time"))
    ratios = {}
    for t in map(lambda t: f"{t:g}", tols):
        a, b, c = p["to_tol"][t], it["to_tol"][t], k["to_tol"][t]
        ratios[t] = dict(it_over_pcg=None if a is None or b is None else b["passes"] / a["passes"],
                         kinetic_over_rotating=None if a is None or c is None else c["passes"] / a["passes"])
    out["passes_ratio"] = ratios
    # Common residual when imaginary time reached no reported tolerance: its own best.
    r_it = it["best_residual"]
    tr_p = traces["pcg"][p["winner"]]
    at = first_passage(tr_p, r_it)
    out["at_imaginary_time_best_residual"] = dict(
        residual=r_it, imaginary_time_passes=it["passes_at_best_residual"],
        imaginary_time_energy=float(traces["imaginary_time"][it["winner"]]["energy"][
            int(np.nanargmin(traces["imaginary_time"][it["winner"]]["residual"]))]),
        pcg=at, it_over_pcg=None if at is None else it["passes_at_best_residual"] / at["passes"])
    # What a user gets: ground_state(method="pcg") on all starts at once, compiled.
    kw = dict(key=key, n_starts=args.starts, tol_residual=args.tol, tol_energy=1e-12, max_iter=args.max_iter,
              preconditioner="rotating")
    jax.block_until_ready(bj.ground_state(grid, g, omega, **kw))
    t0 = time.perf_counter()
    res = jax.block_until_ready(bj.ground_state(grid, g, omega, **kw))
    out["ground_state_pcg"] = dict(wall_s=time.perf_counter() - t0, steps=int(res.steps), energy=float(res.energy),
                                   residual=float(res.residual), converged=bool(res.converged),
                                   vortices=int(res.vortices))
    out["load_avg_end"] = os.getloadavg()[0]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/ground_state_methods.json")
    ap.add_argument("--sizes", default="128,200")
    ap.add_argument("--cases", default=None, help="g:omega:n,... (overrides the default cases and --sizes)")
    ap.add_argument("--starts", type=int, default=4)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--report-tols", type=lambda s: [float(v) for v in s.split(",")], default=[1e-3, 1e-4, 1e-5])
    ap.add_argument("--basin-rtol", type=float, default=1e-5, help="'reaches the lowest state' within this")
    ap.add_argument("--max-iter", type=int, default=5000, help="PCG cap per start")
    ap.add_argument("--it-max-steps", type=int, default=100_000, help="imaginary-time cap per start")
    ap.add_argument("--dt", type=float, default=0.05)
    ap.add_argument("--dt-min", type=float, default=2.5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="g=100, Ω=0.8 at n=64, imaginary time ≤ 20,000 steps")
    args = ap.parse_args()
    if args.quick:
        cases, args.it_max_steps = [(100.0, 0.8, 64)], 20_000
    elif args.cases:
        cases = [tuple(float(v) for v in c.split(":")) for c in args.cases.split(",")]
        cases = [(g, o, int(n)) for g, o, n in cases]
    else:
        cases = [(g, o, n) for n in map(int, args.sizes.split(",")) for g, o in CASES]
    rows = []
    for g, o, n in cases:
        print(f"g={g:.0f} Ω={o} n={n}", flush=True)
        row = run_case(g, o, n, args)
        rows.append(row)
        p, it = row["pcg"], row["imaginary_time"]
        print("  passes to tol (winners): " + "  ".join(
            f"{t}: pcg {(p['to_tol'][t] or {}).get('passes')} imag {(it['to_tol'][t] or {}).get('passes')}"
            for t in p["to_tol"]), flush=True)
        write_result(args.out, dict(benchmark="ground_state_methods", dtype="complex128", settings=vars(args),
                                    rows=rows))


if __name__ == "__main__":
    main()
