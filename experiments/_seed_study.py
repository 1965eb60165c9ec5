"""What the seed studies (optimizer_comparison.py, physics_informed.py) share: their common flags, the model
and dataset they train, and the loop that trains (or resumes) one ``bec_jax.train.fit`` run per (variant, seed)
in ``OUT/<variant>/seed<k>``, and the statistics over seeds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np


def add_flags(p: argparse.ArgumentParser, *, out: str, report_dir: str | None, epochs: int, seeds: str) -> None:
    """The flags every seed study has, with its own defaults (``check`` parses and validates them)."""
    p.add_argument("--data", default="data/quick.h5", help="dataset .h5 (bec-jax generate)")
    p.add_argument("--out", default=out, help="folder of the training runs (checkpoints)")
    p.add_argument("--report-dir", default=report_dir,
                   help="folder for the JSON/markdown/PNG report" + (" (default: --out)" if report_dir is None else ""))
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--seeds", default=seeds, help="comma-separated seeds (init and batch order)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--width", type=int, default=8, help="U-Net base width (reference 8)")
    p.add_argument("--depth", type=int, default=None, help="U-Net depth (default min(7, log2 n))")
    p.add_argument("--checkpoint-every", type=int, default=5)
    p.add_argument("--no-progress", action="store_true")


def check(p: argparse.ArgumentParser, args, variants: str, allowed) -> None:
    """Parse ``args.seeds`` and ``args.<variants>`` (comma-separated; a subset of ``allowed``) into lists in
    place; ``p.error`` (exit 2, one line) for bad seeds, variants or epochs."""
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    names = [v.strip() for v in getattr(args, variants).split(",") if v.strip()]
    bad = [v for v in names if v not in allowed]
    if bad or not names:
        p.error(f"--{variants} must be a subset of {','.join(allowed)}, got {bad or names}")
    setattr(args, variants, names)
    if not args.seeds:
        p.error("--seeds is empty")
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")


class Study(NamedTuple):
    """The model and dataset of a study. data: the .h5; attrs: its attributes."""

    model_config: object
    data: Path
    attrs: dict
    report_dir: Path

    @property
    def n(self) -> int:
        """Grid points a side."""
        return self.model_config.input_size

    @property
    def depth(self) -> int:
        return self.model_config.depth

    @property
    def n_params(self) -> int:
        from bec_jax.models.unet import count_params

        return count_params(self.model_config)


def prepare(args, header: str) -> Study:
    """The study of ``args`` (the model for its data, width and depth; the report folder, created), after printing
    ``header`` with the model and data. SystemExit(2) with one line where the model does not fit the data."""
    import sys

    from bec_jax.data.storage import read_h5
    from bec_jax.train.trainer import model_config_for

    try:
        model_config = model_config_for(args.data, args.width, args.depth)
    except ValueError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2) from None
    data = Path(args.data)
    study = Study(model_config, data, read_h5(data, fields=[], psi=False)[1], Path(args.report_dir or args.out))
    study.report_dir.mkdir(parents=True, exist_ok=True)
    print(f"{header}, U-Net width {args.width} depth {study.depth} ({study.n_params:,} parameters) on {study.n}² "
          f"data {data}", flush=True)
    return study


def train_runs(study: Study, args, names, make_config: Callable) -> Iterator[tuple]:
    """(name, seed, run folder, ``fit``'s result) of every (name, seed), names outer: ``make_config(name,
    seed)`` trained (or resumed; a finished run is only read) in ``args.out/<name>/seed<k>``."""
    from bec_jax.train.trainer import fit

    for name in names:
        for seed in args.seeds:
            run_dir = Path(args.out) / name / f"seed{seed}"
            print(f"--- {name} seed {seed} -> {run_dir}", flush=True)
            yield name, seed, run_dir, fit(study.data, run_dir, study.model_config, make_config(name, seed),
                                           checkpoint_every=args.checkpoint_every, progress=not args.no_progress)


def seed_stats(values) -> dict:
    """Mean, sample std (ddof=1; 0 for one seed), min and max over seeds of the values that are not None
    (all None without any)."""
    v = np.asarray([x for x in values if x is not None], float)
    if v.size == 0:
        return dict(mean=None, std=None, min=None, max=None)
    return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if v.size > 1 else 0.0, min=float(v.min()),
                max=float(v.max()))
