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


def np_states(seed, g, batch, dtype="float32", n_modes=5):
    """Normalised random superpositions of box modes, built in numpy (nothing to compile)."""
    rng = np.random.default_rng(seed)
    j = np.arange(1, g.n + 1)
    modes = np.stack([np.sin(k * np.pi * j / (g.n + 1)) for k in range(1, n_modes + 1)])
    c = rng.normal(size=(batch, n_modes)) + 1j * rng.normal(size=(batch, n_modes))
    psi = c @ modes
    psi /= np.sqrt(np.sum(np.abs(psi) ** 2, -1, keepdims=True) * g.dx)
    return psi.astype(np.complex128 if dtype == "float64" else np.complex64)


def np_normal(seed, shape, dtype="float32"):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def test_grid_defaults_and_nodes():
    g = Grid1D()
    assert (g.n, g.length, g.x0) == (20, 2.0, 0.0)
    x = np.asarray(g.x())
    assert x.shape == (20,)
    np.testing.assert_allclose(np.diff(x), g.dx, rtol=1e-5)
    # interior nodes: walls at 0 and 2 are one spacing away
    assert x[0] == pytest.approx(g.dx) and x[-1] == pytest.approx(2.0 - g.dx, rel=1e-6)
    assert hash(g) == hash(Grid1D())  # frozen, usable as a static jit argument


@pytest.mark.parametrize("dtype", ["float64"])
def test_box_modes_are_orthonormal_eigenvectors(dtype):
    with x64(dtype):
        g = Grid1D(n=16, length=3.0)
        modes = np.stack([np.asarray(box_eigenstate(g, k, cdtype(dtype))) for k in range(1, g.n + 1)])
        gram = np.conj(modes) @ modes.T * g.dx
        np.testing.assert_allclose(gram, np.eye(g.n), atol=50 * EPS[dtype])
        lam = box_eigenvalue(g, np.arange(1, g.n + 1))
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
        dt, steps, ks = 0.2, 300, np.arange(1, 7)
        psi0 = np.stack([np.asarray(box_eigenstate(g, int(k), cdtype(dtype))) for k in ks])
        out = evolve(g, psi0, np.full((steps, 6, g.n), v0, dtype), dt=dt)
        e = np.asarray(box_eigenvalue(g, ks), np.float64) + v0
        r = (1 - 0.5j * dt * e) / (1 + 0.5j * dt * e)
        np.testing.assert_allclose(out, (r**steps)[:, None] * psi0, atol=steps * 20 * EPS[dtype])
        assert out.dtype == cdtype(dtype)


