"""U-Net (Flax NNX, channels-last): log-density image → phase-gradient field.

The reference configuration (``UNetConfig()``) is the paper's network exactly
(DESIGN.md §5, the PyTorch "milesial" U-Net with bilinear upsampling):

    inc    DoubleConv 1 → 8                                   200×200
    down   7 × (max-pool 2 → DoubleConv): 16, 32, 64, 128, 256, 512, 512
           spatial 200 → 100 → 50 → 25 → 12 → 6 → 3 → 1   (floor, as MaxPool2d)
    up     7 × (bilinear ×2, align_corners → zero-pad to the skip → concat
           [skip, upsampled] → DoubleConv with mid = in/2):
           1024→256 (mid 512), 512→128, 256→64, 128→32, 64→16, 32→8, 16→8 (mid 8)
    outc   1×1 conv 8 → 2 (linear)

DoubleConv = (3×3 conv with bias, padding 1 → BatchNorm → ReLU) × 2.

Parameter count: 17,314,578 trainable parameters = conv kernels + conv biases
(4,584 of them) + BatchNorm scale and bias (9,168). BatchNorm running mean and
variance (another 9,168 numbers, ``nnx.BatchStat``) are state, not parameters,
and are *not* counted — the same convention as PyTorch's ``parameters()``.

Width (``base_width``), depth and input size are configurable; sizes that do
not halve evenly are floored by the max-pool and the upsampled map is
zero-padded to its skip connection (left/top ``diff // 2``, right/bottom the
rest), exactly as the reference.

Initialisation follows PyTorch's defaults so that training starts from the same
distribution as the reference: conv kernels and biases U(±1/√fan_in),
BatchNorm scale 1, bias 0. BatchNorm momentum is given in PyTorch terms
(``bn_momentum = 0.2``: running ← 0.8·running + 0.2·batch; Flax's ``momentum``
is 1 − that). As in PyTorch, normalisation in training uses the biased batch
variance and the running variance is updated with the unbiased one
(``TorchBatchNorm``), so eval-mode outputs match the reference too (this
matters at the 1×1 bottleneck, where a batch of 8 gives a factor 8/7).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["UNetConfig", "UNet", "DoubleConv", "apply_conv", "TorchBatchNorm", "count_params", "upsample_bilinear2x",
           "pad_to", "max_pool2x", "init_model", "default_depth"]


COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net (everything needed to rebuild it; stored with checkpoints).

    in_channels: input channels (1: log-density).
    out_channels: output channels (2: phase gradient along x, along y).
    base_width: channels of the first level (reference 8); level i has
      base_width·2^i channels and the bottleneck repeats the last level's width.
    depth: number of max-pool levels (reference 7); the input must be at least
      2^depth pixels per side.
    input_size: image side the model is built for (reference 200). The network
      is fully convolutional; this fixes ``example_input`` and is checked
      against the data it is trained on.
    bn_momentum: BatchNorm running-average momentum in PyTorch terms, in (0, 1].
    bn_epsilon: BatchNorm epsilon (> 0).
    dtype: compute dtype of the convolutions, "float32" (default) or
      "bfloat16" (mixed precision: parameters stay float32, convolutions and
      activations run in bfloat16, BatchNorm statistics in float32, the output
      is float32). bfloat16 is for accelerators; on a CPU it is slower.
    """

    in_channels: int = 1
    out_channels: int = 2
    base_width: int = 8
    depth: int = 7
    input_size: int = 200
    bn_momentum: float = 0.2
    bn_epsilon: float = 1e-5
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("in_channels", "out_channels", "base_width", "depth"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.base_width % 2:
            raise ValueError(f"base_width must be even (decoder widths halve it), got {self.base_width}")
        if self.input_size < 2**self.depth:
            raise ValueError(f"input_size must be >= 2**depth = {2**self.depth} for depth {self.depth}, "
                             f"got {self.input_size}")
        if not (0 < self.bn_momentum <= 1):
            raise ValueError(f"bn_momentum must be in (0, 1] (PyTorch convention), got {self.bn_momentum}")
        if not (self.bn_epsilon > 0):
            raise ValueError(f"bn_epsilon must be > 0, got {self.bn_epsilon}")
        if self.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"dtype must be one of {COMPUTE_DTYPES}, got {self.dtype!r}")

    @property
    def encoder_widths(self) -> tuple[int, ...]:
        """Channels after inc and each down level, length depth + 1 (reference 8, …, 512, 512)."""
        w = [self.base_width * 2**i for i in range(self.depth)]
        return (*w, w[-1])

    @property
    def decoder_widths(self) -> tuple[tuple[int, int, int], ...]:
        """(in, mid, out) channels of each up DoubleConv, deepest first."""
        enc = self.encoder_widths
        c, out = enc[-1], []
        for level in range(self.depth - 1, -1, -1):
            cin = c + enc[level]
            cout = enc[level] // 2 if level > 0 else enc[0]
            out.append((cin, cin // 2, cout))
            c = cout
        return tuple(out)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown UNetConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def default_depth(n: int) -> int:
    """The default U-Net depth for n×n inputs: min(7, ⌊log2 n⌋), a 1×1 bottleneck
    up to the reference depth 7."""
    return min(7, int(np.floor(np.log2(n))))


def _torch_uniform(bound: float):
    """U(-bound, bound) initialiser (PyTorch's default for conv weights and biases)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _conv(cin: int, cout: int, k: int, rngs: nnx.Rngs, dtype: str = "float32") -> nnx.Conv:
    bound = 1.0 / np.sqrt(cin * k * k)  # kaiming_uniform(a=√5) and the bias rule both give 1/√fan_in
    return nnx.Conv(cin, cout, (k, k), padding=((k // 2, k // 2),) * 2, use_bias=True, dtype=jnp.dtype(dtype),
                    param_dtype=jnp.float32, kernel_init=_torch_uniform(bound), bias_init=_torch_uniform(bound),
                    rngs=rngs)


#: Feature maps with at most this many pixels (H·W) use the GEMM form of a
#: 3×3 conv (``apply_conv``); larger ones use XLA's convolution. Chosen by
#: timing the reference train step on a 2-core CPU (benchmarks/README.md).
GEMM_MAX_PIXELS = 144


def apply_conv(conv, x):
    """``conv(x)`` for a U-Net conv, with a faster path for small feature maps
    (same parameters, same result up to summation order).

    The deep levels are tiny images with many channels (3×3×512 kernels on 3×3
    and 1×1 maps in the reference), where XLA:CPU's convolution and its two
    backward convolutions run far below GEMM speed. For a plain ``nnx.Conv``
    (stride 1, 'same' zero padding, odd square kernel) on H·W ≤
    ``GEMM_MAX_PIXELS`` the conv is one matrix product of the k² shifted copies
    of the padded input (im2col) with the reshaped kernel; on a 1×1 map only the
    centre tap sees non-padding input. Any other module (a quantized
    replacement) is simply called. x (B, H, W, C_in) → (B, H, W, C_out).
    """
    if type(conv) is not nnx.Conv or x.shape[1] * x.shape[2] > GEMM_MAX_PIXELS or conv.kernel.shape[0] == 1:
        return conv(x)
    x = x.astype(conv.dtype or x.dtype)
    k = conv.kernel[...].astype(x.dtype)
    kh, kw, cin, cout = k.shape
    B, H, W, _ = x.shape
    if H == 1 and W == 1:
        y = x.reshape(B, cin) @ k[kh // 2, kw // 2]
    else:
        xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
        cols = jnp.concatenate([xp[:, dy:dy + H, dx:dx + W] for dy in range(kh) for dx in range(kw)], -1)
        y = cols.reshape(B * H * W, kh * kw * cin) @ k.reshape(kh * kw * cin, cout)
    return (y + conv.bias[...].astype(x.dtype)).reshape(B, H, W, cout)


class TorchBatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` over the last (channel) axis with PyTorch's statistics rule.

    Train mode (``use_running_average=False``): normalise with the batch mean and
    the biased batch variance over all other axes; update running mean/var with
    ``momentum`` (Flax convention: running ← momentum·running + (1−momentum)·batch)
    using the *unbiased* batch variance, as ``torch.nn.BatchNorm2d`` does.
    Fewer than 2 values per channel in train mode (batch 1 at the 1×1
    bottleneck) raise ValueError, as in PyTorch: the output would be the bias
    alone. Eval mode: normalise with the running statistics. Same variables (scale,
    bias: ``nnx.Param``; mean, var: ``nnx.BatchStat``) as ``nnx.BatchNorm``.
    """

    def __call__(self, x, use_running_average: bool | None = None):
        out_dtype, x = x.dtype, x.astype(jnp.float32)  # statistics in float32 also under bfloat16 compute
        use_ra = self.use_running_average if use_running_average is None else use_running_average
        if use_ra:
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            n = int(np.prod([x.shape[a] for a in axes]))
            if n < 2:
                raise ValueError(f"BatchNorm in training needs more than 1 value per channel, got input shape "
                                 f"{x.shape} (batch 1 at a 1x1 level); use batch size >= 2 (as PyTorch requires)")
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            unbiased = var * (n / max(n - 1, 1))
            m = self.momentum
            self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mean)
            self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1 - m) * unbiased)
        y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * self.scale[...]) + self.bias[...]
        return y.astype(out_dtype)


