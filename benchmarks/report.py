"""Render the benchmark results in benchmarks/results/ as the Results section of benchmarks/README.md.

    python benchmarks/report.py            # print the section: every table, rendered from the JSON files
    python benchmarks/report.py --write    # rewrite that section of benchmarks/README.md (between its markers)

One small renderer per result file (``SECTIONS``); a file that is missing renders nothing. Each table opens with
a line naming its file, what it measures and the conditions the file records (host, load average). The scripts
that also write a markdown table beside their JSON (``pcg_profile``, ``unet_profile``, ``unet_throughput``,
``compression_latency``) write it with the renderer here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).parent / "README.md"
BEGIN = "<!-- report.py: begin. Written by `python benchmarks/report.py --write`: edit report.py, not this section. -->"
END = "<!-- report.py: end -->"

#: result JSON files that are not benchmark tables (path prefix relative to RESULTS: why)
SKIPPED = {"gpu_h200/paper_pipeline/": "outputs of `bec-jax pipeline --preset paper` on the GPU (config, metrics, "
                                       "stage records), summarised in its own report.md, not a benchmark table"}


# ----------------------------------------------------------------------------- shared helpers

def _load(path: Path):
    """The JSON at ``path`` with its name (relative to RESULTS where it lies there) as ``_file``; None if missing."""
    if not path.exists():
        return None
    path = path.resolve()
    root = RESULTS.resolve()
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    return {**json.loads(path.read_text()), "_file": name}


def render(path, renderer) -> str:
    """``renderer``'s markdown of the result file ``path`` (how the scripts write their .md)."""
    d = _load(Path(path))
    if d is None:
        raise ValueError(f"no result file at {path}")
    return renderer(d) + "\n"


def write_tables(path, renderer) -> str:
    """Render the result file ``path`` with ``renderer``, write it beside as .md and print it."""
    table = render(path, renderer)
    Path(path).with_suffix(".md").write_text(table)
    print(table)
    return table


def _load1(x) -> float:
    """The 1-minute load average of a (1, 5, 15) triple or of a single number."""
    return float(x[0] if isinstance(x, (list, tuple)) else x)


def _range(values, fmt: str) -> str:
    """'lowest–highest' of ``values`` in format ``fmt``, or one number where the two print alike."""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def _span(values) -> str:
    """1-minute load averages (triples or numbers) as 'a' or 'lowest–highest'."""
    return _range([_load1(x) for x in values], ".1f")


def _host(d: dict) -> str:
    """Device, backend, cores and versions, from the keys the scripts record (``common.machine_info`` or their
    own ``machine``/``versions`` blocks)."""
    m, v = d.get("machine", {}), d.get("versions", {})
    device, backend = d.get("device") or m.get("backend"), d.get("backend") or m.get("backend")
    cores, jax = d.get("cpu_count") or m.get("cpu_count"), d.get("jax_version") or d.get("jax") or v.get("jax")
    head = (device or backend or "") + (f" ({backend})" if backend and device and backend != device else "")
    return ", ".join(x for x in (head, cores and f"{cores} CPU cores", jax and f"jax {jax}") if x)


def _intro(d: dict, what: str, load: str | None) -> str:
    """The line above a table: file, what it measures, host and load average."""
    return (f"`{d['_file']}`: {what}. Host: {_host(d)}; "
            + (f"load average {load}." if load else "load average not recorded."))


def _table(header, rows) -> list[str]:
    """Markdown table lines; ``rows`` are sequences of cells (str() of each)."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def _x(r) -> str:
    """A ratio: two decimals below 10, none above."""
    return "–" if r is None else f"{r:.0f}×" if r >= 10 else f"{r:.2f}×"


def _g(v) -> str:
    """Three significant digits, without an exponent from 100 up."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _kinds(d: dict, unit: str, key: str, top: int = 12) -> list[str]:
    """Per-kind XLA operation totals of a profile (``common.op_kind_totals``), largest first."""
    return _table(["op kind", f"ms / {unit}", "share", f"ops / {unit}"],
                  [(f"`{k['kind']}`", _g(k[f"ms_per_{key}"]), f"{100 * k['share']:.0f} %",
                    _g(k[f"ops_per_{key}"])) for k in d["kinds"][:top]])


# ----------------------------------------------------------------------------- the split step

