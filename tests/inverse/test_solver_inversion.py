import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.gpe.minimize import pcg_minimize
from bec_jax.inverse import FeatureConfig, ParamBox, SolverInversionConfig, azimuthal_features, feature_loss
from bec_jax.inverse import hessian_apply, invert_with_solver, make_stationary

FC = FeatureConfig(n_rings=12)


@pytest.fixture(scope="module")
def state64():
    """A converged 3-vortex ground state (g=100, Ω=0.65) on 32², float64."""
    with jax.enable_x64(True):
        grid = bj.Grid(32, float(bj.box_length(100.0, 0.65)))
        res = bj.ground_state(grid, 100.0, 0.65, key=jax.random.key(1), n_starts=1, max_iter=3000,
                              tol_residual=1e-9, tol_energy=1e-13)
        assert bool(res.converged) and int(res.vortices) == 3
        psi = np.asarray(res.psi)  # complex128; leave the x64 context before the tests run
    return grid, psi


def test_hessian_self_adjoint_with_phase_zero_mode(state64):
    grid, psi = state64
    with jax.enable_x64(True):
        psi = jnp.asarray(psi)
        mu = bj.chemical_potential(grid, psi, 100.0, 0.65)
        k1, k2 = jax.random.split(jax.random.key(0))
        a = jax.random.normal(k1, psi.shape, complex)
        b = jax.random.normal(k2, psi.shape, complex)
        K = lambda v: hessian_apply(grid, psi, 100.0, 0.65, mu, v)
        ip = lambda x, y: float(jnp.real(jnp.vdot(x, y)))
        np.testing.assert_allclose(ip(a, K(b)), ip(K(a), b), rtol=1e-10)
        # global phase is a zero mode (up to the converged residual)
        assert float(jnp.linalg.norm(K(1j * psi))) < 1e-6 * float(jnp.linalg.norm(K(a)))


def test_implicit_gradient_matches_finite_difference_of_resolved_states(state64):
    grid, psi = state64
    g0, om0 = 100.0, 0.65
    with jax.enable_x64(True):
        f_ref = azimuthal_features(grid, bj.density(psi), FC) * 1.03  # a loss whose minimum is elsewhere
        st = make_stationary(grid, cg_iters=400, cg_tol=1e-10)
        loss = lambda p: feature_loss(azimuthal_features(grid, bj.density(p), FC), f_ref, FC)
        dg, dom = jax.grad(lambda g, om: loss(st(psi, g, om)), argnums=(0, 1))(g0, om0)

        def resolved(g, om):
            p, *_ = pcg_minimize(grid, psi, g, om, max_iter=4000, tol_residual=1e-10, tol_energy=1e-14)
            return loss(p)

        fd_g = (resolved(g0 + 0.1, om0) - resolved(g0 - 0.1, om0)) / 0.2
        fd_om = (resolved(g0, om0 + 1e-5) - resolved(g0, om0 - 1e-5)) / 2e-5
    assert abs(float(dg)) > 0 and abs(float(dom)) > 0
    np.testing.assert_allclose(float(dg), float(fd_g), rtol=1e-2)
    # rotation zero mode projected out: exact only on a fine grid, 32² leaves ~0.3 %
    np.testing.assert_allclose(float(dom), float(fd_om), rtol=3e-2)


def test_inversion_recovers_g_and_omega_of_synthetic_case(state64):
    grid, psi = state64
    n = np.asarray(bj.density(psi), np.float32)
    cfg = SolverInversionConfig(steps=25, init_iter=200, relax_iter=60, cg_iters=100,
                                box=ParamBox((30.0, 270.0), (0.4, 0.8)), features=FC)
    with warnings.catch_warnings():
        warnings.simplefilter("error", bj.BoxTooSmallWarning)  # the cloud fits its box
        r = invert_with_solver(grid, n, cfg, init=np.array([[85.0, 0.6]]))  # 15 % / 8 % off
    assert not bool(r.touches_edge[0])
    g, om = np.asarray(r.params)[0]
    assert abs(g / 100.0 - 1) < 0.03, (g, om)
    assert abs(om / 0.65 - 1) < 0.03, (g, om)
    assert int(r.n_vortices[0]) == 3
    assert r.history.shape == (1, 26, 2)


