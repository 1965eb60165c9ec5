import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.data.targets import TargetConfig, phase_differences, velocity
from bec_jax.gpe.phase_field import (
    detect_vortices,
    fidelity,
    integrate_differences,
    match_vortices,
    plaquette_circulation,
    reconstruct_phase,
    to_differences,
    winding_from_differences,
)
from bec_jax.data.splits import split_by_group
from bec_jax.data.storage import load_grid, read_h5
from bec_jax.train.evaluate import EvalConfig, evaluate_model, evaluate_predictions, evaluate_run, summarize
from bec_jax.train.trainer import load_trained

GRID = bj.Grid(64, 16.0)


def smooth_periodic_phase(seed=0, n=64):
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    th = np.zeros((n, n))
    for _ in range(6):
        kx, ky = rng.integers(-3, 4, 2)
        th += rng.normal() * np.cos(2 * np.pi * (kx * x + ky * y) / n + rng.uniform(0, 2 * np.pi))
    return th


def vortex_state(vortices, grid=GRID, width=3.0, smooth=0.0):
    """Gaussian cloud with (x, y, ±1) vortices (cores of size ~0.3) and an optional smooth phase."""
    X, Y = np.meshgrid(grid.x, grid.x)
    psi = np.exp(-(X**2 + Y**2) / (2 * width**2)).astype(complex) * np.exp(1j * smooth * np.sin(2 * np.pi * X / 16))
    for xv, yv, w in vortices:
        zz = (X - xv) + 1j * (Y - yv)
        f = zz / np.sqrt(np.abs(zz) ** 2 + 0.1)
        psi *= f if w > 0 else np.conj(f)
    return jnp.asarray(psi / np.sqrt(np.sum(np.abs(psi) ** 2) * grid.cell_area), jnp.complex64)


def test_integration_recovers_a_periodic_phase_and_its_differences():
    th = smooth_periodic_phase()
    psi = jnp.asarray(np.exp(1j * th), jnp.complex64)
    d = phase_differences(psi)
    rec = np.asarray(integrate_differences(d))
    np.testing.assert_allclose(rec - rec.mean(), th - th.mean(), atol=2e-4)
    d_rec = np.stack([np.roll(rec, -1, 1) - rec, np.roll(rec, -1, 0) - rec], -1)
    np.testing.assert_allclose(d_rec, np.asarray(d), atol=2e-4)


def test_integration_is_least_squares_for_a_rotational_field():
    # A field in the null space of Dᵀ (the discrete curl of a stream function a,
    # d = (B_y a, −B_x a) with backward differences B) has no gradient part: it
    # integrates to zero, and adding it to a gradient field changes nothing.
    n = 32
    rng = np.random.default_rng(1)
    a = rng.normal(size=(n, n))
    curl = np.stack([a - np.roll(a, 1, 0), -(a - np.roll(a, 1, 1))], -1)
    assert np.abs(np.asarray(integrate_differences(jnp.asarray(curl, jnp.float32)))).max() < 1e-4
    th = smooth_periodic_phase(3, n)
    grad = np.stack([np.roll(th, -1, 1) - th, np.roll(th, -1, 0) - th], -1)
    rec = np.asarray(integrate_differences(jnp.asarray(grad + curl, jnp.float32)))
    np.testing.assert_allclose(rec, th - th.mean(), atol=2e-4)


def test_weighted_integration_ignores_invalid_pixels():
    th = smooth_periodic_phase(4)
    d = np.stack([np.roll(th, -1, 1) - th, np.roll(th, -1, 0) - th], -1)
    y, x = np.mgrid[:64, :64]
    valid = (x - 31.5) ** 2 + (y - 31.5) ** 2 < 20**2
    junk = np.where(valid[..., None], d, np.random.default_rng(0).normal(scale=3.0, size=d.shape))
    rec = np.asarray(integrate_differences(jnp.asarray(junk, jnp.float32), jnp.asarray(valid)))
    err = (rec - th)[valid]
    assert np.abs(err - err.mean()).max() < 2e-3  # ~outside_weight x the phase scale
    plain = np.asarray(integrate_differences(jnp.asarray(junk, jnp.float32)))
    err_plain = (plain - th)[valid]
    assert np.abs(err_plain - err_plain.mean()).max() > 0.1


def test_winding_from_target_equals_plaquette_winding():
    psi = vortex_state([(1.1, 0.6, 1), (-1.4, -0.9, 1), (0.35, -2.1, 1), (2.05, 1.85, -1)])
    w = np.asarray(winding_from_differences(phase_differences(psi)))
    np.testing.assert_array_equal(w, np.asarray(bj.plaquette_winding(psi)))
    inside = w * np.asarray(bj.gpe.observables.vortex_mask(GRID, psi))
    assert sorted(inside[inside != 0].tolist()) == [-1, 1, 1, 1]
    np.testing.assert_allclose(np.asarray(plaquette_circulation(phase_differences(psi))), 2 * np.pi * w, atol=1e-4)


