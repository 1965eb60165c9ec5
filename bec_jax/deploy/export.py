"""Export a saved U-Net to a self-contained inference artifact, and load one back.

Two formats (``FORMATS``):

- "jax": ``jax.export`` serialized StableHLO (one file, weights embedded as
  constants, BatchNorm folded into the convolutions, symbolic batch). Runs with
  JAX alone (``jax.export.deserialize``, which needs the ``flatbuffers`` package
  of ``bec_jax[deploy]``), no bec_jax. An int8 model exports its integer path
  (``Int8Conv``: int8 weights, dynamic per-tensor int8 activations, int32 sums),
  so the file holds int8 weights and computes what bec_jax's int8 model computes
  (with BatchNorm folded into the per-channel scales: ``deploy.fold``).
- "onnx": an ONNX graph built from the model's weights (opset 17, NCHW inside,
  NHWC at the boundary, symbolic batch). BatchNorm is folded into the
  convolutions (``deploy.fold``). Runs with ONNX Runtime (``bec_jax[deploy]``).

int8 in ONNX, quantizer "bec_jax" (``QUANTIZERS``): the stored int8 kernels and
their scales go into the graph unchanged as QDQ (DequantizeLinear of the int8
weights, per output channel). BatchNorm folds into the per-channel weight
scale, s'_c = s_c·|γ_c/σ_c| (the sign flips the int8 row), so the int8 values
that run are exactly the ones bec_jax quantized. ONNX Runtime's integer
kernels (QLinearConv) need *static* activation scales, where bec_jax's int8
path takes a dynamic max per call: activations are quantized to uint8 with
scales calibrated on bec_jax data (max over calibration samples; every
activation after a ReLU is ≥ 0, zero point 0; the log-density input
asymmetric). Quantizer "ort": ONNX Runtime's own static quantizer
(``quantize_static``, QDQ, per-channel int8 weights, uint8 activations, MinMax
calibration on the same samples) applied to the float graph: the comparison
for the accuracy of bec_jax's own scales.

Why not jax2onnx for the graph: it exports the fp32 U-Net correctly but as
NHWC with a transpose pair around every convolution and BatchNorm unfolded,
and it turns the int8 path into float convolutions (no integer operator), so
it cannot carry bec_jax's quantization (benchmarks/inference_latency.py times
its fp32 export beside this one).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["FORMATS", "QUANTIZERS", "ExportConfig", "check_model_folder", "load_model", "model_kind", "export_jax",
           "onnx_graph", "calibration_inputs", "activation_scales", "export_onnx", "export_artifact", "load_artifact",
           "checksum_path", "check_artifact", "onnx_threads", "evaluate_artifact", "artifact_latency",
           "available_format"]

FORMATS = ("jax", "onnx")
QUANTIZERS = ("bec_jax", "ort")
SUFFIX = {"jax": ".jaxexport", "onnx": ".onnx"}
OPSET = 17


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What ``bec-jax export`` writes.

    format: "jax" (jax.export serialized StableHLO, a .jaxexport file) or "onnx" (an ONNX graph, a .onnx
      file); both need the bec_jax[deploy] extra to load.
    quantizer: int8 ONNX only: "bec_jax" (the model's own int8 weights and scales) or "ort" (ONNX Runtime's
      static quantizer applied to the float graph).
    calibration_samples: training samples that calibrate the int8 activation scales (>= 1).
    """

    format: str = "onnx"
    quantizer: str = "bec_jax"
    calibration_samples: int = 32

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.format == "jax" and self.quantizer != "bec_jax":
            raise ValueError("quantizer ort needs format onnx (the jax format runs bec_jax's own int8 path)")
        if self.calibration_samples < 1:
            raise ValueError(f"calibration_samples must be >= 1, got {self.calibration_samples}")

    @property
    def suffix(self) -> str:
        """File suffix of the format."""
        return SUFFIX[self.format]


# ----------------------------------------------------------------------------- models

