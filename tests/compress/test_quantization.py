import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bec_jax.compress.quantization import (
    _int8_conv,
    FakeQuantConv, Int8Conv, QuantConfig, _conv, conv_layer_names, conv_layers, decode_sparse, dequantize,
    encode_sparse, fake_quant, global_asymmetric, load_quantized, quantize_array, quantize_model, save_quantized,
    weight_error_stats,
)
from bec_jax.models import UNetConfig, init_model

CFG = UNetConfig(base_width=4, depth=2, input_size=16)


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_quantize_error_bounded_by_half_scale(granularity):
    w = jax.random.normal(jax.random.key(0), (3, 3, 5, 7)) * jnp.arange(1, 8)  # channel-dependent ranges
    q, s = quantize_array(w, granularity)
    assert q.dtype == jnp.int8 and s.dtype == jnp.float32
    assert s.shape == (() if granularity == "per_tensor" else (7,))
    assert int(jnp.max(jnp.abs(q.astype(jnp.int32)))) == 127  # the range is used
    err = jnp.abs(w - dequantize(q, s))
    assert bool(jnp.all(err <= s / 2 * (1 + 1e-6)))
    np.testing.assert_allclose(np.asarray(s), np.asarray(jnp.max(jnp.abs(w).reshape(-1, 7), 0).max() / 127
                                                         if granularity == "per_tensor"
                                                         else jnp.max(jnp.abs(w).reshape(-1, 7), 0) / 127),
                               rtol=1e-6)


def test_the_reference_scheme_shares_one_asymmetric_scale_over_all_kernels():
    """One scale s = (max − min)/255 and zero point over every kernel: the extremes land on −128 and 127, zero
    stays exactly zero, and each weight is within s/2."""
    k = jax.random.split(jax.random.key(3), 2)
    kernels = {"a": np.asarray(jax.random.normal(k[0], (3, 3, 2, 4))) * 0.1 + 0.05,
               "b": np.asarray(jax.random.normal(k[1], (1, 1, 4, 2))) * 2.0}
    kernels["a"][0, 0, 0, 0] = 0.0
    lo = min(w.min() for w in kernels.values())
    hi = max(w.max() for w in kernels.values())
    out = global_asymmetric(kernels)
    (qa, sa, za), (qb, sb, zb) = out["a"], out["b"]
    assert qa.dtype == np.int8 and sa == sb and za == zb
    np.testing.assert_allclose(sa, (hi - lo) / 255, rtol=1e-6)
    assert {int(min(qa.min(), qb.min())), int(max(qa.max(), qb.max()))} == {-128, 127}
    for w, (q, sc, z) in zip(kernels.values(), out.values()):
        deq = np.asarray(dequantize(jnp.asarray(q), sc, z))
        assert np.all(np.abs(w - deq) <= sc / 2 * (1 + 1e-5))
    assert np.asarray(dequantize(jnp.asarray(qa), sa, za))[0, 0, 0, 0] == 0.0


def test_the_reference_scheme_saves_reloads_and_has_no_integer_path(tmp_path):
    model = init_model(CFG, 0)
    cfg = QuantConfig.preset("reference_per_tensor")
    assert not cfg.integer_path and QuantConfig.preset("per_tensor").integer_path
    save_quantized(tmp_path / "ref", model, cfg)
    reloaded, meta = load_quantized(tmp_path / "ref", CFG)
    names = conv_layer_names(model)
    stats = weight_error_stats(model, cfg)
    for name, (_, parent, attr), (_, p2, a2) in zip(names, conv_layers(model), conv_layers(reloaded)):
        w, w2 = np.asarray(getattr(parent, attr).kernel[...]), np.asarray(getattr(p2, a2).kernel[...])
        assert 0 < np.max(np.abs(w - w2)) <= stats["max_abs"] * (1 + 1e-6)
    # one scale for all convs is coarser than one per conv (the reference's +33.5 % against +18.1 %)
    assert stats["mean_abs"] > weight_error_stats(model, QuantConfig.preset("per_tensor"))["mean_abs"]
    with pytest.raises(ValueError, match="zero point"):
        load_quantized(tmp_path / "ref", CFG, mode="int8")
    with pytest.raises(ValueError, match="post-training only"):
        quantize_model(model, cfg, "fake")


def test_per_channel_beats_per_tensor_on_uneven_channels():
    w = jax.random.normal(jax.random.key(1), (3, 3, 4, 6)) * jnp.array([1e-3, 1, 1, 1, 1, 10.0])
    e = {g: float(jnp.mean(jnp.abs(w - dequantize(*quantize_array(w, g))))) for g in ("per_tensor", "per_channel")}
    assert e["per_channel"] < e["per_tensor"]


