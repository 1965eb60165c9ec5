"""CPU inference latency of exported U-Nets (jax.export, ONNX Runtime) against JAX fp32, with accuracy.

One run measures every setting: batch 1 and 8; one thread and all threads; the
quick U-Net (64², width 8, depth 6: a trained pipeline run, ``--run``) and the
reference U-Net (200², width 8, depth 7: freshly initialised, latency only;
latency does not depend on the weight values). Contenders:

  jax_fp32            the model under jax.jit (the baseline of every ratio)
  jax_int8            bec_jax's int8 path (Int8Conv: int8 × int8 → int32) under jax.jit
  jaxexport_fp32/int8 the jax.export artifacts (``bec-jax export --format jax``), reloaded
  onnx_fp32           the ONNX artifact (BatchNorm folded, NCHW) on ONNX Runtime
  onnx_int8           ONNX with bec_jax's int8 weights and scales (QDQ → QLinearConv)
  onnx_int8_ort       ONNX quantized by ONNX Runtime's own static quantizer
  jax2onnx_fp32       jax2onnx's export of the fp32 model (when jax2onnx is installed)
  structured_*        the structurally pruned model (``--structured``, a ``bec-jax shrink``
                      model folder at 64²; at 200² ``shrink_model(keep, outer=True)`` with the
                      folder's keep fraction): jax_fp32, onnx_fp32, onnx_int8 (post-training
                      int8 with the full-resolution convs float32, "mixed_full_res"), and
                      onnx_int8_all (every conv int8: what keeping those convs float gains).
                      The recipe (experiments/results/structured_quick/):
                      bec-jax shrink --run runs/quick/train --keep 0.5 --outer --ft-epochs 60
  torch_fp32          the PyTorch reference U-Net, where torch is installed

Every thread setting runs in its own process (XLA fixes its threads at start):
"one" pins the process to one core (``sched_setaffinity``) with one XLA and ONNX
Runtime thread, "all" uses every core. Within a (size, batch) every contender is
compiled and warmed, then ``--repeats`` rounds call all of them in a shuffled
order, so all see the same machine load (other jobs share this CPU: the load
average is recorded before and after). ONNX Runtime's threads do not spin between
calls (``load_artifact``): spinning threads would take the cores of the JAX call
that follows and slow the baseline. Medians in ms, ratios against jax_fp32
from the same rounds. Accuracy (64² only): masked test MSE of every artifact,
reloaded, on the run's test split. Artifact sizes are file bytes.

    bec-jax shrink --run runs/quick/train --keep 0.5 --outer --ft-epochs 60 --out runs/shrink50
    python benchmarks/inference_latency.py --run runs/quick --structured runs/shrink50/model
    python benchmarks/inference_latency.py --run runs/quick --sizes 64 --repeats 5     # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REF_SIZE = 200
KEEP = 0.5  # the structured recipe's kept channel fraction (experiments/results/structured_quick/)
# int8 of the structured model: its few-channel convs at full resolution stay float32, where ONNX Runtime's
# integer kernels are slower than its float ones
STRUCTURED_SCHEME = "mixed_full_res"
INT8 = ("jax_int8", "jaxexport_int8", "onnx_int8", "onnx_int8_ort")


def _jax_call(model):
    import jax

    f = jax.jit(lambda x: model(x))
    return lambda x: np.asarray(f(x))


def _onnx_generic(path, threads):
    """ONNX Runtime session of a file with any input/output names (jax2onnx's)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as load_artifact's sessions
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _torch_call(model, threads):
    """The PyTorch U-Net holding ``model``'s weights (NCHW), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    from bec_jax.models.torch_unet import TorchUNet, copy_weights_to_torch

    torch.set_num_threads(threads)
    net = copy_weights_to_torch(model, TorchUNet(model.config)).eval()

    def call(x):
        with torch.no_grad():
            return net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()

    return call


# ----------------------------------------------------------------------------- artifacts (parent)

def _models(run, structured, size, keep):
    """{name: model} of one size: fp32, int8 (bec_jax's int8 path), structured fp32 and int8."""
    from bec_jax.compress.quantization import QuantConfig, quantize_model
    from bec_jax.compress.structured import shrink_model
    from bec_jax.deploy.export import load_model
    from bec_jax.models import UNetConfig, init_model

    per_channel, full_res = QuantConfig.preset("per_channel"), QuantConfig.preset(STRUCTURED_SCHEME)
    if size == REF_SIZE:
        dense = init_model(UNetConfig(), 0)
        dense.eval()
        small = shrink_model(dense, keep, outer=True)
        return dict(dense=dense, int8=quantize_model(dense, per_channel, "int8"), structured=small,
                    structured_int8=quantize_model(small, full_res, "int8"),
                    structured_int8_all=quantize_model(small, per_channel, "int8"))
    dense, _ = load_model(Path(run) / "models" / "dense")
    int8, _ = load_model(Path(run) / "models" / "int8_per_channel")
    out = dict(dense=dense, int8=int8)
    if structured:
        small, _ = load_model(structured)
        out.update(structured=small, structured_int8=quantize_model(small, full_res, "int8"),
                   structured_int8_all=quantize_model(small, per_channel, "int8"))
    return out


def build_artifacts(args, work: Path) -> dict:
    """Write every artifact of every size into ``work``; returns {size: {contender: path}} and sizes."""
    from bec_jax.deploy.export import calibration_inputs, export_jax, export_onnx

    out, sizes, weights = {}, {}, {}
    for size in args.sizes:
        models = _models(args.run, args.structured, size, args.keep)
        if size == REF_SIZE:  # latency only: calibration ranges from log-density-like noise
            cal = np.random.default_rng(0).uniform(-20.7, 0.0, (16, size, size, 1)).astype(np.float32)
        else:
            cal = calibration_inputs(Path(args.run) / "data.h5", args.calibration)
        files = {}
        plan = [("jaxexport_fp32", "dense", "jax", None), ("jaxexport_int8", "int8", "jax", None),
                ("onnx_fp32", "dense", "onnx", None), ("onnx_int8", "int8", "onnx", "bec_jax"),
                ("onnx_int8_ort", "dense", "onnx", "ort")]
        if "structured" in models:
            plan += [("structured_onnx_fp32", "structured", "onnx", None),
                     ("structured_onnx_int8", "structured_int8", "onnx", "bec_jax"),
                     ("structured_onnx_int8_all", "structured_int8_all", "onnx", "bec_jax")]
        for name, src, fmt, quantizer in plan:
            t0 = time.perf_counter()
            path = work / f"{size}_{name}{'.onnx' if fmt == 'onnx' else '.jaxexport'}"
            if fmt == "jax":
                path.write_bytes(export_jax(models[src]))
            else:
                q = quantizer or "bec_jax"
                path.write_bytes(export_onnx(models[src], cal if quantizer else None, q).SerializeToString())
            files[name] = str(path)
            sizes[f"{size}/{name}"] = dict(bytes=path.stat().st_size, export_s=time.perf_counter() - t0)
            print(f"exported {size}² {name}: {path.stat().st_size / 1e6:.2f} MB", flush=True)
        try:
            from jax2onnx import to_onnx

            import onnx
            from flax import nnx

            gd, state = nnx.split(models["dense"])
            proto = to_onnx(lambda x: nnx.merge(gd, state)(x), [("B", size, size, 1)], return_mode="proto")
            path = work / f"{size}_jax2onnx_fp32.onnx"
            onnx.save(proto, path)
            files["jax2onnx_fp32"] = str(path)
            sizes[f"{size}/jax2onnx_fp32"] = dict(bytes=path.stat().st_size)
        except ImportError:
            pass
        out[size] = files
        weights[size] = _weight_counts(models["dense"])
    return dict(files=out, sizes=sizes, weights=weights)


def _weight_counts(model) -> dict:
    """Conv kernel elements and output channels (biases) of ``model``: what an exported file must hold."""
    from bec_jax.compress.quantization import conv_layers

    convs = [getattr(p, a) for _, p, a in conv_layers(model)]
    return dict(kernels=int(sum(c.kernel.size for c in convs)), channels=int(sum(c.bias.size for c in convs)))


def accuracy(args, files: dict) -> dict:
    """Masked test MSE (the pipeline's metric) of the JAX models and every reloaded 64² artifact."""
    from bec_jax.compress.quantization import load_quantized
    from bec_jax.compress.workflow import load_setup, test_mse
    from bec_jax.deploy import load_artifact
    from bec_jax.deploy.export import evaluate_artifact

    setup = load_setup(Path(args.run) / "train", Path(args.run) / "data.h5", eval_batch_size=16)
    models = _models(args.run, args.structured, args.sizes[0], args.keep)
    fake, _ = load_quantized(Path(args.run) / "models" / "int8_per_channel")  # int8 weights, float compute
    res = dict(jax_fp32=test_mse(models["dense"], setup.test)["mse"],
               jax_int8=test_mse(models["int8"], setup.test)["mse"],
               jax_fakequant_int8=test_mse(fake, setup.test)["mse"])
    if "structured" in models:
        res["structured_jax_fp32"] = test_mse(models["structured"], setup.test)["mse"]
    for name, path in files.items():
        if name != "jax2onnx_fp32":
            res[name] = evaluate_artifact(load_artifact(path), setup.test)["mse"]
    return {k: float(v) for k, v in res.items()}


# ----------------------------------------------------------------------------- timing (child)

def contenders(args, size, files, threads):
    from bec_jax.deploy import load_artifact

    models = _models(args.run, args.structured, size, args.keep)
    calls = dict(jax_fp32=_jax_call(models["dense"]), jax_int8=_jax_call(models["int8"]))
    if "structured" in models:
        calls["structured_jax_fp32"] = _jax_call(models["structured"])
    for name, path in files.items():
        calls[name] = _onnx_generic(path, threads) if name == "jax2onnx_fp32" else load_artifact(path, threads=threads)
    torch_call = _torch_call(models["dense"], threads)
    if torch_call is not None:
        calls["torch_fp32"] = torch_call
    return calls


def time_setting(calls, x, repeats, warmup, seed) -> dict:
    from bec_jax.bench.measure import interleaved_times

    names = list(calls)
    first = {}
    for name in names:
        t0 = time.perf_counter()
        calls[name](x)
        first[name] = time.perf_counter() - t0
        for _ in range(warmup):
            calls[name](x)
    times = interleaved_times({n: (lambda f: lambda: f(x))(calls[n]) for n in names}, repeats, warmup=False, seed=seed)
    base = np.asarray(times["jax_fp32"])
    out = {}
    for name in names:
        t = np.asarray(times[name])
        q25, q50, q75 = np.percentile(t * 1e3, [25, 50, 75])
        out[name] = dict(median_ms=float(q50), q25_ms=float(q25), q75_ms=float(q75), first_call_s=first[name],
                         speedup_vs_jax_fp32=float(np.median(base) / np.median(t)))
    return out


def child(args) -> None:
    threads = args.child_threads
    if threads == 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    plan = json.loads(Path(args.child_plan).read_text())
    results = []
    for size in args.sizes:
        calls = contenders(args, size, plan["files"][str(size)], threads)
        for batch in args.batches:
            x = np.random.default_rng(batch).uniform(-20.0, 0.0, (batch, size, size, 1)).astype(np.float32)
            repeats = args.repeats if size < REF_SIZE else args.repeats_ref
            load0 = os.getloadavg()
            t = time_setting(calls, x, repeats, args.warmup, seed=len(results))
            results.append(dict(size=size, batch=batch, threads=threads, repeats=repeats, loadavg_before=load0,
                                loadavg_after=os.getloadavg(), contenders=t))
            best = max((n for n in t if n in INT8), key=lambda n: t[n]["speedup_vs_jax_fp32"])
            print(f"{size}² batch {batch} threads {threads}: jax_fp32 {t['jax_fp32']['median_ms']:.2f} ms, "
                  f"best int8 {best} {t[best]['median_ms']:.2f} ms ({t[best]['speedup_vs_jax_fp32']:.2f}x), "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    Path(args.child_out).write_text(json.dumps(results))


# ----------------------------------------------------------------------------- floors

def floors(settings, sizes, acc, weights=None) -> dict:
    """The three floors, as ratios of this run. The file ratio also gives ``exact_minimum``, the least
    ratio any int8 file can reach against a BatchNorm-folded fp32 file of K kernel elements and C output
    channels: (K + 8C) / (4K + 4C); int8 weights need a float32 scale and a 32-bit bias per channel
    where fp32 needs the bias alone, so the ratio stays above 1/4 by about 7C / 16K."""
    out = dict(best_int8_vs_jax_fp32_batch1=[], structured_int8_vs_jax_fp32=[], file_ratio={})
    for s in settings:
        c = s["contenders"]
        key = dict(size=s["size"], batch=s["batch"], threads=s["threads"])
        if s["batch"] == 1:
            best = max((n for n in c if n in INT8), key=lambda n: c[n]["speedup_vs_jax_fp32"])
            sp = c[best]["speedup_vs_jax_fp32"]
            out["best_int8_vs_jax_fp32_batch1"].append(dict(key, artifact=best, speedup=sp, holds=bool(sp >= 2)))
        if "structured_onnx_int8" in c:
            sp = c["structured_onnx_int8"]["speedup_vs_jax_fp32"]
            row = dict(key, speedup=sp, speed_holds=bool(sp >= 3))
            if acc and s["size"] != REF_SIZE:
                ratio = float(acc["structured_onnx_int8"] / acc["jax_fp32"])
                row.update(mse_ratio_to_dense=ratio, mse_holds=bool(ratio <= 1.1))
            out["structured_int8_vs_jax_fp32"].append(row)
    for key, v in sizes.items():
        size, name = key.split("/")
        for fp32, int8 in (("jaxexport_fp32", "jaxexport_int8"), ("onnx_fp32", "onnx_int8")):
            if name == int8:
                r = v["bytes"] / sizes[f"{size}/{fp32}"]["bytes"]
                row = dict(ratio=r, holds=bool(r <= 0.25))
                w = (weights or {}).get(size) or (weights or {}).get(int(size))
                if w:
                    k, c = w["kernels"], w["channels"]
                    row["exact_minimum"] = (k + 8 * c) / (4 * k + 4 * c)
                out["file_ratio"][f"{size}/{int8}"] = row
    return out


def table(path) -> str:
    """The markdown tables of a result file (``report.inference_latency``, as benchmarks/README.md shows them)."""
    from report import inference_latency, render

    return render(path, inference_latency)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/quick", help="pipeline run folder (models/, train/, data.h5) of the 64² model")
    p.add_argument("--structured", default=None, help="structurally pruned 64² model folder (bec-jax shrink OUT/model)")
    p.add_argument("--keep", type=float, default=None,
                   help=f"kept channel fraction of the 200² structured stand-in (default: the --structured "
                        f"folder's, else {KEEP})")
    p.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[64, REF_SIZE])
    p.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8])
    p.add_argument("--threads", default="1,all", help="thread settings: 1 and/or all")
    p.add_argument("--repeats", type=int, default=21, help="timed rounds at 64²")
    p.add_argument("--repeats-ref", type=int, default=7, help="timed rounds at 200²")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--calibration", type=int, default=32, help="calibration samples for int8 ONNX")
    p.add_argument("--out", default="benchmarks/results/inference_latency.json")
    p.add_argument("--child-threads", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-plan", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--accuracy-only", action="store_true",
                   help="export and evaluate the 64² artifacts (test MSE, file sizes), no timing")
    p.add_argument("--table", default=None, help="only print the markdown tables of this result JSON")
    args = p.parse_args()
    if args.table:
        return print(table(args.table), end="")
    if args.keep is None:
        args.keep = _folder_keep(args.structured)
    if args.child_threads is not None:
        return child(args)
    from common import write_result

    from bec_jax.deploy.export import onnx_threads

    all_threads = onnx_threads()
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        built = build_artifacts(args, work)
        acc = accuracy(args, built["files"][args.sizes[0]]) if args.sizes[0] != REF_SIZE else {}
        print("test MSE:", json.dumps(acc), flush=True)
        plan = work / "plan.json"
        plan.write_text(json.dumps(dict(files={str(k): v for k, v in built["files"].items()})))
        settings, partials = [], []
        for t in ([] if args.accuracy_only else args.threads.split(",")):
            n = all_threads if t == "all" else int(t)
            out = Path(args.out).with_suffix(f".threads{n}.partial.json")  # kept if a later step fails
            env = dict(os.environ)
            if n == 1:  # one core: the child pins itself (sched_setaffinity); Eigen's pool stays single-threaded
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
            cmd = [sys.executable, __file__, "--run", args.run, "--keep", str(args.keep),
                   "--sizes", ",".join(map(str, args.sizes)), "--batches", ",".join(map(str, args.batches)),
                   "--repeats", str(args.repeats), "--repeats-ref", str(args.repeats_ref), "--warmup", str(args.warmup),
                   "--child-threads", str(n), "--child-plan", str(plan), "--child-out", str(out)]
            if args.structured:
                cmd += ["--structured", args.structured]
            subprocess.run(cmd, check=True, env=env)
            settings += json.loads(out.read_text())
            partials.append(out)
    result = dict(benchmark="inference_latency", threads_all=all_threads, run=args.run, structured=args.structured,
                  keep_ref=args.keep, artifact_bytes=built["sizes"], test_mse=acc, settings=settings,
                  weights={str(k): v for k, v in built["weights"].items()},
                  floors=floors(settings, built["sizes"], acc, built["weights"]), wall_s=time.time() - t_start,
                  versions=_versions())
    write_result(args.out, result)
    Path(args.out).with_suffix(".md").write_text(table(args.out))
    for path in partials:
        path.unlink()


def _folder_keep(folder) -> float:
    """The keep fraction recorded by ``bec-jax shrink`` in a structured model folder, else ``KEEP``."""
    meta = Path(folder) / "quantized.json" if folder else None
    if meta is None or not meta.is_file():
        return KEEP
    return float(json.loads(meta.read_text()).get("extra", {}).get("keep", KEEP))


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnxruntime", "onnx", "jax2onnx", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


if __name__ == "__main__":
    main()
