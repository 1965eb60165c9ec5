"""Where an exported structured U-Net's time goes in ONNX Runtime: operator kinds and convolutions per resolution.

Exports a structurally pruned model folder (``bec-jax shrink`` OUT/model) three ways: float32,
int8 in every conv ("per_channel") and int8 with the convs at full resolution kept float32
("mixed_full_res"), and runs each under ONNX Runtime's profiler, pinned to one core with one
thread. Sums the kernel time per operator kind (``QLinearConv`` = integer convolution, ``Conv`` =
float convolution, …) and the convolution time per output resolution (the side of the conv's
output map: 64 = full resolution at 64²), per call. This is where the choice of
``mixed_full_res`` for the structured int8 artifact comes from (docs/deploy.md).

    python benchmarks/onnx_profile.py --run runs/quick --structured runs/shrink50/model
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = {"fp32": None, "int8_all": "per_channel", "int8_mixed_full_res": "mixed_full_res"}
CONV_OPS = ("Conv", "QLinearConv", "FusedConv")


def profile(path, x, calls: int) -> dict:
    """Per-call kernel ms of one ONNX file on ``x``: by operator kind and, for convolutions, by output side."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(path).with_suffix(""))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    warmup = 5
    for _ in range(warmup + calls):
        sess.run(["y"], {"x": x})
    events = _kernel_events(json.loads(Path(sess.end_profiling()).read_text()))
    per_call = len(events) // (warmup + calls)  # every call runs the same kernels: drop the warm-up ones
    events = events[warmup * per_call:]
    kinds, counts, by_side = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        op, ms = e["args"]["op_name"], e["dur"] / 1e3 / calls
        kinds[op] += ms
        counts[op] += 1
        if op in CONV_OPS or "Conv" in op:
            by_side[_side(next(iter(e["args"]["output_type_shape"][0].values())))] += ms
    return dict(total_ms=sum(kinds.values()),
                kinds=[dict(kind=k, ms=v, per_call=counts[k] // calls) for k, v in kinds.most_common()],
                conv_ms_by_output_side={str(k): v for k, v in sorted(by_side.items(), reverse=True)})


def _side(shape) -> int:
    """Side of a square 4-D output map: ONNX Runtime runs float convs NCHW(c) and integer ones NHWC."""
    return int(shape[2] if shape[2] == shape[3] else shape[1])


def _kernel_events(trace: list) -> list:
    return [e for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/quick", help="pipeline run whose data.h5 calibrates the int8 activations")
    p.add_argument("--structured", required=True, help="structurally pruned model folder (bec-jax shrink OUT/model)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--calls", type=int, default=30, help="profiled calls per variant (after 5 warm-up calls)")
    p.add_argument("--out", default="benchmarks/results/onnx_profile.json")
    args = p.parse_args(argv)
    if args.batch < 1 or args.calls < 1:
        p.error("--batch and --calls must be >= 1")
    for path in (Path(args.structured), Path(args.run) / "data.h5"):
        if not path.exists():
            p.error(f"{path} does not exist")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from common import write_result

    from bec_jax.compress.quantization import QuantConfig, quantize_model
    from bec_jax.compress.structured import inner_widths, outer_widths
    from bec_jax.deploy.export import calibration_inputs, export_onnx, load_model

    model, _ = load_model(args.structured)
    cal = calibration_inputs(Path(args.run) / "data.h5", 32)
    n = cal.shape[1]
    x = np.repeat(cal[:1], args.batch, axis=0)
    variants = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, scheme in VARIANTS.items():
            m = model if scheme is None else quantize_model(model, QuantConfig.preset(scheme), "int8")
            path = Path(tmp) / f"{name}.onnx"
            path.write_bytes(export_onnx(m, cal if scheme else None).SerializeToString())
            variants[name] = profile(path, x, args.calls)
            print(f"{name}: {variants[name]['total_ms']:.2f} ms of kernels per call", flush=True)
    write_result(args.out, dict(benchmark="onnx_profile", model=str(args.structured), size=n, batch=args.batch,
                                calls=args.calls, threads=1, inner_widths=inner_widths(model),
                                outer_widths=outer_widths(model), loadavg_1_5_15=os.getloadavg(),
                                onnxruntime_version=__import__("onnxruntime").__version__, variants=variants))
    from report import onnx_profile, write_tables

    write_tables(args.out, onnx_profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
