import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bec_jax.models import (TorchBatchNorm, UNet, UNetConfig, apply_conv, count_params, init_model, max_pool2x, pad_to,
                            upsample_bilinear2x)

SMALL = UNetConfig(base_width=4, depth=3, input_size=37)

# Eager NNX calls dispatch op by op (slow on 2 cores); nnx.jit also carries
# BatchNorm statistic updates back into the model.
call = nnx.jit(lambda model, x: model(x))


def test_reference_parameter_count_without_allocation():
    abstract = nnx.eval_shape(lambda: UNet(UNetConfig(), rngs=nnx.Rngs(0)))
    assert count_params(abstract) == 17_314_578 == count_params(UNetConfig())
    # BatchNorm running statistics are state, not counted: 2 x 4,584 channels.
    stats = nnx.state(abstract, nnx.BatchStat)
    assert sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(stats)) == 9_168


def test_reference_widths_match_the_paper():
    cfg = UNetConfig()
    assert cfg.encoder_widths == (8, 16, 32, 64, 128, 256, 512, 512)
    assert cfg.decoder_widths == ((1024, 512, 256), (512, 256, 128), (256, 128, 64), (128, 64, 32),
                                  (64, 32, 16), (32, 16, 8), (16, 8, 8))


def test_reference_forward_shape_200_abstract():
    model = nnx.eval_shape(lambda: UNet(UNetConfig(), rngs=nnx.Rngs(0)))
    gd, state = nnx.split(model)
    out = jax.eval_shape(lambda s, x: nnx.merge(gd, s)(x), state, jax.ShapeDtypeStruct((2, 200, 200, 1), jnp.float32))
    assert out.shape == (2, 200, 200, 2) and out.dtype == jnp.float32


@pytest.mark.parametrize("n", [37, 40])
def test_odd_and_even_sizes_keep_shape(n):
    # 37 -> 18 -> 9 -> 4: odd sizes at two levels, padded on the way up
    model = init_model(SMALL, 0)
    y = call(model, jnp.ones((2, n, n, 1), jnp.float32))
    assert y.shape == (2, n, n, 2) and y.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(y)))


def test_rectangular_input():
    model = init_model(UNetConfig(base_width=4, depth=2, input_size=32), 0)
    assert call(model, jnp.ones((1, 33, 41, 1))).shape == (1, 33, 41, 2)


def test_upsample_align_corners_reproduces_linear_functions():
    h, w = 5, 3
    jj, ii = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    f = (2.0 * jj - 3.0 * ii + 1.0).astype(np.float32)[None, :, :, None]
    up = np.asarray(upsample_bilinear2x(jnp.asarray(f)))[0, :, :, 0]
    # align_corners: output pixel k samples input coordinate k (n-1)/(2n-1).
    yo = np.arange(2 * h) * (h - 1) / (2 * h - 1)
    xo = np.arange(2 * w) * (w - 1) / (2 * w - 1)
    np.testing.assert_allclose(up, 2.0 * yo[:, None] - 3.0 * xo[None, :] + 1.0, atol=1e-5)
    assert up[0, 0] == f[0, 0, 0, 0] and up[-1, -1] == f[0, -1, -1, 0]


def test_upsample_of_1x1_is_constant():
    x = jnp.arange(3, dtype=jnp.float32).reshape(1, 1, 1, 3)
    up = upsample_bilinear2x(x)
    assert up.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(np.asarray(up), np.broadcast_to(np.arange(3.0), (1, 2, 2, 3)))


def test_pad_to_splits_like_the_reference():
    x = jnp.ones((1, 2, 3, 1))
    y = np.asarray(pad_to(x, 5, 4))[0, :, :, 0]
    # diff 3 rows: 1 before, 2 after; diff 1 column: 0 before, 1 after.
    expect = np.zeros((5, 4))
    expect[1:3, 0:3] = 1
    np.testing.assert_array_equal(y, expect)
    with pytest.raises(ValueError, match="smaller"):
        pad_to(x, 1, 3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=8, input_size=200), "2\\*\\*depth = 256"),
    (dict(base_width=0), "base_width"),
    (dict(base_width=5), "even"),
    (dict(bn_momentum=0.0), "bn_momentum"),
    (dict(depth=0), "depth"),
    (dict(dtype="float16"), "dtype"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**kwargs)


def test_call_rejects_bad_inputs():
    model = init_model(UNetConfig(base_width=4, depth=3, input_size=16), 0)
    with pytest.raises(ValueError, match="channels-last"):
        model(jnp.ones((1, 1, 16, 16)))
    with pytest.raises(ValueError, match="below 2\\*\\*depth"):
        model(jnp.ones((1, 4, 4, 1)))


def test_batchnorm_modes(exact_matmul):
    model = init_model(SMALL, 1)
    x = jax.random.normal(jax.random.key(0), (4, 37, 37, 1))
    model.eval()
    alone = call(model, x[:1])
    together = call(model, x)
    np.testing.assert_allclose(np.asarray(alone), np.asarray(together[:1]), atol=1e-5)  # eval: per-sample
    model.train()
    before = np.asarray(model.inc.bn1.mean[...]).copy()
    t_alone, t_together = call(model, x[:1]), call(model, x)
    assert np.abs(np.asarray(t_alone) - np.asarray(t_together[:1])).max() > 1e-3  # train: batch statistics
    assert np.abs(np.asarray(model.inc.bn1.mean[...]) - before).max() > 0


