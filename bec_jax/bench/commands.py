"""`bec-jax bench`: split-step and ground-state throughput on this machine, beside the FFT floor."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bec_jax.artifacts import atomic_write_text
from bec_jax.flags import UsageError, lock_output, out_dir, positive_int


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
        lines.append(f"ground states: {gs['batch']} at g={gs['g']:g}, omega={gs['omega']:g}, {gs['n_starts']} start(s) each: "
                     f"{gs['wall_s']:.2f} s -> {gs['ground_states_per_s']:.3g} ground states/s "
                     f"({gs['converged']}/{gs['batch']} converged, max residual {gs['max_residual']:.1e})")
    return "\n".join(lines)


def cmd_bench(args) -> int:
    import jax

    from bec_jax.bench.measure import GroundStateWorkload, StepWorkload, WorkerPool, ground_state_row, step_row

    try:
        step = StepWorkload(args.n, args.batch, steps=args.steps, dtype=args.dtype)
        gs = None if args.no_ground_states else GroundStateWorkload(
            args.n, args.batch, dtype=args.dtype, g=args.g, omega=args.omega, n_starts=args.starts)
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out)
    if out.suffix != ".json":
        raise UsageError(f"--out must end in .json, got {args.out!r}")
    out_dir(str(out.parent) if str(out.parent) else ".", lock=False)
    lock_output(out)
    x64 = args.dtype == "complex128"
    contenders = ("bec_jax", "fft") + (("numpy", "scipy") if args.numpy else ())
    t0 = time.perf_counter()
    # x64 here too for the NumPy check; a context, so that a caller's process keeps its setting
    with jax.enable_x64(x64), WorkerPool(cpu_devices=args.cpu_devices, x64=x64) as pool:
        split = step_row(pool, step, contenders, args.repeats)
        result = dict(benchmark="bec-jax bench", backend=jax.default_backend(),
                      devices=split["info"]["bec_jax"]["devices"], split_step=split)
        if gs is not None:
            result["ground_state"] = ground_state_row(pool, gs, args.repeats)
    result["wall_s"] = time.perf_counter() - t0
    atomic_write_text(out, json.dumps(result, indent=2))
    print(_table(result))
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    b = sub.add_parser("bench", help="split-step state-steps/s and ground states/s on this machine, beside the "
                                     "FFT floor (each contender in its own process)")
    b.add_argument("--n", type=int, default=128, help="grid points per side (even, >= 16; default 128)")
    b.add_argument("--batch", type=positive_int, default=16, help="states per batch (default 16)")
    b.add_argument("--dtype", default="complex64", help="complex64 (default) or complex128")
    b.add_argument("--steps", type=positive_int, default=20, help="split steps per timed call (default 20)")
    b.add_argument("--repeats", type=positive_int, default=5, help="timed calls per contender (default 5; medians)")
    b.add_argument("--numpy", action="store_true", help="also time the NumPy step (numpy.fft and scipy.fft)")
    b.add_argument("--g", type=float, default=100.0, help="interaction of the ground states (default 100)")
    b.add_argument("--omega", type=float, default=0.6, help="rotation of the ground states, |omega| < 1 (default 0.6)")
    b.add_argument("--starts", type=positive_int, default=None, help="starts per ground state (default: the solver's)")
    b.add_argument("--no-ground-states", action="store_true", help="time the split step only")
    b.add_argument("--out", default="runs/bench.json", help="JSON output (default runs/bench.json)")
    b.set_defaults(func=cmd_bench)
