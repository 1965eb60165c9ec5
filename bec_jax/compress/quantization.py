"""Symmetric int8 weight quantization of the U-Net's convolutions.

Schemes (``QuantConfig``):

- granularity "per_tensor": one scale s = max|W| / 127 per conv kernel;
  "per_channel": one scale per output channel (last kernel axis, HWIO layout),
  s_c = max_{h,w,i} |W[h, w, i, c]| / 127. q = clip(round(W / s), −127, 127)
  (int8), Ŵ = q·s, so |W − Ŵ| ≤ s/2 element-wise.
- layer subset: the U-Net has 2·(2·depth + 1) + 1 convolutions (31 for the
  reference), named in forward order ``conv_layer_names``: "inc.conv1",
  "inc.conv2", "down.0.conv1", …, "up.<depth-1>.conv2", "outc".
  ``skip_first`` / ``skip_last`` keep that many at each end in float32 (mixed
  precision; the reference's "mixed" kept 2 + 2 of 31), or ``layers`` names
  the quantized set explicitly. Biases and BatchNorm stay float32.

Presets (``QuantConfig.preset``): "per_tensor", "per_channel" (all convs),
"mixed" (per-channel, first two and last two convs float32) and "mixed_full_res"
(per-channel, every conv at the input's full resolution float32: the first two, and
the last block's two with the 1×1 output conv). Convs of a few channels on the
full-size map are where integer kernels are slowest (ONNX Runtime's QLinearConv
is slower than its float conv there: benchmarks/onnx_profile.py), and the first
and last layers are where int8 costs most accuracy. Note: the
reference's per-tensor scheme used one *asymmetric* scale over all convs
together; here per-tensor means one symmetric scale per conv. The reference's scheme
is "reference_per_tensor" (granularity "global_asymmetric"): one scale
s = (max − min)/255 and one zero point z = round(−128 − min/s) over the kernels of
every quantized conv together, q = clip(round(W/s) + z, −128, 127), Ŵ = (q − z)·s,
so |W − Ŵ| ≤ s/2. It is post-training only and runs dequantized: its integers
need the zero point, which bec_jax's int8 path (symmetric, int8 × int8) has not.

Three ways to run a quantized model, all by swapping conv modules of a (cloned)
``UNet`` (``quantize_model``), so the U-Net's own forward pass is reused:

- mode "fake": ``FakeQuantConv`` — float32 kernels passed through
  ``fake_quant`` (custom_vjp, straight-through gradient) on every call:
  quantization-aware training.
- mode "int8": ``Int8Conv`` — int8 kernels + float32 scales; activations are
  quantized per tensor (dynamic, symmetric) and the convolution runs int8 × int8
  → int32 (``preferred_element_type=int32``), then is rescaled by s_x·s_w.
- "dequant": ordinary ``nnx.Conv`` with Ŵ = q·s (``dequantize_into``).

Storage: ``save_quantized`` / ``load_quantized`` write an orbax checkpoint of
{int8 kernels, scales, float32 leaves, BatchNorm statistics}, packed into one
flat array per dtype, plus a JSON description (model configuration, scheme,
array layout). Optionally kernels are stored *sparse* (``sparse=True``):
non-zero values + 1-byte index gaps (``encode_sparse``).
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bec_jax.artifacts import (CorruptArtifact, check_replaceable, claim_folder, first_line, has_manifest,
                               remove_tree, verify_manifest, write_manifest)
from bec_jax.models.unet import DoubleConv, UNet, UNetConfig

__all__ = [
    "GRANULARITIES", "SCHEMES", "QuantConfig", "quantize_array", "dequantize", "global_asymmetric", "fake_quant",
    "conv_layer_names", "conv_layers", "FakeQuantConv", "Int8Conv", "quantize_model", "quantize_state",
    "dequantize_into", "save_quantized", "load_quantized", "read_model_meta", "dir_bytes", "weight_error_stats",
    "encode_sparse", "decode_sparse",
]

GRANULARITIES = ("per_tensor", "per_channel", "global_asymmetric")
SCHEMES = ("per_tensor", "per_channel", "mixed", "mixed_full_res", "reference_per_tensor")
QMAX = 127
FORMAT = "bec_jax.quantized/2"  # /2: arrays packed per dtype (``_pack``)
FORMAT_V1 = "bec_jax.quantized/1"  # one orbax leaf per array; still read


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """Which conv kernels become int8 and how.

    granularity: "per_tensor" or "per_channel" (symmetric, per conv), or "global_asymmetric" (one
      scale and zero point over all quantized convs: the reference's per-tensor scheme; post-training
      only, no int8 path: ``integer_path``).
    skip_first, skip_last: convs kept float32 at the start / end of the forward order (>= 0).
    layers: explicit tuple of conv names to quantize (overrides skip_*), or None.
    """

    granularity: str = "per_channel"
    skip_first: int = 0
    skip_last: int = 0
    layers: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.skip_first < 0 or self.skip_last < 0:
            raise ValueError(f"skip_first/skip_last must be >= 0, got {self.skip_first}, {self.skip_last}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))

    @property
    def integer_path(self) -> bool:
        """Whether the quantized convs can run as int8 × int8 (``Int8Conv``, int8 ONNX export)."""
        return self.granularity != "global_asymmetric"

    @classmethod
    def preset(cls, scheme: str) -> "QuantConfig":
        """"per_tensor", "per_channel" (all convs), "mixed" (per-channel, 2 + 2 convs float32),
        "mixed_full_res" (per-channel, the 2 + 3 convs at full resolution float32) or
        "reference_per_tensor" (the reference's: one asymmetric scale over all convs)."""
        if scheme == "reference_per_tensor":
            return cls("global_asymmetric")
        if scheme == "per_tensor":
            return cls("per_tensor")
        if scheme == "per_channel":
            return cls("per_channel")
        if scheme == "mixed":
            return cls("per_channel", skip_first=2, skip_last=2)
        if scheme == "mixed_full_res":
            return cls("per_channel", skip_first=2, skip_last=3)
        raise ValueError(f"unknown quantization scheme {scheme!r}; allowed: {SCHEMES}")

    def selected(self, names: list[str]) -> list[str]:
        """The conv names (subset of ``names``, forward order) this config quantizes."""
        if self.layers is not None:
            unknown = sorted(set(self.layers) - set(names))
            if unknown:
                raise ValueError(f"unknown conv layers {unknown}; this model has {names}")
            return [n for n in names if n in self.layers]
        if self.skip_first + self.skip_last > len(names):
            raise ValueError(f"skip_first + skip_last = {self.skip_first + self.skip_last} exceeds the "
                             f"{len(names)} conv layers")
        return names[self.skip_first:len(names) - self.skip_last]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- arrays

def _scale(w, granularity: str):
    """float32 scale: () per tensor, (C_out,) per channel (last axis)."""
    a = jnp.abs(w.astype(jnp.float32))
    m = jnp.max(a) if granularity == "per_tensor" else jnp.max(a.reshape(-1, a.shape[-1]), axis=0)
    return jnp.where(m > 0, m / QMAX, 1.0).astype(jnp.float32)


def quantize_array(w, granularity: str = "per_channel"):
    """Symmetric int8 quantization of a kernel w (..., C_out) float.

    Returns (q int8 same shape, scale float32 () or (C_out,)); w ≈ q·scale with
    |w − q·scale| ≤ scale/2.
    """
    if granularity not in GRANULARITIES[:2]:
        raise ValueError(f"quantize_array quantizes one tensor: granularity must be one of {GRANULARITIES[:2]}, got "
                         f"{granularity!r} (global_asymmetric spans all convs: quantize_state)")
    s = _scale(w, granularity)
    q = jnp.clip(jnp.round(w.astype(jnp.float32) / s), -QMAX, QMAX).astype(jnp.int8)
    return q, s


def dequantize(q, scale, zero_point=0):
    """(q − zero_point) × scale: q (..., C_out) int8, scale () or (C_out,) → float32."""
    return (q.astype(jnp.float32) - zero_point) * scale


def global_asymmetric(kernels: dict) -> dict:
    """The reference's per-tensor scheme over ``kernels`` {name: float array} together: {name: (q int8,
    scale float32 (), zero point int32 ())} with one scale s = (max − min)/255 and zero point
    z = round(−128 − min/s) for all, q = clip(round(w/s) + z, −128, 127); w ≈ (q − z)·s."""
    lo = min(float(np.min(w)) for w in kernels.values())
    hi = max(float(np.max(w)) for w in kernels.values())
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero stays exactly representable (pruned weights, padding)
    s = np.float32((hi - lo) / 255 if hi > lo else 1.0)
    z = np.int32(np.clip(np.round(-128 - lo / s), -128, 127))
    return {k: (np.clip(np.round(np.asarray(w, np.float32) / s) + z, -128, 127).astype(np.int8), s, z)
            for k, w in kernels.items()}


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def fake_quant(w, granularity: str = "per_channel"):
    """Quantize-dequantize w (float, (..., C_out)) in the forward pass; straight-through backward.

    Forward: dequantize(*quantize_array(w, granularity)), same shape and dtype as w.
    Backward: the incoming gradient where |w| ≤ 127·s (the whole tensor for
    max-based scales, i.e. the identity), 0 outside; the scale is treated as a
    constant.
    """
    q, s = quantize_array(w, granularity)
    return dequantize(q, s).astype(w.dtype)


def _fq_fwd(w, granularity):
    q, s = quantize_array(w, granularity)
    return dequantize(q, s).astype(w.dtype), (w, s)


def _fq_bwd(granularity, res, g):
    w, s = res
    inside = jnp.abs(w) <= QMAX * s
    return (jnp.where(inside, g, jnp.zeros_like(g)),)


fake_quant.defvjp(_fq_fwd, _fq_bwd)


# ----------------------------------------------------------------------------- layers

def conv_layers(model: UNet) -> list[tuple[str, nnx.Module, str]]:
    """[(name, parent module, attribute)] of every conv of a UNet, in forward order."""
    out = []

    def block(prefix, b):
        if not isinstance(b, DoubleConv):
            raise ValueError(f"{prefix} is a {type(b).__name__}, expected DoubleConv")
        out.extend([(f"{prefix}.conv1", b, "conv1"), (f"{prefix}.conv2", b, "conv2")])

    block("inc", model.inc)
    for i, b in enumerate(model.down):
        block(f"down.{i}", b)
    for i, b in enumerate(model.up):
        block(f"up.{i}", b)
    out.append(("outc", model, "outc"))
    return out


def conv_layer_names(model: UNet) -> list[str]:
    """Conv names in forward order (31 for the reference U-Net)."""
    return [n for n, _, _ in conv_layers(model)]


def _conv(x, kernel, padding, **kw):
    return jax.lax.conv_general_dilated(x, kernel, window_strides=(1, 1), padding=padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), **kw)