def solver(d) -> str:
    rows = d["rows"]
    load = _span([r["load_average_before"] for r in rows] + [r["load_average_after"] for r in rows])
    out = [_intro(d, f"state-steps/s of `bj.imaginary_time` against the bare FFT passes and the same step in "
                     f"NumPy, {d['dtype']}, medians of {d['repeats']} calls × {d['steps_per_call']} steps, "
                     f"{d['method']}", load), "",
           "bec_jax and the FFT passes run split over the devices that divide the batch (`devices`); "
           "the \"one device\" columns run with `shard=False`. bec_jax runs each device's slice `chunk` states at "
           "a time (`cpu_chunk`); \"whole\" is the same step with the whole slice in every pass (what a GPU runs), "
           "\"FFT chunked\" the bare FFT passes chunked alike. NumPy is the same step in complex64 (4 FFT passes, "
           "one exponential, one norm, precomputed propagators), with numpy.fft (one thread) and scipy.fft "
           "(`workers=-1`); the speed-up is against the faster of the two (which one: last column). Each ratio is "
           "the median of the ratios of calls made in the same round; `load avg` is the 1-minute load average "
           "before and after the row.", ""]
    out += _table(
        ["n", "batch", "devices", "chunk", "bec_jax ms/step", "4 FFT passes ms", "numpy.fft ms", "scipy.fft ms",
         "bec_jax / FFT", "bec_jax / FFT chunked", "whole / FFT", "chunking speed-up", "speed-up vs NumPy",
         "state-steps/s", "one device: bec_jax / FFT", "one device: vs NumPy", "load avg", "NumPy baseline"],
        [(r["n"], r["batch"], r["info"]["bec_jax"]["devices"], r["info"]["bec_jax"]["chunk"],
          f"{r['ms_per_step']['bec_jax']:.3f}", f"{r['ms_per_step']['fft']:.3f}", f"{r['ms_per_step']['numpy']:.3f}",
          f"{r['ms_per_step']['scipy']:.3f}", f"{r['bec_jax_over_fft']:.2f}", f"{r['bec_jax_over_fft_chunked']:.2f}",
          f"{r['whole_over_fft']:.2f}", _x(r["chunking_speedup"]), f"**{_x(r['speedup_vs_numpy'])}**",
          f"{r['state_steps_per_s']['bec_jax']:,.0f}", f"{r['bec_jax_over_fft_one_device']:.2f}",
          _x(r["speedup_vs_numpy_one_device"]), _span([r["load_average_before"], r["load_average_after"]]),
                    r["numpy_baseline"]) for r in rows])
    diffs = [r["numpy_max_abs_diff"] for r in rows if "numpy_max_abs_diff" in r]
    if diffs:
        out += ["", f"The NumPy step agrees with `bj.imaginary_time` to {_range(diffs, '.1e')} "
                    "(max |Δψ| of each row)."]
    if "floor_runs" in d:
        f = d["floor_vs_numpy"]
        out += ["", f"The n = {f['n']}, batch {f['batch']} row timed again {len(d['floor_runs'])} times in the "
                    "same run:", ""]
        out += _table(["run", "bec_jax ms/step", "4 FFT passes ms", "numpy.fft ms", "scipy.fft ms", "bec_jax / FFT",
                       "speed-up vs NumPy", "one device: vs NumPy", "load avg", "NumPy baseline"],
                      [(i, f"{r['ms_per_step']['bec_jax']:.3f}", f"{r['ms_per_step']['fft']:.3f}",
                        f"{r['ms_per_step']['numpy']:.3f}", f"{r['ms_per_step']['scipy']:.3f}",
                        f"{r['bec_jax_over_fft']:.2f}", f"**{_x(r['speedup_vs_numpy'])}**",
                        _x(r["speedup_vs_numpy_one_device"]),
                        _span([r["load_average_before"], r["load_average_after"]]), r["numpy_baseline"])
                       for i, r in enumerate(d["floor_runs"], 1)])
    if "floor_vs_numpy" in d:
        f = d["floor_vs_numpy"]
        m = f["measured"] if isinstance(f["measured"], list) else [f["measured"]]  # one run: one number
        runs = ", ".join(_x(x) for x in m) + (f" (median {_x(f['median'])})" if len(m) > 1 else "")
        some = sum(x >= f["speedup"] for x in m)
        verdict = ("holds" + (" in every run" if len(m) > 1 else "") if f["holds"] else
                   f"holds in {some} run(s) of {len(m)}" if some else
                   "does not hold" + (" in any run" if len(m) > 1 else ""))
        out += ["", f"Floor: bec_jax ≥ {f['speedup']:g}× the faster NumPy step at n = {f['n']}, batch {f['batch']}: "
                    f"{runs}, **{verdict}**."]
    for m, t in d.get("time_to_ground_state", {}).items():
        split = (f" on {t['devices']} devices (the starts split over them; one device: "
                 f"{t['wall_s_one_device']:.1f} s, {t['speedup_split']:.2f}× slower; medians of {t['repeats']})"
                 if "devices" in t else "")
        if "wall_s_one_start_at_a_time" in t:
            split += (f"; with the starts relaxed one at a time (`chunk=1`, the CPU default) "
                      f"{t['wall_s_one_start_at_a_time']:.1f} s split, "
                      f"{t['wall_s_one_device_one_start_at_a_time']:.1f} s on one device")
        out += ["", f"Time to ground state ({m}), g = {t['g']:.0f}, Ω = {t['omega']}, n = {t['n']}, "
                    f"{t['n_starts']} starts, all at once (`chunk=None`): {t['wall_s']:.1f} s compiled{split} ({t['wall_s_with_compile']:.1f} s "
                    f"with compilation), E = {t['energy']:.6f}, residual {t['residual']:.1e}, "
                    f"{t['vortices']} vortices, converged = {t['converged']}; start iterations "
                    + ", ".join(str(s) for s in t["start_steps"]) + "."]
    if "batch_ground_states" in d:
        b = d["batch_ground_states"]
        out += ["", f"One compiled program for {b['batch']} ground states at {b['n']}² ({b['n_starts']} starts each): "
                    f"{b['wall_s']:.1f} s compiled, a median of {b['repeats']} calls ({b['states_per_s']:.1f} "
                    f"states/s; the first call, compilation included, {b['wall_s_with_compile']:.1f} s), "
                    f"{100 * b['converged_fraction']:.1f} % converged, max residual {b['max_residual']:.1e}."]
    if "chunked_ground_states" in d:
        out += ["", "Batches of ground states (3 starts each, the quick preset's (g, Ω) ranges, max_iter 1000), "
                    "the starts relaxed one at a time on each device (the CPU default) and all at once "
                    "(`chunk=None`, every start of a slice then runs as long as its slowest), medians, interleaved:", ""]
        out += _table(["n", "batch", "one at a time s", "all at once s", "speed-up", "start iterations: total / max"],
                      [(r["n"], r["batch"], f"{r['wall_s_one_at_a_time']:.2f}", f"{r['wall_s_all_at_once']:.2f}",
                        _x(r["speedup"]), f"{r['start_iterations_total']:,} / {r['start_iterations_max']:,}")
                       for r in d["chunked_ground_states"]])
    return "\n".join(out)


STEP_VARIANTS = dict(current="current (every FFT along the contiguous axis, layouts alternating)",
                     axis2="previous (FFTs along axis −2)", fft="bare FFT passes as JAX runs them (x and y)",
                     fft_last="4 FFT passes along the last axis + 1 transpose")


