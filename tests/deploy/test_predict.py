"""`bec_jax.predict` / `bec-jax predict`: formats, sizes, vortex coordinates, bad inputs, resume."""

import dataclasses
import json
import os
import shutil

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
from bec_jax import imaging as im
from bec_jax.cli import main
from bec_jax.data.targets import phase_differences
from bec_jax.deploy import ImageError, LoadedModel, load_model, predict, predict_files
from bec_jax.deploy.predict import ImageSettings

GRID = bj.Grid(48, 12.0)
#: (x, y, sign) of the test state's vortices, trap units
VORTICES = ((1.3, 0.6, 1), (-1.1, -0.9, -1), (0.2, -2.0, 1))


def state():
    """A smooth cloud of radius ~3.5 with two vortices and one antivortex (healing length 0.3)."""
    X, Y = GRID.mesh()
    amp = np.exp(-(((X**2 + Y**2) / 3.5**2) ** 2))
    psi = amp.astype(np.complex128)
    for x0, y0, s in VORTICES:
        z = (X - x0) + 1j * s * (Y - y0)
        psi = psi * z / np.sqrt(np.abs(z) ** 2 + 0.3**2)
    return psi.astype(np.complex64)


def oracle(angle=0.0):
    """A model that predicts the exact phase differences of the test state rotated by ``angle``."""
    y = phase_differences(im.rotate(GRID, jnp.asarray(state()), angle))[None]
    return LoadedModel(lambda p, s, x: y, None, None, GRID, "phase_diff", 1e-3, 1e-9, "oracle")


def lab_image(shape, pixel, tof=0.0, omega=0.0, center=(0.0, 0.0), key=0, **kw):
    params = dict(tof=tof, omega=omega, pixel_size=pixel, center_x=center[0], center_y=center[1], psf_width=0.1,
                  atom_number=2e5, background=20.0, read_noise=2.0, fringe_amplitude=3.0) | kw
    cfg = im.ImagingConfig(rows=shape[0], cols=shape[1], psf="gaussian", n_fringes=2)
    return np.asarray(im.render(GRID, state(), im.ImagingParams(**params), cfg, key=jax.random.key(key)))


@pytest.mark.parametrize("shape,pixel,tof,omega,center", [((64, 80), 0.2, 0.0, 0.0, (0.4, -0.3)),
                                                          ((90, 70), 0.3, 1.0, 0.6, (0.0, 0.5))])
def test_vortices_land_on_the_image_pixels_with_their_signs(shape, pixel, tof, omega, center):
    """With a model that predicts exactly, every vortex is found where the camera saw it, to a fraction of a
    pixel (sub-plaquette positions; with plaquette centres this fails)."""
    img = lab_image(shape, pixel, tof, omega, center)
    angle = omega * np.arctan(tof)
    res = predict(oracle(angle), img, pixel_size=pixel, tof=tof)
    lam = np.sqrt(1 + tof**2)
    c, s = np.cos(angle), np.sin(angle)
    want = sorted(((shape[0] - 1) / 2 + (lam * (s * x + c * y) - center[1]) / pixel,
                   (shape[1] - 1) / 2 + (lam * (c * x - s * y) - center[0]) / pixel, w) for x, y, w in VORTICES)
    got = sorted((v.row, v.col, v.sign) for v in res.vortices)
    assert len(got) == len(want), (got, want)
    for (r, cc, w), (r2, c2, w2) in zip(want, got):
        assert w == w2 and np.hypot(r - r2, cc - c2) < 0.6, (want, got)
    assert all(v.confidence > 0.5 for v in res.vortices)
    # the fitted centre is the trap centre seen through the camera offset
    assert abs(res.center[0] - ((shape[0] - 1) / 2 - center[1] / pixel)) < 0.5
    assert abs(res.center[1] - ((shape[1] - 1) / 2 - center[0] / pixel)) < 0.5
    assert res.phase.shape == shape and res.phase_gradient.shape == (2,) + shape
    assert res.valid.any() and np.all(np.isnan(res.phase[~res.valid]))
    assert np.all(np.isfinite(res.phase_gradient[:, res.valid]))
    # the phase gradient is the in-trap velocity: around a loop enclosing only the (+1) vortex
    # at (1.3, 0.6) its circulation is 2π; check the tangential average on a circle of radius 0.6
    rr, cc_ = np.mgrid[0 : shape[0], 0 : shape[1]]
    vx, vy = (lam * (c * 1.3 - s * 0.6) - center[0]) / pixel, (lam * (s * 1.3 + c * 0.6) - center[1]) / pixel
    col0, row0 = (shape[1] - 1) / 2 + vx, (shape[0] - 1) / 2 + vy
    dist = np.hypot(rr - row0, cc_ - col0) * pixel / lam
    ring = (np.abs(dist - 0.6) < 0.1) & res.valid
    phi = np.arctan2(rr - row0, cc_ - col0)
    tangential = -np.sin(phi) * res.phase_gradient[0] + np.cos(phi) * res.phase_gradient[1]
    assert abs(np.mean(tangential[ring]) * 2 * np.pi * 0.6 / (2 * np.pi) - 1) < 0.25


