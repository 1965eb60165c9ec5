"""`bec-jax generate` and `bec-jax show-data`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bec_jax.cli import UsageError, floats, lock_output, out_dir, positive_int


def _range(text: str) -> tuple[float, float]:
    vals = floats(text)
    if len(vals) != 2:
        raise UsageError(f"expected a range 'lo,hi', got {text!r}")
    return tuple(vals)


def cmd_generate(args) -> int:
    from bec_jax.data.generate import PRESETS, generate

    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    overrides = {k: getattr(args, k) for k in ("n", "n_groups", "states_per_group", "g_range", "omega_range",
                                                 "length", "batch_size", "n_starts", "max_iter", "method", "seed")
                 if getattr(args, k) is not None}
    if args.keep_unconverged:
        overrides["keep_unconverged"] = True
    config = dataclasses.replace(PRESETS[args.preset], **overrides)
    out = Path(args.out)
    if out.suffix not in (".h5", ".hdf5"):
        raise UsageError(f"--out must end in .h5 or .hdf5, got {args.out!r}")
    out_dir(str(out.parent) if str(out.parent) else ".", lock=False)
    lock_output(out)
    print(f"bec-jax generate: {config.n_samples} states ({config.n_groups} groups x {config.states_per_group}), "
          f"grid {config.n}² L={config.resolved_length}, batches of {config.batch_size} -> {out}", flush=True)
    summary = generate(config, out, progress=not args.no_progress, max_batches=args.max_batches)
    print(json.dumps(summary))
    return 0


def cmd_show_data(args) -> int:
    from bec_jax.data.plots import plot_samples

    path = Path(args.data)
    if not path.exists():
        raise UsageError(f"no dataset at {args.data!r}")
    png = plot_samples(path, args.out, n_samples=args.samples, seed=args.seed, target=args.target)
    print(f"wrote {png}")
    return 0


def register(sub) -> None:
    g = sub.add_parser("generate", help="generate (or resume) a dataset of rotating ground states (HDF5)")
    g.add_argument("--preset", default="quick", help="quick (CPU, minutes) or paper (n=200, 1,680 states; GPU)")
    g.add_argument("--out", default="data/quick.h5", help="output .h5 file (default data/quick.h5)")
    g.add_argument("--n", type=int, help="grid points per side")
    g.add_argument("--n-groups", type=int, help="number of (g, Ω) groups")
    g.add_argument("--states-per-group", type=int, help="samples (initial states) per group")
    g.add_argument("--g-range", type=_range, help="g sampling range lo,hi")
    g.add_argument("--omega-range", type=_range, help="Ω sampling range lo,hi (|Ω| < 1)")
    g.add_argument("--length", type=float, help="box side (default: the box_length rule)")
    g.add_argument("--batch-size", type=int, help="states per compiled batch (unit of resumption)")
    g.add_argument("--n-starts", type=int, help="initial guesses per state")
    g.add_argument("--max-iter", type=int, help="CG iteration cap per start")
    g.add_argument("--method", choices=["pcg", "imaginary_time"], help="ground-state method")
    g.add_argument("--seed", type=int, help="base seed")
    g.add_argument("--keep-unconverged", action="store_true", help="also store unconverged / edge-touching states")
    g.add_argument("--max-batches", type=positive_int, default=None, help="stop after this many new batches (resume later)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    s = sub.add_parser("show-data", help="PNG of density and phase-gradient targets for a few samples")
    s.add_argument("--data", default="data/quick.h5", help="dataset .h5")
    s.add_argument("--out", default="runs/show_data.png", help="output PNG")
    s.add_argument("--samples", type=int, default=3)
    s.add_argument("--target", choices=["phase_diff", "velocity"], default="phase_diff")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_show_data)
