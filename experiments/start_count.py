"""Start-count study: ground-state energy and vortex count against the number of starts, at fast rotation.

For each (g, Ω), each seeding rule and each of --seeds keys, the 16 seeded starts that
``bj.ground_state(..., n_starts=16)`` would relax (``groundstate.seeded_guesses``; the first k starts are
exactly the starts of an ``n_starts=k`` run) are relaxed one by one, each as its own state
(``ground_state(psi0=...)``: warm-up, PCG, polish, float32 and its default tolerances, as the data generator
runs). The rules differ in the vortex counts they seed and in the lattice centres (same keys, so the same
orientations, jitter and noise):

  * current: ``groundstate.start_vortex_numbers`` (the rim estimate; the integers nearest it first), each
    count's lattice patch around its most compact high-symmetry centre (``groundstate.compact_centre``);
  * previous: the rule before it, 0.74ΩR² − 0.92R − 0.69 spread as N, N − d, N + d, ... with d = max(1, N/5),
    each patch around a random point of the unit cell.

The result of k starts is the lowest-energy start among the first k, as ``ground_state`` picks it. Per rule
and k ∈ {1, 2, 4, 8, 16} the study reports over the seeds:

  * how often the k-start winner reaches the lowest state (energy within --basin-rtol of the lowest energy
    any start of any rule and seed of that (g, Ω) found),
  * the fraction of the k starts that reach it (the floor asks >= 0.5 at the default k = 4),
  * the winner's energy above that lowest energy (mean and max), and its vortex count,
  * the cost: PCG + warm-up iterations of the k starts.

and recommends per rule the smallest k whose winner reached the lowest state for every seed of every
(g, Ω) (none when even 16 did not). The lowest state found is only the lowest of all these starts. Every
(g, Ω, rule, seed) is saved when done (--out/units/): a killed run, started again, resumes there.

    nice python experiments/start_count.py --seeds 8       # ~10 min on 2 cores -> results/start_count/
    nice python experiments/start_count.py --n 200 --g 500 --seeds 8 --out experiments/results/start_count_n200
    python experiments/start_count.py --quick              # n = 64, 2 seeds: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

import bec_jax as bj
from bec_jax.gpe.groundstate import seeded_guesses, start_keys, start_vortex_numbers

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling script, also when loaded by the tests
from _units import Units  # noqa: E402
from vortex_count_estimate import previous_estimate  # noqa: E402

KS = (1, 2, 4, 8, 16)


def previous_counts(g: float, omega: float, n_starts: int) -> np.ndarray:
    """The counts the previous rule seeded: N, N − d, N + d, N − 2d, ... with d = max(1, N/5), clipped at 0."""
    est = float(previous_estimate(g, omega))
    offsets = np.array([0] + [s * k for k in range(1, n_starts) for s in (-1, 1)])[:n_starts]
    return np.maximum(np.round(est + offsets * max(1.0, 0.2 * est)), 0).astype(np.int32)


#: rule -> (counts of the n_starts starts, lattice centre of ``initial_guess``)
RULES = {
    "previous": (previous_counts, "random"),
    "current": (lambda g, omega, n_starts: np.asarray(start_vortex_numbers(g, omega, n_starts)), None),
}


def relax_starts(n: int, g: float, omega: float, seed: int, rule: str, n_starts: int = max(KS),
                 coarsen: int = 1) -> dict:
    """The ``n_starts`` seeded starts of one (g, Ω), rule and key, each relaxed alone (``PCG(coarsen=...)``):
    per-start seeded count, energy, vortex count, residual, converged, iterations (lists in start order), and
    the grid side."""
    grid = bj.Grid(n, float(bj.box_length(g, omega)))
    gs, oms = np.full(1, g), np.full(1, omega)
    counts_of, centre = RULES[rule]
    counts = counts_of(g, omega, n_starts)
    guesses = seeded_guesses(grid, gs, oms, start_keys(jax.random.key(seed), 1, n_starts), counts[None], centre)[0]
    res = jax.block_until_ready(bj.ground_state(grid, np.full(n_starts, g), np.full(n_starts, omega),
                                                key=jax.random.key(seed), psi0=guesses, coarsen=coarsen))
    return dict(length=grid.length, seeded=counts.tolist(), energy=np.asarray(res.energy, float).tolist(),
                vortices=np.asarray(res.vortices).tolist(), residual=np.asarray(res.residual, float).tolist(),
                converged=np.asarray(res.converged).tolist(), steps=np.asarray(res.steps).tolist(),
                touches_edge=np.asarray(res.touches_edge).tolist())


def best_of(run: dict, k: int) -> int:
    """Index of the start ``ground_state(n_starts=k)`` would pick: the lowest finite energy among the first k."""
    e = np.asarray(run["energy"][:k], float)
    return int(np.argmin(np.where(np.isfinite(e), e, np.inf)))


def summarise(case: dict, rtol: float) -> dict:
    """Per rule and k: fraction of seeds whose winner is at the lowest state, fraction of starts at it, energy
    excess of the winner, vortex counts, cost. The lowest state is the lowest of every rule's starts."""
    every = [r for runs in case["runs"].values() for r in runs]
    e_low = min(min(e for e in r["energy"] if np.isfinite(e)) for r in every)
    at = lambda e: e <= e_low + rtol * abs(e_low)
    low_vortices = sorted({r["vortices"][i] for r in every for i, e in enumerate(r["energy"]) if at(e)})
    rules = {}
    for rule, runs in case["runs"].items():
        per_k = {}
        for k in KS:
            win = [best_of(r, k) for r in runs]
            excess = np.array([r["energy"][i] - e_low for r, i in zip(runs, win)])
            per_k[k] = dict(
                fraction_at_lowest=float(np.mean(excess <= rtol * abs(e_low))),
                fraction_starts_at_lowest=float(np.mean([at(e) for r in runs for e in r["energy"][:k]])),
                mean_excess=float(np.mean(excess)), max_excess=float(np.max(excess)),
                vortices=[r["vortices"][i] for r, i in zip(runs, win)],
                mean_iterations=float(np.mean([sum(r["steps"][:k]) for r in runs])),
            )
        rules[rule] = dict(seeded=runs[0]["seeded"], per_k=per_k)
    return dict(lowest_energy=e_low, lowest_vortices=low_vortices, rules=rules)


