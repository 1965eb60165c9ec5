"""Tests for the 1-D Crank–Nicolson Schrödinger simulator against closed forms."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bec_jax.quantum import (
    Grid1D,
    apply_hamiltonian,
    box_eigenstate,
    box_eigenvalue,
    cn_step,
    dipole_potentials,
    evolve,
    fidelity_loss,
    norm,
    random_states,
)

DTYPES = ["float32", "float64"]
EPS = {"float32": 1.2e-7, "float64": 2.2e-16}


def x64(dtype):
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


def cdtype(dtype):
    return jnp.complex128 if dtype == "float64" else jnp.complex64


def test_grid_defaults_and_nodes():
    g = Grid1D()
    assert (g.n, g.length, g.x0) == (20, 2.0, 0.0)
    x = np.asarray(g.x())
    assert x.shape == (20,)
    np.testing.assert_allclose(np.diff(x), g.dx, rtol=1e-5)
    # interior nodes: walls at 0 and 2 are one spacing away
    assert x[0] == pytest.approx(g.dx) and x[-1] == pytest.approx(2.0 - g.dx, rel=1e-6)
    assert hash(g) == hash(Grid1D())  # frozen, usable as a static jit argument


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_modes_are_orthonormal_eigenvectors(dtype):
    with x64(dtype):
        g = Grid1D(n=16, length=3.0)
        modes = jnp.stack([box_eigenstate(g, k, cdtype(dtype)) for k in range(1, g.n + 1)])
        gram = jnp.einsum("ij,kj->ik", jnp.conj(modes), modes) * g.dx
        np.testing.assert_allclose(gram, np.eye(g.n), atol=50 * EPS[dtype])
        lam = box_eigenvalue(g, jnp.arange(1, g.n + 1))
        h_modes = apply_hamiltonian(g, modes, 0.0)
        scale = float(lam.max())
        np.testing.assert_allclose(h_modes, lam[:, None] * modes, atol=50 * EPS[dtype] * scale)


def test_hamiltonian_is_minus_laplacian_without_one_half():
    """lambda_k -> (k pi / L)^2 (not half of it): the paper's -d^2/dx^2 convention."""
    with jax.enable_x64(True):  # 1/dx^2 ~ 4e4: float32 cancellation would dominate
        g = Grid1D(n=400, length=2.0)
        for k in (1, 2, 3):
            assert float(box_eigenvalue(g, k)) == pytest.approx((k * np.pi / 2.0) ** 2, rel=1e-4)
        # apply_hamiltonian agrees, and a constant potential shifts every level by V0
        psi = box_eigenstate(g, 2, jnp.complex128)
        np.testing.assert_allclose(
            apply_hamiltonian(g, psi, 3.0), (box_eigenvalue(g, 2) + 3.0) * psi, atol=1e-8
        )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("v0", [0.0, 4.5])
def test_crank_nicolson_eigenmode_phase_closed_form(dtype, v0):
    """A mode of H with eigenvalue E picks up ((1 - i dt E/2)/(1 + i dt E/2))^steps."""
    with x64(dtype):
        g = Grid1D()
        dt, steps, k = 0.2, 40, 3
        psi0 = box_eigenstate(g, k, cdtype(dtype))
        out = evolve(g, psi0, jnp.full((steps, g.n), v0, dtype), dt=dt)
        e = float(box_eigenvalue(g, k)) + v0
        r = (1 - 0.5j * dt * e) / (1 + 0.5j * dt * e)
        np.testing.assert_allclose(out, r**steps * np.asarray(psi0), atol=steps * 20 * EPS[dtype])
        assert out.dtype == cdtype(dtype)


