"""Training inputs through the imaging model: identity limit, the target's frame, batching and keys."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax.data.targets import TargetConfig, make_example, phase_differences
from bec_jax.gpe.phase_field import winding_from_differences
from bec_jax.imaging.training import (ImagingTrainConfig, cloud_radius, imaged_example, imaged_examples,
                                      imaged_states)

GRID = bj.Grid(48, 12.0)
VORTICES = ((1.2, 0.3), (-0.8, 1.0), (0.2, -1.3))


def state(angle=0.0):
    """A smooth cloud (radius ~3) with three +1 vortices (cores of 0.7 a⊥ ≈ 3 cells: band-limited enough for the Fourier rotation), rotated by ``angle``
    counter-clockwise analytically: ψ_rot(r) = ψ(R(−angle) r), normalised to one atom."""
    X, Y = GRID.mesh()
    c, s = math.cos(angle), math.sin(angle)
    x, y = c * X + s * Y, -s * X + c * Y
    psi = np.sqrt(np.exp(-(((x**2 + y**2) / 9.0) ** 2))).astype(complex)
    for vx, vy in VORTICES:
        z = (x - vx) + 1j * (y - vy)
        psi *= z / np.sqrt(np.abs(z) ** 2 + 0.49)
    psi /= np.sqrt(np.sum(np.abs(psi) ** 2) * GRID.cell_area)
    return jnp.asarray(psi, jnp.complex64)


def identity(tof=0.0, omega=0.0, angle=0.0, **kw):
    """Settings whose camera pixels coincide with the grid's cells in the in-trap frame: P = dx·λ, the
    camera centred half a cell off, no PSF, no noise, no background; margin wide enough to keep all."""
    lam = math.sqrt(1 + tof**2)
    p, c = GRID.dx * lam, -0.5 * GRID.dx * lam
    fixed = lambda v: (v, v)
    base = dict(enabled=True, rows=GRID.n, cols=GRID.n, psf="none", shot_noise=False, n_fringes=0,
                tof=fixed(tof), omega=fixed(omega), angle=fixed(angle), pixel_size=fixed(p), center_x=fixed(c),
                center_y=fixed(c), psf_width=fixed(0.0), atom_number=fixed(1e5), background=fixed(0.0),
                read_noise=fixed(0.0), fringe_amplitude=fixed(0.0), margin=50.0)
    return ImagingTrainConfig(**{**base, **kw})


@pytest.mark.parametrize("target", ["phase_diff", "velocity"])
def test_identity_settings_give_the_clean_input_target_and_mask(target):
    tc = TargetConfig(target=target)
    psi = state()
    x, y, m = imaged_example(GRID, psi, jax.random.key(0), identity(), tc)
    x0, y0, m0 = make_example(GRID, psi, tc)
    rho = np.abs(np.asarray(psi)) ** 2
    on = rho > 1e-3 * rho.max()
    # the same log-density in the cloud; everywhere the same density to the float32 round-off of the
    # (identity) Fourier rotation, ~1e-7 of the peak
    np.testing.assert_allclose(np.asarray(x)[on], np.asarray(x0)[on], atol=2e-3)
    np.testing.assert_allclose(np.exp(np.asarray(x)), np.exp(np.asarray(x0)), atol=1e-5 * rho.max())
    np.testing.assert_array_equal(np.asarray(m), np.asarray(m0))
    # the phase where there are atoms (outside, arg ψ of round-off is not data)
    np.testing.assert_allclose(np.asarray(y)[np.asarray(m0)], np.asarray(y0)[np.asarray(m0)], atol=1e-4)


def test_the_cloud_disc_of_predict_zeroes_the_far_field_only():
    psi = state()
    x, _, _ = imaged_example(GRID, psi, jax.random.key(0), identity(margin=1.2), TargetConfig())
    x0 = np.asarray(make_example(GRID, psi)[0])
    X, Y = GRID.mesh()
    r = np.hypot(X, Y)
    R = float(cloud_radius(GRID, jnp.abs(psi) ** 2))
    assert 3.0 < R < 4.5
    rho = np.abs(np.asarray(psi)) ** 2
    inside = (r < 1.15 * R) & (rho > 1e-3 * rho.max())
    np.testing.assert_allclose(np.asarray(x)[inside], x0[inside], atol=2e-3)
    np.testing.assert_allclose(np.asarray(x)[r > 1.25 * R], math.log(1e-9), atol=1e-6)


def test_flight_and_orientation_rotate_input_and_target_together():
    """tof 1 at Ω = 0.6 rotates by 0.6·π/4, plus an angle 0.3: the input and the target equal those of
    the analytically rotated state, after undoing the dilation λ = √2 exactly."""
    alpha = 0.6 * math.atan(1.0) + 0.3
    x, y, m = imaged_example(GRID, state(), jax.random.key(0), identity(tof=1.0, omega=0.6, angle=0.3),
                             TargetConfig())
    ref = state(alpha)
    x0, y0, m0 = make_example(GRID, ref, TargetConfig())
    rho = np.abs(np.asarray(ref)) ** 2
    # Fourier rotation of the density (renderer) and of ψ (target) against the analytic rotation
    np.testing.assert_allclose(np.exp(np.asarray(x)[..., 0]), rho, atol=1e-3 * rho.max())
    on = rho > 1e-3 * rho.max()
    np.testing.assert_allclose(np.asarray(x)[on], np.asarray(x0)[on], atol=0.1)
    assert np.mean(np.asarray(m) != np.asarray(m0)) < 0.01
    both = np.asarray(m) & np.asarray(m0)
    np.testing.assert_allclose(np.asarray(y)[both], np.asarray(y0)[both], atol=1e-2)
    # the unrotated target would be wrong by far more
    assert np.max(np.abs(np.asarray(phase_differences(state()))[both] - np.asarray(y0)[both])) > 0.3


def _vortex_positions(y, mask):
    """(row, col) plaquette centres (pixel units) of the nonzero windings inside the mask."""
    w = np.asarray(winding_from_differences(jnp.asarray(y)))
    w = w * (np.asarray(mask)[:-1, :-1] & np.asarray(mask)[1:, 1:])
    j, i = np.nonzero(w)
    return np.stack([j + 0.5, i + 0.5], axis=-1)


def _at_density_minimum(x, pos, radius=4):
    """Whether the input's minimum within ``radius`` pixels of pos lies within 1.5 pixels of it."""
    x = np.asarray(x)[..., 0]
    rr, cc = np.mgrid[0:x.shape[0], 0:x.shape[1]]
    near = np.hypot(rr - pos[0], cc - pos[1]) <= radius
    k = np.argmin(np.where(near, x, np.inf))
    return np.hypot(rr.ravel()[k] - pos[0], cc.ravel()[k] - pos[1]) <= 1.5


