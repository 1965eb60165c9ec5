"""`bec-jax export`: a saved model folder → a self-contained inference artifact (jax.export or ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

from bec_jax.flags import UsageError, lock_output, positive_int

from bec_jax.deploy.export import (FORMATS, QUANTIZERS, SUFFIX,  # numpy only: parsing does not start JAX
                                   check_model_folder)


def cmd_export(args) -> int:
    if args.format == "jax" and args.quantizer != "bec_jax":
        raise UsageError("--quantizer ort needs --format onnx (the jax format runs bec_jax's own int8 path)")
    out = Path(args.out)
    if out.suffix != SUFFIX[args.format]:
        raise UsageError(f"--out for format {args.format} must end in {SUFFIX[args.format]}, got {str(out)!r}")
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder; give a file name")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{str(out)!r} exists; pass --overwrite to replace it")
    if not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model!r} is not a folder")
    check_model_folder(args.model)
    if args.data is not None and not Path(args.data).is_file():
        raise UsageError(f"--data {args.data!r} is not a file")
    needed = dict(jax="flatbuffers", onnx="onnxruntime")[args.format]  # jax.export writes flatbuffers
    try:
        __import__(needed)
    except ImportError:
        raise UsageError(f"--format {args.format} needs {needed}: pip install 'bec_jax[deploy]'") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_output(out)
    from bec_jax.deploy.export import export_artifact

    summary = export_artifact(args.model, args.format, out, data=args.data, quantizer=args.quantizer,
                              calibration_count=args.calibration_samples)
    print(json.dumps(summary))
    return 0


def register(sub) -> None:
    e = sub.add_parser("export", help="write a saved model (dense, pruned, shrunk or int8) as a self-contained "
                                      "jax.export or ONNX file")
    e.add_argument("--model", required=True, help="saved model folder (pipeline models/<variant>, or the model/ "
                                                  "folder of bec-jax shrink, quantize or prune)")
    e.add_argument("--format", choices=FORMATS, required=True,
                   help="jax: jax.export serialized StableHLO (.jaxexport); onnx: ONNX graph (.onnx, needs "
                        "bec_jax[deploy])")
    e.add_argument("--out", required=True, help="output file (.jaxexport or .onnx)")
    e.add_argument("--data", default=None, help="dataset .h5 whose training split calibrates int8 activation "
                                                "scales (int8 ONNX and --quantizer ort)")
    e.add_argument("--quantizer", choices=QUANTIZERS, default="bec_jax",
                   help="int8 ONNX: bec_jax (the model's own int8 weights and scales, default) or ort "
                        "(ONNX Runtime's static quantizer on the float graph)")
    e.add_argument("--calibration-samples", type=positive_int, default=32, help="calibration samples (default 32)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    e.set_defaults(func=cmd_export)
