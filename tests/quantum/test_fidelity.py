"""Tests for bec_jax.quantum.fidelity: values, invariances, the modified gradient."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bec_jax.quantum import DEFAULT_EPS, fidelity_loss, l2_state_loss, overlap

DTYPES = ["float32", "float64"]
# Relative round-off scale per dtype; tolerances below are small multiples of it.
EPS = {"float32": 1e-6, "float64": 1e-14}


def x64(dtype):
    """Enable x64 only inside a float64 test, so nothing leaks to other files."""
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


def cdtype(dtype):
    return jnp.complex128 if dtype == "float64" else jnp.complex64


def jgrad(f, argnums=0):
    """jit(grad(f)): one compilation instead of many eager per-op ones (keeps tests fast)."""
    return jax.jit(jax.grad(f, argnums))


def random_complex(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    return z.astype(cdtype(dtype))  # numpy: test-side arithmetic needs no compilation


def direct_loss(a, b, w=None):
    """Reference in numpy complex128: 1 - |<a,b>|^2 / (<a,a><b,b>)."""
    a = np.asarray(a, np.complex128)
    b = np.asarray(b, np.complex128)
    w = np.ones(a.shape[-1]) if w is None else np.asarray(w, np.float64)
    ab = np.sum(w * np.conj(a) * b, axis=-1)
    aa = np.sum(w * np.abs(a) ** 2, axis=-1)
    bb = np.sum(w * np.abs(b) ** 2, axis=-1)
    return 1.0 - np.abs(ab) ** 2 / (aa * bb)


@pytest.mark.parametrize("dtype", DTYPES)
def test_value_matches_direct_computation(dtype):
    with x64(dtype):
        a = random_complex(0, (4, 3, 7), dtype)
        b = random_complex(1, (4, 3, 7), dtype)
        ref = direct_loss(a, b)
        per = fidelity_loss(a, b, reduction="none")
        assert per.shape == (4, 3)
        assert per.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(per, ref, rtol=0, atol=20 * EPS[dtype])
        np.testing.assert_allclose(fidelity_loss(a, b), ref.mean(), atol=20 * EPS[dtype])
        np.testing.assert_allclose(fidelity_loss(a, b, reduction="sum"), ref.sum(), atol=200 * EPS[dtype])
        # Modified flag changes only the backward pass.
        np.testing.assert_array_equal(fidelity_loss(a, b, modified=True, reduction="none"), per)


@pytest.mark.parametrize("dtype", DTYPES)
def test_closed_form_cases(dtype):
    with x64(dtype):
        n = 9
        e = np.eye(n, dtype=cdtype(dtype))
        # identical -> 0, orthogonal -> 1, equal superposition of 2 basis vectors vs one -> 1/2
        assert float(fidelity_loss(e[2], 3.0 * e[2])) == pytest.approx(0.0, abs=10 * EPS[dtype])
        assert float(fidelity_loss(e[2], e[5])) == 1.0
        assert float(fidelity_loss(e[2] + 1j * e[5], e[2])) == pytest.approx(0.5, abs=10 * EPS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_phase_and_scale_invariance(dtype):
    with x64(dtype):
        a = random_complex(2, (5, 11), dtype)
        b = random_complex(3, (5, 11), dtype)
        ref = fidelity_loss(a, b, reduction="none")
        phases = np.exp(1j * np.linspace(0.1, 6.0, 5)).astype(a.dtype)[:, None]
        np.testing.assert_allclose(
            fidelity_loss(phases * a, b, reduction="none"), ref, atol=20 * EPS[dtype]
        )
        np.testing.assert_allclose(
            fidelity_loss(a, 2.5 * np.conj(phases) * b, reduction="none"), ref, atol=20 * EPS[dtype]
        )
        # The L2 baseline is *not* phase invariant: a sign flip costs the maximum 2.
        assert float(l2_state_loss(a[0], a[0])) == pytest.approx(0.0, abs=10 * EPS[dtype])
        assert float(l2_state_loss(-a[0], a[0])) == pytest.approx(2.0, rel=10 * EPS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_equals_one_minus_real_overlap(dtype):
    with x64(dtype):
        a = random_complex(4, (6, 8), dtype)
        b = random_complex(5, (6, 8), dtype)
        ov = overlap(a, b)
        np.testing.assert_allclose(
            l2_state_loss(a, b, reduction="none"), 1.0 - ov.real, atol=20 * EPS[dtype]
        )


def test_measure_weights_and_broadcasting():
    with jax.enable_x64(True):
        a = random_complex(6, (4, 10), "float64")
        b = random_complex(7, (10,), "float64")
        w = np.linspace(0.5, 2.0, 10)
        per = fidelity_loss(a, b, measure=w, reduction="none")
        np.testing.assert_allclose(per, direct_loss(a, np.broadcast_to(b, a.shape), w), atol=1e-13)
        # A uniform spacing cancels in the normalised overlap.
        np.testing.assert_allclose(
            fidelity_loss(a, b, measure=0.37, reduction="none"),
            fidelity_loss(a, b, reduction="none"), atol=1e-14,
        )
        # One target broadcast against a batch equals the explicitly tiled target.
        np.testing.assert_allclose(
            fidelity_loss(a, b, reduction="none"),
            fidelity_loss(a, np.broadcast_to(b, a.shape), reduction="none"), atol=1e-15,
        )


def test_state_ndim_two_for_images():
    a = random_complex(8, (3, 4, 5), "float32")
    b = random_complex(9, (3, 4, 5), "float32")
    per = fidelity_loss(a, b, state_ndim=2, reduction="none")
    ref = direct_loss(a.reshape(3, 20), b.reshape(3, 20))
    assert per.shape == (3,)
    np.testing.assert_allclose(per, ref, atol=2e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_standard_gradient_follows_jax_complex_convention(dtype):
    """jax.grad returns G = dL/dRe - i dL/dIm = 2 conj(dL/dpsi*): dL = Re(sum G * delta)."""
    with x64(dtype):
        a = random_complex(10, (6,), dtype)
        b = random_complex(11, (6,), dtype)
        delta = random_complex(12, (6,), dtype)
        g = jgrad(lambda x: fidelity_loss(x, b))(a)
        h = 1e-3 if dtype == "float32" else 1e-6
        fd = (fidelity_loss(a + h * delta, b) - fidelity_loss(a - h * delta, b)) / (2 * h)
        tol = 2e-3 if dtype == "float32" else 1e-8
        np.testing.assert_allclose(np.sum(np.asarray(g) * delta).real, fd, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_modified_gradient_is_standard_over_sqrt_one_minus_loss(dtype, reduction):
    with x64(dtype):
        # Rows with very different L: near-identical, random, nearly orthogonal.
        rng = np.random.default_rng(13)
        b = random_complex(14, (4, 8), dtype)
        a = b + (
            np.array([0.01, 1.0, 3.0, 10.0])[:, None]
            * (rng.normal(size=(4, 8)) + 1j * rng.normal(size=(4, 8)))
        ).astype(b.dtype)
        per = fidelity_loss(a, b, reduction="none")
        scale = 1.0 / np.sqrt(1.0 - np.asarray(per))
        for argnum in (0, 1):
            gs = jgrad(lambda x, y: fidelity_loss(x, y, reduction=reduction), argnum)(a, b)
            gm = jgrad(
                lambda x, y: fidelity_loss(x, y, modified=True, reduction=reduction), argnum
            )(a, b)
            assert gm.dtype == a.dtype
            np.testing.assert_allclose(gm, gs * scale[:, None], rtol=50 * EPS[dtype], atol=50 * EPS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_modified_gradient_is_gradient_of_two_one_minus_abs_overlap(dtype):
    """sqrt(1 - L) = |<a, b>| so G_M = grad 2(1 - |<a, b>|): an independent closed form."""
    with x64(dtype):
        a = random_complex(15, (3, 10), dtype)
        b = random_complex(16, (3, 10), dtype)
        gm = jgrad(lambda x: fidelity_loss(x, b, modified=True, reduction="sum"))(a)
        ref = jgrad(lambda x: jnp.sum(2.0 * (1.0 - jnp.abs(overlap(x, b)))))(a)
        np.testing.assert_allclose(gm, ref, rtol=50 * EPS[dtype], atol=50 * EPS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_modified_gradient_finite_as_loss_tends_to_one(dtype):
    with x64(dtype):
        n = 8
        e = np.eye(n, dtype=cdtype(dtype))
        # Exactly orthogonal: L = 1, standard gradient 0, modified must be 0 (not NaN).
        gm_fn = jgrad(lambda x: fidelity_loss(x, e[1], modified=True))
        gs_fn = jgrad(lambda x: fidelity_loss(x, e[1]))
        g = gm_fn(e[0])
        assert np.all(np.isfinite(g)) and float(np.max(np.abs(g))) == 0.0
        # Nearly orthogonal, |overlap| = t: |G_M| stays O(1) for t above and below eps.
        for t in (1e-3, 1e-9):
            a = e[0] + t * e[1]
            per = fidelity_loss(a, e[1], reduction="none")
            assert float(per) <= 1.0
            gm = gm_fn(a)
            gs = gs_fn(a)
            assert np.all(np.isfinite(gm))
            # |grad L| ~ 2 t, |G_M| ~ 2 (unclamped) or 2 t / eps (clamped)
            expected = 2.0 if t > DEFAULT_EPS else 2.0 * t / DEFAULT_EPS
            assert abs(complex(gm[1])) == pytest.approx(expected, rel=1e-3)
            assert abs(complex(gs[1])) == pytest.approx(2.0 * t, rel=1e-3)
        # All-zero prediction: no NaN in value or gradient.
        z = np.zeros(n, e.dtype)
        val, g0 = jax.jit(jax.value_and_grad(lambda x: fidelity_loss(x, e[1], modified=True)))(z)
        assert float(val) == 1.0 and np.all(np.isfinite(g0))


def test_eps_controls_the_clamp():
    e = np.eye(4, dtype=np.complex64)
    a = e[0] + 1e-4 * e[1]
    g = jgrad(lambda x: fidelity_loss(x, e[1], modified=True, eps=1e-2))(a)
    # clamp active: 2 t / eps = 2e-4 / 1e-2
    assert abs(complex(g[1])) == pytest.approx(2e-2, rel=1e-3)


def test_real_inputs_and_gradient():
    theta = 0.7
    w = np.array([1.0, 0.0], np.float32)

    def v(t):
        return jnp.stack([jnp.cos(t), jnp.sin(t)])

    gs = jgrad(lambda t: fidelity_loss(v(t), w))(theta)
    gm = jgrad(lambda t: fidelity_loss(v(t), w, modified=True))(theta)
    assert float(gs) == pytest.approx(np.sin(2 * theta), rel=1e-5)
    assert float(gm) == pytest.approx(2 * np.sin(theta), rel=1e-5)


@pytest.mark.parametrize("modified", [False, True])
def test_jit_vmap_and_grad_of_jit(modified):
    a = random_complex(17, (6, 12), "float32")
    b = random_complex(18, (6, 12), "float32")

    def f(x, y):
        return fidelity_loss(x, y, modified=modified)

    per = fidelity_loss(a, b, modified=modified, reduction="none")
    np.testing.assert_allclose(jax.jit(f)(a, b), per.mean(), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(f)(a, b), per, rtol=1e-6)
    g_eager = jax.grad(f)(a, b)
    np.testing.assert_allclose(jax.grad(jax.jit(f))(a, b), g_eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(a, b), g_eager, rtol=1e-5, atol=1e-6)
    # per-sample gradients by vmap(grad) equal rows of the batch gradient times B (mean)
    g_rows = jax.vmap(jax.grad(f))(a, b)
    np.testing.assert_allclose(g_rows, 6 * g_eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(psi_pred=np.ones((3, 5)), psi_true=np.ones((3, 4))), "state shapes differ"),
        (dict(psi_pred=np.ones((3, 5)), psi_true=np.ones((2, 5))), "do not broadcast"),
        (dict(psi_pred=np.ones(5), psi_true=np.ones(5), reduction="max"), "reduction"),
        (dict(psi_pred=np.ones(5), psi_true=np.ones(5), eps=0.0), r"eps must be .* \(0, 1\)"),
        (dict(psi_pred=np.ones(5), psi_true=np.ones(5), eps=1.5), r"eps must be .* \(0, 1\)"),
        (dict(psi_pred=np.ones(5), psi_true=np.ones(5), measure=np.ones(4)), "measure shape"),
        (dict(psi_pred=np.ones(5), psi_true=np.ones(5), state_ndim=2), "at least state_ndim=2"),
        (dict(psi_pred=np.ones(5), psi_true=np.ones(5), state_ndim=0), "state_ndim must be"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fidelity_loss(**kwargs)


def test_exported_at_top_level():
    import bec_jax

    assert bec_jax.fidelity_loss is fidelity_loss
    assert "fidelity_loss" in bec_jax.__all__