@pytest.mark.parametrize("target", ["phase_diff", "velocity"])
def test_a_uniform_flow_is_taken_off_unless_kept(target):
    """A cloud at rest carries no momentum, so a model's uniform flow error is taken off (and reported), weighted
    by the density inside the fitted disc: what the model predicts on the clipped noise beyond it does not count."""
    img = lab_image((48, 48), 0.25)
    exact = (bj.data.targets.velocity(GRID, jnp.asarray(state())) if target == "velocity"
             else phase_differences(jnp.asarray(state())))[None]
    base = predict(LoadedModel(lambda p, s, x: exact, None, None, GRID, target, 1e-3, 1e-9, "exact"), img,
                   pixel_size=0.25)
    flow = np.array([0.16, -0.08], np.float32)  # a⊥ω⊥
    X, Y = GRID.mesh()
    ring = (X**2 + Y**2 > 4.4**2)[..., None]  # beyond the fitted disc (R = 3.8) and its edges: any values
    y = exact + flow * (GRID.dx if target == "phase_diff" else 1) + np.where(ring, 5.0, 0.0).astype(np.float32)
    moving = LoadedModel(lambda p, s, x: y, None, None, GRID, target, 1e-3, 1e-9, "moving")
    still = predict(moving, img, pixel_size=0.25)
    rr, cc = np.mgrid[0:48, 0:48]
    on = still.valid & base.valid & (np.hypot(rr - still.center[0], cc - still.center[1]) * 0.25 < 3.9)
    np.testing.assert_allclose(np.subtract(still.flow_removed, base.flow_removed), flow, rtol=1e-3)
    np.testing.assert_allclose(still.phase_gradient[:, on], base.phase_gradient[:, on], atol=1e-3)

    def cores(res):  # the ring's jump makes vortices of its own
        return [(v.row, v.col) for v in res.vortices if np.hypot(v.row - res.center[0], v.col - res.center[1]) < 15]

    assert len(cores(base)) == 3
    np.testing.assert_allclose(cores(still), cores(base), atol=1e-3)
    kept = predict(moving, img, pixel_size=0.25, zero_momentum=False)
    assert kept.flow_removed is None and kept.summary()["flow_removed"] is None
    assert still.summary()["flow_removed"] == list(still.flow_removed)
    inner = on & kept.valid
    np.testing.assert_allclose(kept.phase_gradient[:, inner] - still.phase_gradient[:, inner],
                               np.broadcast_to(np.asarray(still.flow_removed)[:, None], (2, int(inner.sum()))),
                               atol=1e-3)
    # weighted by the density: a flow only in the core (r < 2) counts by the atoms there (45 % of those in the
    # disc), not by its area (26 %)
    core = (X**2 + Y**2 < 2.0**2)[..., None]
    y_core = exact + np.where(core, flow * (GRID.dx if target == "phase_diff" else 1), 0).astype(np.float32)
    part = predict(LoadedModel(lambda p, s, x: y_core, None, None, GRID, target, 1e-3, 1e-9, "core"), img,
                   pixel_size=0.25)
    n = np.abs(state()) ** 2
    share = n[core[..., 0]].sum() / n[X**2 + Y**2 <= 3.82**2].sum()
    np.testing.assert_allclose(np.subtract(part.flow_removed, base.flow_removed), share * flow, rtol=0.05)


