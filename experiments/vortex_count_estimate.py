"""Vortex count of the ground state against its estimate, over a (g, Ω) grid.

For each (g, Ω) the script relaxes seeded starts (``groundstate.seeded_guesses`` with explicit counts, each
lattice patch around a random point of the unit cell, so that no count is favoured by the patch's shape) over a
window of seeded vortex counts around the estimates, --keys keys per count, each start relaxed alone
(``ground_state(psi0=...)``: warm-up, PCG, polish; float32 and its default tolerances, the box of
``box_length``, --n points, as the paper preset generates). The "true" count is the vortex count of the
lowest-energy converged start (only the lowest found; the window spans the estimates ± 3).

Estimates compared (R = Thomas–Fermi radius of the softened trap, ``thomas_fermi``; a = √(2π/(√3Ω)) the
Feynman lattice spacing):

  * feynman: ΩR², Feynman's areal density Ω/π over the whole Thomas–Fermi disc;
  * previous: 0.74ΩR² − 0.92R − 0.69, the fit bec_jax seeded with before (16 states, g ≤ 240, Ω ≤ 0.8);
  * rim: Ω(R² − 2κaR) = ΩR² − 2κaΩR, Feynman's density over the disc less a vortex-free rim of width κa
    (to first order in κa/R); κ fitted by least squares on the g = 100 and g = 500 points and checked on the
    held-out g = 300 points. ``groundstate.vortex_number_estimate`` is this rule.

Each (g, Ω)'s solves are saved when done (--out/units/): a killed run, started again, resumes there.

    nice python experiments/vortex_count_estimate.py            # ~10 min on 2 cores -> results/vortex_count_estimate/
    python experiments/vortex_count_estimate.py --from-json     # refit and rewrite the tables from the stored runs
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
from bec_jax.gpe.groundstate import RIM_SPACINGS, seeded_guesses, start_keys, vortex_number_estimate

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling helper, also when loaded by the tests
from _units import Units  # noqa: E402

G = (100.0, 300.0, 500.0)
OMEGA = (0.6, 0.7, 0.8, 0.85, 0.9)
TRAIN_G = (100.0, 500.0)  # κ is fitted here; g = 300 is held out
OUT = Path("experiments/results/vortex_count_estimate")


def spacing(omega):
    """Feynman's triangular-lattice spacing a = √(2π/(√3Ω)) (areal density Ω/π): ``gpe.groundstate.lattice_spacing``
    in float64, for the fit."""
    return np.sqrt(2 * np.pi / (np.sqrt(3) * omega))


def previous_estimate(g, omega):
    """The rule bec_jax seeded with before this study (kept here only to compare against)."""
    _, R = bj.thomas_fermi(g, omega)
    return np.maximum(0.74 * omega * R**2 - 0.92 * R - 0.69, 0.0)


def rim_terms(g, omega):
    """(ΩR², 2aΩR): the rim rule is N = ΩR² − κ·2aΩR."""
    _, R = bj.thomas_fermi(g, omega)
    return omega * R**2, 2 * spacing(omega) * omega * R


def window(g, omega, half: int = 3) -> list[int]:
    """Seeded counts: every integer from min(estimates) − half to max(estimates) + half (at least 0), the
    estimates being the previous rule and the rim rule at a prior κ = 0.6 (fixed, so the window does not move
    with the fit)."""
    feyn, rim = rim_terms(g, omega)
    est = [float(previous_estimate(g, omega)), feyn - 0.6 * rim]
    lo, hi = int(np.floor(min(est))) - half, int(np.ceil(max(est))) + half
    return list(range(max(lo, 0), hi + 1))


def relax_window(n: int, g: float, omega: float, keys: int, seed: int) -> dict:
    """Every count of ``window`` seeded with ``keys`` keys, each start relaxed alone."""
    grid = bj.Grid(n, float(bj.box_length(g, omega)))
    counts = np.repeat(window(g, omega), keys)[None]
    ks = start_keys(jax.random.key(seed), 1, counts.shape[1])
    guesses = seeded_guesses(grid, np.full(1, g), np.full(1, omega), ks, counts, centre="random")[0]
    m = counts.shape[1]
    res = jax.block_until_ready(bj.ground_state(grid, np.full(m, g), np.full(m, omega), key=jax.random.key(seed),
                                                psi0=guesses))
    return dict(length=grid.length, seeded=counts[0].tolist(), energy=np.asarray(res.energy, float).tolist(),
                vortices=np.asarray(res.vortices).tolist(), converged=np.asarray(res.converged).tolist(),
                residual=np.asarray(res.residual, float).tolist(), steps=np.asarray(res.steps).tolist())


def truth(run: dict, rtol: float) -> dict:
    """Lowest converged energy, its vortex count(s), and the gap to the lowest state of another count."""
    e = np.where(run["converged"], run["energy"], np.inf)
    v = np.asarray(run["vortices"])
    i = int(np.argmin(e))
    at = e <= e[i] + rtol * abs(e[i])
    other = e[v != v[i]]
    return dict(energy=float(e[i]), vortices=int(v[i]), counts_at_lowest=sorted(set(v[at].tolist())),
                seeded_at_lowest=sorted(set(np.asarray(run["seeded"])[at].tolist())),
                gap_to_other_count=float(np.min(other) - e[i]) if other.size and np.isfinite(other).any() else None,
                at_window_edge=bool(v[i] <= min(run["seeded"]) or v[i] >= max(run["seeded"])))


def fit_kappa(cases: list) -> float:
    """Least-squares κ of N = ΩR² − κ·2aΩR on the training points."""
    tr = [c for c in cases if c["g"] in TRAIN_G]
    f, x = np.array([rim_terms(c["g"], c["omega"]) for c in tr]).T
    n = np.array([c["truth"]["vortices"] for c in tr], float)
    return float(np.sum(x * (f - n)) / np.sum(x * x))


def table(cases: list, kappa: float) -> tuple[list, dict]:
    rows, err = [], {k: {"train": [], "held_out": []} for k in ("feynman", "previous", "rim_fit", "bec_jax")}
    for c in cases:
        feyn, rim = rim_terms(c["g"], c["omega"])
        est = dict(feynman=feyn, previous=float(previous_estimate(c["g"], c["omega"])), rim_fit=feyn - kappa * rim,
                   bec_jax=float(vortex_number_estimate(c["g"], c["omega"])))
        split = "train" if c["g"] in TRAIN_G else "held_out"
        for k, v in est.items():
            err[k][split].append(v - c["truth"]["vortices"])
        rows.append(dict(g=c["g"], omega=c["omega"], split=split, true=c["truth"]["vortices"], **est))
    summary = {k: {s: dict(mean_abs=float(np.mean(np.abs(v))), max_abs=float(np.max(np.abs(v))),
                           mean=float(np.mean(v))) for s, v in d.items() if v} for k, d in err.items()}
    return rows, summary


def success_by_offset(cases: list, rtol: float) -> dict:
    """Fraction of starts seeded with N_true + d that end at the lowest state, per offset d (over all points):
    how far from the true count a seed may be and still land there."""
    hits: dict[int, list] = {}
    for c in cases:
        run, t = c["run"], c["truth"]
        e = np.where(run["converged"], run["energy"], np.inf)
        for seeded, ei in zip(run["seeded"], e):
            hits.setdefault(seeded - t["vortices"], []).append(bool(ei <= t["energy"] + rtol * abs(t["energy"])))
    return {d: dict(starts=len(h), fraction=float(np.mean(h))) for d, h in sorted(hits.items())}


def markdown(result: dict) -> str:
    s = result["settings"]
    out = ["# Vortex count of the ground state against its estimate", "",
           f"`{' '.join(['python experiments/vortex_count_estimate.py', *result['argv']])}` "
           f"— {s['n']}², float32, default "
           f"tolerances, every seeded count of the window × {s['keys']} keys relaxed alone; "
           f"{result['wall_s'] / 60:.1f} min, load average {result['load_average_start'][0]:.1f} → "
           f"{result['load_average_end'][0]:.1f}.", "",
           f"Rim rule N = ΩR² − κ·2aΩR, κ fitted on g ∈ {{{', '.join(f'{g:g}' for g in TRAIN_G)}}}: "
           f"**κ = {result['kappa']:.3f}** (a vortex-free rim {result['kappa']:.2f} lattice spacings wide); "
           f"`vortex_number_estimate` uses κ = {result['kappa_used']:g}.", "",
           "| g | Ω | set | true N | lowest E | gap to other N | seeded window | ΩR² | previous | rim fit | bec_jax |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c, r in zip(result["cases"], result["rows"]):
        t = c["truth"]
        gap = "—" if t["gap_to_other_count"] is None else f"{t['gap_to_other_count']:.1e}"
        edge = " (edge)" if t["at_window_edge"] else ""
        out.append(f"| {c['g']:g} | {c['omega']:g} | {r['split']} | {t['vortices']}{edge} | {t['energy']:.6f} | {gap} "
                   f"| {min(c['run']['seeded'])}–{max(c['run']['seeded'])} | {r['feynman']:.1f} | {r['previous']:.1f} "
                   f"| {r['rim_fit']:.1f} | {r['bec_jax']:.1f} |")
    out += ["", "Estimate − true count:", "", "| estimate | set | mean | mean abs | max abs |", "|---|---|---|---|---|"]
    for k, d in result["errors"].items():
        for split, e in d.items():
            out.append(f"| {k} | {split} | {e['mean']:+.2f} | {e['mean_abs']:.2f} | {e['max_abs']:.2f} |")
    out += ["", "Starts seeded with N_true + d vortices that end at the lowest state (all points):", "",
            "| d | " + " | ".join(f"{int(d):+d}" for d in result["success_by_offset"]) + " |",
            "|---|" + "---|" * len(result["success_by_offset"]),
            "| starts | " + " | ".join(str(v["starts"]) for v in result["success_by_offset"].values()) + " |",
            "| at lowest | " + " | ".join(f"{v['fraction']:.2f}" for v in result["success_by_offset"].values()) + " |"]
    return "\n".join(out) + "\n"


def finish(result: dict, out: Path) -> None:
    for c in result["cases"]:
        c["truth"] = truth(c["run"], result["settings"]["basin_rtol"])
    result["kappa"] = fit_kappa(result["cases"])
    result["kappa_used"] = float(RIM_SPACINGS)
    result["rows"], result["errors"] = table(result["cases"], result["kappa"])
    result["success_by_offset"] = success_by_offset(result["cases"], result["settings"]["basin_rtol"])
    (out / "vortex_count_estimate.json").write_text(json.dumps(result, indent=1))
    (out / "vortex_count_estimate.md").write_text(markdown(result))
    print(markdown(result))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="grid points per side (default 200, the paper preset)")
    ap.add_argument("--keys", type=int, default=2, help="keys per seeded count (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--basin-rtol", type=float, default=1e-5, help="'at the lowest state' within this (relative)")
    ap.add_argument("--from-json", action="store_true", help="refit from the stored runs, no solving")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.from_json:
        if not (out / "vortex_count_estimate.json").is_file():
            ap.error(f"--from-json: no {out / 'vortex_count_estimate.json'} (a run of this script writes it)")
        finish(json.loads((out / "vortex_count_estimate.json").read_text()), out)
        return 0
    if args.keys < 1:
        ap.error(f"--keys must be >= 1, got {args.keys}")
    bj.use_cpu_cores()
    out.mkdir(parents=True, exist_ok=True)
    t0, load0 = time.perf_counter(), os.getloadavg()
    units = Units(out / "units", dict(n=args.n, keys=args.keys, seed=args.seed))
    cases = []
    for g in G:
        for om in OMEGA:
            ts = time.perf_counter()
            run = units(f"g{g:g}_omega{om:g}", lambda: relax_window(args.n, g, om, args.keys, args.seed))
            cases.append(dict(g=g, omega=om, run=run))
            t = truth(run, args.basin_rtol)
            print(f"g={g:g} Ω={om:g}: true N {t['vortices']} E {t['energy']:.6f} seeded {min(run['seeded'])}–"
                  f"{max(run['seeded'])} ({time.perf_counter() - ts:.0f} s)", flush=True)
    result = dict(argv=sys.argv[1:] if argv is None else list(argv),
                  settings=dict(n=args.n, keys=args.keys, seed=args.seed, basin_rtol=args.basin_rtol, dtype="float32"),
                  cases=cases, wall_s=time.perf_counter() - t0, resumed_cases=units.resumed,
                  load_average_start=list(load0),
                  load_average_end=list(os.getloadavg()), jax_version=jax.__version__,
                  devices=jax.local_device_count())
    finish(result, out)
    units.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