class DoubleConv(nnx.Module):
    """(3×3 conv → BatchNorm → ReLU) × 2. x (B, H, W, cin) → (B, H, W, cout), same H, W."""

    def __init__(self, cin: int, cout: int, mid: int | None = None, *, momentum: float = 0.2,
                 epsilon: float = 1e-5, dtype: str = "float32", rngs: nnx.Rngs):
        mid = cout if mid is None else mid
        self.conv1 = _conv(cin, mid, 3, rngs, dtype)
        self.bn1 = TorchBatchNorm(mid, momentum=1.0 - momentum, epsilon=epsilon, rngs=rngs)
        self.conv2 = _conv(mid, cout, 3, rngs, dtype)
        self.bn2 = TorchBatchNorm(cout, momentum=1.0 - momentum, epsilon=epsilon, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(apply_conv(self.conv1, x)))
        return nnx.relu(self.bn2(apply_conv(self.conv2, x)))


def _interp_1d(n_in: int, n_out: int):
    """Static (lo, hi, weight) of 1-D linear interpolation with align_corners=True."""
    if n_in == 1:
        z = np.zeros(n_out, np.int32)
        return z, z, np.zeros(n_out, np.float32)
    pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
    lo = np.minimum(np.floor(pos).astype(np.int32), n_in - 2)
    return lo, lo + 1, (pos - lo).astype(np.float32)