def test_torch_batchnorm_running_variance_is_unbiased():
    bn = TorchBatchNorm(3, momentum=0.8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 3, 1, 3)) * jnp.array([1.0, 2.0, 3.0])
    y = bn(x)
    flat = np.asarray(x).reshape(-1, 3)
    np.testing.assert_allclose(np.asarray(bn.var[...]), 0.8 + 0.2 * flat.var(0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.2 * flat.mean(0), rtol=1e-5, atol=1e-7)
    # the forward pass normalises with the biased variance
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 3), (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5),
                               atol=1e-5)


def test_initialisation_matches_pytorch_bounds():
    model = init_model(SMALL, 0)
    k = np.asarray(model.down[1].conv1.kernel[...])  # fan_in = 9 * 8
    b = np.asarray(model.down[1].conv1.bias[...])
    bound = 1 / np.sqrt(9 * 8)
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.9 * bound
    assert np.abs(b).max() <= bound and np.any(b != 0)
    assert np.all(np.asarray(model.inc.bn1.scale[...]) == 1)


def test_same_seed_same_model_different_seed_differs():
    a = nnx.state(init_model(SMALL, 3), nnx.Param)
    b = nnx.state(init_model(SMALL, 3), nnx.Param)
    c = nnx.state(init_model(SMALL, 4), nnx.Param)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(c)))


def test_matches_pytorch_reference_implementation(exact_matmul):
    torch = pytest.importorskip("torch")
    from bec_jax.models.torch_unet import TorchUNet, copy_weights_to_torch

    model = init_model(SMALL, 0)
    tmodel = TorchUNet(SMALL)
    assert sum(p.numel() for p in tmodel.parameters()) == count_params(model)
    copy_weights_to_torch(model, tmodel)
    x = np.random.default_rng(0).normal(size=(3, 37, 37, 1)).astype(np.float32)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    for mode in ("train", "eval"):
        getattr(model, mode)()
        getattr(tmodel, mode)()
        y = np.asarray(call(model, jnp.asarray(x)))
        with torch.no_grad():
            yt = tmodel(xt).numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(y, yt, atol=2e-4, rtol=1e-4, err_msg=mode)
    # running statistics after the train-mode call agree (unbiased variance rule)
    np.testing.assert_allclose(np.asarray(model.down[-1].bn2.var[...]), tmodel.down[-1][4].running_var.numpy(),
                               rtol=1e-4)


def test_batch_of_one_at_a_1x1_bottleneck_cannot_train():
    model = init_model(UNetConfig(base_width=4, depth=2, input_size=4), 0)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        call(model, jnp.ones((1, 4, 4, 1)))
    model.eval()
    assert call(model, jnp.ones((1, 4, 4, 1))).shape == (1, 4, 4, 2)  # inference is fine


@pytest.mark.parametrize("h, w", [(1, 1), (5, 7)])
def test_gemm_conv_path_equals_xla_convolution(h, w, monkeypatch, exact_matmul):
    from bec_jax.models import unet

    conv = unet._conv(6, 5, 3, nnx.Rngs(0))
    assert type(conv) is nnx.Conv  # compression code swaps plain modules by type
    gd, params = nnx.split(conv)
    x = jax.random.normal(jax.random.key(2), (2, h, w, 6))

    def value_and_grads():  # a new function object, so traced anew for each GEMM_MAX_PIXELS
        def f(p, x):
            return jnp.sum(jnp.sin(apply_conv(nnx.merge(gd, p), x)))
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, x)

    assert h * w <= unet.GEMM_MAX_PIXELS
    fast = value_and_grads()
    monkeypatch.setattr(unet, "GEMM_MAX_PIXELS", 0)  # force lax.conv_general_dilated
    ref = value_and_grads()
    for a, b in zip(jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_max_pool_is_floor_mode_maxpool_with_one_winner_per_window():
    x = jax.random.normal(jax.random.key(3), (2, 5, 7, 3))
    y = np.asarray(max_pool2x(x))
    assert y.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(y, np.asarray(nnx.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")))
    g = np.asarray(jax.grad(lambda v: jnp.sum(max_pool2x(v) * jnp.arange(1.0, 4.0)))(x))
    assert np.all(g[:, 4:] == 0) and np.all(g[:, :, 6:] == 0)  # the cropped row and column get nothing
    assert np.count_nonzero(g) == y.size


@pytest.mark.slow  # bf16 convolutions are emulated on XLA:CPU: ~50 s on 2 cores
def test_bfloat16_compute_keeps_float32_parameters_and_output(exact_matmul):
    cfg = UNetConfig(base_width=4, depth=3, input_size=24)
    f32, b16 = init_model(cfg, seed=3), init_model(UNetConfig(**{**cfg.to_dict(), "dtype": "bfloat16"}), seed=3)
    x = jax.random.normal(jax.random.key(0), (2, 24, 24, 1))
    for m in (f32, b16):
        m.eval()
    y32, y16 = f32(x), b16(x)
    assert y16.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(nnx.state(b16, nnx.Param)))
    # same weights, bfloat16 round-off (8 bits of mantissa) through 10 convs: close, not equal
    rel = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
    assert 0 < rel < 5e-2
    b16.train()
    grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(b16)
    leaves = jax.tree.leaves(grads)
    assert all(g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g))) for g in leaves)