def test_converges_to_continuum_free_evolution():
    """Fine grid, small dt: mode 1 evolves as exp(-i (pi/L)^2 t) (second order in dx, dt)."""
    with jax.enable_x64(True):
        g = Grid1D(n=199, length=2.0)
        dt, steps = 1e-3, 100
        psi0 = box_eigenstate(g, 1, jnp.complex128)
        out = evolve(g, psi0, np.zeros((steps, g.n)), dt=dt)
        exact = np.exp(-1j * (np.pi / 2.0) ** 2 * dt * steps) * np.asarray(psi0)
        np.testing.assert_allclose(out, exact, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_preserved_to_round_off_with_time_dependent_control(dtype):
    with x64(dtype):
        g = Grid1D()
        steps = 300
        psi0 = np_states(0, g, 6, dtype)
        u = 20.0 * np_normal(1, (6, steps), dtype)
        out = evolve(g, psi0, dipole_potentials(g, u), dt=0.2)
        np.testing.assert_allclose(norm(g, psi0), 1.0, atol=10 * EPS[dtype])
        # round-off grows like sqrt(steps) to steps x eps; a non-unitary scheme would drift O(dt)
        np.testing.assert_allclose(norm(g, out), 1.0, atol=steps * 10 * EPS[dtype])
        assert float(np.max(np.abs(out - psi0))) > 0.1  # it did evolve


@pytest.mark.parametrize("dtype", ["float64"])  # float32 round-off is covered by the norm test
def test_energy_conserved_for_static_potential(dtype):
    with x64(dtype):
        g = Grid1D()
        v = 30.0 * (np.asarray(g.x(jnp.dtype(dtype))) - 1.0) ** 2
        psi0 = np_states(2, g, 6, dtype)

        def energy(psi):
            return np.sum(np.conj(psi) * np.asarray(apply_hamiltonian(g, psi, v)), -1).real * g.dx

        out = np.asarray(evolve(g, psi0, np.broadcast_to(v, (300, 6, g.n)), dt=0.2))
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
        psi0 = np_states(4, g, 6, "float64")
        u = 5.0 * np_normal(5, (6, 300), "float64")
        v = np.asarray(dipole_potentials(g, u))
        psi_t = np.asarray(evolve(g, psi0, v))
        back = np.conj(evolve(g, np.conj(psi_t), v[::-1]))
        np.testing.assert_allclose(back, psi0, atol=1e-12)


def test_batching_broadcasting_and_jit_vmap():
    g = Grid1D()
    psi0 = np_states(6, g, 4)
    u = np_normal(7, (4, 25))
    v = np.asarray(dipole_potentials(g, u))
    assert v.shape == (25, 4, g.n)
    np.testing.assert_allclose(v[3, 2], u[2, 3] * np.asarray(g.x()), rtol=1e-6)
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
    psi0 = np_states(8, g, 4)
    v = np.asarray(dipole_potentials(g, np_normal(9, (4, 25))))
    ref_t, ref_traj = evolve(g, psi0, v, trajectory=True)
    assert ref_traj.shape == (26, 4, g.n)
    np.testing.assert_array_equal(ref_traj[0], psi0)
    np.testing.assert_array_equal(ref_traj[-1], ref_t)
    np.testing.assert_allclose(ref_traj[5], evolve(g, psi0, v[:5]), atol=1e-6)
    for ck in (True, 7):  # isqrt = 5 (no remainder), 7 (3 segments + a 4-step remainder)
        psi_t, traj = evolve(g, psi0, v, checkpoint=ck, trajectory=True)
        np.testing.assert_allclose(psi_t, ref_t, atol=1e-6)
        np.testing.assert_allclose(traj, ref_traj, atol=1e-6)


def _final_loss(g, target, checkpoint):
    def f(u, psi0):
        return fidelity_loss(evolve(g, psi0, dipole_potentials(g, u), checkpoint=checkpoint), target)

    return f


def test_checkpoint_same_gradient_less_memory_and_matches_finite_differences():
    """2000 steps: checkpointed (isqrt = 44-step segments + a 20-step remainder) and plain
    reverse mode give the same gradient, which matches central differences; the compiled
    backward pass of the checkpointed version needs < half the temporary memory."""
    with jax.enable_x64(True):
        g = Grid1D()
        psi0 = np_states(10, g, 4, "float64")
        target = np_states(11, g, 1, "float64")[0]
        u = np_normal(12, (4, 2000), "float64")
        grads, temp = {}, {}
        for ck in (False, True):
            compiled = jax.jit(jax.grad(_final_loss(g, target, ck))).lower(u, psi0).compile()
            grads[ck] = compiled(u, psi0)
            analysis = compiled.memory_analysis()
            temp[ck] = None if analysis is None else analysis.temp_size_in_bytes
        np.testing.assert_allclose(grads[True], grads[False], atol=1e-12)
        if temp[False] is not None:  # backends without memory analysis skip this part
            assert temp[True] < 0.5 * temp[False], temp
        f = jax.jit(_final_loss(g, target, False))
        direction = np_normal(13, u.shape, "float64")
        h = 1e-6
        fd = (f(u + h * direction, psi0) - f(u - h * direction, psi0)) / (2 * h)
        np.testing.assert_allclose(np.vdot(grads[False], direction), fd, rtol=1e-6)


def test_random_states_shape_norm_and_smoothness():
    g = Grid1D()
    psi = random_states(jax.random.PRNGKey(16), g, (7, 3), n_modes=4)
    assert psi.shape == (7, 3, g.n) and psi.dtype == jnp.complex64
    np.testing.assert_allclose(norm(g, psi), 1.0, atol=1e-6)
    modes = np.stack([np.asarray(box_eigenstate(g, k)) for k in range(5, g.n + 1)])
    # no weight outside the lowest n_modes box modes
    assert float(np.max(np.abs(np.asarray(psi) @ np.conj(modes).T) * g.dx)) < 1e-5
    assert not np.allclose(psi[0, 0], psi[1, 0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: Grid1D(n=2), r"n must be an integer >= 3, got 2"),
        (lambda: Grid1D(n=10.0), "n must be an integer"),
        (lambda: Grid1D(length=0.0), r"length must be finite and > 0, got 0.0"),
        (lambda: Grid1D(length=float("nan")), "length must be finite"),
        (lambda: evolve(Grid1D(), np.ones(20), np.zeros((3, 20)), dt=0.0), r"dt must be finite and > 0, got 0.0"),
        (lambda: evolve(Grid1D(), np.ones(20), np.zeros((3, 20)), dt=-0.2), "dt must be"),
        (lambda: cn_step(Grid1D(), np.ones(20), 0.0, dt=-1.0), "dt must be"),
        (lambda: evolve(Grid1D(), np.ones(19), np.zeros((3, 20))), r"psi0 must have shape \(\.\.\., 20\)"),
        (lambda: evolve(Grid1D(), np.ones((2, 20)), np.zeros((3, 3, 20))), "do not broadcast"),
        (lambda: evolve(Grid1D(), np.ones(20), np.zeros((0, 20))), "steps >= 1"),
        (lambda: evolve(Grid1D(), np.ones(20), np.zeros((3, 20)), checkpoint=0), "segment length >= 1"),
        (lambda: cn_step(Grid1D(), np.ones(20), np.zeros(7)), "does not broadcast"),
        (lambda: box_eigenstate(Grid1D(), 0), r"mode k must be an integer in \[1, 20\]"),
        (lambda: random_states(jax.random.PRNGKey(0), Grid1D(), n_modes=21), "n_modes"),
        (lambda: dipole_potentials(Grid1D(), 1.0), "u must have shape"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
