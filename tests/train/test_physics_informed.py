"""Physics-informed loss: differentiable phase integration, fidelity term, training through fit's step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bec_jax.data.targets import make_example
from bec_jax.gpe.grid import Grid
from bec_jax.models import UNetConfig, init_model
from bec_jax.train import (
    PhysicsConfig,
    TrainConfig,
    init_state,
    make_loss,
    make_train_step,
    masked_mse,
    physics_informed_loss,
    physics_terms,
)
from bec_jax.gpe.phase_field import forward_differences, integrate_differences, reconstruct_phase
from bec_jax.train.core import Batch

N = 16
GRID = Grid(n=N, length=8.0)
# jitted once per config: eager dispatch of the CG loop would dominate the test time
terms = jax.jit(physics_terms, static_argnames=("grid", "config"))


def _vortex_state(grid, centres):
    """Gaussian cloud with +1 vortices at ``centres`` (trap units), complex64 (n, n)."""
    X, Y = np.meshgrid(np.asarray(grid.x), np.asarray(grid.x))
    psi = np.exp(-(X**2 + Y**2) / 4.0).astype(complex)
    for xc, yc in centres:
        z = (X - xc) + 1j * (Y - yc)
        psi *= z / np.sqrt(np.abs(z) ** 2 + 0.3)
    return jnp.asarray(psi * np.exp(0.3j * X), jnp.complex64)


def _smooth_phase(n):
    """A smooth periodic phase (n, n) float32, mean zero."""
    j, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    t = np.sin(2 * np.pi * i / n) + 0.5 * np.cos(2 * np.pi * 2 * j / n) + 0.3 * np.sin(2 * np.pi * (i + j) / n)
    return jnp.asarray(t - t.mean(), jnp.float32)


def test_integration_recovers_a_smooth_phase():
    theta = _smooth_phase(N)
    d = forward_differences(theta)
    valid = jnp.ones((N, N), bool)
    region = jnp.ones((N - 1, N - 1), bool)
    for vortices in (True, False):
        got = reconstruct_phase(d, valid, region, vortices=vortices, max_vortices=64, maxiter=50)[0]
        np.testing.assert_allclose(got - got.mean(), theta, atol=2e-4)


def test_gradient_through_a_reconstruction_with_vortices_is_the_linear_solve_s():
    """With vortices, θ = L(wrap(d − D θ_v)) + θ_v, the windings held fixed: dθ/dd is the least-squares solve L
    alone, as without vortices; reverse mode must pass the vortex phase's loop (over the vortices found)."""
    j, i = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    theta = _smooth_phase(N) + jnp.arctan2(j - 7.5, i - 7.5) - jnp.arctan2(j - 5.5, i - 10.5)  # a ± pair
    d = jax.vmap(lambda t: forward_differences(t))(jnp.stack([theta, theta + 0.01 * _smooth_phase(N)]))
    d = jnp.angle(jnp.exp(1j * d))
    valid = jnp.ones((2, N, N), bool)
    region = jnp.ones((2, N - 1, N - 1), bool)
    c = jax.random.normal(jax.random.key(2), (2, N, N))

    def f(d_, vortices):
        th = jax.vmap(lambda a, b, r: reconstruct_phase(a, b, r, vortices=vortices, max_vortices=64,
                                                        maxiter=50)[0])(d_, valid, region)
        return jnp.sum(c * th)

    w = jax.vmap(lambda a, r: reconstruct_phase(a, valid[0], r, max_vortices=64)[1])(d, region)
    assert np.count_nonzero(np.asarray(w)) == 4  # two per state: the loop runs
    with_vortices = jax.jit(jax.grad(f), static_argnums=1)(d, True)
    np.testing.assert_allclose(with_vortices, jax.jit(jax.grad(f), static_argnums=1)(d, False), atol=1e-4)
    assert float(jnp.max(jnp.abs(with_vortices))) > 1e-2


def test_integration_gradient_matches_finite_differences():
    # θ(d) is linear (weighted least squares): a central difference with a
    # large step is exact up to CG tolerance, so the implicit gradient must match.
    d = 0.1 * jax.random.normal(jax.random.key(1), (N, N, 2))
    valid = jnp.zeros((N, N), bool).at[3:13, 2:14].set(True)
    c = jax.random.normal(jax.random.key(2), (N, N))
    e = jax.random.normal(jax.random.key(3), d.shape)

    def f(d_):
        return jnp.sum(c * integrate_differences(d_, valid))

    g = jax.jit(jax.grad(f))(d)
    f = jax.jit(f)
    h = 0.05
    fd = (f(d + h * e) - f(d - h * e)) / (2 * h)
    np.testing.assert_allclose(float(jnp.sum(g * e)), float(fd), rtol=2e-3)


def _batch(centres_list):
    psi = jnp.stack([_vortex_state(GRID, c) for c in centres_list])
    return psi, make_example(GRID, psi)


def test_fidelity_term_is_zero_for_the_exact_target_and_positive_otherwise():
    psi, (x, y, mask) = _batch([[(0.5, 0.3)], [(-0.6, 0.2), (0.7, -0.5)]])
    noisy = y + 0.3 * jax.random.normal(jax.random.key(0), y.shape)
    for cfg in (PhysicsConfig(), PhysicsConfig(vortices=True)):  # `modified` changes only the backward pass
        mse, fid = terms(GRID, y, y, mask, x, cfg)
        assert float(mse) == 0.0 and abs(float(fid)) < 1e-5
        _, fid_noisy = terms(GRID, noisy, y, mask, x, cfg)
        assert float(fid_noisy) > 1e-3