def step_variants(d) -> str:
    ms, r = d["ms_per_step"], d["paired_ratio_medians"]
    ratio = dict(current=(r["current_over_fft"], r["current_over_fft_last"]),
                 axis2=(r["axis2_over_fft"], r["axis2_over_fft_last"]), fft=(1.0, None), fft_last=(None, 1.0))
    out = [_intro(d, f"ms per split step of the step's formulations and two FFT floors, n = {d['n']}, batch "
                     f"{d['batch']}, {d['devices']} device, the whole batch in every pass; medians of {d['rounds']} "
                     f"interleaved rounds × {d['steps_per_call']} steps, ratios the medians of same-round ratios",
                  _span([d["loadavg_1_5_15"]])), ""]
    out += _table(["step", "ms/step", "/ bare FFT passes (x and y)", "/ 4 FFT passes along the last axis + 1 transpose"],
                  [(STEP_VARIANTS.get(k, k), f"{v:.1f}", _x(ratio[k][0]), _x(ratio[k][1])) for k, v in ms.items()])
    out += ["", f"Previous / current: {_x(r['axis2_over_current'])} (median of same-round ratios); the two agree to "
                f"{d['max_abs_diff_current_vs_axis2']:.1e} (max |Δψ|)."]
    return "\n".join(out)


def fft_contention(d) -> str:
    m = d["median_ms_per_step"]
    out = [_intro(d, f"ms per step of the bare FFT passes (n = {d['n']}, batch {d['batch']}, {d['steps_per_call']} "
                     f"steps a call) with the second core idle and with a busy-loop on it; medians of {d['rounds']} "
                     f"paired rounds of {d['calls_per_round']} calls", _span([d["loadavg_1_5_15"]])), ""]
    out += _table(["second core", "ms/step"], [(k, f"{v:.2f}") for k, v in m.items()])
    out += ["", f"Busy / quiet: {_x(d['busy_over_quiet'])}."]
    return "\n".join(out)


def cpu_sharding(d) -> str:
    out = [_intro(d, f"`bj.imaginary_time` at n = {d['n']}, batch {d['batch']}, {d['steps']} steps: on one device, "
                     f"split over {d['devices']} host devices by `shard_map` (the default), and a plain `jit` of "
                     "`NamedSharding` inputs (XLA's SPMD partitioner)", _span([d["load_average_end"]])), ""]
    out += _table(["variant", "s", "speed-up vs one device", "max |Δψ| vs one device"],
                  [("one device", f"{d['one_device_s']:.2f}", "1×", "–"),
                   ("`shard_map`", f"{d['shard_map_s']:.2f}", _x(d["speedup_shard_map"]),
                    f"{d['shard_map_max_abs_diff']:.1e}"),
                   (f"`jit` of sharded inputs ({d['spmd_jit_all_gathers']} all-gathers in its HLO)",
                    *((f"{d['spmd_jit_s']:.2f}", _x(d["speedup_spmd_jit"]), f"{d['spmd_jit_max_abs_diff']:.1e}")
                      if "spmd_jit_error" not in d else ("fails", "–", "–")))])
    if "spmd_jit_error" in d:
        out += ["", f"The `jit` of sharded inputs fails to run: `{d['spmd_jit_error']}`."]
    if "one_device_slice_s" in d:  # the split's bound: each device's slice alone
        out += ["", f"One device's slice alone ({d['batch'] // d['devices']} states on one device) takes "
                    f"{d['one_device_slice_s']:.2f} s: the split runs its {d['devices']} slices side by side in "
                    f"{d['shard_map_s'] / d['one_device_slice_s']:.2f}× that time."]
    return "\n".join(out)


def phase_reconstruction(d) -> str:
    counts = d["vortices_per_state"]
    out = [_intro(d, f"the phase reconstruction of {d['batch']} states at n = {d['n']} ({min(counts)}–{max(counts)} "
                     f"vortices each, cap {d['max_vortices']}), its vortex phase looped over the vortices found "
                     f"against over every slot of the cap (the former loop); medians of {d['repeats']} interleaved "
                     "calls", _span([d["load_average_end"]])), ""]
    out += _table(["work per batch", "vortices found (s)", "every slot (s)", "speed-up"],
                  [("`reconstruct_phase`, vmapped", f"{d['reconstruct_s']['found']:.3f}",
                    f"{d['reconstruct_s']['slots']:.3f}", _x(d["speedup_reconstruct"])),
                   ("the evaluation's device work (`_batch_fields`: 3 reconstructions)",
                    f"{d['evaluate_s']['found']:.3f}", f"{d['evaluate_s']['slots']:.3f}", _x(d["speedup_evaluate"]))])
    same = "bit for bit" if d["max_abs_diff_theta"] == 0 and d["windings_equal"] else \
        f"to {d['max_abs_diff_theta']:.1e} in θ"
    out += ["", f"The two agree {same} (largest fidelity difference {d['max_abs_diff_fidelity']:.1e}): "
                f"{d['evaluate_ms_per_state']['found']:.0f} ms of device work per evaluated state against "
                f"{d['evaluate_ms_per_state']['slots']:.0f}."]
    return "\n".join(out)


# ----------------------------------------------------------------------------- ground states

def pcg_profile(d) -> str:
    return "\n".join([_intro(d, f"XLA operation time per PCG iteration of `ground_state` (rotating preconditioner), "
                                f"n = {d['n']}, batch {d['batch']}, g = {d['g']:g}, Ω = {d['omega']:g}, {d['iters']} "
                                f"iterations profiled: wall {d['wall_ms_per_iter']:.2f} ms/iteration, XLA operations "
                                f"{d['ops_total_ms_per_iter']:.2f} ms/iteration (they overlap on the cores)",
                             _span([d["loadavg_1_5_15"]])), ""] + _kinds(d, "iteration", "iter"))


def _passes(x) -> str:
    return "—" if x is None else f"{x['passes']:,}"


def _ratio(x) -> str:
    return "—" if x is None else f"{x:.0f}×" if x >= 10 else f"{x:.1f}×"