def test_a_clockwise_trap_gets_the_conjugate_state():
    """A density does not tell the sense of rotation: the state of −Ω is ψ(Ω)*, the same image. With
    rotation="cw" the model's counter-clockwise prediction gives what a model of the conjugate state gives:
    the gradient and phase negated, every vortex's sign flipped at the same place."""
    img = lab_image((56, 60), 0.25)
    ccw = predict(oracle(), img, pixel_size=0.25)
    cw = predict(oracle(), img, pixel_size=0.25, rotation="cw")
    conj = phase_differences(jnp.asarray(state()).conj())[None]
    truth = predict(LoadedModel(lambda p, s, x: conj, None, None, GRID, "phase_diff", 1e-3, 1e-9, "conj"), img,
                    pixel_size=0.25)
    assert len(cw.vortices) == len(ccw.vortices) == len(VORTICES)
    assert [(v.row, v.col, v.sign) for v in cw.vortices] == [(v.row, v.col, -v.sign) for v in ccw.vortices]
    for got, want in zip(cw.vortices, truth.vortices):
        assert got.sign == want.sign and np.hypot(got.row - want.row, got.col - want.col) < 1e-3
    on = cw.valid
    np.testing.assert_array_equal(on, truth.valid)
    np.testing.assert_allclose(cw.phase_gradient[:, on], truth.phase_gradient[:, on], atol=1e-4)
    np.testing.assert_allclose(cw.phase_gradient[:, on], -ccw.phase_gradient[:, on], atol=1e-4)
    # the phase up to its constant: e^{i(θ_cw + θ_ccw)} is uniform
    z = np.exp(1j * (cw.phase[on] + ccw.phase[on]))
    assert np.abs(z.mean()) > 0.999
    np.testing.assert_allclose(cw.flow_removed, -np.asarray(ccw.flow_removed), atol=1e-5)
    assert cw.summary()["rotation"] == "cw" and ccw.summary()["rotation"] == "ccw"
    with pytest.raises(ImageError, match="rotation must be one of ccw, cw, got 'clockwise'"):
        predict(oracle(), img, pixel_size=0.25, rotation="clockwise")


def test_lab_units_give_the_same_prediction_and_the_velocity_scale(tmp_path):
    """µm, ms and the trap (Hz, species) in place of a⊥ and 1/ω⊥: the same prediction as the converted values,
    per image from a sidecar too; the record and the HDF5 file give the units."""
    u = bj.imaging.TrapUnits(20.0, "87Rb")  # a⊥ = 2.41 µm, 1/ω⊥ = 7.96 ms
    for k in range(2):
        np.save(tmp_path / f"i{k}.npy", lab_image((48, 48), 0.25, tof=0.5, key=k))
    specs = [str(tmp_path / f"i{k}.npy") for k in range(2)]
    trap = predict_files(oracle(), specs, tmp_path / "trap", pixel_size=0.25, tof=0.5, progress=False)
    lab = dict(pixel_size_um=0.25 * u.length_um, tof_ms=0.5 * u.time_ms, trap_frequency_hz=20.0, species="87Rb")
    got = predict_files(oracle(), specs, tmp_path / "lab", progress=False, **lab)
    for a, b in zip(trap["images"], got["images"]):
        assert b["status"] == "ok" and b["units"] == u.as_dict() and a["units"] is None
        assert b["settings"]["pixel_size"] == pytest.approx(0.25, rel=1e-12)
        assert b["settings"]["tof"] == pytest.approx(0.5, rel=1e-12) and b["settings"]["pixel_size_um"] is None
        assert [v["sign"] for v in a["vortices"]] == [v["sign"] for v in b["vortices"]]
        np.testing.assert_allclose([v["row"] for v in b["vortices"]], [v["row"] for v in a["vortices"]], atol=1e-4)
        with h5py.File(tmp_path / "lab" / f"{b['output']}.h5") as f:
            assert json.loads(f.attrs["trap_units"]) == u.as_dict()
    # a sidecar's value in one unit replaces the command line's in the other
    (tmp_path / "i1.npy.json").write_text(json.dumps(dict(pixel_size=0.3)))
    r = predict_files(oracle(), specs[1:], tmp_path / "lab", progress=False, **lab)["images"][1]
    assert r["settings"]["pixel_size"] == 0.3 and r["settings"]["tof"] == pytest.approx(0.5, rel=1e-12)
    (tmp_path / "i1.npy.json").write_text(json.dumps(dict(pixel_size_um=0.3 * u.length_um)))
    r = predict_files(oracle(), specs[1:], tmp_path / "trap", pixel_size=0.25, progress=False)["images"][1]
    assert r["status"] == "error" and "need the trap's units" in r["error"] and "sidecar's pixel_size_um" in r["error"]
    # an image's own error names its file, not "image"
    r = predict_files(oracle(), specs[:1], tmp_path / "trap", pixel_size=5.0, progress=False)["images"][0]
    assert r["error"].startswith(f"{specs[0]}: the cloud") and "does not fit" in r["error"]
    with pytest.raises(ImageError, match="pixel_size and pixel_size_um both given"):
        predict_files(oracle(), specs, tmp_path / "x", pixel_size=0.25, pixel_size_um=1.0, progress=False)


