"""`bec-jax predict`: phase gradient, phase and vortices of lab images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bec_jax.flags import UsageError, add_dataclass_flags, config_from_flags, out_dir

#: exit status when the run went through but some of its images could not be used (2 stays a usage error,
#: which writes nothing), so that a script can tell the two apart
IMAGES_FAILED = 3


def cmd_predict(args) -> int:
    from bec_jax.deploy.predict import ImageError, ImageSettings, expand_inputs, load_model, predict_files

    s = config_from_flags(ImageSettings(), args)
    specs = expand_inputs(args.images)
    if not specs:
        raise UsageError(f"no images found in {' '.join(args.images)!r}")
    if not Path(args.model).is_dir():
        raise UsageError(f"no model folder at {args.model!r}")
    sidecars = set().union(*map(_sidecar_keys, specs))
    if s.pixel_size is None and s.pixel_size_um is None and not {"pixel_size", "pixel_size_um"} & sidecars:
        raise UsageError("no pixel size: give --pixel-size (a⊥ per camera pixel in the atoms' plane), "
                         "--pixel-size-um or a sidecar IMAGE.json with pixel_size")
    try:
        s.in_trap_units()
    except ImageError as e:
        if not {"trap_frequency_hz", "species"} & sidecars:  # else each image's sidecar may give them
            raise UsageError(str(e)) from None
    model = load_model(args.model)  # before the output folder: a wrong --model leaves nothing behind
    out = out_dir(args.out)
    u = s.units
    units = "" if u is None else f"; a⊥ = {u.length_um:.4g} µm, 1/ω⊥ = {u.time_ms:.4g} ms, a⊥ω⊥ = " \
                                 f"{u.velocity_mm_per_s:.4g} mm/s"
    print(f"bec-jax predict: {len(specs)} image(s), model {args.model} ({model.grid.n}² grid, box "
          f"{model.grid.length:g} a⊥, target {model.target}){units} -> {out}", flush=True)
    if args.estimate_parameters and model.ranges is None:
        print("bec-jax predict: warning: the (g, omega) range of the model's training data is unknown (a run from "
              "before it was recorded, its dataset not found): the estimates search ParamBox's default box, "
              "g 30-270, omega 0.4-0.8", file=sys.stderr, flush=True)
    summary = predict_files(model, specs, out, s, estimate=args.estimate_parameters,
                            zero_momentum=not args.keep_momentum, progress=not args.no_progress)
    # this call's images (summary.json also keeps the records of images given to earlier calls)
    asked = set(specs)
    mine = [r for r in summary["images"] if r["file"] in asked]
    failed = [r for r in mine if r["status"] == "error"]
    skipped = summary["skipped"]
    if skipped:
        print(f"bec-jax predict: {len(skipped)} of the {len(mine)} image(s) were done before with the same model, "
              "settings and file (summary.json): kept, not predicted again", flush=True)
    print(json.dumps(dict(n_images=len(mine), n_ok=len(mine) - len(failed), n_error=len(failed),
                          n_skipped=len(skipped), n_records=summary["n_images"], summary=str(out / "summary.json"))))
    # the images that failed: one line each (the others are written all the same)
    for r in failed:
        print(f"bec-jax predict: {r['file']}: {r['error'].removeprefix(r['file'] + ': ')}", file=sys.stderr)
    for r in mine:
        if (r.get("parameters") or {}).get("touches_edge"):
            print(f"bec-jax predict: warning: {r['file']}: the (g, omega) estimate is biased: the cloud or the state "
                  "fitted to it reaches the model grid's edge (parameters.touches_edge)", file=sys.stderr)
    return IMAGES_FAILED if failed else 0


def _sidecar_keys(spec: str) -> set:
    """The settings an image's sidecar gives (one that cannot be read is the image's error: all of them)."""
    from bec_jax.deploy.predict import SETTING_FIELDS, ImageError, _sidecar

    try:
        return {k for k, v in _sidecar(spec).items() if v is not None}
    except (ImageError, OSError):
        return set(SETTING_FIELDS)


def register(sub) -> None:
    from bec_jax.deploy.predict import ImageSettings

    p = sub.add_parser("predict", help="phase gradient, phase and vortices of camera images with a trained model; "
                                       "rerun to resume",
                       description="Predict the phase gradient, the phase and the vortices of camera images. Every "
                                   "ImageSettings field is a flag; a sidecar IMAGE.json (img.npy.json or img.json) "
                                   "may hold any of them per image. An image that cannot be used is named on stderr "
                                   "with its reason and the others are still written (exit status 3; 2 is a usage "
                                   "error, which writes nothing).")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help=".npy, .tif/.tiff, .png, file.h5:/dataset, a folder or a glob")
    p.add_argument("--model", required=True,
                   help="model folder: a training run, a pipeline run or its models/<name>, or the model/ folder "
                        "of bec-jax prune/quantize/shrink")
    p.add_argument("--out", required=True, help="output folder: NAME.h5, NAME.png per image, summary.json")
    p.add_argument("--estimate-parameters", action="store_true",
                   help="also estimate (g, Ω) of each image: gradient descent through the ground-state solver, "
                        "the imaging model inside the loss, seeded with the predicted vortices (seconds per "
                        "image; summary.json 'parameters')")
    p.add_argument("--keep-momentum", action="store_true",
                   help="keep the predicted uniform flow, for a cloud that moves (sloshes); by default it is taken "
                        "off, as a cloud at rest in its trap carries no momentum (summary.json 'flow_removed')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_flags(p, ImageSettings, title="imaging (ImageSettings)")
    p.set_defaults(func=cmd_predict)