def test_vortices_of_the_target_sit_at_density_minima_of_a_noisy_image():
    settings = dataclasses.replace(ImagingTrainConfig(enabled=True, rows=80, cols=80), tof=(1.0, 1.0),
                                   omega=(0.7, 0.7), angle=(0.9, 0.9), atom_number=(1e6, 1e6),
                                   psf_width=(0.15, 0.15), pixel_size=(0.25, 0.25))
    x, y, m = imaged_example(GRID, state(), jax.random.key(3), settings, TargetConfig())
    assert np.all(np.isfinite(np.asarray(x)))
    pos = _vortex_positions(y, m)
    assert len(pos) == len(VORTICES)
    assert all(_at_density_minimum(x, p) for p in pos)
    # control: the target of the unrotated state puts its vortices away from the imaged cores
    _, y_wrong, m_wrong = make_example(GRID, state())
    wrong = _vortex_positions(y_wrong, m_wrong)
    assert len(wrong) == len(VORTICES) and not all(_at_density_minimum(x, p) for p in wrong)


def test_batches_are_jitted_vmapped_and_reproducible_in_the_key():
    psi = jnp.stack([state(0.0), state(1.0), state(2.0)])
    s = ImagingTrainConfig(enabled=True, rows=64, cols=64)
    x, y, m = imaged_examples(GRID, psi, jax.random.key(1), s)
    assert x.shape == (3, 48, 48, 1) and y.shape == (3, 48, 48, 2) and m.shape == (3, 48, 48)
    assert x.dtype == jnp.float32 and y.dtype == jnp.float32 and m.dtype == jnp.bool_
    assert np.all(np.isfinite(np.asarray(x))) and np.all(np.isfinite(np.asarray(y)))
    again = imaged_examples(GRID, psi, jax.random.key(1), s)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(again[0]))
    other = imaged_examples(GRID, psi, jax.random.key(2), s)
    assert not np.allclose(np.asarray(x), np.asarray(other[0]))