def test_converges_to_continuum_free_evolution():
    """Fine grid, small dt: mode 1 evolves as exp(-i (pi/L)^2 t) (second order in dx, dt)."""
    with jax.enable_x64(True):
        g = Grid1D(n=199, length=2.0)
        dt, steps = 1e-3, 100
        psi0 = box_eigenstate(g, 1, jnp.complex128)
        out = evolve(g, psi0, jnp.zeros((steps, g.n)), dt=dt)
        exact = np.exp(-1j * (np.pi / 2.0) ** 2 * dt * steps) * np.asarray(psi0)
        np.testing.assert_allclose(out, exact, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_preserved_to_round_off_with_time_dependent_control(dtype):
    with x64(dtype):
        g = Grid1D()
        steps = 300
        psi0 = random_states(jax.random.PRNGKey(0), g, (6,), dtype=cdtype(dtype))
        u = 20.0 * jax.random.normal(jax.random.PRNGKey(1), (6, steps), jnp.dtype(dtype))
        out = evolve(g, psi0, dipole_potentials(g, u), dt=0.2)
        np.testing.assert_allclose(norm(g, psi0), 1.0, atol=10 * EPS[dtype])
        # round-off grows like sqrt(steps) to steps x eps; a non-unitary scheme would drift O(dt)
        np.testing.assert_allclose(norm(g, out), 1.0, atol=steps * 10 * EPS[dtype])
        assert float(jnp.max(jnp.abs(out - psi0))) > 0.1  # it did evolve


@pytest.mark.parametrize("dtype", DTYPES)
def test_energy_conserved_for_static_potential(dtype):
    with x64(dtype):
        g = Grid1D()
        v = 30.0 * (g.x(jnp.dtype(dtype)) - 1.0) ** 2
        psi0 = random_states(jax.random.PRNGKey(2), g, (3,), dtype=cdtype(dtype))

        def energy(psi):
            return jnp.sum(jnp.conj(psi) * apply_hamiltonian(g, psi, v), -1).real * g.dx

        out = evolve(g, psi0, jnp.broadcast_to(v, (200, g.n)), dt=0.2)
        e0 = energy(psi0)
        np.testing.assert_allclose(energy(out), e0, rtol=2000 * EPS[dtype])


def test_step_equals_dense_cayley_transform():
    """Tridiagonal solve == dense (I + i dt/2 H)^{-1} (I - i dt/2 H), H Hermitian."""
    with jax.enable_x64(True):
        g = Grid1D(n=12, length=1.5)
        dt = 0.37
        rng = np.random.default_rng(3)
        v = rng.normal(size=g.n) * 10
        psi = rng.normal(size=g.n) + 1j * rng.normal(size=g.n)
        h = (np.diag(2 / g.dx**2 + v) - np.diag(np.ones(g.n - 1), 1) / g.dx**2
             - np.diag(np.ones(g.n - 1), -1) / g.dx**2)
        eye = np.eye(g.n)
        ref = np.linalg.solve(eye + 0.5j * dt * h, (eye - 0.5j * dt * h) @ psi)
        np.testing.assert_allclose(cn_step(g, jnp.asarray(psi), jnp.asarray(v), dt), ref, atol=1e-12)


def test_time_reversal_by_complex_conjugation():
    """For real V, conj(U(V_reversed)) conj(U(V) psi) = psi: CN is exactly reversible."""
    with jax.enable_x64(True):
        g = Grid1D()
        psi0 = random_states(jax.random.PRNGKey(4), g, (2,), dtype=jnp.complex128)
        u = 5.0 * jax.random.normal(jax.random.PRNGKey(5), (2, 60))
        v = dipole_potentials(g, u)
        psi_t = evolve(g, psi0, v)
        back = jnp.conj(evolve(g, jnp.conj(psi_t), v[::-1]))
        np.testing.assert_allclose(back, psi0, atol=1e-12)


def test_batching_broadcasting_and_jit_vmap():
    g = Grid1D()
    psi0 = random_states(jax.random.PRNGKey(6), g, (4,))
    u = jax.random.normal(jax.random.PRNGKey(7), (4, 25))
    v = dipole_potentials(g, u)
    assert v.shape == (25, 4, g.n)
    batched = evolve(g, psi0, v)
    one = jax.vmap(lambda p, uu: evolve(g, p, dipole_potentials(g, uu)))(psi0, u)
    np.testing.assert_allclose(one, batched, atol=1e-6)
    jitted = jax.jit(lambda p, vv: evolve(g, p, vv))(psi0, v)
    np.testing.assert_allclose(jitted, batched, atol=1e-6)
    # one shared potential sequence broadcast over a batch of states
    shared = evolve(g, psi0, v[:, 0])
    np.testing.assert_allclose(shared[0], batched[0], atol=1e-6)
    # one state broadcast over a batch of controls
    fan = evolve(g, psi0[0], v)
    assert fan.shape == (4, g.n)
    np.testing.assert_allclose(fan[0], batched[0], atol=1e-6)


def test_trajectory_and_checkpoint_segments_agree():
    g = Grid1D()
    psi0 = random_states(jax.random.PRNGKey(8), g, (3,))
    v = dipole_potentials(g, jax.random.normal(jax.random.PRNGKey(9), (3, 23)))
    ref_t, ref_traj = evolve(g, psi0, v, trajectory=True)
    assert ref_traj.shape == (24, 3, g.n)
    np.testing.assert_array_equal(ref_traj[0], psi0)
    np.testing.assert_array_equal(ref_traj[-1], ref_t)
    np.testing.assert_allclose(ref_traj[5], evolve(g, psi0, v[:5]), atol=1e-6)
    for ck in (True, 1, 5, 23, 100):  # isqrt, per step, with remainder, one segment, > steps
        psi_t, traj = evolve(g, psi0, v, checkpoint=ck, trajectory=True)
        np.testing.assert_allclose(psi_t, ref_t, atol=1e-6)
        np.testing.assert_allclose(traj, ref_traj, atol=1e-6)


def _final_loss(g, target, checkpoint):
    def f(u, psi0):
        return fidelity_loss(evolve(g, psi0, dipole_potentials(g, u), checkpoint=checkpoint), target)

    return f


def test_checkpoint_gradients_equal_and_match_finite_differences():
    with jax.enable_x64(True):
        g = Grid1D()
        psi0 = random_states(jax.random.PRNGKey(10), g, (2,), dtype=jnp.complex128)
        target = random_states(jax.random.PRNGKey(11), g, (), dtype=jnp.complex128)
        u = jax.random.normal(jax.random.PRNGKey(12), (2, 30))
        grads = {ck: jax.jit(jax.grad(_final_loss(g, target, ck)))(u, psi0) for ck in (False, True, 7)}
        np.testing.assert_allclose(grads[True], grads[False], atol=1e-13)
        np.testing.assert_allclose(grads[7], grads[False], atol=1e-13)
        f = jax.jit(_final_loss(g, target, False))
        direction = jax.random.normal(jax.random.PRNGKey(13), u.shape)
        h = 1e-6
        fd = (f(u + h * direction, psi0) - f(u - h * direction, psi0)) / (2 * h)
        np.testing.assert_allclose(jnp.vdot(grads[False], direction), fd, rtol=1e-6)


def test_checkpoint_reduces_backward_memory():
    """Compiled temp memory of the gradient over 2000 steps shrinks with checkpointing."""
    g = Grid1D()
    psi0 = random_states(jax.random.PRNGKey(14), g, (8,))
    target = random_states(jax.random.PRNGKey(15), g, ())
    u = jnp.ones((8, 2000))
    sizes = {}
    for ck in (False, True):
        analysis = jax.jit(jax.grad(_final_loss(g, target, ck))).lower(u, psi0).compile().memory_analysis()
        if analysis is None:
            pytest.skip("backend provides no memory analysis")
        sizes[ck] = analysis.temp_size_in_bytes
    assert sizes[True] < 0.5 * sizes[False], sizes


def test_random_states_shape_norm_and_smoothness():
    g = Grid1D()
    psi = random_states(jax.random.PRNGKey(16), g, (7, 3), n_modes=4)
    assert psi.shape == (7, 3, g.n) and psi.dtype == jnp.complex64
    np.testing.assert_allclose(norm(g, psi), 1.0, atol=1e-6)
    modes = jnp.stack([box_eigenstate(g, k) for k in range(5, g.n + 1)])
    # no weight outside the lowest n_modes box modes
    assert float(jnp.max(jnp.abs(psi @ jnp.conj(modes).T) * g.dx)) < 1e-5
    assert not np.allclose(psi[0, 0], psi[1, 0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: Grid1D(n=2), r"n must be an integer >= 3, got 2"),
        (lambda: Grid1D(n=10.0), "n must be an integer"),
        (lambda: Grid1D(length=0.0), r"length must be finite and > 0, got 0.0"),
        (lambda: Grid1D(length=float("nan")), "length must be finite"),
        (lambda: evolve(Grid1D(), jnp.ones(20), jnp.zeros((3, 20)), dt=0.0), r"dt must be finite and > 0, got 0.0"),
        (lambda: evolve(Grid1D(), jnp.ones(20), jnp.zeros((3, 20)), dt=-0.2), "dt must be"),
        (lambda: cn_step(Grid1D(), jnp.ones(20), 0.0, dt=-1.0), "dt must be"),
        (lambda: evolve(Grid1D(), jnp.ones(19), jnp.zeros((3, 20))), r"psi0 must have shape \(\.\.\., 20\)"),
        (lambda: evolve(Grid1D(), jnp.ones((2, 20)), jnp.zeros((3, 3, 20))), "do not broadcast"),
        (lambda: evolve(Grid1D(), jnp.ones(20), jnp.zeros((0, 20))), "steps >= 1"),
        (lambda: evolve(Grid1D(), jnp.ones(20), jnp.zeros((3, 20)), checkpoint=0), "segment length >= 1"),
        (lambda: cn_step(Grid1D(), jnp.ones(20), jnp.zeros(7)), "does not broadcast"),
        (lambda: box_eigenstate(Grid1D(), 0), r"mode k must be an integer in \[1, 20\]"),
        (lambda: random_states(jax.random.PRNGKey(0), Grid1D(), n_modes=21), "n_modes"),
        (lambda: dipole_potentials(Grid1D(), 1.0), "u must have shape"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
