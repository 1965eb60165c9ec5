"""`bec-jax predict`: phase gradient, phase and vortices of lab images."""

from __future__ import annotations

import json
from pathlib import Path

from bec_jax.flags import UsageError, add_dataclass_flags, config_from_flags, out_dir


def cmd_predict(args) -> int:
    from bec_jax.deploy.predict import ImageSettings, expand_inputs, load_model, predict_files

    s = config_from_flags(ImageSettings(), args)
    specs = expand_inputs(args.images)
    if not specs:
        raise UsageError(f"no images found in {' '.join(args.images)!r}")
    if not Path(args.model).is_dir():
        raise UsageError(f"no model folder at {args.model!r}")
    out = out_dir(args.out)
    model = load_model(args.model)
    print(f"bec-jax predict: {len(specs)} image(s), model {args.model} ({model.grid.n}² grid, box "
          f"{model.grid.length:g} a⊥, target {model.target}) -> {out}", flush=True)
    summary = predict_files(model, specs, out, pixel_size=s.pixel_size, tof=s.tof, atom_number=s.atom_number,
                            psf_width=s.psf_width, estimate=args.estimate_parameters,
                            zero_momentum=not args.keep_momentum, progress=not args.no_progress)
    print(json.dumps(dict(n_images=summary["n_images"], n_ok=summary["n_ok"], n_error=summary["n_error"],
                          summary=str(out / "summary.json"))))
    return 0


def register(sub) -> None:
    from bec_jax.deploy.predict import ImageSettings

    p = sub.add_parser("predict", help="phase gradient, phase and vortices of camera images with a trained model; "
                                       "rerun to resume",
                       description="Predict the phase gradient, the phase and the vortices of camera images. Every "
                                   "ImageSettings field is a flag; a sidecar IMAGE.json (img.npy.json or img.json) "
                                   "may hold pixel_size, tof, atom_number per image.")
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