def _check_plain(conv: nnx.Conv):
    strides = conv.strides if isinstance(conv.strides, (tuple, list)) else (conv.strides,) * 2
    if tuple(strides) != (1, 1) or conv.feature_group_count != 1 or conv.kernel_dilation not in (1, (1, 1)) \
            or conv.input_dilation not in (1, (1, 1)) or isinstance(conv.padding, str) or conv.bias is None:
        raise ValueError("only stride-1, undilated, ungrouped, explicitly padded convs with bias can be quantized")
    return tuple(tuple(p) for p in conv.padding)


class FakeQuantConv(nnx.Module):
    """Conv with a fake-quantized float32 kernel (QAT). Params named like nnx.Conv's
    (``kernel`` (kh, kw, C_in, C_out), ``bias`` (C_out,)), so trainer code and
    parameter paths are unchanged. x (B, H, W, C_in) → (B, H, W, C_out) float32."""

    def __init__(self, conv: nnx.Conv, granularity: str):
        self.padding = _check_plain(conv)
        self.granularity = granularity
        self.kernel = nnx.Param(conv.kernel[...])
        self.bias = nnx.Param(conv.bias[...])

    def __call__(self, x):
        return _conv(x, fake_quant(self.kernel[...], self.granularity), self.padding) + self.bias[...]