@pytest.mark.slow  # five evaluations with a U-Net: ~16 s on 2 cores
def test_evaluation_renders_per_sample_and_scores_against_the_imaged_state():
    """The evaluation of a camera-trained model: inputs rendered with keys of the sample indices (the
    same images whatever the batch size), targets from the state as the image shows it."""
    from bec_jax.models import UNetConfig, init_model
    from bec_jax.train.evaluate import evaluate_model

    psi = jnp.stack([state(0.0), state(0.7), state(1.4)])
    s = identity(angle=0.6)
    key = jax.random.key(3)
    x, psi_rot = imaged_states(GRID, psi[:1], key[None], s)
    x1, y1, m1 = imaged_example(GRID, psi[0], key, s)
    np.testing.assert_allclose(np.asarray(x[0]), np.asarray(x1), rtol=1e-5)  # jit vs eager round-off
    _, y_rot, m_rot = make_example(GRID, psi_rot[0])
    np.testing.assert_allclose(np.asarray(y_rot), np.asarray(y1), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(m_rot), np.asarray(m1))

    model = init_model(UNetConfig(base_width=2, depth=2, input_size=GRID.n), 0)
    arrays = dict(psi=np.asarray(psi), mu=np.ones(3), g=np.ones(3), omega=np.zeros(3))
    run = lambda imaging, bs, a=arrays: evaluate_model(model, GRID, a, np.arange(3), TargetConfig(), batch_size=bs,
                                                       progress=False, imaging=imaging)[0]
    a, b = run(s, 1), run(s, 2)
    assert a["mse"] == pytest.approx(b["mse"], rel=1e-6) and a["fidelity_mean"] == pytest.approx(b["fidelity_mean"], rel=1e-6)
    # identity camera without rotation: the clean evaluation, to the round-off of the Fourier rotation
    assert run(identity(), 3)["mse"] == pytest.approx(run(None, 3)["mse"], rel=1e-3)
    # with the cloud turned by 0.6 rad: the clean evaluation of the turned states, not of the stored ones
    turned = dict(arrays, psi=np.asarray(imaged_states(GRID, psi, jax.random.split(key, 3), s)[1]))
    for k in ("mse", "fidelity_mean"):
        assert a[k] == pytest.approx(run(None, 3, turned)[k], rel=1e-5), k
    assert a["fidelity_mean"] != pytest.approx(run(None, 3)["fidelity_mean"], rel=5e-3)  # ... which score otherwise


@pytest.mark.parametrize("kw, match", [(dict(rows=0), "rows"), (dict(psf="moffat"), "psf"),
                                       (dict(tof=(1.0, 0.5)), "tof"), (dict(atom_number=(0.0, 1.0)), "atom_number"),
                                       (dict(margin=0.5), "margin")])
def test_bad_settings_name_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        ImagingTrainConfig(**kw)


def test_pipeline_section_flags_and_lab_preset():
    import argparse
    import json

    from bec_jax.pipeline.config import PRESETS, PipelineConfig, add_config_flags, config_from_args

    quick, lab = PRESETS["quick"], PRESETS["lab"]
    assert not quick.imaging.enabled and lab.imaging.enabled
    assert dataclasses.replace(lab, imaging=quick.imaging) == quick  # lab = quick on camera images
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    dests = {a.dest for a in parser._actions}
    assert all(f"imaging__{f.name}" in dests for f in dataclasses.fields(ImagingTrainConfig))
    c = config_from_args(quick, parser.parse_args(["--imaging-enabled", "--imaging-tof", "0,2",
                                                   "--imaging-psf", "airy"]))
    assert c.imaging.enabled and c.imaging.tof == (0.0, 2.0) and c.imaging.camera.psf == "airy"
    d = json.loads(json.dumps(c.to_dict()))
    assert PipelineConfig.from_dict(d) == c
    del d["imaging"]  # a config.json written before the section existed: imaging off
    assert PipelineConfig.from_dict(d).imaging == ImagingTrainConfig()
    with pytest.raises(ValueError, match="tof"):
        config_from_args(quick, parser.parse_args(["--imaging-tof", "2,1"]))