def methods(d) -> str:
    st = d["settings"]
    tols = list(d["rows"][0]["pcg"]["to_tol"])
    out = [_intro(d, f"PCG against imaginary time on the same starts, {d['dtype']}, {st['starts']} starts per case, "
                     f"imaginary time ≤ {st['it_max_steps']:,} steps/start (dt {st['dt']} → {st['dt_min']}), "
                     f"PCG ≤ {st['max_iter']} iterations/start",
                  ", ".join(f"{r['load_avg_start']:.1f}" for r in d["rows"]) + " at the start of each case"), "",
           "1-D FFT passes of the winning start (lowest final energy) to first reach the residual, imaginary time / "
           "PCG (— = not reached within the cap):", ""]
    out += _table(["g", "Ω", "n"] + [c for t in tols for c in (f"r ≤ {t}: PCG", "imag.", "ratio")],
                  [[f"{r['g']:.0f}", r["omega"], r["n"]]
                   + [c for t in tols for c in (_passes(r["pcg"]["to_tol"][t]), _passes(r["imaginary_time"]["to_tol"][t]),
                                                _ratio(r["passes_ratio"][t]["it_over_pcg"]))] for r in d["rows"]])
    out += ["", "At imaginary time's best residual (its winning start; PCG's winner to the same residual: passes, "
                "seconds and energy there), PCG to the final tolerance, the kinetic-preconditioner ablation and "
                "`ground_state(method=\"pcg\")` itself (all starts in one call, compiled):", ""]
    rows = []
    nan = float("nan")
    for r in d["rows"]:
        p, k, i, a = r["pcg"], r["pcg_kinetic"], r["imaginary_time"], r["at_imaginary_time_best_residual"]
        # Imaginary time's best residual is its last record in these runs (still descending at the cap).
        w_i = i.get("wall_s_at_best_residual", i["wall_s"] if i["passes_at_best_residual"] == i["passes"] else nan)
        w_p = a["pcg"]["wall_s"] if a["pcg"] else nan
        last = p["to_tol"][tols[-1]]
        rows.append((f"{r['g']:.0f}", r["omega"], r["n"], f"{a['residual']:.1e}", f"{a['imaginary_time_passes']:,}",
                     _passes(a["pcg"]), _ratio(a["it_over_pcg"]), f"{w_i:.1f}", f"{w_p:.2f}", _ratio(w_i / w_p),
                     f"{a['imaginary_time_energy']:.8f}", f"{a['pcg']['energy'] if a['pcg'] else nan:.8f}",
                     f"{last['energy'] if last else nan:.8f} / {last['wall_s'] if last else nan:.1f}",
                     _ratio(r["passes_ratio"][tols[-1]]["kinetic_over_rotating"]),
                     f"{p['fraction_starts_at_lowest']:.2f} / {k['fraction_starts_at_lowest']:.2f} / "
                     f"{i['fraction_starts_at_lowest']:.2f}", f"{r['ground_state_pcg']['wall_s']:.1f}"))
    out += _table(["g", "Ω", "n", "imag. best residual", "imag. passes", "PCG passes", "passes ratio", "imag. s", "PCG s",
                   "wall ratio", "imag. E there", "PCG E there", f"PCG E / s at {tols[-1]}",
                   f"kinetic / rotating PCG passes at {tols[-1]}", "starts at lowest state PCG / kinetic / imag.",
                   "`ground_state` s"], rows)
    return "\n".join(out)


def ablations(d) -> str:
    names = list(d["rows"][0]["variants"])

    def cell(v):
        p = "—" if v["winner_passes"] is None else f"{v['winner_passes']:,.0f}"
        w = "—" if v["winner_wall_s"] is None else f"{v['winner_wall_s']:.1f} s"
        return f"{p} / {w} ({v['fraction_starts_at_lowest']:.2f})"

    out = [_intro(d, f"what else was tried to speed up PCG, against the default, {d['dtype']}, residual ≤ "
                     f"{d['settings']['tol']:g}, {d['settings']['starts']} starts; each cell: 1-D FFT passes (coarse "
                     "work scaled to the fine grid) / seconds of the winning start, (fraction of starts ending at the "
                     "lowest state)", ", ".join(f"{r['load_avg']:.1f}" for r in d["rows"]) + " at each case"), ""]
    out += _table(["g", "Ω", "n"] + names,
                  [[f"{r['g']:.0f}", r["omega"], r["n"]] + [cell(r["variants"][m]) for m in names] for r in d["rows"]])
    return "\n".join(out)


def ground_state_gradient(d) -> str:
    t, m = d["timing"], d["memory"]
    gb = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
    out = [_intro(d, f"a gradient through `bj.ground_state` (n = {t['n']}, batch {t['batch']}, default settings): "
                     "forward (`jax.vjp` of the loss: the solve) and backward (the adjoint solve), medians of "
                     f"{t['repeats']} warm calls, interleaved in a shuffled order (the ratio a median of same-round "
                     "ratios); and XLA's buffer memory (temporaries + outputs) of `jit(grad)` at two "
                     "iteration caps, against grad through `bj.imaginary_time` (`lax.scan`) at two step counts",
                  _span([d["load_average_before"], d["load_average_after"]])), ""]
    out += _table(["forward s", "backward s", "backward / forward", "converged", "finite gradients",
                   "forward iterations (max)"],
                  [(f"{t['forward_s']:.2f}", f"{t['backward_s']:.2f}", _x(t["backward_over_forward"]),
                    f"{t['converged']} / {t['batch']}", f"{t['finite_gradients']} / {t['batch']}",
                    t["forward_iterations_max"])])
    out += [""] + _table(["program", "memory", "ratio"],
                         [("`ground_state`, max_iter 500", gb(m["ground_state_max_iter_500_bytes"]), "1×"),
                          ("`ground_state`, max_iter 4000", gb(m["ground_state_max_iter_4000_bytes"]),
                           _x(m["ground_state_ratio_4000_over_500"])),
                          ("`imaginary_time`, 100 steps", gb(m["imaginary_time_steps_100_bytes"]), "1×"),
                          ("`imaginary_time`, 800 steps", gb(m["imaginary_time_steps_800_bytes"]),
                           _x(m["imaginary_time_ratio_800_over_100"]))])
    return "\n".join(out)


def ground_state_memory(d) -> str:
    out = [_intro(d, "peak host memory (resident set) of a process running `ground_state` on XLA:CPU, by grid, "
                     "states and starts (the memory estimate's basis)", None), ""]
    out += _table(["n", "states", "starts", "peak RSS MB", "state arrays per start"],
                  [(r["n"], r["states"], r["starts"], f"{r['peak_rss_bytes'] / 1e6:,.0f}",
                    f"{r['state_arrays_per_start']:.0f}" if "state_arrays_per_start" in r else "–")
                   for r in d["rows"]])
    return "\n".join(out)