class Int8Conv(nnx.Module):
    """Conv computed in integers: int8 activations × int8 kernel → int32, then rescaled.

    kernel_q int8 (kh, kw, C_in, C_out), w_scale float32 () or (C_out,), bias
    float32 (C_out,). Activations x (B, H, W, C_in) float32 are quantized per
    tensor with s_x = max|x| / 127 (dynamic, per call), so
    y = conv_int32(q_x, kernel_q) · (s_x · w_scale) + bias, float32.
    """

    def __init__(self, kernel_q, w_scale, bias, padding):
        self.padding = tuple(tuple(p) for p in padding)
        self.kernel_q = nnx.Variable(jnp.asarray(kernel_q, jnp.int8))
        self.w_scale = nnx.Variable(jnp.asarray(w_scale, jnp.float32))
        self.bias = nnx.Variable(jnp.asarray(bias, jnp.float32))

    def __call__(self, x):
        qx, sx = quantize_array(x, "per_tensor")
        return _int8_conv(qx, self.kernel_q[...], self.padding) * (sx * self.w_scale[...]) + self.bias[...]


@partial(jax.jit, static_argnames="padding")
def _int8_conv(qx, kernel_q, padding):
    """int8 (B, H, W, C_in) × int8 (kh, kw, C_in, C_out) → integer sums → float32.

    On a CPU the sums accumulate in int32 (``preferred_element_type``). On a
    GPU, XLA lowers integer convolutions to cuDNN's int8 kernels, which cover
    only some geometries: a conv that XLA rewrites as a backward-filter conv
    (batch 1 with one output channel) has none ("No supported configs"), and
    a lone int32 result has none either. There the same int8 values are
    convolved in float32 at full precision (no TF32), which runs everywhere:
    every product is exact (|q| ≤ 127), and the sum is exact while it stays
    below 2^24, rounded to float32 (relative 6e-8) beyond.
    """
    if jax.default_backend() in ("gpu", "cuda", "rocm"):
        return _conv(qx.astype(jnp.float32), kernel_q.astype(jnp.float32), padding,
                     precision=jax.lax.Precision.HIGHEST)
    return _conv(qx, kernel_q, padding, preferred_element_type=jnp.int32).astype(jnp.float32)


