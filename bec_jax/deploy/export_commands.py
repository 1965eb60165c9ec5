"""`bec-jax export`: a saved model folder → a self-contained inference artifact (jax.export or ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

from bec_jax.flags import UsageError, add_dataclass_flags, check_apart, config_from_flags, lock_output, out_dir

from bec_jax.deploy.export import ExportConfig, check_model_folder  # numpy only: parsing does not start JAX


def cmd_export(args) -> int:
    c = config_from_flags(ExportConfig(), args)
    out = Path(args.out)
    if out.suffix != c.suffix:
        raise UsageError(f"--out for format {c.format} must end in {c.suffix}, got {str(out)!r}")
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder; give a file name")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{str(out)!r} exists; pass --overwrite to replace it")
    if not Path(args.model).is_dir():
        what = "is not a folder" if Path(args.model).exists() else "does not exist"
        raise UsageError(f"--model {args.model!r} {what}")
    check_model_folder(args.model)
    check_apart(out, model=args.model)
    if args.data is not None and not Path(args.data).is_file():
        raise UsageError(f"--data {args.data!r} is not a file")
    needed = dict(jax="flatbuffers", onnx="onnxruntime")[c.format]  # jax.export writes flatbuffers
    try:
        __import__(needed)
    except ImportError:
        raise UsageError(f"--format {c.format} needs {needed}: pip install 'bec_jax[deploy]'") from None
    out_dir(str(out.parent), lock=False)  # a folder made here goes again if the export is refused
    lock_output(out)
    from bec_jax.deploy.export import export_artifact

    summary = export_artifact(args.model, c.format, out, data=args.data, quantizer=c.quantizer,
                              calibration_count=c.calibration_samples)
    print(json.dumps(summary))
    return 0


def register(sub) -> None:
    e = sub.add_parser("export", help="write a saved model (dense, pruned, shrunk or int8) as a self-contained "
                                      "jax.export or ONNX file",
                       description="Export a saved model folder to one inference file. Every ExportConfig field "
                                   "is a flag.")
    e.add_argument("--model", required=True, help="saved model folder (pipeline models/<variant>, or the model/ "
                                                  "folder of bec-jax shrink, quantize or prune)")
    e.add_argument("--out", required=True, help="output file (.jaxexport or .onnx, as --format)")
    e.add_argument("--data", default=None, help="dataset .h5 whose training split calibrates int8 activation "
                                                "scales (int8 ONNX and --quantizer ort)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_dataclass_flags(e, ExportConfig, title="export (ExportConfig)")
    e.set_defaults(func=cmd_export)
