"""`bec-jax generate` and `bec-jax show-data`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bec_jax.flags import UsageError, add_dataclass_flags, config_from_flags, lock_output, out_dir, positive_int


def cmd_generate(args) -> int:
    from bec_jax.data.generate import PRESETS, generate_sharded

    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    config = config_from_flags(PRESETS[args.preset], args)
    out = Path(args.out)
    if out.suffix not in (".h5", ".hdf5"):
        raise UsageError(f"--out must end in .h5 or .hdf5, got {args.out!r}")
    out_dir(str(out.parent) if str(out.parent) else ".", lock=False)
    lock_output(out)

    def header(note: str) -> None:  # once the checks have passed: a refusal is then the command's only line
        print(f"bec-jax generate: {config.n_samples} states ({config.n_groups} groups x {config.states_per_group}), "
              f"grid {config.n}² L={config.resolved_length}, batches of {config.batch_size} -> {out}"
              + (f"; {note}" if note else ""), flush=True)

    # one process: ``out``; several (jax.distributed): one shard each, read as one dataset from <stem>.shards
    summary = generate_sharded(config, out, progress=not args.no_progress, max_batches=args.max_batches,
                               on_start=header)
    print(json.dumps(summary))
    # the dataset's totals: one process, or the shard that wrote the manifest (the others' are their shard's)
    if summary.get("status") == "complete" and summary.get("n_samples") == 0 and summary.get("shard") in (None, 0):
        print(f"bec-jax generate: warning: the dataset holds no states: all {summary.get('n_failed')} failed "
              f"({summary.get('n_not_converged')} not converged, {summary.get('n_touch_edge')} reaching the box's "
              "edge); check the box (--length), the grid and --max-iter", file=sys.stderr)
    return 0


def cmd_show_data(args) -> int:
    from bec_jax.data.plots import SampleFigure, plot_samples

    c = config_from_flags(SampleFigure(), args)
    if Path(args.out).suffix.lower() != ".png" or Path(args.out).is_dir():
        raise UsageError(f"--out must be a .png file, got {args.out!r}")
    path = Path(args.data)
    if not path.exists():
        raise UsageError(f"no dataset at {args.data!r}")
    png = plot_samples(path, args.out, n_samples=c.samples, seed=c.seed, target=c.target)
    print(f"wrote {png}")
    return 0


def register(sub) -> None:
    from bec_jax.data.generate import PRESETS, GenerateConfig
    from bec_jax.data.plots import SampleFigure

    g = sub.add_parser("generate", help="generate (or resume) a dataset of rotating ground states (HDF5)",
                       description="Generate (or resume) a dataset. Every GenerateConfig field is a flag; defaults "
                                   "come from --preset (shown: the quick preset's).")
    g.add_argument("--preset", default="quick", help="quick (CPU, minutes) or paper (n=200, 1,680 states; GPU)")
    g.add_argument("--out", default="data/quick.h5", help="output .h5 file (default data/quick.h5)")
    g.add_argument("--max-batches", type=positive_int, default=None, help="stop after this many new batches (resume later)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_flags(g, GenerateConfig, PRESETS["quick"], title="dataset (GenerateConfig)")
    g.set_defaults(func=cmd_generate)

    s = sub.add_parser("show-data", help="PNG of density and phase-gradient targets for a few samples",
                       description="Draw a few samples of a dataset. Every SampleFigure field is a flag.")
    s.add_argument("--data", default="data/quick.h5", help="dataset .h5 (or shard folder; default data/quick.h5)")
    s.add_argument("--out", default="runs/show_data.png", help="output PNG (default runs/show_data.png)")
    add_dataclass_flags(s, SampleFigure, title="figure (SampleFigure)")
    s.set_defaults(func=cmd_show_data)