def test_fake_quant_forward_and_straight_through_gradient():
    w = jax.random.normal(jax.random.key(2), (3, 3, 2, 4))
    c = jax.random.normal(jax.random.key(3), w.shape)
    for g in ("per_tensor", "per_channel"):
        np.testing.assert_array_equal(fake_quant(w, g), dequantize(*quantize_array(w, g)))
        grad = jax.grad(lambda x: jnp.sum(fake_quant(x, g) * c))(w)
        np.testing.assert_array_equal(grad, c)  # identity inside the (max-based) range
        assert not np.array_equal(fake_quant(w, g), w)
    # the true derivative of round() is 0 almost everywhere: STE is what makes it trainable
    assert float(jnp.abs(jax.grad(lambda x: jnp.sum(jnp.round(x * 10)))(w)).max()) == 0.0


def test_int8_conv_matches_float_conv_of_dequantized_values(exact_matmul):
    k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
    x = jax.nn.relu(jax.random.normal(k1, (2, 9, 9, 16)))
    w = jax.random.normal(k2, (3, 3, 16, 8)) * 0.2
    b = jax.random.normal(k3, (8,))
    q, s = quantize_array(w, "per_channel")
    layer = Int8Conv(q, s, b, ((1, 1), (1, 1)))
    y = layer(x)
    qx, sx = quantize_array(x, "per_tensor")
    exact = _conv(dequantize(qx, sx), dequantize(q, s), ((1, 1), (1, 1))) + b
    np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-5)  # integer accumulation is exact
    ref = _conv(x, dequantize(q, s), ((1, 1), (1, 1))) + b      # activations in float
    bound = float(sx) / 2 * jnp.max(jnp.sum(jnp.abs(dequantize(q, s)), axis=(0, 1, 2)))
    assert float(jnp.max(jnp.abs(y - ref))) <= bound
    # int8 × int8 sums overflow int8 and int16 by far: int32 accumulation must be used.
    ones = Int8Conv(jnp.full((3, 3, 16, 8), 127, jnp.int8), jnp.float32(1.0), jnp.zeros(8), ((1, 1), (1, 1)))
    out = ones(jnp.ones((2, 5, 5, 16)))
    np.testing.assert_allclose(out[:, 1:-1, 1:-1], 127 * 127 * 9 * 16 / 127, rtol=1e-6)  # interior: full windows