NORM_DRIFT = dict(norm_minus_1="norm − 1", energy_rel_change="energy, relative change",
                  normalised_energy_rel_change="energy of ψ/‖ψ‖, relative change")


def norm_drift(d) -> str:
    rows = {}
    for k, v in d.items():
        m = re.fullmatch(r"real_time_(.+)_(\d+)", k)
        if m:
            rows.setdefault(m[1], {})[int(m[2])] = v
    steps = sorted({s for r in rows.values() for s in r})
    out = [_intro(d, "float32 drift of `real_time` (the case of tests/gpe/test_splitstep.py) by step count, of bare "
                     "FFT round trips, and of |exp(iθ)|", None), ""]
    out += _table(["quantity"] + [f"{s} steps" for s in steps],
                  [[NORM_DRIFT.get(q, q)] + [f"{r[s]:.1e}" if s in r else "–" for s in steps] for q, r in rows.items()])
    e = d["exp_i_theta_modulus_minus_1"]
    out += ["", f"1000 FFT round trips: norm − 1 = {d['fft_roundtrip_1000_norm_minus_1']:.1e}; |exp(iθ)| − 1: mean "
                f"{e['mean']:.1e}, max |·| {e['max_abs']:.1e}."]
    return "\n".join(out)


def seeding(d) -> str:
    st, sm = d["settings"], d["summary"]
    out = [_intro(d, f"the previous against the current seeded starts of `ground_state`, same program, alternating "
                     f"order: the paper preset's first {sm['states']} groups (one state each), {st['n']}², "
                     f"L = {st['length']:.2f}, {st['dtype']}, {st['n_starts']} starts, {st['batches']} batches of "
                     f"{st['batch']}", _span(d["load_average"])), ""]
    out += _table(["", "previous seeds", "current seeds"],
                  [("median wall s per batch", f"{sm['median_wall_s']['previous']:.1f}",
                    f"{sm['median_wall_s']['current']:.1f}"),
                   ("iterations, all starts", f"{sm['iterations']['previous']:,}", f"{sm['iterations']['current']:,}"),
                   ("all converged", sm["all_converged"]["previous"], sm["all_converged"]["current"])])
    out += ["", f"Median of the per-batch ratios current / previous: **{_x(sm['median_ratio_current_over_previous'])}**. "
                f"E(current) − E(previous), relative: {sm['min_relative_delta']:+.1e} to {sm['max_relative_delta']:+.1e}; "
                f"higher by more than 1e-5: {sm['higher_than_1e_5']} of {sm['states']} states, lower: "
                f"{sm['lower_than_minus_1e_5']}; vortex count changed: {sm['vortices_changed']}. The best of the current "
                f"seeds' first 2 starts (an `n_starts=2` run) above the previous 4 by more than 1e-5: "
                f"{sm['current_2_starts_higher_than_1e_5']} (at most {sm['current_2_starts_max_relative_delta']:+.1e})."]
    return "\n".join(out)


# ----------------------------------------------------------------------------- datasets and processes

def dataset_time(d) -> str:
    st, sm = d["settings"], d["summary"]
    out = [_intro(d, f"the paper preset's ground states as `bec-jax generate` solves them ({st['batch']} states a batch, "
                     f"{st['devices']} XLA devices, each start alone), the fine grid alone against coarse-to-fine, interleaved "
                     f"batches: {st['states']} random states of {st['total_states']:,} (subset seed "
                     f"{st['subset_seed']}), {st['n']}², L = {st['length']:.2f}, {st['dtype']}",
                     _span([d["load_avg"]["start"], d["load_avg"]["end"]])), ""]
    out += _table(["contender", "starts", "grid(s)", "s / state", "vs fine (median of batches)",
                   "all 1,680 states (EXTRAPOLATED)", "ΔE/E vs fine (min … max)", "> 1e-5 higher / lower",
                   "vortex counts changed", "stored"],
                  [(k, v["n_starts"], f"{st['n'] // v['coarsen']}² → {st['n']}²" if v["coarsen"] > 1 else f"{st['n']}²",
                    f"{v['s_per_state']:.2f}", _x(v["median_ratio_to_fine"]),
                    f"{v['extrapolated_minutes_1680']:.1f} min",
                    f"{v['min_relative_energy_below_fine']:+.1e} … {v['max_relative_energy_above_fine']:+.1e}",
                    f"{v['higher_than_1e_5']} / {v['lower_than_minus_1e_5']}", v["vortex_counts_changed"],
                    f"{v['stored']} / {st['states']}") for k, v in sm.items()])
    return "\n".join(out)


def generation(d) -> str:
    out = []
    if "rows" in d:
        rows = d["rows"]
        reps = {r["repeats"] for r in rows.values()}
        out += [_intro(d, "dataset generation (`bec-jax generate`) at the quick preset and on a subset of the paper "
                          f"preset, the median of {_range(sorted(reps), 'd')} compiled runs each after a first run "
                          "with compilation", _span([r["load_avg"] for r in rows.values()])), ""]
        out += _table(["preset", "states", "grid", "starts", "wall s", "first run s", "states/s", "stored / failed",
                       "load avg"],
                      [(k, r["states"], f"{r['n']}²", r["n_starts"], f"{r['wall_s']:.1f}",
                        f"{r['wall_s_first_run']:.1f}", f"{r['states_per_s']:.2f}", f"{r['stored']} / {r['failed']}",
                        f"{r['load_avg']:.1f}")
                       for k, r in rows.items()])
    if "paper_methods" in d:
        pm = d["paper_methods"]
        names = list(pm["methods"])
        out += ["", f"Paper-size dataset, methods compared on {pm['n_measured']} of its {pm['total_states']:,} states "
                    f"(random, subset seed {pm['subset_seed']}; {pm['n']}², L = {pm['length']:.2f}, {pm['dtype']}, "
                    f"{pm['n_starts']} starts, the generator's keys and tolerances, no coarse stage, one state at a "
                    "time, the methods state by state in a shuffled order; load average "
                    f"{pm['load_avg_start']:.1f} → {pm['load_avg_end']:.1f}). Seconds and 1-D FFT passes executed "
                    "per state (the starts run in lockstep):", ""]
        out += _table(["sample", "g", "Ω"] + [c for m in names for c in (f"{m} s", f"{m} passes", f"{m} stored")],
                      [[r0["sample"], f"{r0['g']:.1f}", f"{r0['omega']:.3f}"]
                       + [c for m in names for r in [pm["methods"][m]["rows"][j]]
                          for c in (f"{r['wall_s']:.1f}", f"{r['passes']:,}", "yes" if r["stored"] else "no")]
                       for j, r0 in enumerate(pm["methods"][names[0]]["rows"])])
        out += [""]

        def rel(m):
            r = pm.get(f"{m}_over_pcg")
            return f"{r['wall']:.1f}× / {r['passes']:.1f}×" if r else "1×"

        out += _table(["method", "mean s/state", "median s/state", "mean passes/state", "stored",
                       "all 1,680 states (EXTRAPOLATED)", "vs pcg (time / passes)"],
                      [(m, f"{v['mean_wall_s']:.1f}", f"{v['median_wall_s']:.1f}", f"{v['mean_passes']:,.0f}",
                        f"{100 * v['stored_fraction']:.0f} %", f"{v['extrapolated_hours_all_states']:.2f} h", rel(m))
                       for m, v in pm["methods"].items()])
    return "\n".join(out)