def check_model_folder(path) -> Path:
    """The quantized.json of a saved model folder; ValueError naming the folder if there is none."""
    meta_file = Path(path) / "quantized.json"
    if not meta_file.is_file():
        raise ValueError(f"{str(path)!r} is not a saved model folder (no quantized.json); give a pipeline "
                         "models/<variant> folder or the model/ folder of bec-jax shrink, quantize or prune")
    return meta_file


def load_model(path):
    """(model in eval mode, meta) of a saved model folder (``save_quantized``: pipeline ``models/*``,
    ``bec-jax shrink|quantize|prune`` ``OUT/model``). int8 models come back with ``Int8Conv`` layers."""
    from bec_jax.compress.quantization import load_quantized

    check_model_folder(path)
    return load_quantized(path, mode="auto")


def model_kind(model) -> str:
    """"int8" (some Int8Conv layer), "structured" (channels removed) or "fp32"."""
    from bec_jax.compress import structured
    from bec_jax.compress.quantization import Int8Conv, conv_layers

    if any(isinstance(getattr(p, a), Int8Conv) for _, p, a in conv_layers(model)):
        return "int8"
    full = structured.full_widths(model.config)
    if (structured.inner_widths(model), structured.outer_widths(model)) != full:
        return "structured"
    return "fp32"


def _check_exportable(model):
    if model.config.dtype != "float32":
        raise ValueError(f"only float32-compute models can be exported, this one computes in {model.config.dtype}")


# ----------------------------------------------------------------------------- jax.export

def export_jax(model) -> bytes:
    """Serialized ``jax.export`` of ``model`` (eval mode, BatchNorm folded: ``deploy.fold.fold_batchnorm``) for x
    float32 (b, n, n, in_channels), b symbolic, n = config.input_size; the result is float32
    (b, n, n, out_channels)."""
    import jax
    from flax import nnx

    from bec_jax.deploy.fold import fold_batchnorm

    _check_exportable(model)
    gd, state = nnx.split(fold_batchnorm(model))
    cfg = model.config
    (b,) = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, cfg.input_size, cfg.input_size, cfg.in_channels), np.float32)
    exported = jax.export.export(jax.jit(lambda x: nnx.merge(gd, state)(x)))(spec)
    return bytes(exported.serialize())


# ----------------------------------------------------------------------------- ONNX graph