def quantize_model(model: UNet, config: QuantConfig, mode: str = "fake") -> UNet:
    """A copy of ``model`` whose selected convs are ``FakeQuantConv`` (mode "fake")
    or ``Int8Conv`` (mode "int8", kernels quantized now from the model's weights)."""
    if mode not in ("fake", "int8"):
        raise ValueError(f"mode must be 'fake' or 'int8', got {mode!r}")
    if not config.integer_path:
        raise ValueError(f"granularity {config.granularity!r} is post-training only (quantize_state, save_quantized): "
                         "it has neither quantization-aware training nor an int8 path")
    model = nnx.clone(model)
    layers = conv_layers(model)
    chosen = set(config.selected([n for n, _, _ in layers]))
    for name, parent, attr in layers:
        if name not in chosen:
            continue
        conv = getattr(parent, attr)
        if mode == "fake":
            new = FakeQuantConv(conv, config.granularity)
        else:
            q, s = quantize_array(conv.kernel[...], config.granularity)
            new = Int8Conv(q, s, conv.bias[...], _check_plain(conv))
        setattr(parent, attr, new)
    return model


# ----------------------------------------------------------------------------- PTQ state

def _kernel_key(conv_name: str) -> str:
    return conv_name.replace(".", "/") + "/kernel"