@pytest.mark.parametrize("batch,cin,cout", [(1, 16, 1), (1, 1, 8), (1, 8, 2), (3, 5, 1)])
def test_int8_conv_integer_sums_in_every_geometry(batch, cin, cout):
    # Geometries XLA:GPU rewrites (batch 1 with one output channel becomes a backward-filter conv with no int8
    # cuDNN kernel) must run and give the exact integer sums on every backend.
    rng = np.random.default_rng(batch * 100 + cin * 10 + cout)
    qx = rng.integers(-127, 128, (batch, 7, 6, cin)).astype(np.int8)
    kq = rng.integers(-127, 128, (3, 3, cin, cout)).astype(np.int8)
    got = np.asarray(_int8_conv(jnp.asarray(qx), jnp.asarray(kq), ((1, 1), (1, 1))))
    xp = np.pad(qx.astype(np.int64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = sum(np.einsum("bhwc,co->bhwo", xp[:, dy:dy + 7, dx:dx + 6], kq[dy, dx].astype(np.int64))
               for dy in range(3) for dx in range(3))
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_quantize_model_layer_selection_and_accuracy():
    model = init_model(CFG, seed=0)
    model.eval()
    names = conv_layer_names(model)
    assert len(names) == 2 * (2 * CFG.depth + 1) + 1
    assert len(conv_layer_names(nnx.eval_shape(lambda: init_model(UNetConfig(), 0)))) == 31
    mixed = QuantConfig.preset("mixed")
    assert mixed.selected(names) == names[2:-2]
    x = jax.random.normal(jax.random.key(5), (2, 16, 16, 1))
    y = nnx.jit(lambda m, v: m(v))(model, x)
    for mode, cls in (("fake", FakeQuantConv), ("int8", Int8Conv)):
        qm = quantize_model(model, mixed, mode)
        kinds = {n: type(getattr(p, a)) for n, p, a in conv_layers(qm)}
        assert [n for n, k in kinds.items() if k is cls] == names[2:-2]
        assert all(kinds[n] is nnx.Conv for n in names[:2] + names[-2:])
        err = float(jnp.max(jnp.abs(nnx.jit(lambda m, v: m(v))(qm, x) - y)))
        assert 0 < err < 0.05 * float(jnp.max(jnp.abs(y)))
    assert type(model.inc.conv1) is nnx.Conv  # the original is untouched
    only = QuantConfig("per_tensor", layers=("outc",))
    assert only.selected(names) == ["outc"]
    with pytest.raises(ValueError, match="unknown conv layers"):
        QuantConfig(layers=("nope",)).selected(names)
    with pytest.raises(ValueError, match="unknown quantization scheme 'int4'"):
        QuantConfig.preset("int4")
    with pytest.raises(ValueError, match="granularity"):
        QuantConfig("per_row")


def test_fake_quant_model_trains_through_ste():
    model = quantize_model(init_model(CFG, seed=0), QuantConfig("per_tensor"), "fake")
    x = jax.random.normal(jax.random.key(6), (2, 16, 16, 1))
    grads = nnx.jit(nnx.grad(lambda m: jnp.mean(m(x) ** 2)))(model)
    g = grads["down"][0]["conv1"]["kernel"][...]
    assert float(jnp.abs(g).max()) > 0


def _edge_arrays():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(200_000) * (rng.random(200_000) < 0.01)).astype(np.float32)
    a[:70_000] = 0  # a gap above 65535
    a[-1] = 3.0
    g255, g256 = np.zeros(600, np.int8), np.zeros(600, np.int8)
    g255[[254, 509]] = [1, -2]  # first gap 255 (from −1), second 255
    g256[[255, 511]] = [3, 4]  # gaps of exactly 256: escaped
    first = np.zeros(300, np.int8)
    first[[0, 299]] = [7, 9]  # first element non-zero, then a gap of 299
    return dict(random=a, random_int8=a.astype(np.int8), random_2d=a.reshape(400, 500),
                all_zero=np.zeros((5, 4), np.int8), all_zero_long=np.zeros(1000, np.float32),
                no_zeros=np.arange(1, 301, dtype=np.float32), g255=g255, g256=g256, first=first,
                single_zero=np.zeros(1, np.int8), single=np.ones(1, np.float32), empty=np.zeros((0, 3), np.int8))


@pytest.mark.parametrize("name", list(_edge_arrays()))
def test_sparse_encoding_round_trip(name):
    arr = _edge_arrays()[name]
    enc = encode_sparse(arr)
    np.testing.assert_array_equal(decode_sparse(enc, arr.shape, arr.dtype), arr)
    assert enc["gaps"].dtype == np.uint8 and enc["values"].dtype == arr.dtype
    idx = np.flatnonzero(arr.ravel())
    # one byte of index per stored value; 4 more per gap >= 256, and only then a long_gaps array
    n_long = int(np.sum(np.diff(idx, prepend=-1) > 255)) if idx.size else int(arr.size > 255)
    assert enc["gaps"].size == enc["values"].size == (idx.size or min(arr.size, 1))
    assert enc.get("long_gaps", np.zeros(0)).size == n_long and ("long_gaps" in enc) == (n_long > 0)


def test_sparse_encoding_escapes_exactly_from_256():
    assert "long_gaps" not in encode_sparse(_edge_arrays()["g255"])
    enc = encode_sparse(_edge_arrays()["g256"])
    np.testing.assert_array_equal(enc["gaps"], [0, 0])
    np.testing.assert_array_equal(enc["long_gaps"], [256, 256])


def test_sparse_decoding_reads_old_layout_and_rejects_corrupt():
    old = dict(values=np.asarray([0, 5], np.int8), gaps=np.asarray([65535, 10], np.uint16))  # format /1 filler
    expected = np.zeros(70_000, np.int8)
    expected[65_544] = 5
    np.testing.assert_array_equal(decode_sparse(old, (70_000,), np.int8), expected)
    enc = encode_sparse(_edge_arrays()["g256"])
    with pytest.raises(ValueError, match="corrupt"):
        decode_sparse(dict(enc, long_gaps=enc["long_gaps"][:1]), (600,), np.int8)


def test_pack_round_trip_and_corrupt_layout():
    from bec_jax.compress.quantization import _pack, _unpack

    tree = {"int8": {"a": np.arange(6, dtype=np.int8).reshape(2, 3), "b": {"values": np.ones(2, np.int8),
                                                                             "gaps": np.ones(2, np.uint8)}},
            "scale": {"a": np.float32(0.5), "b": np.ones(3, np.float32)}, "empty": {"z": np.zeros(0, np.uint32)}}
    arrays, layout = _pack(tree)
    assert set(arrays) == {"int8", "uint8", "float32"}  # one leaf per dtype; zero-size groups dropped
    back = _unpack(arrays, layout)
    for path, _, _ in layout:
        a, b = tree, back
        for k in path:
            a, b = a[k], b[k]
        assert np.asarray(a).dtype == b.dtype and np.asarray(a).shape == b.shape
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="corrupt"):
        _unpack(dict(arrays, int8=arrays["int8"][:-1]), layout)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = init_model(CFG, seed=2)
    model.eval()
    root = tmp_path_factory.mktemp("q")
    sizes = {s: save_quantized(root / s, model, QuantConfig.preset(s)) for s in ("per_tensor", "mixed")}
    sizes["fp32"] = save_quantized(root / "fp32", model, None)
    return model, root, sizes