class _Builder:
    """ONNX nodes and initializers of one graph; ``scales`` switches on int8 QDQ for Int8Conv layers."""

    def __init__(self, scales: dict | None):
        self.nodes, self.inits, self.scales = [], [], scales
        self.scale_of = {}  # tensor -> (scale, uint8 zero point) of the activation it carries
        self.dq = {}  # float tensor -> its quantize-dequantize copy
        self.is_dq = set()
        self.points = {}  # calibration point name -> float tensor
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base: str, value) -> str:
        from onnx import numpy_helper

        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def op(self, kind: str, inputs, base: str | None = None, **attrs) -> str:
        from onnx import helper

        out = self.name(base or kind.lower())
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def qdq(self, t: str) -> str:
        """The quantize→dequantize copy of float tensor t (made once; t's scale must be known)."""
        if t in self.is_dq:
            return t
        if t not in self.dq:
            s, zp = self.scale_of[t]
            s_, zp_ = self.const("s", np.float32(s)), self.const("zp", np.uint8(zp))
            d = self.op("DequantizeLinear", [self.op("QuantizeLinear", [t, s_, zp_], "q"), s_, zp_], "dq")
            self.dq[t], self.scale_of[d] = d, (s, zp)
            self.is_dq.add(d)
        return self.dq[t]

    def same_scale(self, src: str, out: str) -> str:
        """out carries src's activation scale (max-pool, zero pad, bilinear resize of values >= 0);
        an integer path through src stays integer through out."""
        if src in self.scale_of:
            self.scale_of[out] = self.scale_of[src]
        return self.qdq(out) if src in self.is_dq else out

    def conv(self, name: str, conv, x: str, relu: bool) -> str:
        """conv (nnx.Conv or Int8Conv, HWIO, BatchNorm already folded in) → ReLU on NCHW tensor x."""
        from bec_jax.compress.quantization import Int8Conv

        int8 = isinstance(conv, Int8Conv)
        bias = np.asarray(conv.bias[...], np.float32)
        pad = conv.padding
        pads = [int(pad[0][0]), int(pad[1][0]), int(pad[0][1]), int(pad[1][1])]
        if int8:
            q = np.asarray(conv.kernel_q[...], np.int8).transpose(3, 2, 0, 1)  # HWIO -> OIHW
            s = np.broadcast_to(np.asarray(conv.w_scale[...], np.float32), q.shape[:1])
        quantized = int8 and self.scales is not None
        if quantized:
            x = self.qdq(x)
            sx = np.float32(self.scale_of[x][0])
            # zero points omitted: 0 of the int8 / int32 type (symmetric weights and bias)
            ws = self.const(f"{name}.ws", s)
            w = self.op("DequantizeLinear", [self.const(f"{name}.wq", q), ws], "w", axis=0)
            # the bias in the accumulator's units, as QLinearConv needs it; its scale sx·s_c is a Mul
            # that ONNX Runtime folds at load, not a third stored vector
            sb = sx * s  # float32 product, as the Mul computes it
            bq = np.clip(np.round(bias.astype(np.float64) / sb), -2**31, 2**31 - 1).astype(np.int32)
            bs = self.op("Mul", [self.const("sx", sx), ws], "bs")
            b = self.op("DequantizeLinear", [self.const(f"{name}.bq", bq), bs], "b", axis=0)
        else:
            k = q.astype(np.float64) * s[:, None, None, None] if int8 else \
                np.asarray(conv.kernel[...], np.float32).transpose(3, 2, 0, 1)
            w, b = self.const(f"{name}.w", k.astype(np.float32)), self.const(f"{name}.b", bias)
        y = self.op("Conv", [x, w, b], name, pads=pads, kernel_shape=list(_kernel_hw(conv)))
        quantized_out = quantized and name in self.scales and self.scales[name][1] == 0
        if relu and not quantized_out:  # a uint8 output with zero point 0 clamps at 0: that is the ReLU
            y = self.op("Relu", [y], f"{name}.relu")
        self.points[name] = y
        if self.scales is not None and name in self.scales:
            self.scale_of[y] = self.scales[name]
            if int8:  # the integer conv's output is quantized (QLinearConv writes uint8)
                return self.qdq(y)
        return y


def _kernel_hw(conv) -> tuple[int, int]:
    """(kh, kw) of an nnx.Conv or Int8Conv."""
    return tuple((conv.kernel_q if hasattr(conv, "kernel_q") else conv.kernel).shape[:2])