def test_image_settings_merge_and_convert():
    """Sidecar values replace a quantity in either unit, a null replaces nothing; every lab field converts; an
    explicit 0 counts as given; half a trap and inconvertible traps are named."""
    u = bj.imaging.TrapUnits(50.0, 40.0)  # a mass in u, as a sidecar's JSON number gives it
    cli = ImageSettings(pixel_size=0.25, tof=1.0, psf_width=0.2, trap_frequency_hz=50.0)
    s = cli.updated(dict(tof_ms=2 * u.time_ms, psf_width_um=0.5 * u.length_um, species=40.0, pixel_size=None,
                         atom_number=None)).in_trap_units()
    assert (s.pixel_size, s.tof_ms, s.psf_width_um, s.species) == (0.25, None, None, 40.0)
    assert s.tof == pytest.approx(2.0, rel=1e-12) and s.psf_width == pytest.approx(0.5, rel=1e-12)
    assert s.units.as_dict() == u.as_dict()
    assert ImageSettings(pixel_size=0.3).in_trap_units() == ImageSettings(pixel_size=0.3, tof=0.0, psf_width=0.0)
    assert cli.updated(dict(tof=None)).tof == 1.0  # null: not given
    for kw, words in ((dict(tof=0.0, tof_ms=5.0), "tof and tof_ms both given"),
                      (dict(trap_frequency_hz=1e308, species="87Rb"), r"must be a number in \(0, 1e300\) Hz"),
                      (dict(species=1e-300, trap_frequency_hz=10.0), r"a mass in u must be in \[1, 1000\]"),
                      (dict(pixel_size=10**400), r"pixel_size must be a finite number > 0, got 1000.*\.\.\.$")):
        with pytest.raises(ImageError, match=words):
            ImageSettings(**kw)
    for kw, words in ((dict(trap_frequency_hz=20.0), "trap_frequency_hz without species"),
                      (dict(species="23Na", pixel_size=0.2), "species without trap_frequency_hz"),
                      (dict(psf_width_um=1.0), "psf_width_um \\(lab units\\) need the trap's units")):
        with pytest.raises(ImageError, match=words):
            ImageSettings(**kw).in_trap_units()


def _write_formats(folder, imgs):
    from PIL import Image
    import matplotlib.image

    folder.mkdir()
    np.save(folder / "a.npy", imgs[0])
    Image.fromarray(imgs[1].astype(np.float32), mode="F").save(folder / "b.tif")
    matplotlib.image.imsave(folder / "c.png", imgs[2], cmap="gray")
    with h5py.File(folder / "d.h5", "w") as f:
        f.create_dataset("shots/first", data=imgs[3])
    (folder / "b.tif.json").write_text(json.dumps(dict(pixel_size=0.3)))


def test_cli_predicts_several_sizes_and_formats(small_run, tmp_path, capsys):
    run, _ = small_run
    shapes = [(40, 52), (56, 48), (64, 64), (48, 72)]
    imgs = [lab_image(s, 0.35 if k != 1 else 0.3, key=k) for k, s in enumerate(shapes)]
    _write_formats(tmp_path / "in", imgs)
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(run), "--pixel-size", "0.35", "--out", str(out), "--no-progress",
               str(tmp_path / "in"), str(tmp_path / "in" / "d.h5") + ":/shots/first"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 4 and summary["n_ok"] == 4, summary
    for rec, shape in zip(summary["images"], shapes):
        assert rec["status"] == "ok" and rec["error"] is None
        assert set(rec) >= {"file", "status", "error", "n_vortices", "vortices"}
        assert rec["n_vortices"] == len(rec["vortices"])
        for v in rec["vortices"]:
            assert set(v) == {"row", "col", "sign", "confidence"} and v["sign"] in (-1, 1)
            assert 0 <= v["row"] < shape[0] and 0 <= v["col"] < shape[1]
        with h5py.File(out / rec["files"][0]) as f:
            assert f["phase"].shape == shape and f["phase_gradient"].shape == (2,) + shape
        assert (out / rec["files"][1]).stat().st_size > 10_000
        assert abs(rec["center"]["row"] - (shape[0] - 1) / 2) < 1 and abs(rec["center"]["col"] - (shape[1] - 1) / 2) < 1
    assert summary["images"][1]["settings"]["pixel_size"] == 0.3  # from the sidecar
    assert all(len(r["flow_removed"]) == 2 for r in summary["images"])
    rc = main(["predict", "--model", str(run), "--pixel-size", "0.35", "--out", str(out), "--no-progress",
               "--keep-momentum", str(tmp_path / "in" / "a.npy")])
    assert rc == 0
    record = json.loads((out / "summary.json").read_text())["images"][0]
    assert record["flow_removed"] is None and record["settings"]["zero_momentum"] is False
    # in the lab's units (23Na at 30 Hz): the header gives them, the record converts the pixel size
    u = bj.imaging.TrapUnits(30.0, "23Na")
    rc = main(["predict", "--model", str(run), "--pixel-size-um", str(0.35 * u.length_um), "--trap-frequency-hz",
               "30", "--species", "23na", "--out", str(tmp_path / "lab"), "--no-progress",
               str(tmp_path / "in" / "a.npy")])
    assert rc == 0 and f"a⊥ = {u.length_um:.4g} µm" in capsys.readouterr().out
    record = json.loads((tmp_path / "lab" / "summary.json").read_text())["images"][0]
    assert record["settings"]["pixel_size"] == pytest.approx(0.35, rel=1e-12) and record["units"]["species"] == "23Na"