def distributed(d) -> str:
    base = d["runs"][0]
    out = [_intro(d, f"dataset generation ({base['n_samples']} states at {d['n']}², generation batch "
                     f"{d['generation_batch']}) and training (U-Net width {d['unet_width']}, depth {d['unet_depth']}, "
                     f"global batch {d['global_train_batch']}, {base['train_samples']} training samples) with "
                     "`jax.distributed` processes on localhost (gloo) and with CPU devices in one process; medians of "
                     f"{d['repeats']} warm repetitions (generation: the whole dataset; training: one epoch of `fit`, "
                     "validation included), ratios against 1 process with 1 device from the same run",
                  _span([d["load_average"]])), ""]
    out += _table(["setup", "generation s", "states/s", "vs 1 process", "epoch s", "vs 1 process"],
                  [(f"{r['processes']} process{'es' if r['processes'] > 1 else ''}, {r['devices_per_process']} "
                    f"device{'s' if r['devices_per_process'] > 1 else ''}{' each' if r['processes'] > 1 else ''}",
                    f"{r['generate_s']:.2f}", f"{r['states_per_s']:.1f}", _x(r["generate_speedup"]),
                    f"{r['epoch_s']:.3g}", _x(r["train_speedup"])) for r in d["runs"]])
    return "\n".join(out)


# ----------------------------------------------------------------------------- models and training

GRADIENT_FLOW = dict(jit="`jax.jit` of the whole step: one compiled graph (bec_jax)",
                     jit_checkpoint="the same, the simulator in `jax.checkpoint` segments",
                     no_outer_jit="the step not jitted: the library's jitted pieces as separate calls, the rest op by op",
                     eager="`jax.disable_jit()`: everything op by op, the scan as a Python loop")


def gradient_flow_step(d) -> str:
    r = d["results"]
    out = [_intro(d, f"steps/s of {d['what']}; medians of {d['repeats']} timed blocks after a warm-up block each, "
                     "one block of every variant a round in a shuffled order, in one process",
                  _span([d["load_average_before"], d["load_average_after"]])), ""]
    out += _table(["variant", "what runs", "steps/s", "min–max of the blocks", "steps a block"],
                  [(f"`{k}`", GRADIENT_FLOW.get(k, ""), _g(v["steps_per_s"]),
                    f"{_g(min(v['all_steps_per_s']))}–{_g(max(v['all_steps_per_s']))}", v["block"])
                   for k, v in r.items()])
    out += ["", "Ratios (medians of same-round ratios): " + ", ".join(f"{k.replace('_over_', ' / ')} {_x(v)}"
                                                      for k, v in d["ratios"].items()) + "."]
    return "\n".join(out)


def unet_throughput(d) -> str:
    r, c, m = d["results"], d["config"], d["machine"]
    names = [n for n in ("jax", "jax_no_gemm", "torch", "torch_tuned") if n in r]
    label = dict(jax="JAX (bec_jax)", jax_no_gemm="JAX, XLA conv only", torch="PyTorch",
                 torch_tuned="PyTorch, channels_last + fused Adam")
    torch = "torch" in r
    what = (f"U-Net train-step samples/s ({d['settings']['optimizer']}, {d['settings']['loss']}) and inference "
            f"latency, {c['input_size']}², width {c['base_width']}, depth {c['depth']} ({d['n_params']:,} parameters), "
            f"medians of {d['settings']['repeats']} interleaved calls"
            + (f"; against the same architecture in PyTorch {d['versions']['torch']} ({d['torch_threads']} threads)"
               if torch else "")
            + ("; \"XLA conv only\" is bec_jax with the small-map GEMM path off" if "jax_no_gemm" in r else ""))
    out = [_intro(d, what, f"{_load1(m['loadavg_1_5_15_before']):.1f} before, "
                           f"{_load1(m['loadavg_1_5_15_after']):.1f} after"), ""]
    rows = [[f"train step, batch {b}"] + [f"{r[n]['train'][str(b)]['samples_per_s']:.2f} samples/s" for n in names]
            + ([_x(r["ratio_jax_over_torch"]["train_samples_per_s"][str(b)])] if torch else [])
            for b in d["settings"]["train_batches"]]
    rows += [[f"inference, batch {b}"] + [f"{r[n]['infer'][str(b)]['latency_ms']:.1f} ms" for n in names]
             + ([f"{_x(r['ratio_jax_over_torch']['infer_speed'][str(b)])} speed"] if torch else [])
             for b in d["settings"]["infer_batches"]]
    best = "JAX / faster PyTorch" if "torch_tuned" in r else "JAX / PyTorch"
    return "\n".join(out + _table([""] + [label[n] for n in names] + ([best] if torch else []), rows))