def test_reconstructed_reference_is_the_true_state():
    # the loss compares with the reconstruction of the true target; it must reproduce ψ (vortices included)
    from bec_jax.train.physics_informed import state_from_differences

    psi, (x, y, mask) = _batch([[(0.5, 0.3)], [(-0.6, 0.2), (0.7, -0.5)]])
    amp = jnp.abs(psi)
    state_from_differences = jax.jit(state_from_differences, static_argnames=("grid", "config"))
    ref = state_from_differences(GRID, y, amp, mask, PhysicsConfig(vortices=True))
    ov = jnp.abs(jnp.sum(jnp.conj(ref) * psi, axis=(-2, -1))) ** 2 / (
        jnp.sum(jnp.abs(ref) ** 2, axis=(-2, -1)) * jnp.sum(jnp.abs(psi) ** 2, axis=(-2, -1)))
    assert np.all(np.asarray(ov) > 0.999)
    # without the vortex phase, plain least squares loses the vortices
    plain = state_from_differences(GRID, y, amp, mask, PhysicsConfig(vortices=False))
    ov_plain = jnp.abs(jnp.sum(jnp.conj(plain) * psi, axis=(-2, -1))) ** 2 / (
        jnp.sum(jnp.abs(plain) ** 2, axis=(-2, -1)) * jnp.sum(jnp.abs(psi) ** 2, axis=(-2, -1)))
    assert np.all(np.asarray(ov_plain) < 0.95)


def test_modified_gradient_is_the_standard_one_rescaled():
    psi, (x, y, mask) = _batch([[(0.5, 0.3)]])
    pred = y + 0.4 * jax.random.normal(jax.random.key(5), y.shape)
    grads, values = {}, {}
    for modified in (False, True):
        cfg = PhysicsConfig(fidelity_weight=1.0, modified=modified)
        values[modified], grads[modified] = jax.jit(jax.value_and_grad(
            lambda p: physics_terms(GRID, p, y, mask, x, cfg)[1]))(pred)
    assert float(values[False]) == pytest.approx(float(values[True]), rel=1e-6)
    # one sample: G_M = ∇L / √(1 − L)
    scale = 1.0 / np.sqrt(1.0 - float(values[False]))
    np.testing.assert_allclose(grads[True], grads[False] * scale, rtol=1e-3, atol=1e-7)


def test_loss_is_mse_plus_lambda_fidelity_and_reads_the_input_from_the_batch():
    psi, (x, y, mask) = _batch([[(0.5, 0.3)], [(-0.6, 0.2)]])
    pred = y + 0.2
    loss = physics_informed_loss(GRID, PhysicsConfig(fidelity_weight=0.7))
    mse, fid = terms(GRID, pred, y, mask, x, PhysicsConfig())  # λ does not enter the terms (same compiled program)
    assert float(jax.jit(loss)(pred, Batch(x, y, mask))) == pytest.approx(float(mse + 0.7 * fid), rel=1e-6)
    assert float(mse) == pytest.approx(float(masked_mse(pred, y, mask)))


def test_physics_informed_steps_reduce_the_loss():
    psi, (x, y, mask) = _batch([[(0.5, 0.3)], [(-0.6, 0.2), (0.7, -0.5)], [], [(0.0, 0.8)]])
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    config = TrainConfig(loss="mse+fidelity", fidelity_weight=1.0, fidelity_modified=True)
    loss = make_loss(config, GRID)
    model = init_model(UNetConfig(base_width=4, depth=2, input_size=N), 0)
    tx = optax.adam(1e-2)
    gd_train, _, state = init_state(model, tx)
    step = make_train_step(gd_train, tx, loss)
    losses = []
    for _ in range(12):
        state, value = step(state, Batch(x, y, mask))
        losses.append(float(value))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0]


def test_train_config_physics_fields():
    assert "fidelity_weight" not in TrainConfig().resume_key()  # pixel-loss runs keep their old keys
    cfg = TrainConfig(loss="mse+fidelity", fidelity_weight=0.5, fidelity_modified=True)
    assert cfg.resume_key()["fidelity_weight"] == 0.5
    pc = cfg.physics_config
    assert pc.fidelity_weight == 0.5 and pc.modified and not pc.vortices


@pytest.mark.parametrize("kwargs, match", [
    (dict(fidelity_weight=-0.1), "fidelity_weight must be a finite number >= 0, got -0.1"),
    (dict(fidelity_weight=float("nan")), "fidelity_weight must be a finite number >= 0"),
    (dict(max_vortices=0), "max_vortices must be an integer >= 1, got 0"),
    (dict(cg_maxiter=0), "cg_maxiter must be an integer >= 1, got 0"),
    (dict(outside_weight=0.0), r"outside_weight must be in \(0, 1\], got 0.0"),
    (dict(target="phase"), "target must be 'phase_diff' or 'velocity', got 'phase'"),
    (dict(eps=0.0), "eps must be > 0, got 0.0"),
    (dict(vortex_threshold=1.5), r"vortex_threshold must be in \(0, 1\), got 1.5"),
])
def test_physics_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PhysicsConfig(**kwargs)


def test_bad_train_config_and_grid_raise():
    with pytest.raises(ValueError, match="fidelity_weight must be a finite number >= 0, got -1"):
        TrainConfig(loss="mse+fidelity", fidelity_weight=-1.0)
    with pytest.raises(ValueError, match=r"loss must be one of \('masked_mse', 'reference', 'mse\+fidelity'\)"):
        TrainConfig(loss="fidelity")
    with pytest.raises(ValueError, match="grid must be a bec_jax Grid"):
        physics_informed_loss(16)