def onnx_graph(model, scales: dict | None = None, *, expose_points: bool = False):
    """ONNX ModelProto of ``model`` (eval mode, float32 compute).

    Input "x" float32 (batch, n, n, in_channels) NHWC, n = config.input_size; output "y" float32
    (batch, n, n, out_channels). scales: None builds a float graph (int8 layers dequantized, q·s);
    else {point: (scale, zero point)} from ``activation_scales`` and Int8Conv layers become QDQ int8
    convs with bec_jax's int8 weights. expose_points: every conv output (after BN and ReLU) and the
    input also become graph outputs, named by conv ("inc.conv1", …, "outc") and "input" (calibration).
    """
    import onnx
    from onnx import TensorProto, helper

    from bec_jax.compress.quantization import conv_layers
    from bec_jax.deploy.fold import fold_batchnorm

    _check_exportable(model)
    model = fold_batchnorm(model)
    cfg = model.config
    n = cfg.input_size
    g = _Builder(scales)
    x = g.op("Transpose", ["x"], "input", perm=[0, 3, 1, 2])
    g.points["input"] = x
    if scales is not None:
        g.scale_of[x] = scales["input"]
    convs = {name: getattr(p, a) for name, p, a in conv_layers(model)}

    def block(prefix, blk, h):
        h = g.conv(f"{prefix}.conv1", convs[f"{prefix}.conv1"], h, True)
        return g.conv(f"{prefix}.conv2", convs[f"{prefix}.conv2"], h, True)

    sizes = [n]
    skips = [block("inc", model.inc, x)]
    for i, blk in enumerate(model.down):
        pooled = g.op("MaxPool", [skips[-1]], "pool", kernel_shape=[2, 2], strides=[2, 2])
        skips.append(block(f"down.{i}", blk, g.same_scale(skips[-1], pooled)))
        sizes.append(sizes[-1] // 2)
    h = skips.pop()
    sizes.pop()
    for i, blk in enumerate(model.up):
        skip, size = skips.pop(), sizes.pop()
        up = g.op("Resize", [h, "", g.const("scales", np.asarray([1, 1, 2, 2], np.float32))], "up", mode="linear",
                  coordinate_transformation_mode="align_corners")
        up = g.same_scale(h, up)
        d = size - 2 * _level_size(n, len(model.down) - i)
        if d:
            padded = g.op("Pad", [up, g.const("pads", np.asarray([0, 0, d // 2, d // 2, 0, 0, d - d // 2,
                                                                 d - d // 2], np.int64))], "pad")
            up = g.same_scale(up, padded)
        cat = g.op("Concat", [skip, up], "cat", axis=1)
        if skip in g.scale_of and up in g.scale_of:
            g.scale_of[cat] = (max(g.scale_of[skip][0], g.scale_of[up][0]), 0)
            if skip in g.is_dq and up in g.is_dq:
                cat = g.qdq(cat)
        h = block(f"up.{i}", blk, cat)
    y = g.conv("outc", convs["outc"], h, False)
    g.op("Transpose", [y], "out", perm=[0, 2, 3, 1])
    g.nodes[-1].output[0] = "y"
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n, n, cfg.out_channels])]
    if expose_points:
        for name, t in g.points.items():
            outputs.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    graph = helper.make_graph(g.nodes, "bec_jax_unet",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n, n, cfg.in_channels])],
                              outputs, g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bec_jax")
    proto.ir_version = 8
    if expose_points:
        onnx.helper.set_model_props(proto, {"points": json.dumps(g.points)})
    return proto


def _level_size(n: int, level: int) -> int:
    """Side of the feature map after ``level`` max-pools of an n×n input (floor, as MaxPool2d)."""
    for _ in range(level):
        n //= 2
    return n


# ----------------------------------------------------------------------------- calibration

def calibration_inputs(data, count: int = 32, split: str = "train"):
    """float32 (count', n, n, 1) log-densities of the first ``count`` samples of a dataset split
    (the training run's default group split; count' = min(count, split size))."""
    import jax.numpy as jnp

    from bec_jax.data.targets import TargetConfig, log_density
    from bec_jax.train.trainer import TrainConfig, load_dataset

    if count < 1:
        raise ValueError(f"calibration count must be >= 1, got {count}")
    tc = TrainConfig()
    _, arrays, _, splits = load_dataset(data, tc)
    idx = np.sort(splits[split])[:count]
    psi = jnp.asarray(np.asarray(arrays["psi"])[idx])
    return np.asarray(log_density(psi, TargetConfig().eps), np.float32)[..., None]


def _session(proto_or_path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    opts.inter_op_num_threads = 1
    # No busy-waiting between calls: ONNX Runtime's idle threads otherwise spin on the cores that the JAX
    # work around each call (cloud finding, resampling, the next model) needs.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = proto_or_path.SerializeToString() if hasattr(proto_or_path, "SerializeToString") else str(proto_or_path)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def activation_scales(model, inputs, batch: int = 8) -> dict:
    """{point: (scale, zero point)} of uint8 activations, calibrated by running the float graph of
    ``model`` on ``inputs`` float32 (N, n, n, 1): post-ReLU points scale max/255, zero point 0; the
    input asymmetric over [min(x, 0), max(x, 0)]."""
    proto = onnx_graph(model, None, expose_points=True)
    points = json.loads({p.key: p.value for p in proto.metadata_props}["points"])
    sess = _session(proto)
    names = list(points)
    lo, hi = {k: 0.0 for k in names}, {k: 0.0 for k in names}
    for i in range(0, len(inputs), batch):
        outs = sess.run([points[k] for k in names], {"x": np.asarray(inputs[i:i + batch], np.float32)})
        for k, v in zip(names, outs):
            lo[k], hi[k] = min(lo[k], float(v.min())), max(hi[k], float(v.max()))
    scales = {}
    for k in names:
        span = hi[k] - lo[k]
        s = span / 255 if span > 0 else 1.0
        scales[k] = (s, int(np.clip(np.round(-lo[k] / s), 0, 255)))
    return scales


# ----------------------------------------------------------------------------- export

def export_onnx(model, calibration=None, quantizer: str = "bec_jax"):
    """ONNX ModelProto of ``model``. fp32 and structured models: the float graph (``calibration``
    unused). int8 models, or ``quantizer="ort"`` for any model, need ``calibration`` float32
    (N, n, n, 1) inputs (``calibration_inputs``)."""
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
    kind = model_kind(model)
    if kind != "int8" and quantizer == "bec_jax":
        return onnx_graph(model)
    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 ONNX export needs calibration inputs (bec-jax export --data DATASET.h5)")
    if quantizer == "bec_jax":
        return onnx_graph(model, activation_scales(model, calibration))
    return _ort_quantize(onnx_graph(model), calibration)


def _ort_quantize(proto, calibration):
    """ONNX Runtime's own static quantizer on the float graph ``proto`` (QDQ, per-channel int8 weights,
    uint8 activations, MinMax calibration on ``calibration``)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calibration[i:i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return onnx.load(dst)


def export_artifact(model_dir, fmt: str, out, *, data=None, quantizer: str = "bec_jax",
                    calibration_count: int = 32) -> dict:
    """Export the saved model folder ``model_dir`` to the file ``out`` (written atomically), with its SHA-256
    beside it in ``out.sha256`` (``sha256sum`` format: ``load_artifact`` checks it, so does ``sha256sum -c``).

    fmt: "jax" or "onnx". data: dataset .h5 for int8 ONNX calibration (its training split).
    quantizer: "bec_jax" or "ort" (ONNX only). Returns {"format", "kind", "precision", "quantizer",
    "calibration_samples" (those used, None without calibration), "bytes", "out", "sha256"}.
    Unsupported combinations, and a ``data`` on another grid than the model's input, raise ValueError
    before any work.
    """
    from bec_jax.artifacts import atomic_write, atomic_write_text, sha256_file
    from bec_jax.train.trainer import check_dataset_grid

    ExportConfig(fmt, quantizer, calibration_count)  # bad settings fail before any work
    model, _ = load_model(model_dir)
    if data is not None:  # calibration runs the model on the dataset's images: they must be its size
        check_dataset_grid(data, model.config.input_size)
    kind = model_kind(model)
    needs_data = fmt == "onnx" and (kind == "int8" or quantizer == "ort")
    if needs_data and data is None:
        raise ValueError(f"exporting a{'n' if kind == 'int8' else ''} {kind} model to ONNX with quantizer "
                         f"{quantizer!r} needs calibration data: give --data DATASET.h5")
    calibration = None
    if fmt == "jax":
        payload = export_jax(model)
    else:
        calibration = calibration_inputs(data, calibration_count) if needs_data else None
        payload = export_onnx(model, calibration, quantizer).SerializeToString()
    out = Path(out)
    checksum_path(out).unlink(missing_ok=True)  # a stop between the two writes leaves a file unchecked, not "corrupt"
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(payload))
    digest = sha256_file(out)
    atomic_write_text(checksum_path(out), f"{digest}  {out.name}\n")
    quant = "int8" if kind == "int8" or quantizer == "ort" and fmt == "onnx" else "fp32"
    return dict(format=fmt, kind=kind, precision=quant, quantizer=quantizer if needs_data else None,
                calibration_samples=None if calibration is None else len(calibration),  # at most the split's size
                bytes=out.stat().st_size, out=str(out), sha256=digest)


def checksum_path(path) -> Path:
    """The checksum file of an exported artifact: ``NAME.sha256`` beside ``NAME``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def check_artifact(path) -> None:
    """CorruptArtifact (a ValueError) naming ``path`` when its checksum file (``checksum_path``) is there and
    the file's SHA-256 differs from it, or the checksum file is unreadable; a file without one (copied
    alone) passes unchecked."""
    from bec_jax.artifacts import CorruptArtifact, sha256_file

    path, sidecar = Path(path), checksum_path(path)
    if not sidecar.is_file():
        return
    try:
        expected = sidecar.read_text().split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        raise CorruptArtifact(f"{str(sidecar)!r} is damaged (not a sha256sum line)") from None
    if sha256_file(path) != expected:
        raise CorruptArtifact(f"{str(path)!r} is corrupt: its content does not match the checksum in "
                              f"{sidecar.name} (export it again)")


# ----------------------------------------------------------------------------- loading

def onnx_threads() -> int:
    """Threads ONNX Runtime uses by default here: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_artifact(path, *, threads: int | None = None):
    """A callable f(x) for an exported artifact: x float32 (B, n, n, in_channels) (numpy or JAX) →
    numpy float32 (B, n, n, out_channels). ``.onnx`` files run with ONNX Runtime (``threads``: its
    intra-op threads, None = all), anything else as ``jax.export`` (threads follow XLA's flags).
    ``f.info`` holds {"format", "path", "input_shape"}. Needs only JAX or ONNX Runtime, not bec_jax's
    training code. A file with its checksum file beside it (``export_artifact`` writes one) is checked
    first: CorruptArtifact naming it when it changed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no exported model at {str(path)!r}")
    check_artifact(path)
    if path.suffix == ".onnx":
        try:
            sess = _session(path, threads)
        except Exception as e:  # onnxruntime raises its own types for damaged files
            raise ValueError(f"{str(path)!r} is not a readable ONNX model ({type(e).__name__})") from None
        shape = sess.get_inputs()[0].shape

        def run(x):
            return sess.run(["y"], {"x": np.asarray(x, np.float32)})[0]

        run.info = dict(format="onnx", path=str(path), input_shape=shape)
        return run
    import jax

    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception as e:
        raise ValueError(f"{str(path)!r} is not a jax.export file ({type(e).__name__})") from None
    call = jax.jit(exported.call)

    def run(x):
        return np.asarray(call(np.asarray(x, np.float32)))

    shape = [d if isinstance(d, int) else str(d) for d in exported.in_avals[0].shape]  # "b": the symbolic batch
    run.info = dict(format="jax", path=str(path), input_shape=shape)
    return run


def evaluate_artifact(run, loader) -> dict:
    """Masked MSEs of a loaded artifact ``run`` (``load_artifact``) over a ``BatchLoader``: the metric
    and code of ``bec-jax evaluate`` ({"mse", "mse_ref", "valid_fraction"}), for the file that is deployed."""
    import jax.numpy as jnp

    from bec_jax.train.trainer import evaluate_loader

    return evaluate_loader(lambda params, stats, x: jnp.asarray(run(np.asarray(x))), None, None, loader)


def artifact_latency(run, x, *, warmup: int = 2, repeats: int = 20) -> dict:
    """Wall time of a loaded artifact ``run`` (``load_artifact``) on x float32 (B, n, n, 1): one first
    call (compile or session warm-up), ``warmup`` more, then ``repeats`` timed calls.
    Returns {"median_ms", "q25_ms", "q75_ms", "first_call_s"}."""
    import time

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    x = np.asarray(x, np.float32)
    t0 = time.perf_counter()
    run(x)
    first = time.perf_counter() - t0
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    q25, q50, q75 = np.percentile(np.asarray(times) * 1e3, [25, 50, 75])
    return dict(median_ms=float(q50), q25_ms=float(q25), q75_ms=float(q75), first_call_s=first)


def available_format() -> tuple[str | None, str]:
    """(format, why) of the deployment runtime installed here: "onnx" with ONNX Runtime (and onnx),
    else "jax" with flatbuffers (jax.export's file format), else None; ``why`` is one line."""
    from importlib.util import find_spec

    if find_spec("onnxruntime") and find_spec("onnx"):
        return "onnx", "ONNX Runtime is installed"
    if find_spec("flatbuffers"):
        return "jax", "ONNX Runtime is not installed: jax.export files (JAX runs them)"
    return None, ("no deployment runtime installed (neither ONNX Runtime nor flatbuffers): "
                  "pip install 'bec_jax[deploy]' to export and time deployable files")