def unet_profile(d) -> str:
    c = d["config"]
    return "\n".join([_intro(d, f"XLA operation time per U-Net train step, {c['input_size']}², width "
                                f"{c['base_width']}, depth {c['depth']}, batch {d['batch']}, {d['steps']} steps "
                                f"profiled: wall {d['wall_ms_per_step']:.0f} ms, CPU {d['cpu_ms_per_step']:.0f} ms "
                                f"({d['cpu_utilisation']:.2f} of {d['cpu_count']} cores), {d['ops_per_step']:,.0f} "
                                f"XLA operations taking {d['ops_total_ms_per_step']:.0f} ms",
                             _span([d["loadavg_1_5_15"]])), ""] + _kinds(d, "step", "step"))


# ----------------------------------------------------------------------------- compression and deployment

def onnx_profile(d) -> str:
    v = d["variants"]
    out = [_intro(d, f"ONNX Runtime kernel time per call of the structured U-Net `{d['model']}` ({d['size']}², batch "
                     f"{d['batch']}, one thread, {d['calls']} calls profiled), exported float32, int8 in every conv "
                     "and int8 with the full-resolution convs float32 (`mixed_full_res`); ms per call",
                  _span([d["loadavg_1_5_15"]])), ""]
    kinds = list(dict.fromkeys(k["kind"] for r in v.values() for k in r["kinds"]))
    by_kind = {n: {k["kind"]: k for k in r["kinds"]} for n, r in v.items()}
    out += _table(["operator"] + list(v), [[k] + [f"{by_kind[n][k]['ms']:.3f} ({by_kind[n][k]['per_call']})"
                                                  if k in by_kind[n] else "–" for n in v] for k in kinds]
                  + [["total"] + [f"{r['total_ms']:.3f}" for r in v.values()]])
    sides = list(dict.fromkeys(s for r in v.values() for s in r["conv_ms_by_output_side"]))
    out += ["", "Convolution time by the side of the conv's output map (first row: full resolution):", ""]
    out += _table(["output side"] + list(v), [[f"{s}²"] + [f"{r['conv_ms_by_output_side'].get(s, 0):.3f}"
                                                          for r in v.values()] for s in sides])
    return "\n".join(out)



def compression_latency(d) -> str:
    s, batches = d["settings"], d["latency"]["batches"]
    first = next(iter(batches.values()))
    out = [_intro(d, f"inference latency of int8 and structurally pruned U-Nets against fp32, width {s['width']}, "
                     f"depth {s['depth']}, {s['size']}², fresh weights, median ms of {s['repeats']} interleaved calls "
                     "(speed-up vs fp32 in the same run); `structured_keepK` keeps a fraction K of the channels inside "
                     "each DoubleConv, `structured_all_keepK` of its output channels too",
                  f"{_load1(d['load_average_start']):.1f} before, {_load1(d['load_average_end']):.1f} after"), ""]
    out += _table(["variant", "params"] + [f"batch {b}" for b in batches],
                  [[name, f"{first[name]['params']:,}"]
                   + [f"{batches[b][name]['median_ms']:.1f} ({_x(batches[b][name]['speedup_vs_fp32'])})"
                      for b in batches] for name in first])
    a = d.get("structured_accuracy")
    if a:
        m = a["model_config"]
        out += ["", f"Structured pruning, accuracy and latency: width {m['base_width']}, depth {m['depth']}, "
                    f"{m['input_size']}² (`{a['run']}` on `{a['data']}`, {a['ft_epochs']} fine-tuning epochs at lr "
                    f"{a['ft_lr']:g}, {a.get('keep_epoch', 'last')} epoch kept):", ""]
        out += _table(["model", "params", "test MSE pruned", "fine-tuned", "kept epoch", "/ dense same epochs",
                       f"latency batch {a['latency_batch']} ms", "speed-up"],
                      [(name, f"{x['params']:,}", f"{x['test_mse_pruned']:.3e}", f"{x['test_mse_finetuned']:.3e}",
                        x.get("kept_epoch", "–"), f"{x['ratio_to_dense_same_epochs']:.3g}", f"{x['median_ms']:.1f}",
                        _x(x["speedup_vs_dense"])) for name, x in a["rows"].items()])
    return "\n".join(out)


def inference_latency(d) -> str:
    settings = d["settings"]
    names = list(dict.fromkeys(n for s in settings for n in s["contenders"]))
    out = [_intro(d, "CPU inference latency of the exported U-Nets (jax.export, ONNX Runtime) against JAX fp32; "
                     "`structured_*` is the structurally pruned model (its int8: `mixed_full_res`, the "
                     "full-resolution convs float32); ONNX Runtime's threads do not spin between calls; median ms (speed-up vs jax_fp32 in the same "
                     "rounds) per grid, batch (b) and threads (t), rounds in shuffled order", "per column in the "
                     "last row"), ""]
    rows = [[n] + [f"{c['median_ms']:.2f} ({_x(c['speedup_vs_jax_fp32'])})" if c else "–"
                   for s in settings for c in [s["contenders"].get(n)]] for n in names]
    rows.append(["load average (1 min, before → after)"]
                + [f"{_load1(s['loadavg_before']):.1f} → {_load1(s['loadavg_after']):.1f}" for s in settings])
    out += _table(["contender"] + [f"{s['size']}² b{s['batch']} t{s['threads']}" for s in settings], rows)
    acc = d.get("test_mse") or {}
    if acc:
        out += ["", "Masked test MSE of every model and reloaded artifact:", ""]
        out += _table(["model", "test MSE", "× jax_fp32"], [(k, f"{v:.3e}", f"{v / acc['jax_fp32']:.3f}")
                                                            for k, v in acc.items()])
    sizes = {}
    for key, v in d["artifact_bytes"].items():
        size, name = key.split("/")
        sizes.setdefault(name, {})[size] = v["bytes"]
    grids = list(dict.fromkeys(k.split("/")[0] for k in d["artifact_bytes"]))
    out += ["", "Artifact file sizes:", ""]
    out += _table(["artifact"] + [f"{g}² bytes" for g in grids],
                  [[n] + [f"{b[g]:,}" if g in b else "–" for g in grids] for n, b in sizes.items()])
    f = d.get("floors")
    if f:
        rows = [(f"best int8 vs jax_fp32, batch 1 ({r['artifact']})", f"{r['size']}² t{r['threads']}",
                 _x(r["speedup"]), "yes" if r["holds"] else "no") for r in f.get("best_int8_vs_jax_fp32_batch1", [])]
        mse = {}  # one accuracy per grid, repeated in every setting's record
        for r in f.get("structured_int8_vs_jax_fp32", []):
            rows.append(("structured_onnx_int8 vs jax_fp32", f"{r['size']}² b{r['batch']} t{r['threads']}",
                         _x(r["speedup"]), "yes" if r["speed_holds"] else "no"))
            if "mse_ratio_to_dense" in r:
                mse[r["size"]] = (f"{r['mse_ratio_to_dense']:.3f}", "yes" if r["mse_holds"] else "no")
        rows += [("structured_onnx_int8 test MSE / jax_fp32", f"{size}²", *v) for size, v in mse.items()]
        rows += [(f"file size int8 / fp32 ({k.split('/')[1]})", f"{k.split('/')[0]}²", f"{v['ratio']:.3f}",
                  "yes" if v["holds"] else "no") for k, v in f.get("file_ratio", {}).items()]
        out += ["", "The floors of `inference_latency.py`, as recorded:", ""] + _table(["floor", "setting", "value",
                                                                                         "holds"], rows)
    return "\n".join(out)


