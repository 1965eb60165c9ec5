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
    return {**json.loads(p.read_text()), "_file": p.name} if p.exists() else None


def solver(d) -> str:
    out = [f"`{d['_file']}` — {d['device']} ({d['backend']}, {d['cpu_count']} cores), jax {d['jax_version']}, "
           f"{d['dtype']}, medians of {d['repeats']} calls × {d['steps_per_call']} steps, {d['method']}", "",
           "bec_jax and the FFT passes run split over the devices that divide the batch (`devices`); "
           "the \"one device\" columns run with `shard=False`. bec_jax runs each device's slice `chunk` states at "
           "a time (`cpu_chunk`); \"whole\" is the same step with the whole slice in every pass (what a GPU runs), "
           "\"FFT chunked\" the bare FFT passes chunked alike. NumPy is the same step in complex64 (4 FFT passes, "
           "one exponential, one norm, precomputed propagators), with numpy.fft (one thread) and scipy.fft "
           "(`workers=-1`); the speed-up is against the faster of the two (which one: last column). Each ratio is "
           "the median of the ratios of calls made in the same round.", "",
           "| n | batch | devices | chunk | bec_jax ms/step | 4 FFT passes ms | numpy.fft ms | scipy.fft ms "
           "| bec_jax / FFT | bec_jax / FFT chunked | whole / FFT | chunking speed-up | speed-up vs NumPy "
           "| state-steps/s | one device: bec_jax / FFT | one device: vs NumPy | load avg | NumPy baseline |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        ms, info = r["ms_per_step"], r["info"]["bec_jax"]
        out.append(f"| {r['n']} | {r['batch']} | {info['devices']} | {info['chunk']} | {ms['bec_jax']:.3f} | "
                   f"{ms['fft']:.3f} | {ms['numpy']:.3f} | {ms['scipy']:.3f} | {r['bec_jax_over_fft']:.2f} | "
                   f"{r['bec_jax_over_fft_chunked']:.2f} | {r['whole_over_fft']:.2f} | {r['chunking_speedup']:.2f}× | "
                   f"**{r['speedup_vs_numpy']:.2f}×** | {r['state_steps_per_s']['bec_jax']:,.0f} | "
                   f"{r['bec_jax_over_fft_one_device']:.2f} | {r['speedup_vs_numpy_one_device']:.2f}× | "
                   f"{r['load_average_before'][0]:.1f}–{r['load_average_after'][0]:.1f} | {r['numpy_baseline']} |")
    if "floor_runs" in d:
        out += ["", f"The n = {d['floor_vs_numpy']['n']}, batch {d['floor_vs_numpy']['batch']} row timed again "
                    f"{len(d['floor_runs'])} times in the same run:", "",
                "| run | bec_jax ms/step | 4 FFT passes ms | numpy.fft ms | scipy.fft ms | bec_jax / FFT | speed-up vs NumPy "
                "| one device: vs NumPy | load avg | NumPy baseline |", "|---|---|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(d["floor_runs"], 1):
            ms = r["ms_per_step"]
            out.append(f"| {i} | {ms['bec_jax']:.3f} | {ms['fft']:.3f} | {ms['numpy']:.3f} | {ms['scipy']:.3f} | "
                       f"{r['bec_jax_over_fft']:.2f} | **{r['speedup_vs_numpy']:.2f}×** | "
                       f"{r['speedup_vs_numpy_one_device']:.2f}× | {r['load_average_before'][0]:.1f}–"
                       f"{r['load_average_after'][0]:.1f} | {r['numpy_baseline']} |")
    if "floor_vs_numpy" in d:
        f = d["floor_vs_numpy"]
        m = f["measured"] if isinstance(f["measured"], list) else [f["measured"]]  # one run: one number
        runs = f"{', '.join(f'{x:.2f}×' for x in m)}" + (f" (median {f['median']:.2f}×)" if len(m) > 1 else "")
        out += ["", f"Floor: bec_jax ≥ {f['speedup']:g}× the faster NumPy step at n = {f['n']}, batch {f['batch']}: "
                    f"{runs}, **{'holds' if f['holds'] else 'does not hold'}{' in every run' if len(m) > 1 else ''}**."]
    if "time_to_ground_state" in d:
        for m, t in d["time_to_ground_state"].items():
            split = (f" on {t['devices']} devices (the starts split over them; one device: "
                     f"{t['wall_s_one_device']:.1f} s, {t['speedup_split']:.2f}× slower; medians of {t['repeats']})"
                     if "devices" in t else "")
            if "wall_s_one_start_at_a_time" in t:
                split += (f"; with the starts relaxed one at a time (`chunk=1`) {t['wall_s_one_start_at_a_time']:.1f} s "
                          f"split, {t['wall_s_one_device_one_start_at_a_time']:.1f} s on one device")
            out += ["", f"Time to ground state ({m}), g = {t['g']:.0f}, Ω = {t['omega']}, n = {t['n']}, "
                        f"{t['n_starts']} starts: {t['wall_s']:.1f} s compiled{split} ({t['wall_s_with_compile']:.1f} s "
                        f"with compilation), E = {t['energy']:.6f}, residual {t['residual']:.1e}, "
                        f"{t['vortices']} vortices, converged = {t['converged']}."]
    if "batch_ground_states" in d:
        b = d["batch_ground_states"]
        out += ["", f"One compiled program for {b['batch']} ground states at {b['n']}² ({b['n_starts']} starts each): "
                    f"{b['wall_s_with_compile']:.1f} s including compilation ({b['states_per_s']:.1f} states/s), "
                    f"{100 * b['converged_fraction']:.1f} % converged, max residual {b['max_residual']:.1e}."]
    if "chunked_ground_states" in d:
        out += ["", "Batches of ground states (3 starts each, the quick preset's (g, Ω) ranges, max_iter 1000), "
                    "the starts relaxed one at a time on each device (the CPU default) and all at once "
                    "(`chunk=None`, every start of a slice then runs as long as its slowest), medians, interleaved:", "",
                "| n | batch | one at a time s | all at once s | speed-up | start iterations: total / max |",
                "|---|---|---|---|---|---|"]
        out += [f"| {r['n']} | {r['batch']} | {r['wall_s_one_at_a_time']:.2f} | {r['wall_s_all_at_once']:.2f} | "
                f"{r['speedup']:.2f}× | {r['start_iterations_total']:,} / {r['start_iterations_max']:,} |"
                for r in d["chunked_ground_states"]]
    return "\n".join(out)


def _passes(x) -> str:
    return "—" if x is None else f"{x['passes']:,}"


def _ratio(x) -> str:
    return "—" if x is None else f"{x:.0f}×" if x >= 10 else f"{x:.1f}×"


def methods(d) -> str:
    st = d["settings"]
    tols = list(d["rows"][0]["pcg"]["to_tol"])
    loads = ", ".join(f"{r['load_avg_start']:.1f}" for r in d["rows"])
    out = [f"`{d['_file']}` — {d['device']}, {d['dtype']}, {st['starts']} starts per case, "
           f"imaginary time ≤ {st['it_max_steps']:,} steps/start (dt {st['dt']} → {st['dt_min']}), "
           f"PCG ≤ {st['max_iter']} iterations/start; load average {loads} "
           "at the start of each case", "",
           "1-D FFT passes of the winning start (lowest final energy) to first reach the residual, imaginary time / "
           "PCG (— = not reached within the cap):", "",
           "| g | Ω | n | " + " | ".join(f"r ≤ {t}: PCG | imag. | ratio" for t in tols) + " |",
           "|---|---|---|" + "---|---|---|" * len(tols)]
    for r in d["rows"]:
        p, i = r["pcg"], r["imaginary_time"]
        cells = [f"{_passes(p['to_tol'][t])} | {_passes(i['to_tol'][t])} | {_ratio(r['passes_ratio'][t]['it_over_pcg'])}"
                 for t in tols]
        out.append(f"| {r['g']:.0f} | {r['omega']} | {r['n']} | " + " | ".join(cells) + " |")
    out += ["", "At imaginary time's best residual (its winning start; PCG's winner to the same residual: passes, "
                "seconds and energy there), PCG to the final tolerance, the kinetic-preconditioner ablation and "
                "`ground_state(method=\"pcg\")` itself (all starts in one call, compiled):", "",
            "| g | Ω | n | imag. best residual | imag. passes | PCG passes | passes ratio | imag. s | PCG s | wall ratio "
            "| imag. E there | PCG E there | PCG E / s at " + tols[-1] + " | kinetic / rotating PCG passes at " + tols[-1]
            + " | starts at lowest state PCG / kinetic / imag. | `ground_state` s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        p, k, i, a = r["pcg"], r["pcg_kinetic"], r["imaginary_time"], r["at_imaginary_time_best_residual"]
        nan = float("nan")
        # Imaginary time's best residual is its last record in these runs (still descending at the cap).
        w_i = i.get("wall_s_at_best_residual", i["wall_s"] if i["passes_at_best_residual"] == i["passes"] else nan)
        w_p = a["pcg"]["wall_s"] if a["pcg"] else nan
        last = p["to_tol"][tols[-1]]
        out.append(f"| {r['g']:.0f} | {r['omega']} | {r['n']} | {a['residual']:.1e} | {a['imaginary_time_passes']:,} | "
                   f"{_passes(a['pcg'])} | {_ratio(a['it_over_pcg'])} | {w_i:.1f} | {w_p:.2f} | {_ratio(w_i / w_p)} | "
                   f"{a['imaginary_time_energy']:.8f} | {a['pcg']['energy'] if a['pcg'] else nan:.8f} | "
                   f"{last['energy'] if last else nan:.8f} / {last['wall_s'] if last else nan:.1f} | "
                   f"{_ratio(r['passes_ratio'][tols[-1]]['kinetic_over_rotating'])} | "
                   f"{p['fraction_starts_at_lowest']:.2f} / {k['fraction_starts_at_lowest']:.2f} / "
                   f"{i['fraction_starts_at_lowest']:.2f} | {r['ground_state_pcg']['wall_s']:.1f} |")
    return "\n".join(out)


def ablations(d) -> str:
    names = list(d["rows"][0]["variants"])
    out = [f"`{d['_file']}` — {d['device']}, {d['dtype']}, residual ≤ {d['settings']['tol']:g}, "
           f"{d['settings']['starts']} starts; 1-D FFT passes (coarse work scaled to the fine grid) / seconds of the "
           "winning start, and starts ending at the lowest state", "",
           "| g | Ω | n | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for r in d["rows"]:
        cells = []
        for m in names:
            v = r["variants"][m]
            p = "—" if v["winner_passes"] is None else f"{v['winner_passes']:,.0f}"
            w = "—" if v["winner_wall_s"] is None else f"{v['winner_wall_s']:.1f} s"
            cells.append(f"{p} / {w} ({v['fraction_starts_at_lowest']:.2f})")
        out.append(f"| {r['g']:.0f} | {r['omega']} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def seeding(d) -> str:
    st, sm = d["settings"], d["summary"]
    la = d["load_average"]
    out = [f"`{d['_file']}` — {d['device']}, the paper preset's first {sm['states']} groups (one state each), "
           f"{st['n']}², L = {st['length']:.2f}, {st['dtype']}, {st['n_starts']} starts, {st['batches']} batches of "
           f"{st['batch']}; load average {la[0][0]:.1f} → {la[1][0]:.1f}", "",
           "| | previous seeds | current seeds |", "|---|---|---|",
           f"| median wall s per batch | {sm['median_wall_s']['previous']:.1f} | {sm['median_wall_s']['current']:.1f} |",
           f"| iterations, all starts | {sm['iterations']['previous']:,} | {sm['iterations']['current']:,} |",
           f"| all converged | {sm['all_converged']['previous']} | {sm['all_converged']['current']} |", "",
           f"Median of the per-batch ratios current / previous: **{sm['median_ratio_current_over_previous']:.2f}×**. "
           f"E(current) − E(previous), relative: {sm['min_relative_delta']:+.1e} to {sm['max_relative_delta']:+.1e}; "
           f"higher by more than 1e-5: {sm['higher_than_1e_5']} of {sm['states']} states, lower: "
           f"{sm['lower_than_minus_1e_5']}; vortex count changed: {sm['vortices_changed']}. The best of the current "
           f"seeds' first 2 starts (an `n_starts=2` run) above the previous 4 by more than 1e-5: "
           f"{sm['current_2_starts_higher_than_1e_5']} (at most {sm['current_2_starts_max_relative_delta']:+.1e})."]
    return "\n".join(out)


def generation(d) -> str:
    out = []
    if "rows" in d:
        out += [f"`generation_throughput.json` — {d['device']} ({d['cpu_count']} cores)", "",
                "| preset | states | grid | starts | wall s | states/s | stored / failed | load avg |",
                "|---|---|---|---|---|---|---|---|"]
        for k, r in d["rows"].items():
            out.append(f"| {k} | {r['states']} | {r['n']}² | {r['n_starts']} | {r['wall_s']:.1f} | "
                       f"{r['states_per_s']:.2f} | {r['stored']} / {r['failed']} | {r.get('load_avg', float('nan')):.1f} |")
        out += ["", f"Whole paper preset (1,680 states) at the measured paper_subset rate: "
                    f"{d['paper_full_estimate_hours']:.2f} h (extrapolated from {d['rows']['paper_subset']['states']} "
                    "states in one batch)."]
    if "paper_methods" in d:
        pm = d["paper_methods"]
        names = list(pm["methods"])
        out += ["", f"Paper-size dataset, methods compared on {pm['n_measured']} of its {pm['total_states']:,} states "
                    f"(random, subset seed {pm['subset_seed']}; {pm['n']}², L = {pm['length']:.2f}, {pm['dtype']}, "
                    f"{pm['n_starts']} starts, the generator's keys and tolerances, one state at a time; load average "
                    f"{pm['load_avg_start']:.1f} → {pm['load_avg_end']:.1f}). Seconds and 1-D FFT passes executed "
                    "per state (the starts run in lockstep):", "",
                "| sample | g | Ω | " + " | ".join(f"{m} s | {m} passes | {m} stored" for m in names) + " |",
                "|---|---|---|" + "---|---|---|" * len(names)]
        for j, r0 in enumerate(pm["methods"][names[0]]["rows"]):
            cells = []
            for m in names:
                r = pm["methods"][m]["rows"][j]
                cells.append(f"{r['wall_s']:.1f} | {r['passes']:,} | {'yes' if r['stored'] else 'no'}")
            out.append(f"| {r0['sample']} | {r0['g']:.1f} | {r0['omega']:.3f} | " + " | ".join(cells) + " |")
        out += ["", "| method | mean s/state | median s/state | mean passes/state | stored | all 1,680 states "
                    "(EXTRAPOLATED) | vs pcg (time / passes) |", "|---|---|---|---|---|---|---|"]
        for m in names:
            v = pm["methods"][m]
            rel = pm.get(f"{m}_over_pcg")
            rel = f"{rel['wall']:.1f}× / {rel['passes']:.1f}×" if rel else "1×"
            out.append(f"| {m} | {v['mean_wall_s']:.1f} | {v['median_wall_s']:.1f} | {v['mean_passes']:,.0f} | "
                       f"{100 * v['stored_fraction']:.0f} % | {v['extrapolated_hours_all_states']:.2f} h | {rel} |")
    return "\n".join(out)


def main():
    sections = [("solver_throughput", solver), ("solver_throughput_floor", solver), ("ground_state_methods", methods),
                ("ground_state_methods_long", methods), ("ground_state_ablations", ablations),
                ("seeding", seeding), ("generation_throughput", generation)]
    for name, fn in sections:
        d = _load(name)
        if d is not None:
            print(f"### {name}\n\n{fn(d)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
