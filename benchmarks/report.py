"""Render the benchmark JSON files in benchmarks/results/ as markdown tables.

    python benchmarks/report.py            # prints the tables quoted in benchmarks/README.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _load(name):
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def solver(d) -> str:
    out = [f"`solver_throughput.json` — {d['device']} ({d['backend']}, {d['cpu_count']} cores), jax {d['jax_version']}, "
           f"{d['dtype']}, medians of {d['repeats']} calls × {d['steps_per_call']} steps", "",
           "| n | batch | bec_jax ms/step | 4 FFT passes ms | NumPy+SciPy ms | bec_jax / FFT | speed-up vs NumPy "
           "| state-steps/s |", "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        out.append(f"| {r['n']} | {r['batch']} | {r['jax_step_ms']:.3f} | {r['fft_step_ms']:.3f} | "
                   f"{r['numpy_step_ms']:.3f} | {r['jax_over_fft']:.2f} | {r['speedup_vs_numpy']:.2f}× | "
                   f"{r['jax_state_steps_per_s']:,.0f} |")
    if "time_to_ground_state" in d:
        for m, t in d["time_to_ground_state"].items():
            out += ["", f"Time to ground state ({m}), g = {t['g']:.0f}, Ω = {t['omega']}, n = {t['n']}, "
                        f"{t['n_starts']} starts: {t['wall_s']:.1f} s compiled ({t['wall_s_with_compile']:.1f} s "
                        f"with compilation), E = {t['energy']:.6f}, residual {t['residual']:.1e}, "
                        f"{t['vortices']} vortices, converged = {t['converged']}."]
    if "batch_ground_states" in d:
        b = d["batch_ground_states"]
        out += ["", f"One compiled program for {b['batch']} ground states at {b['n']}² ({b['n_starts']} starts each): "
                    f"{b['wall_s_with_compile']:.1f} s including compilation ({b['states_per_s']:.1f} states/s), "
                    f"{100 * b['converged_fraction']:.1f} % converged, max residual {b['max_residual']:.1e}."]
    return "\n".join(out)


def methods(d) -> str:
    out = [f"`ground_state_methods.json` — {d['device']}, {d['dtype']}, tolerance "
           f"{d['settings']['tol']:g}, {d['settings']['starts']} starts, imaginary-time cap "
           f"{d['settings']['max_steps']} steps/start", "",
           "| g | Ω | n | PCG iters | PCG FFT passes | PCG s | PCG E | imag. steps | imag. FFT passes | imag. s "
           "| imag. E | imag. residual | passes ratio to tol | passes ratio at imag.'s residual "
           "| starts at lowest (PCG / imag.) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        p, i = r["pcg"], r["imaginary_time"]
        ratio = f"{r['fft_pass_ratio_it_over_pcg']:.1f}×" + ("" if i["converged"] else " (≥, imag. not converged)")
        out.append(f"| {r['g']:.0f} | {r['omega']} | {r['n']} | {p['iterations']} | {p['fft_passes']:,} | "
                   f"{p['wall_s']:.1f} | {p['energy']:.8f} | {i['iterations']} | {i['fft_passes']:,} | "
                   f"{i['wall_s']:.1f} | {i['energy']:.8f} | {i['residual']:.1e} | {ratio} | "
                   f"{r['fft_pass_ratio_same_residual']:.0f}× | "
                   f"{p['fraction_starts_at_lowest']:.2f} / {i['fraction_starts_at_lowest']:.2f} |")
    return "\n".join(out)


def generation(d) -> str:
    out = [f"`generation_throughput.json` — {d['device']} ({d['cpu_count']} cores)", "",
           "| preset | states | grid | starts | wall s | states/s | stored / failed |", "|---|---|---|---|---|---|---|"]
    for k, r in d["rows"].items():
        out.append(f"| {k} | {r['states']} | {r['n']}² | {r['n_starts']} | {r['wall_s']:.1f} | "
                   f"{r['states_per_s']:.2f} | {r['stored']} / {r['failed']} |")
    out += ["", f"Whole paper preset (1,680 states) at the measured rate: {d['paper_full_estimate_hours']:.2f} h."]
    return "\n".join(out)


def main():
    sections = [("solver_throughput", solver), ("ground_state_methods", methods),
                ("generation_throughput", generation)]
    for name, fn in sections:
        d = _load(name)
        if d is not None:
            print(f"### {name}\n\n{fn(d)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