def test_reconstruction_restores_vortex_states():
    # Vortices at plaquette centres (x_i + dx/2): the singular part is exact.
    dx = GRID.dx
    c = lambda i: float(GRID.x[32 + i] + dx / 2)  # noqa: E731
    psi = vortex_state([(c(4), c(2), 1), (c(-6), c(-3), 1), (c(1), c(-8), -1)], smooth=0.4)
    d = phase_differences(psi)
    valid = bj.gpe.observables.density(psi) >= 1e-3 * jnp.max(bj.gpe.observables.density(psi))
    region = bj.gpe.observables.vortex_mask(GRID, psi)
    th, w = reconstruct_phase(d, valid, region)
    amp = jnp.abs(psi)
    assert int(jnp.abs(w).sum()) == 3
    assert float(fidelity(amp * jnp.exp(1j * th), psi)) > 0.9999
    # Plain least squares without the vortex term loses most of the state.
    th_ls = integrate_differences(d * valid[..., None])
    assert float(fidelity(amp * jnp.exp(1j * th_ls), psi)) < 0.8
    # Off-centre vortices: position quantised to a plaquette, still close.
    psi2 = vortex_state([(1.1, 0.6, 1), (-1.4, -0.9, 1)], smooth=0.4)
    th2, _ = reconstruct_phase(phase_differences(psi2), valid, bj.gpe.observables.vortex_mask(GRID, psi2))
    assert float(fidelity(jnp.abs(psi2) * jnp.exp(1j * th2), psi2)) > 0.99


def test_fidelity_properties():
    psi = vortex_state([(1.1, 0.6, 1)])
    assert abs(float(fidelity(psi, psi)) - 1) < 1e-5
    assert abs(float(fidelity(3.0 * jnp.exp(0.7j) * psi, psi)) - 1) < 1e-5  # scale and global phase
    other = vortex_state([(1.1, 0.6, -1)])
    assert float(fidelity(other, psi)) < 0.9


def test_match_vortices_is_optimal_and_sign_aware():
    true = np.array([[0.0, 0.0, 1], [1.0, 0.0, 1], [5.0, 5.0, -1]])
    # Greedy nearest-first would pair pred 0 with true 1 (distance 0.45) and leave
    # true 0 unmatched (pred 1 is 1.3 away > radius); the optimum matches both.
    pred = np.array([[0.55, 0.0, 1], [1.6, 0.0, 1], [5.0, 5.2, 1], [9.0, 9.0, -1]])
    pairs, dist = match_vortices(true, pred, max_dist=0.7)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 0), (1, 1)]
    np.testing.assert_allclose(sorted(dist), [0.55, 0.6])
    assert len(match_vortices(true, np.zeros((0, 3)), 1.0)[0]) == 0


def test_perfect_prediction_scores_perfectly():
    psis = jnp.stack([vortex_state([(1.1, 0.6, 1), (-1.4, -0.9, 1)]), vortex_state([(0.3, -1.2, 1)])])
    tcfg = TargetConfig()
    pred = phase_differences(psis)
    r = evaluate_predictions(GRID, psis, pred, np.array([8.0, 8.0]), tcfg)
    assert np.all(r["mse"] == 0) and list(r["n_true"]) == [2, 1] and list(r["n_pred"]) == [2, 1]
    assert np.all(r["false_pos"] == 0) and np.all(r["false_neg"] == 0)
    np.testing.assert_allclose(r["fidelity"], r["fidelity_ceiling"], atol=1e-6)
    assert np.all(r["fidelity"] > 0.99) and np.all(r["fidelity_zero_phase"] < 0.9)
    s = summarize(r)
    assert s["vortex_count_accuracy"] == 1.0 and s["precision"] == 1.0 and s["recall"] == 1.0
    assert s["position_error_xi_max"] == 0.0 and s["mse"] == 0.0