def quantize_state(model: UNet, config: QuantConfig | None) -> dict:
    """Post-training quantization of a float model into a storable pytree.

    Returns {"int8": {conv: int8 kernel}, "scale": {conv: float32 scale},
    "float": {param name: float32}, "batch_stats": {name: float32}} (numpy
    arrays; conv names with '.', param names with '/' replaced by '.'), and
    "zero_point": {conv: int32 ()} for granularity "global_asymmetric".
    ``config=None`` keeps everything float32 (the fp32 reference file).
    """
    from bec_jax.compress.pruning import named_leaves

    names = conv_layer_names(model)
    chosen = config.selected(names) if config is not None else []
    params = named_leaves(nnx.state(model, nnx.Param))
    stats = named_leaves(nnx.state(model, nnx.BatchStat))
    out = {"int8": {}, "scale": {}, "float": {}, "batch_stats": {}}
    if chosen and not config.integer_path:
        out["zero_point"] = {}
        for conv, (q, s, z) in global_asymmetric({c: params.pop(_kernel_key(c)) for c in chosen}).items():
            out["int8"][conv], out["scale"][conv], out["zero_point"][conv] = q, s, z
    elif chosen:
        for conv in chosen:
            q, s = quantize_array(params.pop(_kernel_key(conv)), config.granularity)
            out["int8"][conv] = np.asarray(q)
            out["scale"][conv] = np.asarray(s)
    out["float"] = {k.replace("/", "."): np.asarray(v, np.float32) for k, v in params.items()}
    out["batch_stats"] = {k.replace("/", "."): np.asarray(v, np.float32) for k, v in stats.items()}
    return out


def dequantize_into(model_config: UNetConfig, qstate: dict, mode: str = "dequant",
                    inner_widths=None, outer_widths=None) -> UNet:
    """Rebuild a UNet (eval mode) from a ``quantize_state`` pytree.

    mode "dequant": plain float model with kernels q·s; "int8": int8 kernels run
    by ``Int8Conv``. inner_widths, outer_widths: DoubleConv widths of a
    structurally pruned model (``structured.inner_widths`` / ``outer_widths``),
    None for the config's. Raises ValueError when a stored shape does not fit
    (a checkpoint of another architecture).
    """
    if mode not in ("dequant", "int8"):
        raise ValueError(f"mode must be 'dequant' or 'int8', got {mode!r}")
    from bec_jax.compress import structured
    from bec_jax.models.unet import init_model

    model = init_model(model_config, 0)
    if inner_widths is not None or outer_widths is not None:
        model = structured.with_widths(model, inner_widths or structured.inner_widths(model), outer_widths)
    zero = qstate.get("zero_point", {})
    if mode == "int8" and zero:
        raise ValueError("the reference's asymmetric per-tensor scheme has no int8 path in bec_jax (its integers need "
                         "a zero point); load it dequantized (mode 'dequant')")
    flat = dict(qstate["float"])
    for conv, q in qstate["int8"].items():
        flat[conv + ".kernel"] = np.asarray(dequantize(jnp.asarray(q), jnp.asarray(qstate["scale"][conv]),
                                                       zero.get(conv, 0)))
    flat.update(qstate["batch_stats"])

    def fill(path, x):
        from bec_jax.compress.pruning import leaf_name

        key = leaf_name(path).replace("/", ".")
        if key not in flat:
            raise ValueError(f"stored model lacks {key!r}: a checkpoint of another architecture")
        v = np.asarray(flat[key])
        if v.shape != tuple(x.shape):
            raise ValueError(f"{key}: stored shape {v.shape} differs from the model's {tuple(x.shape)} "
                             "(a checkpoint of another architecture)")
        return jnp.asarray(v, x.dtype)

    for kind in (nnx.Param, nnx.BatchStat):
        nnx.update(model, jax.tree_util.tree_map_with_path(fill, nnx.state(model, kind)))
    model.eval()
    if mode == "int8":
        layers = {n: (p, a) for n, p, a in conv_layers(model)}
        for conv, q in qstate["int8"].items():
            parent, attr = layers[conv]
            old = getattr(parent, attr)
            setattr(parent, attr, Int8Conv(q, qstate["scale"][conv], old.bias[...], _check_plain(old)))
    return model