def recommend(cases: list, rule: str) -> int | None:
    """Smallest k whose winner reached the lowest state for every seed of every case; None if no k did."""
    return next((k for k in KS if all(c["summary"]["rules"][rule]["per_k"][k]["fraction_at_lowest"] == 1.0
                                      for c in cases)), None)


def markdown(result: dict) -> str:
    s = result["settings"]
    out = ["# Start-count study", "",
           f"`python experiments/start_count.py {' '.join(result['argv'])}` — {s['n']}²"
           + (f" (each start relaxed on {s['n'] // s['coarsen']}² first)" if s.get("coarsen", 1) > 1 else "")
           + f", float32, default tolerances, "
           f"{s['seeds']} seeds × 16 starts per (g, Ω) and rule, lowest state = within {s['basin_rtol']:g} (relative) of "
           f"the lowest energy of all {16 * s['seeds'] * len(s['rules'])} starts; {result['wall_s'] / 60:.1f} min, "
           f"load average {result['load_average_start'][0]:.1f} → {result['load_average_end'][0]:.1f}.", "",
           "| g | Ω | L | lowest E | its vortices | rule | seeded counts (first 8) | k | winner at lowest (fraction "
           "of seeds) | starts at lowest (fraction) | mean E − lowest | max E − lowest | winner vortices per seed "
           "| iterations of the k starts |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in result["cases"]:
        sm = c["summary"]
        for i, (rule, rs) in enumerate(sm["rules"].items()):
            for j, k in enumerate(KS):
                p = rs["per_k"][k]
                head = (f"| {c['g']:g} | {c['omega']:g} | {c['length']:.1f} | {sm['lowest_energy']:.6f} | "
                        f"{', '.join(map(str, sm['lowest_vortices']))} |" if i == j == 0 else "| | | | | |")
                head += f" {rule} | {', '.join(map(str, rs['seeded'][:8]))} |" if j == 0 else " | |"
                out.append(f"{head} {k} | {p['fraction_at_lowest']:.2f} | {p['fraction_starts_at_lowest']:.2f} | "
                           f"{p['mean_excess']:.1e} | {p['max_excess']:.1e} | {', '.join(map(str, p['vortices']))} | "
                           f"{p['mean_iterations']:,.0f} |")
    out.append("")
    for rule, rec in result["recommended_n_starts"].items():
        out.append(f"Rule {rule}: smallest number of starts whose winner reached the lowest state for every seed of "
                   f"every (g, Ω): **{rec if rec is not None else 'none of ' + str(KS)}**.")
    return "\n".join(out) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    styles = {"previous": ("s--", 0.6), "current": ("o-", 1.0)}
    for ci, c in enumerate(result["cases"]):
        color = f"C{ci}"
        for rule, rs in c["summary"]["rules"].items():
            mk, alpha = styles.get(rule, ("^:", 1.0))
            lab = f"g = {c['g']:g}, Ω = {c['omega']:g}, {rule}"
            kw = dict(color=color, alpha=alpha, label=lab)
            ax[0].plot(KS, [rs["per_k"][k]["fraction_at_lowest"] for k in KS], mk, **kw)
            ax[1].plot(KS, [rs["per_k"][k]["fraction_starts_at_lowest"] for k in KS], mk, **kw)
            ax[2].plot(KS, [max(rs["per_k"][k]["mean_excess"], 1e-7) for k in KS], mk, **kw)
    ax[0].set(xscale="log", xticks=KS, xticklabels=KS, ylim=(-0.05, 1.05), xlabel="starts",
              ylabel="fraction of seeds", title="winner reaches the lowest state")
    ax[1].axhline(0.5, color="k", lw=0.8, ls=":")
    ax[1].set(xscale="log", xticks=KS, xticklabels=KS, ylim=(-0.05, 1.05), xlabel="starts",
              ylabel="fraction of the first k starts", title="starts that reach the lowest state")
    ax[2].set(xscale="log", yscale="log", xticks=KS, xticklabels=KS, xlabel="starts",
              ylabel="mean E(winner) − lowest E (floor 1e-7)", title="energy above the lowest found")
    for a in ax:
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    st = result["settings"]
    coarse = f", starts on {st['n'] // st['coarsen']}² first" if st.get("coarsen", 1) > 1 else ""
    fig.suptitle(f"Start-count study ({st['n']}²{coarse}, float32, {st['seeds']} seeds × 16 starts per rule)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128, help="grid points per side (default 128)")
    ap.add_argument("--g", default="100,500", help="interactions (default 100,500)")
    ap.add_argument("--omega", default="0.85", help="rotation rates, >= 0.8 for this study (default 0.85)")
    ap.add_argument("--seeds", type=int, default=4, help="keys per (g, Ω), 16 starts each (default 4)")
    ap.add_argument("--basin-rtol", type=float, default=1e-5, help="'reaches the lowest state' within this")
    ap.add_argument("--rules", default="previous,current", help=f"seeding rules of {sorted(RULES)} (default both)")
    ap.add_argument("--coarsen", type=int, default=1,
                    help="relax each start on n/coarsen points first (PCG.coarsen; default 1: n only)")
    ap.add_argument("--quick", action="store_true", help="n = 64, 2 seeds, g = 100: a smoke run")
    ap.add_argument("--out", default=None, help="output folder (default experiments/results/start_count[_quick])")
    args = ap.parse_args(argv)
    bj.use_cpu_cores()
    if args.quick:
        args.n, args.seeds, args.g = 64, 2, "100"
    gs, oms = [float(v) for v in args.g.split(",")], [float(v) for v in args.omega.split(",")]
    rules = args.rules.split(",")
    if args.seeds < 1 or not all(0.8 <= o < 1 for o in oms) or not all(g >= 0 for g in gs):
        ap.error(f"--seeds must be >= 1, every omega in [0.8, 1) and g >= 0; got {args.seeds}, {oms}, {gs}")
    if not rules or not set(rules) <= set(RULES):
        ap.error(f"--rules must name rules of {sorted(RULES)}, got {args.rules!r}")
    out = Path(args.out or f"experiments/results/start_count{'_quick' if args.quick else ''}")
    out.mkdir(parents=True, exist_ok=True)
    t0, load0 = time.perf_counter(), os.getloadavg()
    units = Units(out / "units", dict(n=args.n, coarsen=args.coarsen))
    cases = []
    for g in gs:
        for om in oms:
            runs = {rule: [] for rule in rules}
            for seed in range(args.seeds):
                for rule in rules:
                    ts = time.perf_counter()
                    runs[rule].append(r := units(f"g{g!r}_omega{om!r}_{rule}_seed{seed}", lambda: relax_starts(
                        args.n, g, om, seed, rule, coarsen=args.coarsen)))
                    print(f"g={g:g} Ω={om:g} {rule} seed {seed}: seeded {r['seeded']} E "
                          f"{np.round(r['energy'], 6).tolist()} vortices {r['vortices']} "
                          f"({time.perf_counter() - ts:.0f} s)", flush=True)
            case = dict(g=g, omega=om, length=runs[rules[0]][0]["length"], runs=runs)
            case["summary"] = summarise(case, args.basin_rtol)
            cases.append(case)
    result = dict(argv=sys.argv[1:] if argv is None else list(argv),
                  settings=dict(n=args.n, coarsen=args.coarsen, seeds=args.seeds, basin_rtol=args.basin_rtol, ks=list(KS), dtype="float32",
                                rules=rules),
                  cases=cases, recommended_n_starts={rule: recommend(cases, rule) for rule in rules},
                  wall_s=time.perf_counter() - t0, resumed_runs=units.resumed,
                  load_average_start=list(load0), load_average_end=list(os.getloadavg()),
                  jax_version=jax.__version__, devices=jax.local_device_count())
    (out / "start_count.json").write_text(json.dumps(result, indent=1))
    (out / "start_count.md").write_text(markdown(result))
    plot(result, out / "start_count.png")
    units.finish()
    print(markdown(result))
    print(f"wrote {out}/start_count.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
