import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bec_jax.compress.structured import full_widths, inner_widths, outer_widths, shrink_model, with_widths
from bec_jax.models import UNetConfig, count_params, init_model

CFG = UNetConfig(base_width=4, depth=2, input_size=16)


def kill_half(model, which):
    """BatchNorm scale and bias 0 on every other channel: relu(0) = 0, the channel feeds nothing."""
    for b in [model.inc, *model.down, *model.up]:
        bn = b.bn1 if which == "inner" else b.bn2
        dead = np.arange(bn.scale.shape[0]) % 2 == 1
        bn.scale[...] = jnp.where(dead, 0.0, bn.scale[...])
        bn.bias[...] = jnp.where(dead, 0.0, bn.bias[...])


@pytest.mark.slow  # integration test over ~15 s on 2 cores: `make test-slow`
def test_shrink_is_exact_when_dropped_channels_are_dead():
    model = init_model(CFG, seed=0)
    model.eval()
    kill_half(model, "inner")
    small = shrink_model(model, 0.5)
    assert inner_widths(small) == [w // 2 for w in inner_widths(model)]
    assert outer_widths(small) == outer_widths(model)
    assert count_params(small) < count_params(model)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    f = nnx.jit(lambda m, v: m(v))
    np.testing.assert_allclose(f(small, x), f(model, x), rtol=1e-5, atol=1e-5)
    assert inner_widths(shrink_model(model, 1.0)) == inner_widths(model)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        shrink_model(model, 0.0)


@pytest.mark.slow  # ~12 s on 2 cores
def test_outer_shrink_is_exact_when_dropped_channels_are_dead():
    # outer channels feed the next block, the skip into the up block and the output conv:
    # every consumer must lose exactly the matching input channels
    model = init_model(CFG, seed=2)
    model.eval()
    kill_half(model, "inner")
    kill_half(model, "outer")
    small = shrink_model(model, 0.5, outer=True)
    assert outer_widths(small) == [w // 2 for w in outer_widths(model)]
    assert inner_widths(small) == [w // 2 for w in inner_widths(model)]
    # every conv shrinks in both dimensions: about a quarter of the parameters remain
    assert count_params(small) < 0.3 * count_params(model)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheme, outer", [(None, False), ("per_channel", False), ("per_channel", True)])
def test_shrunken_model_is_saved_and_reloaded_with_its_widths(tmp_path, scheme, outer):
    from bec_jax.compress.quantization import QuantConfig, load_quantized, quantize_model, save_quantized

    small = shrink_model(init_model(CFG, seed=1), 0.5, outer=outer)
    qc = QuantConfig.preset(scheme) if scheme else None
    save_quantized(tmp_path / "m", small, qc, sparse=True)
    back, meta = load_quantized(tmp_path / "m", CFG)
    assert meta["inner_widths"] == inner_widths(small) == inner_widths(back)
    assert meta["outer_widths"] == (outer_widths(small) if outer else None)
    assert outer_widths(back) == outer_widths(small)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 1))
    f = nnx.jit(lambda m, v: m(v))
    expected = f(small if qc is None else quantize_model(small, qc, "fake"), x)  # fake: the same q·s weights
    np.testing.assert_allclose(f(back, x), expected, rtol=1e-5, atol=1e-5)
    save_quantized(tmp_path / "full", init_model(CFG, seed=1), None)
    meta = load_quantized(tmp_path / "full")[1]
    assert meta["inner_widths"] is None and meta["outer_widths"] is None  # unpruned: nothing extra recorded


def test_with_widths_checks_its_input():
    model = init_model(CFG, seed=0)
    assert full_widths(CFG) == (inner_widths(model), outer_widths(model))
    with pytest.raises(ValueError, match="expected 5 inner widths"):
        with_widths(model, [1, 1])
    with pytest.raises(ValueError, match=r"inner width of block 0: keep must be in \[1, 4\], got 5"):
        with_widths(model, [5] + inner_widths(model)[1:])
    with pytest.raises(ValueError, match=r"outer width of block 4: keep must be in \[1, 4\], got 0"):
        with_widths(model, inner_widths(model), outer_widths(model)[:-1] + [0])


def test_keep_schedule_has_equal_ratios_and_checks_input():
    from bec_jax.compress.structured import keep_schedule

    np.testing.assert_allclose(keep_schedule(0.25, 2), [0.5, 0.25])
    assert keep_schedule(0.5, 1) == [0.5]
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        keep_schedule(0.0, 2)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        keep_schedule(0.5, 0)


def test_gradual_shrink_cuts_step_by_step_and_reranks_after_finetuning():
    from bec_jax.compress.structured import gradual_shrink

    model = init_model(CFG, seed=3)
    model.eval()
    seen = []

    def finetune(m, step):
        seen.append((step, inner_widths(m), outer_widths(m)))
        if step == 1:  # "fine-tuning" that silences channel 0 of every block: the next cut must drop it
            for b in [m.inc, *m.down, *m.up]:
                for bn in (b.bn1, b.bn2):
                    bn.scale[...] = bn.scale[...].at[0].set(0.0)
                    bn.bias[...] = bn.bias[...].at[0].set(0.0)
        return m

    small = gradual_shrink(model, 0.25, 2, finetune, outer=True)
    full_in, full_out = full_widths(CFG)
    assert [s for s, _, _ in seen] == [1, 2]
    assert seen[0][1] == [int(np.ceil(0.5 * w)) for w in full_in]
    assert inner_widths(small) == [int(np.ceil(0.25 * w)) for w in full_in]
    assert outer_widths(small) == [int(np.ceil(0.25 * w)) for w in full_out]
    # the silenced channels were ranked last by the second cut: none survives with a zero BatchNorm scale
    for b in [small.inc, *small.down, *small.up]:
        assert np.all(np.asarray(b.bn1.scale[...]) != 0) and np.all(np.asarray(b.bn2.scale[...]) != 0)
    one = gradual_shrink(model, 0.5, 1, lambda m, step: m, outer=True)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    f = nnx.jit(lambda m, v: m(v))
    np.testing.assert_allclose(f(one, x), f(shrink_model(model, 0.5, outer=True), x), rtol=1e-6, atol=1e-6)
