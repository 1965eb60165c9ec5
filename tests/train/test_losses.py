import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bec_jax.train import Batch, TrainConfig, make_loss, masked_mse, masked_sq_error_sums, reference_masked_mse


def _batch(seed=0, shape=(3, 8, 9)):
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=(*shape, 2)).astype(np.float32)
    tgt = rng.normal(size=(*shape, 2)).astype(np.float32)
    mask = rng.random(shape) < 0.4
    return jnp.asarray(pred), jnp.asarray(tgt), jnp.asarray(mask)


def test_masked_mse_is_mean_over_valid_pixels_and_channels():
    pred, tgt, mask = _batch()
    p, t, m = map(np.asarray, (pred, tgt, mask))
    expect = np.mean((p[m] - t[m]) ** 2)  # (n_valid, 2) entries
    np.testing.assert_allclose(float(masked_mse(pred, tgt, mask)), expect, rtol=1e-5)


def test_reference_is_mean_over_all_pixels():
    pred, tgt, mask = _batch(1)
    p, t, m = map(np.asarray, (pred, tgt, mask))
    expect = np.mean((p - t) ** 2 * m[..., None])
    np.testing.assert_allclose(float(reference_masked_mse(pred, tgt, mask)), expect, rtol=1e-5)
    frac = m.mean()
    np.testing.assert_allclose(float(reference_masked_mse(pred, tgt, mask)),
                               frac * float(masked_mse(pred, tgt, mask)), rtol=1e-5)


def test_all_valid_equals_plain_mse_and_empty_mask_is_zero():
    pred, tgt, _ = _batch(2)
    full = jnp.ones(pred.shape[:-1], bool)
    plain = float(jnp.mean((pred - tgt) ** 2))
    np.testing.assert_allclose(float(masked_mse(pred, tgt, full)), plain, rtol=1e-5)
    np.testing.assert_allclose(float(reference_masked_mse(pred, tgt, full)), plain, rtol=1e-5)
    empty = jnp.zeros(pred.shape[:-1], bool)
    assert float(masked_mse(pred, tgt, empty)) == 0.0
    assert float(reference_masked_mse(pred, tgt, empty)) == 0.0


def test_masked_pixels_do_not_matter_and_get_no_gradient():
    pred, tgt, mask = _batch(3)
    junk = jnp.where(mask[..., None], pred, 1e3)
    for f in (masked_mse, reference_masked_mse):
        np.testing.assert_allclose(float(f(junk, tgt, mask)), float(f(pred, tgt, mask)), rtol=1e-6)
        g = jax.jit(jax.grad(f))(pred, tgt, mask)
        assert np.all(np.asarray(g)[~np.asarray(mask)] == 0)
        assert np.all(np.isfinite(np.asarray(g)))


def test_sums_are_exact_building_blocks():
    pred, tgt, mask = _batch(4)
    sq, valid, total = jax.jit(masked_sq_error_sums)(pred, tgt, mask)
    assert float(valid) == float(np.sum(np.asarray(mask)))
    assert float(total) == mask.size
    np.testing.assert_allclose(float(sq) / (2 * float(valid)), float(masked_mse(pred, tgt, mask)), rtol=1e-6)


def test_shape_checks_and_names():
    pred, tgt, mask = _batch()
    with pytest.raises(ValueError, match="shapes differ"):
        masked_mse(pred, tgt[..., :1], mask)
    with pytest.raises(ValueError, match="mask must have shape"):
        masked_mse(pred, tgt, mask[0])
    batch = Batch(None, tgt, mask)
    for name, f in (("masked_mse", masked_mse), ("reference", reference_masked_mse)):
        assert float(make_loss(TrainConfig(loss=name), None)(pred, batch)) == float(f(pred, tgt, mask))
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig(loss="mae")