def upsample_bilinear2x(x):
    """Bilinear ×2 upsampling with align_corners=True (PyTorch's ``nn.Upsample``
    as in the reference). x (B, H, W, C) → (B, 2H, 2W, C), same dtype.

    Corner pixels map onto corner pixels; output pixel i samples input
    coordinate i·(H−1)/(2H−1). Two gathers per axis (cheap on CPU and GPU).
    """
    for axis in (1, 2):
        lo, hi, w = _interp_1d(x.shape[axis], 2 * x.shape[axis])
        shape = [1] * x.ndim
        shape[axis] = -1
        w = jnp.asarray(w, x.dtype).reshape(shape)
        x = jnp.take(x, lo, axis=axis) * (1 - w) + jnp.take(x, hi, axis=axis) * w
    return x


def max_pool2x(x):
    """2×2 max-pool, stride 2, floor mode (PyTorch ``MaxPool2d(2)``): x (B, H, W, C)
    → (B, H//2, W//2, C). A reshape and a max rather than a reduce-window, whose
    gradient (select-and-scatter) is slow on CPU. The gradient goes to the
    maximum (split among exact ties, which after a ReLU occur only at 0, where
    the ReLU passes no gradient anyway)."""
    B, H, W, C = x.shape
    h, w = H // 2, W // 2
    return x[:, :2 * h, :2 * w].reshape(B, h, 2, w, 2, C).max(axis=(2, 4))


def pad_to(x, height: int, width: int):
    """Zero-pad x (B, h, w, C) to (B, height, width, C) as the reference:
    ``diff // 2`` before, the rest after (h ≤ height, w ≤ width)."""
    dy, dx = height - x.shape[1], width - x.shape[2]
    if dy < 0 or dx < 0:
        raise ValueError(f"cannot pad {x.shape[1:3]} to the smaller ({height}, {width})")
    if dy == 0 and dx == 0:
        return x
    return jnp.pad(x, ((0, 0), (dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2), (0, 0)))


