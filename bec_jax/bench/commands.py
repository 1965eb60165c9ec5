"""`bec-jax bench`: split-step and ground-state throughput on this machine, beside the FFT floor."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bec_jax.artifacts import atomic_write_text
from bec_jax.flags import UsageError, add_dataclass_flags, config_from_flags, lock_output, out_dir


def _table(result: dict) -> str:
    """One screen: the split step against its FFT floor (and NumPy), then ground states per second."""
    s = result["split_step"]
    ms, sps = s["ms_per_step"], s["state_steps_per_s"]
    lines = [f"bec-jax bench: n={s['n']}, batch {s['batch']}, {s['dtype']}, {result['devices']} {result['backend']} "
             f"device(s), {s['steps_per_call']} steps/call, medians of {s['repeats']} (load average "
             f"{s['load_average_before'][0]:.1f} -> {s['load_average_after'][0]:.1f})",
             f"{'split step':<32} {'ms/step':>10} {'state-steps/s':>14} {'vs bec_jax':>11}"]
    names = {"bec_jax": "bec_jax (bj.imaginary_time)", "fft": "FFT floor (4 bare FFT passes)",
             "numpy": "NumPy (numpy.fft)", "scipy": "NumPy (scipy.fft, workers=-1)"}
    for k in ms:
        rel = "1" if k == "bec_jax" else f"{ms[k] / ms['bec_jax']:.2f}x time"
        lines.append(f"{names[k]:<32} {ms[k]:>10.3f} {sps[k]:>14,.0f} {rel:>11}")
    lines.append(f"bec_jax / FFT floor: {s['bec_jax_over_fft']:.2f} (median of same-round ratios)")
    if "speedup_vs_numpy" in s:
        lines.append(f"speed-up vs the faster NumPy ({s['numpy_fft']}): {s['speedup_vs_numpy']:.2f}x")
    if "ground_state" in result:
        gs = result["ground_state"]
        coarse = f", relaxed on {gs['n'] // gs['coarsen']}² first" if gs.get("coarsen", 1) > 1 else ""
        lines.append(f"ground states: {gs['batch']} at g={gs['g']:g}, omega={gs['omega']:g}, {gs['n_starts']} start(s) each"
                     f"{coarse}: "
                     f"{gs['wall_s']:.2f} s -> {gs['ground_states_per_s']:.3g} ground states/s "
                     f"({gs['converged']}/{gs['batch']} converged, max residual {gs['max_residual']:.1e})")
    return "\n".join(lines)


def cmd_bench(args) -> int:
    import jax

    from bec_jax.bench.measure import BenchConfig, WorkerPool, ground_state_row, step_row

    c = config_from_flags(BenchConfig(), args)
    out = Path(args.out)
    if out.suffix != ".json":
        raise UsageError(f"--out must end in .json, got {args.out!r}")
    out_dir(str(out.parent) if str(out.parent) else ".", lock=False)
    lock_output(out)
    x64 = c.dtype == "complex128"
    contenders = ("bec_jax", "fft") + (("numpy", "scipy") if c.numpy else ())
    t0 = time.perf_counter()
    # x64 here too for the NumPy check; a context, so that a caller's process keeps its setting
    with jax.enable_x64(x64), WorkerPool(cpu_devices=args.cpu_devices, x64=x64) as pool:
        split = step_row(pool, c.step_workload(), contenders, c.repeats)
        result = dict(benchmark="bec-jax bench", backend=jax.default_backend(),
                      devices=split["info"]["bec_jax"]["devices"], split_step=split)
        if not c.step_only:
            result["ground_state"] = ground_state_row(pool, c.ground_state_workload(), c.repeats)
    result["wall_s"] = time.perf_counter() - t0
    atomic_write_text(out, json.dumps(result, indent=2))
    print(_table(result))
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    from bec_jax.bench.measure import BenchConfig

    b = sub.add_parser("bench", help="split-step state-steps/s and ground states/s on this machine, beside the "
                                     "FFT floor (each contender in its own process)",
                       description="Time the split step (bj.imaginary_time) against its FFT floor (and NumPy), and "
                                   "ground states per second; JSON out and a one-screen table. Every BenchConfig "
                                   "field is a flag.")
    b.add_argument("--out", default="runs/bench.json", help="JSON output (default runs/bench.json)")
    add_dataclass_flags(b, BenchConfig, aliases=dict(step_only=["--no-ground-states"]), title="what is timed (BenchConfig)")
    b.set_defaults(func=cmd_bench)