def test_saved_int8_is_int8_and_smaller(saved):
    import orbax.checkpoint as ocp

    model, root, sizes = saved
    tree = ocp.StandardCheckpointer().restore((root / "per_tensor" / "arrays").resolve())
    assert np.asarray(tree["int8"]).dtype == np.int8  # the int8 kernels, packed into one array
    assert np.asarray(tree["int8"]).size == sum(np.size(k) for _, p, a in conv_layers(model)
                                                for k in [getattr(p, a).kernel[...]])
    assert sizes["per_tensor"]["payload_bytes"] < 0.4 * sizes["fp32"]["payload_bytes"]
    with pytest.raises(ValueError, match="not empty"):
        save_quantized(root / "fp32", model, None)


def test_reload_in_fresh_process_evaluates_same_model(saved, tmp_path, exact_matmul):
    model, root, _ = saved
    x = np.asarray(jax.random.normal(jax.random.key(7), (2, 16, 16, 1)), np.float32)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, json, numpy as np, jax.numpy as jnp\n"
        "from bec_jax.compress.quantization import load_quantized\n"
        "m, meta = load_quantized(sys.argv[1])\n"
        "mi, _ = load_quantized(sys.argv[1], mode='int8')\n"
        "x = jnp.asarray(np.load(sys.argv[2]))\n"
        "np.save(sys.argv[3], np.asarray(m(x)))\n"
        "np.save(sys.argv[4], np.asarray(mi(x)))\n"
        "print(json.dumps(meta['quant']))\n")
    out = subprocess.run([sys.executable, "-c", code, str(root / "mixed"), str(tmp_path / "x.npy"),
                          str(tmp_path / "y.npy"), str(tmp_path / "yi.npy")], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest"))  # as exact_matmul
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["skip_first"] == 2
    expected = quantize_model(model, QuantConfig.preset("mixed"), "fake")(jnp.asarray(x))  # same q·s weights
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)
    yi = np.load(tmp_path / "yi.npy")
    assert np.max(np.abs(yi - np.asarray(expected))) < 0.05 * np.max(np.abs(expected))
    assert not np.allclose(np.load(tmp_path / "y.npy"), model(jnp.asarray(x)), rtol=0, atol=1e-7)


def test_sparse_save_reloads_the_same_pruned_model(tmp_path):
    from bec_jax.compress.pruning import PruneConfig
    from bec_jax.compress.workflow import prune_once

    model, _ = prune_once(init_model(CFG, seed=3), PruneConfig(0.95))
    model.eval()
    qc = QuantConfig.preset("mixed")  # int8 and float32 kernels are both stored sparse
    dense = save_quantized(tmp_path / "dense", model, qc)
    sparse = save_quantized(tmp_path / "sparse", model, qc, sparse=True)
    a, _ = load_quantized(tmp_path / "dense", CFG)
    b, meta = load_quantized(tmp_path / "sparse", CFG)
    x = jax.random.normal(jax.random.key(8), (2, 16, 16, 1))
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))
    assert {k.split(":")[0] for k in meta["sparse"]} == {"int8", "float"}
    # arrays only: at this toy size the JSON layout outweighs them on disk
    assert sparse["payload_bytes"] < 0.5 * dense["payload_bytes"]


def test_reload_errors(saved, tmp_path):
    _, root, _ = saved
    with pytest.raises(ValueError, match="another architecture"):
        load_quantized(root / "fp32", UNetConfig(base_width=8, depth=2, input_size=16))
    with pytest.raises(ValueError, match="not a quantized model folder"):
        load_quantized(tmp_path)


def test_weight_error_stats_zero_for_fp32_layers():
    model = init_model(CFG, seed=0)
    st = weight_error_stats(model, QuantConfig.preset("mixed"))
    r = np.asarray(st["residual_percentiles"])
    assert np.all(r[:2] == 0) and np.all(r[-2:] == 0) and np.all(r[2:-2, -1] > 0)
