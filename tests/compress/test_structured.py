import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bec_jax.compress.structured import inner_widths, shrink_model
from bec_jax.models import UNetConfig, count_params, init_model

CFG = UNetConfig(base_width=4, depth=2, input_size=16)


@pytest.mark.slow  # integration test over ~15 s on 2 cores: `make test-slow`
def test_shrink_is_exact_when_dropped_channels_are_dead():
    model = init_model(CFG, seed=0)
    model.eval()
    # kill half of every block's inner channels: BN scale 0 and bias 0 -> relu(0) = 0 downstream
    for b in [model.inc, *model.down, *model.up]:
        mid = b.bn1.scale.shape[0]
        dead = np.arange(mid) % 2 == 1
        b.bn1.scale[...] = jnp.where(dead, 0.0, b.bn1.scale[...])
        b.bn1.bias[...] = jnp.where(dead, 0.0, b.bn1.bias[...])
    small = shrink_model(model, 0.5)
    assert inner_widths(small) == [w // 2 for w in inner_widths(model)]
    assert count_params(small) < count_params(model)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    f = nnx.jit(lambda m, v: m(v))
    np.testing.assert_allclose(f(small, x), f(model, x), rtol=1e-5, atol=1e-5)
    assert inner_widths(shrink_model(model, 1.0)) == inner_widths(model)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        shrink_model(model, 0.0)


@pytest.mark.parametrize("scheme", [None, "per_channel"])
def test_shrunken_model_is_saved_and_reloaded_with_its_widths(tmp_path, scheme):
    from bec_jax.compress.quantization import QuantConfig, load_quantized, quantize_model, save_quantized

    small = shrink_model(init_model(CFG, seed=1), 0.5)
    qc = QuantConfig.preset(scheme) if scheme else None
    save_quantized(tmp_path / "m", small, qc, sparse=True)
    back, meta = load_quantized(tmp_path / "m", CFG)
    assert meta["inner_widths"] == inner_widths(small) == inner_widths(back)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 1))
    f = nnx.jit(lambda m, v: m(v))
    expected = f(small if qc is None else quantize_model(small, qc, "fake"), x)  # fake: the same q·s weights
    np.testing.assert_allclose(f(back, x), expected, rtol=1e-5, atol=1e-5)
    save_quantized(tmp_path / "full", init_model(CFG, seed=1), None)
    assert load_quantized(tmp_path / "full")[1]["inner_widths"] is None  # unpruned: nothing extra recorded


def test_with_inner_widths_checks_its_input():
    from bec_jax.compress.structured import with_inner_widths

    model = init_model(CFG, seed=0)
    with pytest.raises(ValueError, match="expected 5 inner widths"):
        with_inner_widths(model, [1, 1])
    with pytest.raises(ValueError, match=r"keep must be in \[1, 4\]"):
        with_inner_widths(model, [5] + inner_widths(model)[1:])
