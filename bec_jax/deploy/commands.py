"""`bec-jax predict`: phase gradient, phase and vortices of lab images."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bec_jax.flags import UsageError, out_dir


def _number(text: str, name: str, positive: bool):
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
        raise UsageError(f"--{name} must be a finite number {'> 0' if positive else '>= 0'}, got {text!r}")
    return v


def cmd_predict(args) -> int:
    from bec_jax.deploy.predict import expand_inputs, load_model, predict_files

    pixel = None if args.pixel_size is None else _number(args.pixel_size, "pixel-size", True)
    tof = _number(args.tof, "tof", False)
    atoms = None if args.atom_number is None else _number(args.atom_number, "atom-number", True)
    specs = expand_inputs(args.images)
    if not specs:
        raise UsageError(f"no images found in {' '.join(args.images)!r}")
    if not Path(args.model).is_dir():
        raise UsageError(f"no model folder at {args.model!r}")
    out = out_dir(args.out)
    model = load_model(args.model)
    print(f"bec-jax predict: {len(specs)} image(s), model {args.model} ({model.grid.n}² grid, box "
          f"{model.grid.length:g} a⊥, target {model.target}) -> {out}", flush=True)
    summary = predict_files(model, specs, out, pixel_size=pixel, tof=tof, atom_number=atoms,
                            progress=not args.no_progress)
    print(json.dumps(dict(n_images=summary["n_images"], n_ok=summary["n_ok"], n_error=summary["n_error"],
                          summary=str(out / "summary.json"))))
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="phase gradient, phase and vortices of camera images with a trained model; "
                                       "rerun to resume")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help=".npy, .tif/.tiff, .png, file.h5:/dataset, a folder or a glob; a sidecar IMAGE.json "
                        "(img.npy.json or img.json) may hold pixel_size, tof, atom_number")
    p.add_argument("--model", required=True,
                   help="model folder: a training run, a pipeline run or its models/<name>, or the model/ folder "
                        "of bec-jax prune/quantize/shrink")
    p.add_argument("--pixel-size", default=None,
                   help="object-plane pixel size at imaging, in trap oscillator lengths (> 0)")
    p.add_argument("--tof", default="0", help="time of flight in units of 1/omega_perp (>= 0, default 0)")
    p.add_argument("--atom-number", default=None, help="atoms in the cloud (> 0; reported as counts per atom)")
    p.add_argument("--out", required=True, help="output folder: NAME.h5, NAME.png per image, summary.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)