# ----------------------------------------------------------------------------- sparse encoding

def encode_sparse(a) -> dict:
    """Sparse form of an array: {"values", "gaps" uint8[, "long_gaps" uint32]}.

    values: the non-zeros of ``a.ravel()`` (a's dtype), in order. gaps[i]: flat
    index of value i − flat index of value i−1 (the first counts from −1), so
    every gap is >= 1 and 0 is free as an escape: a gap of 256 or more is stored
    as gaps[i] = 0 and taken, in order, from ``long_gaps`` (present only when
    needed; orbax cannot store zero-size arrays). An all-zero array stores one
    explicit zero at its last index; a zero-size array gives empty arrays. Any
    array round-trips exactly (``decode_sparse``). Cost: 1 byte of index per
    non-zero plus 4 per gap >= 256.
    """
    flat = np.asarray(a).ravel()
    idx = np.flatnonzero(flat)
    if idx.size == 0 and flat.size:
        idx = np.asarray([flat.size - 1])
    gaps = np.diff(idx, prepend=-1)
    long = gaps > 255
    enc = dict(values=flat[idx], gaps=np.where(long, 0, gaps).astype(np.uint8))
    if long.any():
        enc["long_gaps"] = gaps[long].astype(np.uint32)
    return enc


def decode_sparse(enc: dict, shape, dtype) -> np.ndarray:
    """Inverse of ``encode_sparse``: dense array of ``shape`` and ``dtype``.

    Also reads the earlier layout (uint16 gaps with zero fillers, no escapes).
    """
    out = np.zeros(int(np.prod(shape)), dtype)
    gaps = np.asarray(enc["gaps"], np.int64)
    escaped = gaps == 0
    long = np.asarray(enc.get("long_gaps", np.zeros(0, np.uint32)), np.int64)
    if long.size != escaped.sum():
        raise ValueError(f"corrupt sparse encoding: {int(escaped.sum())} escaped gaps but {long.size} long gaps")
    gaps[escaped] = long
    if gaps.size:
        out[np.cumsum(gaps) - 1] = np.asarray(enc["values"], dtype)
    return out.reshape(shape)


# ----------------------------------------------------------------------------- orbax files

def dir_bytes(path) -> int:
    """Total size in bytes of the files under ``path``."""
    return int(sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()))