class UNet(nnx.Module):
    """The U-Net of the module docstring.

    Call: x float32 (B, H, W, in_channels) (log-density, channels-last) →
    float32 (B, H, W, out_channels) (computed in ``config.dtype``) (phase gradient, channel 0 along x /
    columns, 1 along y / rows), H, W ≥ 2^depth. BatchNorm uses batch
    statistics in train mode (``model.train()``, the default after
    construction) and running averages in eval mode (``model.eval()``).
    """

    def __init__(self, config: UNetConfig = UNetConfig(), *, rngs: nnx.Rngs):
        self.config = config
        kw = dict(momentum=config.bn_momentum, epsilon=config.bn_epsilon, dtype=config.dtype, rngs=rngs)
        enc = config.encoder_widths
        self.inc = DoubleConv(config.in_channels, enc[0], **kw)
        self.down = nnx.List([DoubleConv(enc[i], enc[i + 1], **kw) for i in range(config.depth)])
        self.up = nnx.List([DoubleConv(cin, cout, mid, **kw) for cin, mid, cout in config.decoder_widths])
        self.outc = _conv(enc[0], config.out_channels, 1, rngs, config.dtype)

    def __call__(self, x):
        cfg = self.config
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"input must be (B, H, W, {cfg.in_channels}) channels-last, got shape {x.shape}")
        if min(x.shape[1:3]) < 2**cfg.depth:
            raise ValueError(f"input spatial size {x.shape[1:3]} is below 2**depth = {2**cfg.depth}")
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(max_pool2x(skips[-1])))
        h = skips.pop()
        for block in self.up:
            skip = skips.pop()
            h = pad_to(upsample_bilinear2x(h), skip.shape[1], skip.shape[2])
            h = block(jnp.concatenate([skip, h], axis=-1))
        return self.outc(h).astype(jnp.float32)

    def example_input(self, batch: int = 1):
        """Zeros (batch, input_size, input_size, in_channels) float32."""
        n = self.config.input_size
        return jnp.zeros((batch, n, n, self.config.in_channels), jnp.float32)


def init_model(config: UNetConfig = UNetConfig(), seed: int = 0) -> UNet:
    """A freshly initialised UNet (train mode), deterministic in the integer ``seed``.

    Same distributions as ``UNet(config, rngs=...)`` (PyTorch's defaults: conv
    kernels and biases U(±1/√fan_in), BatchNorm scale 1, bias 0, running mean 0,
    variance 1) but drawn with numpy's Generator on an abstract model: building
    the model with jax.random compiles one threefry program per parameter
    (seconds to tens of seconds on a laptop CPU); this takes milliseconds.
    """
    model = nnx.eval_shape(lambda: UNet(config, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)

    def put(var, value):
        var.value = jnp.asarray(np.asarray(value, np.float32))

    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Conv):
            kh, kw, cin, cout = node.kernel.shape
            bound = 1.0 / np.sqrt(kh * kw * cin)
            put(node.kernel, rng.uniform(-bound, bound, (kh, kw, cin, cout)))
            put(node.bias, rng.uniform(-bound, bound, (cout,)))
        elif isinstance(node, nnx.BatchNorm):
            c = node.scale.shape[0]
            put(node.scale, np.ones(c))
            put(node.bias, np.zeros(c))
            put(node.mean, np.zeros(c))
            put(node.var, np.ones(c))
    return model


def count_params(model_or_state) -> int:
    """Number of trainable parameters (``nnx.Param`` leaves) of a UNet, its
    ``nnx.State``, an abstract one from ``nnx.eval_shape``, or a ``UNetConfig``
    (counted abstractly: nothing is allocated). BatchNorm running statistics
    are not counted (see module doc)."""
    state = model_or_state
    if isinstance(state, UNetConfig):
        state = nnx.eval_shape(lambda: UNet(model_or_state, rngs=nnx.Rngs(0)))
    if isinstance(state, nnx.Module):
        state = nnx.state(state, nnx.Param)
    else:
        state = nnx.filter_state(state, nnx.Param) if isinstance(state, nnx.State) else state
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(state)))