# ----------------------------------------------------------------------------- GPU

def accelerator(d) -> str:
    out = [_intro(d, f"on a GPU, the split step against its FFT floor and the memory roofline, ground states per "
                     f"second at the paper preset, the U-Net in float32 and bfloat16; medians of "
                     f"{d['settings']['repeats']}", None)]
    if "solver" in d:
        s = d["solver"]
        out += ["", f"Split step, n = {s['n']}, {s['steps_per_call']} steps a call; the roofline streams "
                    f"{s['bytes_per_point_step_model']} B a point and step at the copy bandwidth measured with each "
                    "row:", ""]
        out += _table(["batch", "state-steps/s", "FFT floor state-steps/s", "step / FFT floor", "copy GB/s",
                       "roofline state-steps/s", "fraction of roofline", "ms/step"],
                      [(r["batch"], f"{r['state_steps_per_s']:,.0f}", f"{r['fft_floor_state_steps_per_s']:,.0f}",
                        f"{r['step_over_fft_floor']:.2f}", f"{r['copy_bandwidth_gb_s']:,.0f}",
                        f"{r['roofline_state_steps_per_s']:,.0f}", f"{r['fraction_of_roofline']:.2f}",
                        f"{r['step_ms']:.3f}") for r in s["rows"]])
    if "pcg" in d:
        p = d["pcg"]
        out += ["", f"Ground states (PCG), n = {p['n']}, L = {p['length']:.2f}, {p['n_starts']} starts each, "
                    f"max_iter {p['max_iter']}, one batch:", ""]
        out += _table(["batch", "starts", "compile s", "solve s", "ground states/s", "converged", "mean iterations",
                       "max start iterations", "peak device GB"],
                      [(r["batch"], r["starts"], f"{r['compile_s']:.1f}", f"{r['solve_s']:.1f}",
                        f"{r['ground_states_per_s']:.1f}", f"{100 * r['converged_fraction']:.0f} %",
                        f"{r['mean_steps']:.0f}", r["max_start_steps"], f"{r['peak_device_bytes'] / 1e9:.1f}")
                       for r in p["rows"]])
    if "unet" in d:
        u = d["unet"]
        res = u["results"]
        train = sorted({b for v in res.values() for b in v["train"]}, key=int)
        infer = sorted({b for v in res.values() for b in v["infer"]}, key=int)
        out += ["", f"U-Net, {u['input_size']}², {u['n_params']:,} parameters:", ""]
        out += _table(["precision"] + [f"train batch {b} samples/s" for b in train]
                      + [f"inference batch {b} ms" for b in infer],
                      [[p] + [f"{v['train'][b]['samples_per_s']:,.0f}" for b in train]
                       + [f"{v['infer'][b]['latency_ms']:.2f}" for b in infer] for p, v in res.items()])
    return "\n".join(out)


# ----------------------------------------------------------------------------- the section

#: (result file relative to RESULTS, without .json; renderer), in the README's order
SECTIONS = (
    ("solver_throughput", solver), ("solver_throughput_floor", solver), ("step_variants", step_variants),
    ("fft_contention", fft_contention), ("cpu_sharding", cpu_sharding), ("phase_reconstruction", phase_reconstruction),
    ("pcg_profile", pcg_profile),
    ("ground_state_methods", methods), ("ground_state_methods_long", methods), ("ground_state_ablations", ablations), ("ground_state_ablations_tol1e-8", ablations),
    ("seeding", seeding), ("ground_state_gradient", ground_state_gradient), ("ground_state_memory", ground_state_memory),
    ("real_time_norm_drift_cpu", norm_drift), ("generation_throughput", generation), ("dataset_time", dataset_time),
    ("distributed", distributed),
    ("distributed_n64", distributed), ("gradient_flow_step", gradient_flow_step), ("unet_throughput", unet_throughput),
    ("unet_profile", unet_profile), ("compression_latency", compression_latency), ("onnx_profile", onnx_profile),
    ("inference_latency", inference_latency), ("gpu_h200/accelerator_throughput", accelerator),
    ("gpu_h200/real_time_norm_drift", norm_drift),
)


def render_all() -> str:
    """The Results section: one ``### name`` block per result file present, in ``SECTIONS`` order."""
    blocks = []
    for name, fn in SECTIONS:
        d = _load(RESULTS / f"{name}.json")
        if d is not None:
            blocks.append(f"### {name}\n\n{fn(d)}\n")
    return "\n".join(blocks)


def replace_section(text: str, section: str) -> str:
    """``text`` with what lies between the BEGIN and END markers replaced by ``section``."""
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"the README needs the line {BEGIN!r} and, after it, {END!r}")
    return text[: i + len(BEGIN)] + "\n" + section + text[j:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write", action="store_true", help="rewrite the Results section of the README in place")
    p.add_argument("--readme", type=Path, default=README, help="the README to rewrite (with --write)")
    args = p.parse_args(argv)
    section = render_all()
    if not args.write:
        print(section, end="")
        return 0
    try:
        args.readme.write_text(replace_section(args.readme.read_text(), section))
    except (ValueError, OSError) as e:
        p.error(f"{args.readme}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