def test_a_uniform_flow_error_costs_fidelity_that_zero_momentum_gives_back():
    """A vortex near the cloud's centre carries almost no momentum; a uniform error of (0.05, −0.03) rad/pixel
    adds some, a phase ramp of ~1 rad across the cloud, at an MSE of only 0.0017."""
    psi = vortex_state([(0.125, 0.125, 1)])[None]  # a plaquette centre: the core is between pixels
    d = phase_differences(psi)
    mu = np.array([8.0])
    exact = evaluate_predictions(GRID, psi, d, mu)
    off = evaluate_predictions(GRID, psi, d + jnp.asarray([0.05, -0.03], jnp.float32), mu)
    assert exact["fidelity_zero_momentum"][0] > 0.99 and exact["flow_speed"][0] < 0.03
    assert off["fidelity"][0] < 0.8
    np.testing.assert_allclose(off["fidelity_zero_momentum"], exact["fidelity_zero_momentum"], atol=1e-5)
    assert abs(off["flow_speed"][0] - np.hypot(0.05, 0.03) / GRID.dx) <= exact["flow_speed"][0] + 1e-5
    assert off["n_pred"][0] == 1 and off["matched"][0] == 1  # a uniform flow has no curl
    # weighted by the true density: a flow only in the core counts by the atoms there, not by its area
    X, Y = GRID.mesh()
    core = jnp.asarray((X**2 + Y**2 < 2.0**2)[..., None] * np.array([0.05, -0.03]), jnp.float32)
    part = evaluate_predictions(GRID, psi, d + core, mu)
    n = np.abs(np.asarray(psi[0])) ** 2
    w = np.stack([(n + np.roll(n, -1, 1)) / 2, (n + np.roll(n, -1, 0)) / 2], -1)  # each difference's edge
    want = (w * np.asarray(d[0] + core)).sum((0, 1)) / w.sum((0, 1)) / GRID.dx
    np.testing.assert_allclose(part["flow_speed"][0], np.hypot(*want), rtol=1e-4)
    assert part["flow_speed"][0] > 1.5 * np.hypot(0.05, 0.03) / GRID.dx * float(np.mean(X**2 + Y**2 < 4.0))
    s = summarize(off)
    assert s["fidelity_zero_momentum_mean"] == pytest.approx(float(off["fidelity_zero_momentum"][0]))
    assert s["flow_speed_median"] == pytest.approx(float(off["flow_speed"][0]))


def test_missing_and_shifted_vortices_are_counted():
    psi = vortex_state([(1.1, 0.6, 1), (-1.4, -0.9, 1)])
    # Predict the field of a state whose first vortex moved by 1 trap unit and whose second is gone.
    pred = phase_differences(vortex_state([(2.1, 0.6, 1)]))
    mu = np.array([2.0])  # ξ = 0.5
    r = evaluate_predictions(GRID, psi[None], pred[None], mu, TargetConfig(), EvalConfig(match_radius=3.0))
    assert (r["n_true"][0], r["n_pred"][0], r["matched"][0], r["false_neg"][0], r["false_pos"][0]) == (2, 1, 1, 1, 0)
    np.testing.assert_allclose(r["pos_err_xi"][0], [2.0], atol=0.01)  # 1.0 / ξ, both on plaquette centres
    tight = evaluate_predictions(GRID, psi[None], pred[None], mu, TargetConfig(), EvalConfig(match_radius=1.0))
    assert tight["matched"][0] == 0 and tight["false_pos"][0] == 1


def test_velocity_targets_convert_to_differences():
    th = smooth_periodic_phase(2)
    psi = jnp.asarray(np.exp(1j * th), jnp.complex64)
    d = to_differences(velocity(GRID, psi), "velocity", GRID.dx)
    np.testing.assert_allclose(np.asarray(d), np.asarray(phase_differences(psi)), atol=0.02)
    with pytest.raises(ValueError, match="target must be"):
        to_differences(d, "phase", GRID.dx)


@pytest.mark.parametrize("kwargs, match", [
    (dict(match_radius=0), "match_radius"), (dict(vortex_threshold=1.0), "vortex_threshold"),
    (dict(max_vortices=0), "max_vortices"),
])
def test_eval_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvalConfig(**kwargs)


def test_block_loops_find_a_vortex_on_a_pixel_with_an_undetermined_core():
    # Vortex exactly on grid point (32, 32); blank the four edges touching that pixel,
    # as a smooth prediction would: single plaquettes then miss it, the 3x3-pixel loop does not.
    psi = vortex_state([(float(GRID.x[32]), float(GRID.x[32]), 1), (1.1, 0.6, 1)])
    d = np.array(phase_differences(psi))
    d[32, 32, 0] = d[32, 31, 0] = d[32, 32, 1] = d[31, 32, 1] = 0.0
    d = jnp.asarray(d)
    region = bj.gpe.observables.vortex_mask(GRID, psi)
    single = np.asarray(winding_from_differences(d) * region)
    both = np.asarray(detect_vortices(d, region))
    assert np.abs(single).sum() == 1  # only the off-grid vortex
    assert both.sum() == 2 and np.abs(both).sum() == 2
    j, i = np.argwhere(both * (single == 0))[0]
    assert j in (31, 32) and i in (31, 32)  # a plaquette touching the core pixel
    # exact fields: the second pass adds nothing
    exact = phase_differences(psi)
    np.testing.assert_array_equal(np.asarray(detect_vortices(exact, region)),
                                  np.asarray(winding_from_differences(exact) * region))