def test_bad_images_get_a_one_line_reason_and_the_others_still_run(tmp_path):
    good = lab_image((64, 64), 0.2)
    rng = np.random.default_rng(0)
    cases = {
        "ok.npy": good,
        "cube.npy": np.stack([good, good, good]),
        "zeros.npy": np.zeros((64, 64)),
        "nan.npy": np.where(np.arange(64)[:, None] == 3, np.nan, good),
        "noise.npy": 20 + 2 * rng.standard_normal((64, 64)),
        "cut.npy": lab_image((64, 64), 0.2, center=(3.0, 0.0)),
        "tiny.npy": np.ones((4, 4)),
    }
    for name, a in cases.items():
        np.save(tmp_path / name, a)
    import tifffile

    tifffile.imwrite(tmp_path / "ok.tif", good.astype(np.uint16))
    tifffile.imwrite(tmp_path / "rgb.tif", np.repeat(good.astype(np.uint8)[..., None], 3, axis=-1),
                     photometric="rgb")  # averaged to grey, as a PNG is
    tifffile.imwrite(tmp_path / "grey_alpha.tif", np.stack([good, np.full_like(good, 255)], -1).astype(np.uint16),
                     photometric="minisblack", extrasamples=["unassalpha"])
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([good, good, good]).astype(np.uint16), photometric="minisblack")
    # tifffile's default for 3 or 4 frames: planes of colour samples, not a colour picture to average
    tifffile.imwrite(tmp_path / "planes.tif", np.stack([good, good, good, good]).astype(np.uint16), photometric="rgb",
                     planarconfig="separate")
    with tifffile.TiffWriter(tmp_path / "thumb_first.tif") as w:  # a camera's preview, marked reduced: skipped
        w.write(good[::4, ::4].astype(np.uint16), photometric="minisblack", subfiletype=1)
        w.write(good.astype(np.uint16), photometric="minisblack")
    with tifffile.TiffWriter(tmp_path / "two_images.tif") as w:  # two full images: which is the lab's to say
        w.write(good.astype(np.uint16), photometric="minisblack")
        w.write(good[:32].astype(np.uint16), photometric="minisblack")
    whole = (tmp_path / "ok.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "text.npy").write_text("0 1 2\n3 4 5\n")
    extra = ["ok.tif", "rgb.tif", "grey_alpha.tif", "stack.tif", "planes.tif", "thumb_first.tif", "two_images.tif",
             "cut.tif", "empty.tif", "text.npy", "missing.npy", "x.h5"]
    specs = [str(tmp_path / n) for n in [*cases, *extra]]
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    summary = predict_files(oracle(), specs, tmp_path / "out", pixel_size=0.2, progress=False)
    status = {os.path.basename(r["file"]): (r["status"], r["error"]) for r in summary["images"]}
    for name in ("ok.tif", "rgb.tif", "grey_alpha.tif", "thumb_first.tif"):
        assert status[name] == status["ok.npy"] == ("ok", None), name
    expect = {"cube.npy": "2-D", "zeros.npy": "all zeros", "nan.npy": "NaN", "noise.npy": "no cloud",
              "cut.npy": "cut by the frame", "tiny.npy": "too small", "missing.npy": "no such file",
              "x.h5": "HDF5", "stack.tif": "holds 3 frames", "planes.tif": "holds 4 planes",
              "two_images.tif": "holds 2 frames",
              "cut.tif": "damaged or truncated", "empty.tif": "is empty", "text.npy": "not a .npy file"}
    for name, words in expect.items():
        st, err = status[name]
        assert st == "error" and words in err and "\n" not in err, (name, err)
    # a too large cloud for the model's box is named too
    with pytest.raises(ImageError, match="does not fit the model's box"):
        predict(oracle(), good, pixel_size=2.0)
    # and one smaller than any ground state of the trap (a pixel size off by orders of magnitude)
    with pytest.raises(ImageError, match=r"radius 0.0\d+ a⊥ in trap, pixel size 0.001 a⊥.*smaller than any ground"):
        predict(oracle(), good, pixel_size=1e-3)


def test_rerun_skips_finished_images_and_keeps_what_was_written(tmp_path):
    for k in range(3):
        np.save(tmp_path / f"i{k}.npy", lab_image((48, 48), 0.25, key=k))
    specs = [str(tmp_path / f"i{k}.npy") for k in range(3)]
    out = tmp_path / "out"
    predict_files(oracle(), specs[:2], out, pixel_size=0.25, progress=False)  # "interrupted" after two images
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix in (".h5", ".png")}
    assert len(first) == 4
    (out / "i1.npy.h5").unlink()  # a lost output is redone
    summary = predict_files(oracle(), specs, out, pixel_size=0.25, progress=False)
    assert summary["n_ok"] == 3 and summary["skipped"] == specs[:1]
    now = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix in (".h5", ".png")}
    assert now["i0.npy.h5"] == first["i0.npy.h5"] and now["i0.npy.png"] == first["i0.npy.png"]
    assert "i1.npy.h5" in now and "i2.npy.h5" in now
    # an image that failed is tried again: here it did not exist yet
    late = str(tmp_path / "late.npy")
    assert predict_files(oracle(), [late], out, pixel_size=0.25, progress=False)["n_error"] == 1
    np.save(late, lab_image((48, 48), 0.25, key=5))
    summary = predict_files(oracle(), [late], out, pixel_size=0.25, progress=False)
    assert next(r for r in summary["images"] if r["file"] == late)["status"] == "ok"
    (out / "late.npy.h5").unlink(), (out / "late.npy.png").unlink()
    saved = json.loads((out / "summary.json").read_text())
    saved["images"] = [r for r in saved["images"] if r["file"] != late]
    (out / "summary.json").write_text(json.dumps(saved))
    # an image run alone later does not drop the others' records
    summary = predict_files(oracle(), specs[2:], out, pixel_size=0.25, progress=False)
    assert summary["n_images"] == 3
    # other settings recompute the image
    summary = predict_files(oracle(), specs[:1], out, pixel_size=0.26, progress=False)
    assert next(r for r in summary["images"] if r["file"] == specs[0])["settings"]["pixel_size"] == 0.26
    assert (out / "i0.npy.h5").stat().st_mtime_ns != first["i0.npy.h5"]
    # so does keeping the flow
    summary = predict_files(oracle(), specs[1:2], out, pixel_size=0.25, zero_momentum=False, progress=False)
    record = next(r for r in summary["images"] if r["file"] == specs[1])
    assert record["settings"]["zero_momentum"] is False and record["flow_removed"] is None
    # so does the sense of rotation, here from the image's sidecar
    (tmp_path / "i1.npy.json").write_text(json.dumps(dict(rotation="cw")))
    summary = predict_files(oracle(), specs[1:2], out, pixel_size=0.25, progress=False)
    record = next(r for r in summary["images"] if r["file"] == specs[1])
    assert record["settings"]["rotation"] == record["rotation"] == "cw"
    assert sorted(v["sign"] for v in record["vortices"]) == sorted(-w for *_, w in VORTICES)
    # a record written before the flow was taken off (no such setting) is redone
    saved = json.loads((out / "summary.json").read_text())
    del next(r for r in saved["images"] if r["file"] == specs[2])["settings"]["zero_momentum"]
    (out / "summary.json").write_text(json.dumps(saved))
    before = (out / "i2.npy.h5").stat().st_mtime_ns
    summary = predict_files(oracle(), specs[2:], out, pixel_size=0.25, progress=False)
    assert next(r for r in summary["images"] if r["file"] == specs[2])["settings"]["zero_momentum"] is True
    assert (out / "i2.npy.h5").stat().st_mtime_ns != before
    # an image file written anew under the same name (a lab reusing its file names) is redone
    np.save(specs[2], np.roll(np.load(specs[2]), (5, -4), axis=(0, 1)))
    old_center = next(r for r in summary["images"] if r["file"] == specs[2])["center"]
    summary = predict_files(oracle(), specs[2:], out, pixel_size=0.25, progress=False)
    assert next(r for r in summary["images"] if r["file"] == specs[2])["center"] != old_center
    # so is one predicted by other weights from the same model folder (a model trained further)
    before = (out / "i2.npy.h5").stat().st_mtime_ns
    retrained = dataclasses.replace(oracle(), params={"w": np.ones(3, np.float32)})
    predict_files(retrained, specs[2:], out, pixel_size=0.25, progress=False)
    assert (out / "i2.npy.h5").stat().st_mtime_ns != before
    before = (out / "i2.npy.h5").stat().st_mtime_ns
    predict_files(retrained, specs[2:], out, pixel_size=0.25, progress=False)  # and only once
    assert (out / "i2.npy.h5").stat().st_mtime_ns == before