def _pack(tree: dict) -> tuple[dict, list]:
    """Nested dict of arrays → ({dtype name: 1-D concatenation}, layout).

    layout: [[path (list of keys), dtype name, shape], ...] in concatenation
    order. One orbax leaf per dtype instead of one per array: orbax writes
    metadata for every array (a depth-6 U-Net has ~250), which made up ~40 % of
    the file of a 99 %-sparse int8 model. Zero-size dtype groups are dropped
    (orbax cannot store them).
    """
    chunks, layout = {}, []

    def walk(path, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(path + [k], v)
        else:
            a = np.asarray(node)
            chunks.setdefault(a.dtype.name, []).append(a.ravel())
            layout.append([path, a.dtype.name, list(a.shape)])

    walk([], tree)
    arrays = {dt: np.concatenate(v) for dt, v in chunks.items()}
    return {dt: a for dt, a in arrays.items() if a.size}, layout


def _unpack(arrays: dict, layout: list) -> dict:
    """Inverse of ``_pack``; ValueError when the arrays do not match the layout."""
    offset, tree = {}, {}
    for path, dt, shape in layout:
        n = int(np.prod(shape))
        flat = np.asarray(arrays.get(dt, np.zeros(0, dt)))
        start = offset.get(dt, 0)
        if start + n > flat.size:
            raise ValueError(f"corrupt quantized model: {'/'.join(path)} needs {dt}[{start}:{start + n}], "
                             f"{flat.size} stored")
        offset[dt] = start + n
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = flat[start:start + n].astype(dt, copy=False).reshape(shape)
    return tree


def _legacy_model_folder(directory: Path) -> bool:
    """A model folder of bec_jax's layout saved before manifests existed (quantized.json + arrays/ only)."""
    return (directory.is_dir() and not directory.is_symlink() and not has_manifest(directory)
            and {p.name for p in directory.iterdir()} == {"quantized.json", "arrays"})


def save_quantized(directory, model: UNet, config: QuantConfig | None, *, sparse: bool = False,
                   extra: dict | None = None, overwrite: bool = False) -> dict:
    """Write ``quantize_state(model, config)`` with orbax to ``directory``.

    Layout: ``directory/arrays`` (orbax StandardCheckpointer, waited for: one
    1-D array per dtype, ``_pack``) and ``directory/quantized.json`` (format,
    model_config, quant config, pack and sparse layouts, ``extra``). sparse:
    store every int8 and float conv kernel as (values, 1-byte gaps,
    ``encode_sparse``) when that is smaller. Returns {"bytes_on_disk": all files
    (orbax compresses the arrays), "payload_bytes": the arrays uncompressed}. An
    existing non-empty ``directory`` is an error unless ``overwrite``.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory)
    if overwrite:
        if _legacy_model_folder(directory):
            write_manifest(directory, "model")  # saved before manifests existed: adopt it, then replace it
        remove_tree(directory)  # only a folder bec_jax wrote, never through a link
    else:
        check_replaceable(directory, overwrite)
    claim_folder(directory, "model")
    qstate = quantize_state(model, config)
    layout = {}
    if sparse:
        for group in ("int8", "float"):
            for k in list(qstate[group]):
                if group == "float" and not k.endswith("kernel"):
                    continue
                a = qstate[group][k]
                enc = encode_sparse(a)
                if sum(v.nbytes for v in enc.values()) < a.nbytes:
                    qstate[group][k] = enc
                    layout[f"{group}:{k}"] = dict(shape=list(a.shape), dtype=str(a.dtype))
    store, packed = _pack(qstate)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(directory.resolve() / "arrays", store)
    ckptr.wait_until_finished()
    ckptr.close()
    from bec_jax.compress import structured

    full = dict(zip(("inner_widths", "outer_widths"), structured.full_widths(model.config)))
    widths = {k: getattr(structured, k)(model) for k in full}
    meta = dict(format=FORMAT, model_config=model.config.to_dict(),
                **{k: None if w == full[k] else w for k, w in widths.items()},
                quant=None if config is None else config.to_dict(), sparse=layout, packed=packed,
                extra=extra or {})
    (directory / "quantized.json").write_text(json.dumps(meta, separators=(",", ":")))
    write_manifest(directory, "model")
    return dict(bytes_on_disk=dir_bytes(directory), payload_bytes=int(sum(a.nbytes for a in store.values())))


def read_model_meta(directory, *, verify: bool = True) -> dict:
    """The checked ``quantized.json`` of a ``save_quantized`` folder: format, model_config, quant, extra, ...

    verify: check every file against the folder's manifest first (folders saved before manifests
    existed are read unchecked). ValueError for a folder that is not a model's, CorruptArtifact naming
    the damaged file.
    """
    directory = Path(directory)
    mfile = directory / "quantized.json"
    if not directory.is_dir():
        raise ValueError(f"no model folder at {str(directory)!r}")
    if not mfile.is_file():
        raise ValueError(f"{str(directory)!r} is not a quantized model folder (no quantized.json)")
    if verify and has_manifest(directory):
        verify_manifest(directory, "model")
    try:
        meta = json.loads(mfile.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptArtifact(f"{str(mfile)!r} is damaged (not JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, FORMAT_V1):
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{str(mfile)!r} has format {fmt!r}, expected {FORMAT!r}")
    needed = {"model_config", "sparse"} | ({"packed"} if meta["format"] == FORMAT else set())
    if not needed <= set(meta) or not isinstance(meta["model_config"], dict):
        raise CorruptArtifact(f"{str(mfile)!r} is incomplete (needs {sorted(needed)})")
    return meta


def load_quantized(directory, model_config: UNetConfig | None = None, mode: str = "dequant"):
    """(model in eval mode, meta) from a ``save_quantized`` folder (also reads the unpacked format /1).

    model_config: if given, the stored configuration must equal it (ValueError
    naming the differences otherwise). mode: "dequant" (float convs, weights
    q·s), "int8" (``Int8Conv``) or "auto" (int8 for a quantized model, else
    dequant). Stored int8 kernels come back as int8.
    """
    import orbax.checkpoint as ocp

    if mode not in ("dequant", "int8", "auto"):
        raise ValueError(f"mode must be 'dequant', 'int8' or 'auto', got {mode!r}")
    directory = Path(directory)
    meta = read_model_meta(directory)
    if mode == "auto":
        mode = "int8" if meta.get("quant") else "dequant"
    stored = UNetConfig.from_dict(meta["model_config"])
    if model_config is not None and stored != model_config:
        diff = {k: (v, getattr(model_config, k)) for k, v in stored.to_dict().items()
                if getattr(model_config, k) != v}
        raise ValueError(f"{str(directory)!r} holds a model of another architecture: stored vs expected {diff}")
    ckptr = ocp.StandardCheckpointer()
    try:
        tree = ckptr.restore(directory.resolve() / "arrays")
    except Exception as e:  # orbax/tensorstore errors on damaged unchecked folders: one line naming the folder
        raise CorruptArtifact(f"{str(directory / 'arrays')!r} cannot be read ({type(e).__name__}: "
                              f"{first_line(e, 200)})") from None
    finally:
        ckptr.close()
    if meta["format"] == FORMAT:
        tree = _unpack(tree, meta["packed"])
    qstate = {g: {k: (v if isinstance(v, dict) else np.asarray(v)) for k, v in tree.get(g, {}).items()}
              for g in ("int8", "scale", "float", "batch_stats", "zero_point")}
    if not qstate["zero_point"]:
        del qstate["zero_point"]
    for key, lay in meta["sparse"].items():
        group, k = key.split(":", 1)
        qstate[group][k] = decode_sparse(qstate[group][k], tuple(lay["shape"]), np.dtype(lay["dtype"]))
    return dequantize_into(stored, qstate, mode, meta.get("inner_widths"), meta.get("outer_widths")), meta


def weight_error_stats(model: UNet, config: QuantConfig,
                       percentiles=(0, 5, 25, 50, 75, 95, 100)) -> dict:
    """Per-conv |W − Ŵ| statistics of PTQ with ``config`` (float32 layers give zeros).

    Returns {"layers": names, "percentiles": list, "residual_percentiles":
    (n_layers, n_percentiles) list, "max_abs", "mean_abs" (over all conv weights)}.
    """
    layers = conv_layers(model)
    chosen = set(config.selected([n for n, _, _ in layers]))
    qstate = quantize_state(model, config)
    rows, all_err = [], []
    for name, parent, attr in layers:
        w = np.asarray(getattr(parent, attr).kernel[...], np.float32)
        if name in chosen:
            deq = dequantize(jnp.asarray(qstate["int8"][name]), jnp.asarray(qstate["scale"][name]),
                             qstate.get("zero_point", {}).get(name, 0))
            err = np.abs(w - np.asarray(deq))
        else:
            err = np.zeros_like(w)
        rows.append(np.percentile(err, percentiles).tolist())
        all_err.append(err.ravel())
    e = np.concatenate(all_err)
    return dict(layers=[n for n, _, _ in layers], percentiles=list(percentiles), residual_percentiles=rows,
                max_abs=float(e.max()), mean_abs=float(e.mean()))