# evaluate_run reads only its split's samples and scores them as the split taken from the whole file

@pytest.mark.parametrize("split", ["test", "train"])
def test_a_split_read_alone_scores_as_the_split_of_the_whole_file(small_run, split, monkeypatch):
    import bec_jax.data.storage as storage

    run, data = small_run
    model, info = load_trained(run, "best")
    tc = info["train_config"]
    arrays, attrs = read_h5(data)
    idx = split_by_group(arrays["group"], tc.split, tc.split_seed)[split]
    assert 0 < len(idx) < len(arrays["group"])
    whole, kept = evaluate_model(model, load_grid(attrs), arrays, idx, tc.target_config, progress=False, keep=2)
    reads, read = [], storage.read_h5

    def spy(path, fields=None, psi=True, rows=None):
        reads.append((psi, None if rows is None else list(rows)))
        return read(path, fields, psi, rows)

    monkeypatch.setattr(storage, "read_h5", spy)
    alone = evaluate_run(run, split=split, progress=False, keep=2)
    assert [r for r in reads if r[0]] == [(True, idx.tolist())]  # the states of the split alone
    assert alone["summary"]["n_samples"] == len(idx)
    assert alone["summary"].keys() == whole.keys()
    for k, v in whole.items():  # some entries are None (a metric with nothing to score)
        assert alone["summary"][k] == (v if v is None or isinstance(v, str) else pytest.approx(v, rel=1e-6)), k
    for k in kept:
        assert alone["samples"][k] == pytest.approx(kept[k], rel=1e-6, abs=1e-7)


def test_camera_images_are_keyed_by_the_samples_index_in_the_file(small_run):
    """A subset of rows with their file indices renders and scores the images the whole file's rows give
    (evaluate_run reads a split alone; the pipeline keeps the test split in memory)."""
    from bec_jax.imaging.training import ImagingTrainConfig

    run, data = small_run
    model, info = load_trained(run, "best")
    tcfg = info["train_config"].target_config
    arrays, attrs = read_h5(data)
    grid = load_grid(attrs)
    imaging = ImagingTrainConfig(enabled=True, rows=48, cols=48)
    idx = np.arange(3, len(arrays["group"]), 2)
    whole, kept = evaluate_model(model, grid, arrays, idx, tcfg, progress=False, keep=2, imaging=imaging)
    rows = {k: v[idx] for k, v in arrays.items()}
    local = np.arange(len(idx))
    sub, sub_kept = evaluate_model(model, grid, rows, local, tcfg, progress=False, keep=2, imaging=imaging, ids=idx)
    assert sub["mse"] == pytest.approx(whole["mse"], rel=1e-6)
    np.testing.assert_array_equal(sub_kept["index"], kept["index"])
    np.testing.assert_allclose(sub_kept["x"], kept["x"], rtol=1e-6, atol=1e-7)
    # keyed by position instead, the same states are other images
    other, _ = evaluate_model(model, grid, rows, local, tcfg, progress=False, imaging=imaging)
    assert other["mse"] != pytest.approx(whole["mse"], rel=1e-6)
    with pytest.raises(ValueError, match="ids must match idx"):
        evaluate_model(model, grid, rows, local, tcfg, progress=False, imaging=imaging, ids=idx[:-1])


def test_data_unlike_the_training_data_is_named(small_run):
    """Another box or a (g, Ω) beyond the training range: a warning each; the run's own data: none."""
    import json
    import warnings

    from bec_jax.train.evaluate import _note_foreign_data
    from bec_jax.train.trainer import run_settings

    run, data = small_run
    run_info = run_settings(run)[2]
    attrs = read_h5(data, psi=False)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _note_foreign_data(run, run_info, data, attrs)
    cfg = json.loads(attrs["config"])
    wider = dict(attrs, grid_length=2 * float(attrs["grid_length"]),
                 config=json.dumps(dict(cfg, omega_range=[cfg["omega_range"][0], cfg["omega_range"][1] + 0.1])))
    with pytest.warns(UserWarning) as caught:
        _note_foreign_data(run, run_info, "other.h5", wider)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "box of length" in messages[0] and "another scale" in messages[0]
    assert "spans Ω" in messages[1] and "extrapolates" in messages[1]