def test_python_api_on_a_training_run_and_a_quantized_model_folder(small_run, tmp_path):
    from bec_jax.compress.quantization import QuantConfig, save_quantized
    from bec_jax.train.trainer import load_trained

    run, _ = small_run
    img = lab_image((40, 52), 0.35)
    np.save(tmp_path / "a.npy", img)
    dense = bj.predict(run, str(tmp_path / "a.npy"), pixel_size=0.35, atom_number=2e5)
    assert dense.phase.shape == (40, 52) and dense.phase_gradient.shape == (2, 40, 52)
    assert 0.9 < dense.counts_per_atom < 1.1  # background removed: one count per atom
    # bj.predict takes every setting of deploy.predict.predict
    assert bj.predict(run, img, pixel_size=0.35, zero_momentum=False).flow_removed is None
    assert dense.flow_removed is not None
    model = load_model(run)
    assert dense.model_grid == (model.grid.n, model.grid.length) and model.ranges == ((50.0, 120.0), (0.3, 0.6))
    # a run folder copied without its dataset (to the lab's computer) predicts the same
    shutil.copytree(run, tmp_path / "lab" / "pc" / "copied")  # deeper: metrics.json's relative data path misses
    copied = load_model(tmp_path / "lab" / "pc" / "copied")
    assert copied.grid == model.grid and copied.ranges == model.ranges  # the ranges are recorded in the run
    np.testing.assert_array_equal(predict(copied, img, pixel_size=0.35, atom_number=2e5).phase, dense.phase)
    # a run from before the ranges were recorded, without its dataset: the default box
    metrics = tmp_path / "lab" / "pc" / "copied" / "metrics.json"
    metrics.write_text(json.dumps({k: v for k, v in json.loads(metrics.read_text()).items() if k != "data_ranges"}))
    assert load_model(tmp_path / "lab" / "pc" / "copied").ranges is None
    with pytest.raises(ValueError, match="pixel_size"):
        predict(model, img, pixel_size=-1.0)
    # an int8 model folder as `bec-jax quantize` writes it: its grid comes from the run named in quantize.json
    save_quantized(tmp_path / "q" / "model", load_trained(run)[0], QuantConfig.preset("per_channel"))
    with pytest.raises(ValueError, match="cannot find the training run"):
        load_model(tmp_path / "q" / "model")
    (tmp_path / "q" / "quantize.json").write_text(json.dumps(dict(run=str(run))))
    q = load_model(tmp_path / "q" / "model")
    assert q.grid == model.grid and q.target == model.target
    res = predict(q, img, pixel_size=0.35)
    assert res.phase.shape == (40, 52) and res.valid.sum() == dense.valid.sum()


