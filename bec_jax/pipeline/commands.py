"""`bec-jax pipeline`: the whole mission, parameters → compressed models → report."""

from __future__ import annotations

import json
from pathlib import Path

from bec_jax.flags import UsageError, out_dir


def cmd_pipeline(args) -> int:
    from bec_jax.pipeline.config import PRESETS, PipelineConfig, config_from_args
    from bec_jax.pipeline.run import RunConflict, run_pipeline

    if args.config:
        path = Path(args.config)
        try:
            base = PipelineConfig.from_dict(json.loads(path.read_text()))
        except OSError as e:
            raise UsageError(f"cannot read --config {args.config!r}: {e.strerror or e}") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UsageError(f"--config {args.config!r} is not a pipeline config.json ({e})") from None
    elif args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    else:
        base = PRESETS[args.preset]
    config = config_from_args(base, args)
    out = out_dir(args.out or f"runs/{args.preset}")
    c = config
    print(f"bec-jax pipeline: {c.data.n_samples} states on {c.data.n}², U-Net {c.model.base_width}/{c.model.depth}, "
          f"{c.train.epochs} epochs, prune {c.compress.sparsity:.0%} ({c.compress.method}), int8 "
          f"{'/'.join(c.compress.schemes)} -> {out}", flush=True)
    try:
        run_pipeline(config, out, progress=not args.no_progress)
    except RunConflict as e:
        raise UsageError(str(e)) from None
    report = json.loads((out / "report.json").read_text())
    e = report["evaluation"]
    print(json.dumps(dict(report=str(out / "report.md"), test_mse=e["mse"], fidelity_mean=e["fidelity_mean"],
                          vortex_count_accuracy=e["vortex_count_accuracy"],
                          seconds=round(sum(report["stage_seconds"].values()), 1))))
    return 0


def register(sub) -> None:
    from bec_jax.pipeline.config import add_config_flags

    p = sub.add_parser(
        "pipeline", help="generate -> train -> evaluate -> prune -> quantize -> evaluate compressed -> report",
        description="Run (or resume) the whole pipeline into one folder: dataset, trained U-Net, pruned and int8 "
                    "models (orbax), report.md / report.json / PNGs. Rerun the same command to resume. Every "
                    "config field is a flag --<section>-<field>; defaults come from the preset.")
    p.add_argument("--preset", default="quick", help="quick (2-core CPU, a few minutes), lab (quick trained on "
                   "camera images, for `bec-jax predict`) or paper (reference sizes, GPU)")
    p.add_argument("--config", default=None, help="config.json of an earlier run (replaces --preset)")
    p.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(p)
    p.set_defaults(func=cmd_pipeline)