def test_inversion_warns_when_the_cloud_is_cut_by_the_box():
    # a cloud twice as wide as the box, beside one that fits: only the first is flagged
    grid = bj.Grid(16, 10.0)
    x, y = np.meshgrid(grid.x, grid.x)
    wide, fits = np.exp(-(x**2 + y**2) / 18.0), np.exp(-(x**2 + y**2) / 2.0)
    cfg = SolverInversionConfig(steps=2, init_iter=20, relax_iter=10, cg_iters=10,
                                box=ParamBox((1.0, 10.0), (0.0, 0.3)))
    none = [np.zeros((0, 2))] * 2
    with pytest.warns(bj.BoxTooSmallWarning, match=r"the cloud of image\(s\) \[0\] \(of 2\) reach the edge of the box "
                      r"\(side 10\)"):
        r = invert_with_solver(grid, np.stack([wide, fits]), cfg, vortices=none)
    assert np.asarray(r.touches_edge).tolist() == [True, False]
    # an image that fits, but a parameter box whose states do not (Thomas-Fermi radius >= 4.2 in a box of side 6)
    grid = bj.Grid(16, 6.0)
    x, y = np.meshgrid(grid.x, grid.x)
    cfg = dataclasses.replace(cfg, box=ParamBox((250.0, 400.0), (0.0, 0.3)))
    with pytest.warns(bj.BoxTooSmallWarning, match=r"^the state fitted to image\(s\) \[0\] \(of 1\)"):
        r = invert_with_solver(grid, np.exp(-(x**2 + y**2) / 1.28), cfg, vortices=none[:1])
    assert bool(r.touches_edge[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", bj.BoxTooSmallWarning)
        assert bool(invert_with_solver(grid, np.exp(-(x**2 + y**2) / 1.28), cfg, vortices=none[:1],
                                       warn=False).touches_edge[0])


def test_image_edge_sees_a_disc_overfilling_the_box_not_clipped_noise():
    from bec_jax.inverse.solver_inversion import IMAGE_EDGE_THRESHOLD, _image_edge

    x, y = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 64))
    disc = lambda r: np.maximum(1 - (x**2 + y**2) / r**2, 0)  # Thomas-Fermi, radius r in half-box units
    noise = np.maximum(0.05 * np.random.default_rng(0).standard_normal(x.shape), 0)  # clipped at 0
    edge = _image_edge(np.stack([disc(1.05), disc(0.9) + noise, disc(0.9)]))
    assert edge.tolist()[0] > IMAGE_EDGE_THRESHOLD > max(edge[1:]), edge


def test_inversion_rejects_bad_input():
    grid = bj.Grid(16, 8.0)
    cfg = SolverInversionConfig(box=ParamBox((30.0, 270.0), (0.4, 0.8)))
    with pytest.raises(ValueError, match="shape"):
        invert_with_solver(grid, np.ones((20, 20)), cfg)
    with pytest.raises(ValueError, match=">= 0"):
        invert_with_solver(grid, -np.ones((16, 16)), cfg)
    with pytest.raises(ValueError, match=r"omega=0.95 is outside the allowed range \[0.4, 0.8\]"):
        invert_with_solver(grid, np.ones((16, 16)), cfg, init=np.array([[100.0, 0.95]]))
    with pytest.raises(ValueError, match="one \\(K, 2\\) array per image"):
        invert_with_solver(grid, np.ones((16, 16)), cfg, vortices=[np.zeros((0, 2))] * 2)
    with pytest.raises(ValueError, match="transfer must be finite"):
        invert_with_solver(grid, np.ones((16, 16)), cfg, vortices=[np.zeros((0, 2))], transfer=np.ones((8, 8)))
    with pytest.raises(ValueError, match="steps"):
        SolverInversionConfig(steps=0)
    with pytest.raises(ValueError, match=r"b1 must be in \[0, 1\), got 1.0"):
        SolverInversionConfig(b1=1.0)
    with pytest.raises(ValueError, match=r"image\(s\) \[1\] are all zeros"):
        invert_with_solver(grid, np.stack([np.ones((16, 16)), np.zeros((16, 16))]), cfg)
    with pytest.raises(ValueError, match=r"init must hold \(g, omega\) per image, shape \(2,\) or \(1, 2\), got \(3"):
        invert_with_solver(grid, np.ones((16, 16)), cfg, init=np.array([100.0, 0.6, 3.0]))
    for name, bad in (("cg_tol", -1.0), ("tol_residual", float("nan"))):
        with pytest.raises(ValueError, match=rf"{name} must be in \(0, 1\), got"):
            SolverInversionConfig(**{name: bad})


@pytest.mark.slow  # two inversions, ~30 s on 2 cores
def test_inversion_through_the_imaging_model_recovers_a_blurred_observation(state64):
    """A blurred, pixelated observation (imaging.observation_transfer) with the vortices given, as
    bec-jax predict passes them: with the transfer in the loss (g, Ω) come back; without it the
    wider cloud reads as a larger g."""
    from bec_jax.gpe.observables import vortex_positions
    from bec_jax.imaging import blur, observation_transfer

    grid, psi = state64
    tf = np.asarray(observation_transfer(grid, "gaussian", 0.5, 0.4))
    n = np.maximum(np.asarray(blur(jnp.asarray(bj.density(psi), jnp.float32), jnp.asarray(tf, jnp.float32))), 0)
    cores = np.asarray(vortex_positions(grid, jnp.asarray(psi, jnp.complex64)))[:, :2]
    assert len(cores) == 3
    cfg = SolverInversionConfig(steps=25, init_iter=200, relax_iter=60, cg_iters=100,
                                box=ParamBox((30.0, 270.0), (0.4, 0.8)), features=FC)
    init = np.array([[85.0, 0.6]])
    with_model = np.asarray(invert_with_solver(grid, n, cfg, init=init, vortices=[cores], transfer=tf).params)[0]
    without = np.asarray(invert_with_solver(grid, n, cfg, init=init, vortices=[cores]).params)[0]
    assert abs(with_model[0] / 100 - 1) < 0.03 and abs(with_model[1] / 0.65 - 1) < 0.03, with_model
    assert abs(without[0] / 100 - 1) > 2 * abs(with_model[0] / 100 - 1), (without, with_model)