def test_cli_usage_errors_exit_2_with_one_line(small_run, tmp_path, capsys):
    run, _ = small_run
    np.save(tmp_path / "a.npy", lab_image((40, 40), 0.35))
    for argv, words in ((["--pixel-size", "-1"], "pixel_size must be"), (["--tof", "nan"], "tof must be"),
                        (["--pixel-size", "1", "--psf-width", "-0.5"], "psf_width must be"),
                        (["--pixel-size", "1", "--rotation", "clockwise"], "rotation must be one of ccw, cw"),
                        (["--pixel-size-um", "2.5", "--tof-ms", "10"], "pixel_size_um, tof_ms (lab units) need the "
                                                                       "trap's units"),
                        (["--pixel-size-um", "2.5", "--trap-frequency-hz", "20", "--species", "Rb"],
                         "species must be one of"),
                        (["--pixel-size", "0.3", "--pixel-size-um", "2.5"], "both given")):
        assert main(["predict", "--model", str(run), "--out", str(tmp_path / "o"), str(tmp_path / "a.npy"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
    assert main(["predict", "--model", str(tmp_path / "nope"), "--pixel-size", "1", "--out", str(tmp_path / "o"),
                 str(tmp_path / "a.npy")]) == 2
    assert "no model folder" in capsys.readouterr().err
    assert main(["predict", "--model", str(run), "--pixel-size", "1", "--out", str(tmp_path / "o"),
                 str(tmp_path / "*.tif")]) == 2
    capsys.readouterr()
    # no pixel size, neither given nor in a sidecar: before any work
    assert main(["predict", "--model", str(run), "--out", str(tmp_path / "o"), str(tmp_path / "a.npy")]) == 2
    assert "no pixel size" in capsys.readouterr().err
    # a folder that is not a model: refused before the output folder is made
    (tmp_path / "notamodel").mkdir()
    assert main(["predict", "--model", str(tmp_path / "notamodel"), "--pixel-size", "1", "--out",
                 str(tmp_path / "o2"), str(tmp_path / "a.npy")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not (tmp_path / "o2").exists()
    assert not (tmp_path / "o").exists()


def test_cli_names_each_image_that_failed_on_stderr_and_exits_3(small_run, tmp_path, capsys):
    run, _ = small_run
    np.save(tmp_path / "a.npy", lab_image((40, 40), 0.35))
    np.save(tmp_path / "zeros.npy", np.zeros((40, 40)))
    argv = ["predict", "--model", str(run), "--pixel-size", "0.35", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*argv, str(tmp_path / "a.npy"), str(tmp_path / "zeros.npy"), str(tmp_path / "gone.npy")]) == 3
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["n_ok"] == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "zeros.npy: " in lines[0] and "all zeros" in lines[0] and "no such file" in lines[1]
    assert lines[0].count("zeros.npy") == 1, lines  # named once
    assert (tmp_path / "o" / "a.npy.h5").is_file()
    # the good image alone: exit 0, although the folder's summary keeps the others' error records
    assert main([*argv, str(tmp_path / "a.npy")]) == 0
    out, err = capsys.readouterr()
    counts = json.loads(out.strip().splitlines()[-1])
    assert err == "" and (counts["n_images"], counts["n_ok"], counts["n_error"], counts["n_records"]) == (1, 1, 0, 3)
    assert counts["n_skipped"] == 1 and "1 of the 1 image(s) were done before" in out


@pytest.mark.slow  # a ground state and one inversion at 48²: ~40 s on 2 cores
def test_estimate_parameters_recovers_g_and_omega_of_a_noisy_blurred_image(tmp_path):
    """(g, Ω) of a camera image of a true ground state (3 vortices), with a model that predicts its phase
    exactly: the estimate through the solver, with the imaging model in the loss, lands within a few %."""
    g, omega = 100.0, 0.65
    res = bj.ground_state(GRID, g, omega, key=jax.random.key(1), n_starts=2)
    assert bool(res.converged) and int(res.vortices) == 3
    psi = res.psi
    y = phase_differences(psi)[None]
    model = LoadedModel(lambda p, s, x: y, None, None, GRID, "phase_diff", 1e-3, 1e-9, "oracle",
                        ((30.0, 270.0), (0.4, 0.8)))
    params = im.ImagingParams(pixel_size=0.2, psf_width=0.3, atom_number=1e5, background=10.0, read_noise=3.0,
                              fringe_amplitude=0.0)
    img = np.asarray(im.render(GRID, psi, params, im.ImagingConfig(rows=64, cols=64, n_fringes=0),
                               key=jax.random.key(0)))
    np.save(tmp_path / "img.npy", img)
    spec, out = str(tmp_path / "img.npy"), tmp_path / "out"
    run = lambda: predict_files(model, [spec], out, pixel_size=0.2, psf_width=0.3, estimate=True, progress=False)
    p = run()["images"][0]["parameters"]
    assert p["n_vortices"] == 3 and p["omega_identifiable"] and not p["at_box_edge"] and not p["touches_edge"], p
    assert abs(p["g"] / g - 1) < 0.05 and abs(p["omega"] / omega - 1) < 0.05, p
    # a record made before one of its fields existed is redone on a rerun, others are kept
    summary = json.loads((out / "summary.json").read_text())
    del summary["images"][0]["parameters"]["touches_edge"]
    (out / "summary.json").write_text(json.dumps(summary))
    assert "touches_edge" in run()["images"][0]["parameters"]
    mtime = (out / "img.npy.h5").stat().st_mtime_ns
    assert "touches_edge" in run()["images"][0]["parameters"] and (out / "img.npy.h5").stat().st_mtime_ns == mtime
    # the same image of a trap turning the other way (the conjugate state, the same density): Ω < 0
    r = predict_files(model, [spec], tmp_path / "cw", pixel_size=0.2, psf_width=0.3, rotation="cw", estimate=True,
                      progress=False)["images"][0]
    assert r["rotation"] == "cw" and all(v["sign"] == -1 for v in r["vortices"])
    q = r["parameters"]
    assert q["n_vortices"] == 3 and abs(q["g"] / g - 1) < 0.05 and abs(q["omega"] / -omega - 1) < 0.05, q


def test_no_ground_state_of_the_trap_is_smaller_than_the_smallest_cloud_predict_takes():
    """The non-interacting ground state, density ∝ exp(−r²) (a⊥), is the narrowest of the trap: interactions and
    rotation widen it. Its Thomas–Fermi fit (the one predict makes) gives R ≈ 1.46 a⊥ at any pixel size, above the
    MIN_TF_RADIUS below which predict names the pixel size instead of predicting."""
    from bec_jax.deploy.predict import MIN_TF_RADIUS, find_cloud

    for pixel in (0.1, 0.2, 0.3):
        n = int(14 / pixel)  # ±7 a⊥: the whole cloud in the frame
        c = (n - 1) / 2
        r2 = ((np.arange(n)[:, None] - c) ** 2 + (np.arange(n)[None, :] - c) ** 2) * pixel**2
        image = 1000 * np.exp(-r2) + 20 + np.random.default_rng(0).normal(0, 3, r2.shape)
        assert find_cloud(image)["radius"] * pixel == pytest.approx(1.46, abs=0.1)
    assert MIN_TF_RADIUS < 1.3
