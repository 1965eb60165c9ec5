"""From a lab image to the phase and the vortices: ``predict`` and the ``bec-jax predict`` driver.

One image (a 2-D array of counts, rows = y, columns = x) goes through:

1. Cloud: background = median of the image's border (4 % of each side, at
   least 2 px), noise = 1.4826·MAD there; the cloud is fitted with the 2-D
   Thomas–Fermi profile b + A·max(0, 1 − r²/R²) (least squares, started from
   the moments of the smoothed image). Refused: wrong number of dimensions,
   non-finite values, all zeros, a peak below 5 noise levels or R < 2 px
   ("no cloud"), a fitted disc reaching beyond the frame ("cut by the frame").
2. Model frame: the image's pixels are mapped to the in-trap coordinates the
   model was trained on, u = (pixel − centre)·P/λ, with P the object-plane
   pixel size (a⊥, at imaging) and λ = √(1 + t²) the time-of-flight dilation
   (``bec_jax.imaging.expansion``; the rotation Ω·arctan t is a rigid rotation
   of a rotation-symmetric problem and is not undone). The background-free
   counts, zeroed beyond 1.2 R (the model was trained on an empty background),
   are area-resampled exactly onto the model's grid and normalised to one atom:
   input log(n + eps) (``imaging.frame``, the same functions that make the
   inputs of training under the imaging model, ``imaging.training``).
3. Prediction, less the uniform flow that would give the cloud a momentum
   (``bec_jax.gpe.phase_field.uniform_flow``, weighted by the density inside the
   fitted disc: a cloud at rest has none, and a model's error in it costs
   fidelity, not MSE; off with ``zero_momentum=False``), then the phase by the evaluation's reconstruction
   (``bec_jax.gpe.phase_field.reconstruct_phase``: vortex detection, singular
   phase, weighted least squares), on the model grid.
4. Back to the image: the phase gradient ∂θ/∂x, ∂θ/∂y (inverse a⊥ of the
   in-trap state, in in-trap coordinates) and the phase are interpolated
   (bilinear; the phase through e^{iθ}) onto the image's pixel centres; NaN
   where the model sees no atoms. Vortex positions, placed inside their
   plaquette by ``phase_field.refine_vortices`` (finer than the model's grid),
   are given in the image's 0-based pixel coordinates (pixel centres at
   integers, row = first axis).

Vortex confidence: the circulation of the predicted field around the 4×4-pixel
loop (3×3 plaquettes of the model grid) centred on the vortex, in units of
2π·sign, clipped to [0, 1]: 1 for a clean isolated vortex.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import math
import numbers
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bec_jax.artifacts import CorruptArtifact, atomic_write, atomic_write_text, first_line, short_repr
from bec_jax.imaging.frame import CLOUD_MARGIN  # noqa: F401  (the disc kept around the fitted cloud)

__all__ = ["ImageSettings", "estimate_parameters", "Vortex", "Prediction", "LoadedModel", "ImageError", "load_model",
           "load_image", "find_cloud", "predict", "expand_inputs", "predict_files", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".npy", ".tif", ".tiff", ".png")
#: ``ImageSettings.rotation``: counter-clockwise (Ω > 0) or clockwise in the image's (x = col, y = row)
ROTATIONS = ("ccw", "cw")
H5_SUFFIXES = (".h5", ".hdf5")


class ImageError(ValueError):
    """An image that cannot be used (one-line reason); other images still run."""


@dataclasses.dataclass(frozen=True)
class Vortex:
    """A detected vortex: row, col in the image's 0-based pixel coordinates, sign ±1
    (+1: phase increases counter-clockwise in (x = col, y = row)), confidence in [0, 1]."""

    row: float
    col: float
    sign: int
    confidence: float


@dataclasses.dataclass(frozen=True, eq=False)
class Prediction:
    """Result of ``predict`` for one image of shape (H, W).

    phase_gradient: float32 (2, H, W), ∂θ/∂x (along columns), ∂θ/∂y (along rows) of the
      in-trap state, inverse oscillator lengths; NaN where the model sees no atoms.
    phase: float32 (H, W), radians in (−π, π], NaN there too. valid: bool (H, W).
    vortices: tuple of ``Vortex``. center: (row, col) of the fitted cloud (pixels).
    tf_radius: fitted Thomas–Fermi radius (pixels). background, noise: counts per pixel.
    expansion_factor: λ = √(1 + t²). pixel_size, tof, atom_number: as used.
    counts_per_atom: total cloud counts / atom_number (None without atom_number).
    model_grid: (n, length) of the model's input grid (length in a⊥, in trap).
    parameters: the (g, Ω) estimate (``estimate_parameters``), or None when not asked for.
    flow_removed: (v_x, v_y), the uniform flow taken off the prediction (a⊥ω⊥ of the in-trap
      state; ``zero_momentum``), or None when it was kept.
    rotation: the trap's sense of rotation the phase was given ("ccw" or "cw", ``ImageSettings``).
    """

    phase_gradient: np.ndarray
    phase: np.ndarray
    valid: np.ndarray
    vortices: tuple
    center: tuple
    tf_radius: float
    background: float
    noise: float
    expansion_factor: float
    pixel_size: float
    tof: float
    atom_number: float | None
    counts_per_atom: float | None
    model_grid: tuple
    parameters: dict | None = None
    flow_removed: tuple | None = None
    rotation: str = "ccw"

    @property
    def n_vortices(self) -> int:
        return len(self.vortices)

    def summary(self) -> dict:
        """JSON-able record (no arrays): the per-image entry of summary.json."""
        return dict(n_vortices=self.n_vortices, vortices=[dataclasses.asdict(v) for v in self.vortices],
                    center=dict(row=self.center[0], col=self.center[1]), tf_radius_pixels=self.tf_radius,
                    background=self.background, noise=self.noise, expansion_factor=self.expansion_factor,
                    pixel_size=self.pixel_size, tof=self.tof, atom_number=self.atom_number,
                    counts_per_atom=self.counts_per_atom, parameters=self.parameters,
                    flow_removed=None if self.flow_removed is None else list(self.flow_removed),
                    rotation=self.rotation)


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
    """A trained model ready to predict: the jitted forward pass with its weights, the grid
    it was trained on (``bec_jax.Grid``), its target kind and mask threshold, the folder."""

    forward: object
    params: object
    batch_stats: object
    grid: object
    target: str
    mask_threshold: float
    eps: float
    source: str
    ranges: tuple | None = None  # ((g_lo, g_hi), (Ω_lo, Ω_hi)) of the training data, when recorded

    def __call__(self, x):
        """Prediction (B, n, n, 2) from inputs log(n + eps), float32 (B, n, n, 1)."""
        return self.forward(self.params, self.batch_stats, x)


# ------------------------------------------------------------------ model

def _training_run(folder: Path, meta: dict) -> Path:
    """The training run a saved model folder came from (its grid and target live there)."""
    candidates = []
    if folder.parent.name == "models":  # a pipeline run: models/<variant>, train/ beside models/
        candidates.append(folder.parent.parent / "train")
    for name in ("prune.json", "quantize.json", "shrink.json"):  # bec-jax prune/quantize/shrink output
        f = folder.parent / name
        if f.is_file():
            try:
                run = json.loads(f.read_text()).get("run")
            except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                run = None
            if isinstance(run, str):
                candidates += [Path(run), folder.parent / run]
    extra = meta.get("extra") or {}
    if isinstance(extra.get("run"), str):
        candidates += [Path(extra["run"]), folder / extra["run"]]
    for c in candidates:
        if (c / "checkpoints").is_dir():
            return c
    raise ValueError(f"cannot find the training run of model folder {str(folder)!r} (its grid and target are "
                     "stored there): expected a pipeline run (models/<name> beside train/) or a "
                     "prune/quantize/shrink output (prune.json etc. naming the run)")


def load_model(path) -> LoadedModel:
    """Load a model folder written by ``bec-jax train`` (a run folder with checkpoints/, best
    checkpoint), ``bec-jax pipeline`` (the run folder, or one of its models/<variant>) or
    ``bec-jax prune``/``quantize``/``shrink`` (their model/ folder: dense, pruned or int8,
    loaded dequantized). ValueError naming the folder when it is none of these."""
    from flax import nnx

    from bec_jax.data.storage import load_grid
    from bec_jax.train.checkpoint import read_run_metadata
    from bec_jax.train.core import make_predict
    from bec_jax.train.trainer import load_trained

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"no model folder at {str(path)!r}")
    if (path / "train" / "checkpoints").is_dir() and not (path / "checkpoints").is_dir():
        path = path / "train"  # a pipeline run folder: its dense model
    if (path / "checkpoints").is_dir():
        run = path
        model, _ = load_trained(run, "best")
    elif (path / "quantized.json").is_file():
        from bec_jax.compress.quantization import load_quantized

        model, meta = load_quantized(path)
        run = _training_run(path, meta)
    else:
        raise ValueError(f"{str(path)!r} is not a model folder (expected checkpoints/ of a training run or "
                         "quantized.json of a saved model)")
    meta = read_run_metadata(run / "checkpoints")["run"]
    train = meta["train"]
    grid = load_grid(meta["data"])  # the training data's grid, recorded in the run: predicting needs no dataset
    if grid.n != model.config.input_size:
        raise ValueError(f"the model's input size {model.config.input_size} differs from its dataset's grid "
                         f"n={grid.n} ({str(run)!r})")
    model.eval()
    gd, params, stats = nnx.split(model, nnx.Param, ...)
    return LoadedModel(make_predict(gd), params, stats, grid, train.get("target", "phase_diff"),
                       float(train.get("mask_threshold", 1e-3)), 1e-9, str(path), _training_ranges(run))


def _training_ranges(run: Path) -> tuple | None:
    """((g_lo, g_hi), (Ω_lo, Ω_hi)) of a run's training data, the estimate's box: from its metrics.json, or
    (runs that predate it there) from the dataset when it is at hand; None otherwise."""
    from bec_jax.data.storage import read_h5
    from bec_jax.train.trainer import data_ranges, run_data_path

    try:
        data = json.loads((run / "metrics.json").read_text()).get("data_ranges")
        if data is None:
            data = data_ranges(read_h5(run_data_path(run), psi=False)[1])
        return tuple(map(float, data["g_range"])), tuple(map(float, data["omega_range"]))
    except (KeyError, TypeError, ValueError, OSError, AttributeError):
        return None


# ------------------------------------------------------------------ images

def load_image(spec: str) -> np.ndarray:
    """The 2-D float64 array of an image spec: FILE.npy, FILE.tif/.tiff, FILE.png or FILE.h5:/dataset.

    Colour images (PNG, RGB TIFF) are averaged over their colour channels (alpha dropped).
    ImageError (one line) for a missing, empty, damaged or multi-frame file.
    """
    file, dataset = split_spec(spec)
    p = Path(file)
    if not p.is_file():
        raise ImageError(f"no such file {file!r}")
    if p.stat().st_size == 0:
        raise ImageError(f"{file!r} is empty (0 bytes)")
    suffix = p.suffix.lower()
    try:
        if suffix in H5_SUFFIXES:
            import h5py

            if dataset is None:
                raise ImageError(f"{file!r} is HDF5: name the dataset as {file}:/path")
            with h5py.File(p, "r") as f:
                if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                    raise ImageError(f"{file!r} has no dataset {dataset!r}")
                a = f[dataset][()]
        elif suffix == ".npy":
            with open(p, "rb") as f:
                if f.read(6) != b"\x93NUMPY":
                    raise ImageError(f"{file!r} is not a .npy file (no NumPy header)")
            a = np.load(p, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            a = _read_tiff(p)
        elif suffix == ".png":
            import matplotlib.image

            a = _grey(matplotlib.image.imread(p))
        else:
            raise ImageError(f"{file!r}: unsupported format {suffix!r} (use {', '.join(IMAGE_SUFFIXES)} or "
                             "file.h5:/dataset)")
    except ImageError:
        raise
    except Exception as e:  # damaged files of any format: one line naming the file
        raise ImageError(f"{file!r} cannot be read, damaged or truncated? ({type(e).__name__}: "
                         f"{first_line(e, 200)})") from None
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise ImageError(f"{spec!r} holds {a.dtype} values, not real numbers")
    return a.astype(np.float64)


def _grey(a):
    """A colour image (H, W, 3 or 4) averaged over its colour channels, grey + alpha (H, W, 2) its grey (alpha
    dropped); others as they are."""
    if a.ndim == 3 and a.shape[-1] in (2, 3, 4):
        return a[..., 0] if a.shape[-1] == 2 else a[..., :3].mean(axis=-1)
    return a


def _read_tiff(p: Path):
    """The one image of a TIFF file (tifffile): a file of several frames (a stack, pages, series) is refused,
    since which frame holds the atoms is the lab's to say, and so are colour samples stored as planes (3 or 4
    frames written as one image); reduced-resolution images (TIFF NewSubfileType bit 0: a camera's thumbnail or
    preview) are skipped; interleaved colour samples are averaged to grey, as a PNG's are."""
    import tifffile

    with tifffile.TiffFile(p) as tif:
        full = [s for s in tif.series if not s.keyframe.is_reduced] or tif.series
        series = full[0]
        frames = sum(math.prod(k for k, ax in zip(s.shape, s.axes) if ax not in "YXS") for s in full)
        if frames > 1:
            raise ImageError(f"{str(p)!r} holds {frames} frames: save the absorption image (or each frame) "
                             "as its own file")
        if "S" in series.axes and series.axes.index("S") < series.axes.index("Y"):
            # samples stored as planes: what tifffile writes for a (3 or 4, rows, cols) array by default, a stack of
            # frames (atoms, probe, dark) far more often than a colour picture
            raise ImageError(f"{str(p)!r} holds {series.shape[series.axes.index('S')]} planes stored as colour "
                             "samples, likely a stack of frames: save the absorption image (or each frame) as its "
                             "own file")
        a = series.asarray()
    return _grey(np.moveaxis(a, series.axes.index("S"), -1)) if "S" in series.axes else a


def split_spec(spec: str) -> tuple[str, str | None]:
    """"file.h5:/path" → ("file.h5", "/path"); anything else → (spec, None)."""
    m = re.match(r"^(.*\.(?:h5|hdf5)):(/.*)$", str(spec), flags=re.IGNORECASE)
    return (m.group(1), m.group(2)) if m else (str(spec), None)


def expand_inputs(specs) -> list[str]:
    """Image specs from command-line arguments: files, file.h5:/path, folders (their image
    files, sorted) and globs (sorted matches). Order kept, duplicates dropped."""
    out = []
    for s in specs:
        file, dataset = split_spec(s)
        if dataset is None and Path(s).is_dir():
            out += sorted(str(p) for p in Path(s).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif dataset is None and any(c in s for c in "*?[") and not Path(s).exists():
            out += sorted(m for m in glob.glob(s) if Path(m).suffix.lower() in IMAGE_SUFFIXES + H5_SUFFIXES)
        else:
            out.append(s)
    seen, unique = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    return unique


# ------------------------------------------------------------------ cloud

def _tf(params, rr, cc):
    r0, c0, radius, amp, bg = params
    return bg + amp * np.maximum(0.0, 1.0 - ((rr - r0) ** 2 + (cc - c0) ** 2) / radius**2)


def find_cloud(image: np.ndarray) -> dict:
    """Background, noise and the Thomas–Fermi fit of the cloud in ONE image (H, W).

    Returns {"row", "col", "radius" (pixels), "amplitude", "background", "noise"}
    (counts per pixel). ImageError for an image without a usable cloud (module doc).
    """
    from scipy.ndimage import gaussian_filter
    from scipy.optimize import least_squares

    h, w = image.shape
    b = max(2, int(round(0.04 * min(h, w))))
    border = np.concatenate([image[:b].ravel(), image[-b:].ravel(), image[b:-b, :b].ravel(),
                             image[b:-b, -b:].ravel()])
    bg = float(np.median(border))
    noise = float(1.4826 * np.median(np.abs(border - bg)))
    smooth = gaussian_filter(image - bg, 1.0)
    peak = float(smooth.max())
    if peak <= 0 or peak < 5 * noise / 2.0:  # the 1-px blur divides white noise by ~2√π ≈ 3.5
        raise ImageError(f"no cloud found: peak {peak:.3g} counts above the background {bg:.3g} is below "
                         f"5 noise levels ({noise:.3g})")
    # large images are fitted binned f×f (≤ 256² residuals); a bin's centre is at k·f + (f − 1)/2
    f = max(1, math.ceil(max(h, w) / 256))
    hb, wb = h // f, w // f
    binned = image[: hb * f, : wb * f].reshape(hb, f, wb, f).mean(axis=(1, 3))
    sm = smooth[: hb * f, : wb * f].reshape(hb, f, wb, f).mean(axis=(1, 3))
    rr, cc = np.mgrid[0:hb, 0:wb].astype(np.float64)
    weight = np.where(sm > 0.2 * peak, sm, 0.0)
    m = weight.sum()
    if not m > 0:
        raise ImageError(f"no cloud found: no extended signal above the background {bg:.3g}")
    r0, c0 = float((weight * rr).sum() / m), float((weight * cc).sum() / m)
    radius0 = math.sqrt(max(3.0 * float((weight * ((rr - r0) ** 2 + (cc - c0) ** 2)).sum() / m), 1.0))
    fit = least_squares(lambda p: (_tf(p, rr, cc) - binned).ravel(), [r0, c0, radius0, peak, bg],
                        bounds=([-hb, -wb, 0.5, 0.0, -np.inf], [2 * hb, 2 * wb, 4.0 * max(hb, wb), np.inf, np.inf]),
                        x_scale="jac")
    r0, c0, radius, amp, bg_fit = (float(v) for v in fit.x)
    r0, c0, radius = r0 * f + 0.5 * (f - 1), c0 * f + 0.5 * (f - 1), radius * f
    if radius < 2.0 or amp < 5 * noise / math.sqrt(max(math.pi * radius**2, 1.0)) or amp <= 0:
        raise ImageError(f"no cloud found: the Thomas-Fermi fit gives radius {radius:.2g} px, amplitude {amp:.3g}")
    if r0 - radius < -0.5 or c0 - radius < -0.5 or r0 + radius > h - 0.5 or c0 + radius > w - 0.5:
        raise ImageError(f"cloud cut by the frame: Thomas-Fermi disc of radius {radius:.1f} px at (row {r0:.1f}, "
                         f"col {c0:.1f}) reaches beyond the {h}x{w} image")
    return dict(row=r0, col=c0, radius=radius, amplitude=amp, background=bg_fit, noise=noise)


def _check_image(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim > 2 and np.squeeze(a).ndim == 2:  # (1, H, W) or (H, W, 1)
        a = np.squeeze(a)
    if a.ndim != 2:
        raise ImageError(f"{name}: expected a 2-D image, got shape {a.shape}")
    if min(a.shape) < 8:
        raise ImageError(f"{name}: image {a.shape[0]}x{a.shape[1]} is too small (at least 8x8 pixels)")
    if not np.all(np.isfinite(a)):
        bad = int(np.sum(~np.isfinite(a)))
        raise ImageError(f"{name}: {bad} {'pixel is' if bad == 1 else 'pixels are'} NaN or infinite")
    if not np.any(a != 0):
        raise ImageError(f"{name}: the image is all zeros")
    return a


def _finite(v) -> bool:
    """math.isfinite, False for an int too large for a float (a sidecar's JSON may hold one)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


#: the settings in lab units: (the trap-unit field each gives, its kind)
LAB_FIELDS = {"pixel_size_um": ("pixel_size", "length"), "tof_ms": ("tof", "time"),
              "psf_width_um": ("psf_width", "length")}


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """How the images were taken (``bec-jax predict``; a sidecar IMAGE.json overrides them per image).

    pixel_size: object-plane pixel size at the moment of imaging, in trap oscillator lengths a⊥ (> 0;
      None: pixel_size_um or every image's sidecar gives it).
    tof: time of flight between trap release and imaging, in units of 1/ω⊥ (>= 0; None: 0, or tof_ms);
      predict undoes the expansion.
    atom_number: atoms in the cloud (> 0; None: unknown). Only reported, as counts per atom.
    psf_width: σ of the imaging system's Gaussian point-spread function in the object plane, a⊥
      (>= 0; 0: below a pixel; None: 0, or psf_width_um). Only used by the (g, Ω) estimate, whose loss
      images the model's state with it.
    rotation: "ccw" or "cw", the sense of the trap's rotation in the image's frame (x = col, y = row):
      counter-clockwise (Ω > 0, the training data's) or clockwise. A density cannot tell them apart (the
      state of −Ω is the complex conjugate of that of Ω), so the model predicts the "ccw" phase and "cw"
      negates it: phase, gradient and vortex signs. A viewer that puts row 0 at the top shows this
      frame mirrored: there "ccw" turns clockwise.
    pixel_size_um: pixel_size in µm, in its place (needs trap_frequency_hz and species).
    tof_ms: tof in ms, in its place (needs trap_frequency_hz and species).
    psf_width_um: psf_width in µm, in its place (needs trap_frequency_hz and species).
    trap_frequency_hz: the radial trap frequency ω⊥/2π (Hz, > 0).
    species: the atom: 6Li, 7Li, 23Na, 39K, 40K, 41K, 52Cr, 85Rb, 87Rb, 133Cs, 164Dy, 168Er, 174Yb, or its
      mass in u (1 to 1000). With trap_frequency_hz it sets the units (imaging.units.TrapUnits) that each
      record also gives: a⊥ in µm, 1/ω⊥ in ms, and a⊥ω⊥ in mm/s, the superfluid velocity of a phase gradient
      of 1/a⊥. A sidecar's trap applies to the lab-unit values of the command line too.
    """

    pixel_size: float | None = None
    tof: float | None = None
    atom_number: float | None = None
    psf_width: float | None = None
    rotation: str = "ccw"
    pixel_size_um: float | None = None
    tof_ms: float | None = None
    psf_width_um: float | None = None
    trap_frequency_hz: float | None = None
    species: str | None = None

    def __post_init__(self):
        _check_rotation(self.rotation)
        for name, lo in (("pixel_size", 0.0), ("tof", None), ("atom_number", 0.0), ("psf_width", None),
                         ("pixel_size_um", 0.0), ("tof_ms", None), ("psf_width_um", None),
                         ("trap_frequency_hz", 0.0)):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not _finite(v) \
                    or (lo is not None and v <= lo) or (lo is None and v < 0):
                raise ImageError(f"{name} must be a finite number {'> 0' if lo is not None else '>= 0'}, got "
                                 f"{short_repr(v)}")
        if self.species is not None:
            from bec_jax.imaging.units import atomic_mass

            try:
                if self.trap_frequency_hz is None:
                    atomic_mass(self.species)
                else:
                    self.units  # noqa: B018  (TrapUnits checks the frequency, the species and their units)
            except ValueError as e:
                raise ImageError(str(e)) from None
        for lab, (trap, _) in LAB_FIELDS.items():
            if getattr(self, lab) is not None and getattr(self, trap) is not None:
                flags = f"--{trap.replace('_', '-')}, --{lab.replace('_', '-')}"
                raise ImageError(f"{trap} and {lab} both given ({flags}, or a sidecar's): give one of them")

    @property
    def units(self):
        """The trap's ``imaging.units.TrapUnits``, or None without trap_frequency_hz and species."""
        from bec_jax.imaging.units import TrapUnits

        if self.trap_frequency_hz is None or self.species is None:
            return None
        return TrapUnits(self.trap_frequency_hz, self.species)

    def updated(self, values: dict) -> ImageSettings:
        """These settings with ``values`` (a sidecar's, ImageSettings fields; None: not given) in place; a
        value in either unit replaces both fields of its quantity."""
        values = {k: v for k, v in values.items() if v is not None}
        both = {f: None for lab, (trap, _) in LAB_FIELDS.items() if {lab, trap} & set(values) for f in (lab, trap)}
        return dataclasses.replace(self, **both | values)

    def in_trap_units(self) -> ImageSettings:
        """These settings with the lab-unit fields converted into pixel_size, tof and psf_width, and tof and
        psf_width 0 where neither unit gives them. ImageError for lab units without the trap's, or half a trap
        (a frequency without a species, or the reverse)."""
        if (self.trap_frequency_hz is None) != (self.species is None):
            given, missing = ("species", "trap_frequency_hz") if self.species is not None \
                else ("trap_frequency_hz", "species")
            raise ImageError(f"{given} without {missing}: the trap's units need both (--trap-frequency-hz, "
                             "--species)")
        given = {lab: getattr(self, lab) for lab in LAB_FIELDS if getattr(self, lab) is not None}
        if given and self.units is None:
            raise ImageError(f"{', '.join(given)} (lab units) need the trap's units: give trap_frequency_hz and "
                             "species (--trap-frequency-hz, --species)")
        scale = dict(length=self.units.length_um, time=self.units.time_ms) if given else {}
        return dataclasses.replace(self, **dict(tof=self.tof or 0.0, psf_width=self.psf_width or 0.0)
                                   | {lab: None for lab in given}
                                   | {LAB_FIELDS[lab][0]: v / scale[LAB_FIELDS[lab][1]] for lab, v in given.items()})


#: the fields of ``ImageSettings``: what a sidecar may hold
SETTING_FIELDS = tuple(f.name for f in dataclasses.fields(ImageSettings))


def _check_rotation(rotation) -> None:
    if rotation not in ROTATIONS:
        raise ImageError(f"rotation must be one of {', '.join(ROTATIONS)}, got {short_repr(rotation)}")


def _check_settings(pixel_size, tof, atom_number, psf_width=0.0, rotation="ccw"):
    if pixel_size is None:
        raise ImageError("no pixel size: give --pixel-size (or --pixel-size-um) or a sidecar IMAGE.json with "
                         "pixel_size")
    ImageSettings(pixel_size, tof, atom_number, psf_width, rotation)


# ------------------------------------------------------------------ predict

def _predict_fields(model: LoadedModel, n, disc_radius: float | None, rotation: str = "ccw"):
    """(difference field (n, n, 2), velocity (n, n, 2), valid, θ, winding, removed flow (2,), a⊥ω⊥) on the
    model grid, as numpy. disc_radius: the fitted cloud's radius (a⊥, in trap, centred on the grid): the flow
    is weighted by the density inside it (beyond it the image is clipped camera noise, where the model was
    never trained); None: the flow is kept. rotation: "cw" conjugates the state (``ImageSettings``)."""
    from bec_jax.imaging.frame import model_input

    n = jnp.asarray(n, jnp.float32)
    pred = model(model_input(n, model.eps)[None, ..., None])[0]
    if rotation == "cw":  # ψ(−Ω) = ψ(Ω)*, the same density: θ -> −θ, and every field after it follows
        pred = -pred
    weight = None
    if disc_radius is not None:
        X, Y = model.grid.mesh()
        weight = jnp.where(X**2 + Y**2 <= disc_radius**2, n, 0.0)
    out = _fields(model.grid, model.target, model.mask_threshold, pred, n, weight)
    return tuple(np.asarray(a) for a in out)


@functools.partial(jax.jit, static_argnames=("grid", "target", "mask_threshold"))
def _fields(grid, target: str, mask_threshold: float, pred, n, weight):
    """The post-processing of one prediction pred (n, n, 2) of input density n (n, n) (``_predict_fields``);
    weight (n, n): the density that weighs the uniform flow taken off, or None to keep it."""
    from bec_jax.gpe import phase_field as pf
    from bec_jax.gpe.observables import vortex_mask

    flow = jnp.zeros(2, pred.dtype) if weight is None else pf.uniform_flow(pred, weight, target, grid.dx)
    # the flow as a velocity; a uniform difference c is the velocity c/dx
    kept = pred - (flow * grid.dx if target == "phase_diff" else flow)
    d, v = pf.to_differences(kept, target, grid.dx), pf.to_velocity(kept, target, grid.dx)
    valid = n >= mask_threshold * jnp.max(n)
    theta, w = pf.reconstruct_phase(d, valid, vortex_mask(grid, jnp.sqrt(n)))
    return d, v, valid, theta, w, flow


def _confidence(d, winding) -> np.ndarray:
    """Per-plaquette confidence (n-1, n-1) (module doc)."""
    from bec_jax.gpe.phase_field import plaquette_circulation

    c = np.pad(np.asarray(plaquette_circulation(d)), 1)
    block = sum(c[1 + dy : c.shape[0] - 1 + dy, 1 + dx : c.shape[1] - 1 + dx]
                for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return np.clip(np.sign(winding) * block / (2 * np.pi), 0.0, 1.0)


#: a⊥: no ground state of the trap is smaller (interactions and rotation widen it); the Thomas–Fermi fit
#: (``find_cloud``) of the non-interacting Gaussian exp(−r²) gives 1.46
MIN_TF_RADIUS = 1.0

#: the keys of an estimate's record (``estimate_parameters``); a record missing one is redone on a rerun
PARAMETER_KEYS = ("g", "omega", "loss", "n_vortices", "omega_identifiable", "initial_guess", "box", "at_box_edge",
                  "touches_edge")


def estimate_parameters(model: LoadedModel, density, winding, pixel, lam: float, psf_width: float = 0.0,
                        config=None, rotation: str = "ccw") -> dict:
    """(g, Ω) of the state behind one image, by ``inverse.invert_with_solver`` with the imaging model
    inside its loss.

    density: the image's atom density on the model grid (n, n), normalised; winding: the predicted
    vortex winding map (n−1, n−1), whose cores seed the ground state (the network sees cores a noisy
    or blurred density hides); pixel: in-trap side of one image pixel (P/λ, a⊥); lam: the flight's
    dilation; psf_width: the object-plane Gaussian PSF σ (a⊥). The loss compares rotation-invariant
    features of the image with those of the model's ground state seen through
    ``imaging.observation_transfer``. rotation: the trap's sense of rotation (``ImageSettings``); "cw" is
    reported with Ω < 0. config: a ``SolverInversionConfig``
    (default: its defaults in the box of the model's training data). Returns a dict of ``PARAMETER_KEYS``:
    omega_identifiable: ≥ 2 vortices (with 0 or 1 the density does not depend on Ω, which stays near its
    first guess); at_box_edge: the estimate is within 1 % of the parameter box's edge; touches_edge: the
    image's cloud or the state fitted to it reaches the model grid's edge, so the estimate is biased.
    """
    from bec_jax.gpe.phase_field import positions_from_winding
    from bec_jax.imaging.psf import observation_transfer
    from bec_jax.inverse import ParamBox, SolverInversionConfig, invert_with_solver

    grid = model.grid
    if config is None:
        config = SolverInversionConfig(box=ParamBox(*model.ranges) if model.ranges else ParamBox())
    rows = positions_from_winding(grid, winding)
    _check_rotation(rotation)
    # given, as a density does not tell it: the state of −Ω is the conjugate of that of Ω, with the same density
    # and cores, so the state of |Ω| is fitted and Ω takes the sign
    sign = -1.0 if rotation == "cw" else 1.0
    n = np.maximum(np.asarray(density, np.float64), 0.0)
    cores = np.repeat(rows[:, :2], np.abs(rows[:, 2]).astype(int), axis=0)
    tf = observation_transfer(grid, "gaussian" if psf_width > 0 else "none", psf_width, pixel, lam)
    # no warning: the record says so (touches_edge) and `bec-jax predict` names the image
    r = invert_with_solver(grid, n, config, vortices=[cores], transfer=tf, warn=False)
    g, om = (float(v) for v in np.asarray(r.params)[0])
    box = config.box
    edge = bool(np.any(np.abs(np.asarray([g, om]) - box.lo) < 0.01 * (box.hi - box.lo))
                or np.any(np.abs(np.asarray([g, om]) - box.hi) < 0.01 * (box.hi - box.lo)))
    g0, om0 = (float(v) for v in np.asarray(r.init)[0])
    return dict(g=g, omega=sign * om, loss=float(np.asarray(r.loss)[0]), n_vortices=int(len(cores)),
                omega_identifiable=len(cores) >= 2, initial_guess=dict(g=g0, omega=sign * om0),
                box=dict(g=list(box.g_range), omega=list(box.omega_range)), at_box_edge=edge,
                touches_edge=bool(np.asarray(r.touches_edge)[0]))


def predict(model, image, *, pixel_size, tof=0.0, atom_number=None, psf_width=0.0, rotation="ccw",
            estimate=False, zero_momentum=True, name: str | None = None) -> Prediction:
    """Phase gradient, phase and vortices of ONE image (module doc).

    model: a ``LoadedModel`` or a model folder (``load_model``). image: a 2-D array
    (counts, rows = y) or an image spec (path, ``file.h5:/path``). pixel_size: the
    object-plane pixel size P at imaging (a⊥, > 0). tof: flight time t ≥ 0 (1/ω⊥).
    atom_number: N > 0 (optional; only reported as counts per atom). psf_width: object-plane
    Gaussian PSF σ (a⊥, ≥ 0; only for the estimate). rotation: "ccw" or "cw", the trap's sense of
    rotation in (x = col, y = row) (``ImageSettings``). estimate: also estimate (g, Ω)
    (``estimate_parameters``; Prediction.parameters). zero_momentum: take off the uniform flow that would
    give the cloud a momentum (module doc; Prediction.flow_removed); False for a cloud that moves.
    name: how errors name the image (default: its path, or "image"). ImageError (a ValueError) with a
    one-line reason for an unusable image.
    """
    from scipy.ndimage import map_coordinates

    from bec_jax.imaging.expansion import expansion_factor
    from bec_jax.imaging.frame import cloud_signal, signal_to_grid
    from bec_jax.gpe.phase_field import positions_from_winding

    if not isinstance(model, LoadedModel):
        model = load_model(model)
    name = name or (image if isinstance(image, (str, Path)) else "image")
    a = load_image(str(image)) if isinstance(image, (str, Path)) else np.asarray(image, np.float64)
    _check_settings(pixel_size, tof, atom_number, psf_width, rotation)
    a = _check_image(a, str(name))
    cloud = find_cloud(a)
    lam = float(expansion_factor(float(tof)))
    scale = float(pixel_size) / lam  # in-trap length of one image pixel
    grid = model.grid
    half = 0.5 * grid.length
    if cloud["radius"] * scale >= half:
        raise ImageError(f"{name}: the cloud (Thomas-Fermi radius {cloud['radius'] * scale:.3g} a⊥ in trap) does "
                         f"not fit the model's box of half-width {half:.3g} a⊥: check the pixel size and the "
                         "flight time")
    if cloud["radius"] * scale < MIN_TF_RADIUS:
        raise ImageError(f"{name}: the cloud (Thomas-Fermi radius {cloud['radius'] * scale:.3g} a⊥ in trap, "
                         f"pixel size {float(pixel_size):.3g} a⊥, flight time {float(tof):.3g}) is smaller than any "
                         f"ground state of the trap (the non-interacting one fits R = 1.46 a⊥): check the pixel size "
                         "and the flight time")
    h, w = a.shape
    rr, cc = np.mgrid[0:h, 0:w]
    # the mapping training applies to its rendered images (bec_jax.imaging.frame)
    signal = cloud_signal(jnp.asarray(a, jnp.float32), cloud["row"], cloud["col"], cloud["radius"],
                          cloud["background"])
    n, total = signal_to_grid(grid, signal, cloud["row"], cloud["col"], scale)
    if not float(total) > 0:
        raise ImageError(f"{name}: no counts above the background inside the cloud")
    signal = np.asarray(signal, np.float64)
    d, v, valid, theta, wind, flow = _predict_fields(model, n, cloud["radius"] * scale if zero_momentum else None,
                                                rotation)
    # image pixel centres in model-grid index coordinates
    iy = ((rr - cloud["row"]) * scale - grid.x[0]) / grid.dx
    ix = ((cc - cloud["col"]) * scale - grid.x[0]) / grid.dx
    coords = np.stack([iy.ravel(), ix.ravel()])
    inside = ((iy >= 0) & (iy <= grid.n - 1) & (ix >= 0) & (ix <= grid.n - 1))
    on = inside & (map_coordinates(valid.astype(np.float32), coords, order=1, mode="constant").reshape(h, w) >= 0.5)
    interp = lambda f: map_coordinates(f, coords, order=1, mode="nearest").reshape(h, w)
    grad = np.stack([interp(v[..., 0]), interp(v[..., 1])]).astype(np.float32)
    phase = np.angle(interp(np.cos(theta)) + 1j * interp(np.sin(theta))).astype(np.float32)
    grad[:, ~on] = np.nan
    phase[~on] = np.nan
    conf = _confidence(d, wind)
    vort = []
    # sub-plaquette positions, in the row-major plaquette order of np.nonzero
    for (x, y, s), j, i in zip(positions_from_winding(grid, wind, d), *np.nonzero(wind)):
        for _ in range(int(abs(s))):
            vort.append(Vortex(row=float(cloud["row"] + y / scale), col=float(cloud["col"] + x / scale),
                               sign=int(np.sign(s)), confidence=float(conf[j, i])))
    cpa = float(signal.sum()) / atom_number if atom_number is not None else None
    params = estimate_parameters(model, n, wind, scale, lam, float(psf_width), rotation=rotation) if estimate else None
    return Prediction(grad, phase, on, tuple(vort), (cloud["row"], cloud["col"]), cloud["radius"],
                      cloud["background"], cloud["noise"], lam, float(pixel_size), float(tof),
                      None if atom_number is None else float(atom_number), cpa, (grid.n, grid.length), params,
                      tuple(float(f) for f in flow) if zero_momentum else None, rotation)


# ------------------------------------------------------------------ files

def _sidecar(spec: str) -> dict:
    """Per-image settings from IMAGE.json beside the file ("img.npy.json", else "img.json")."""
    file, dataset = split_spec(spec)
    p = Path(file)
    for c in ((Path(f"{file}.json"), p.with_suffix(".json")) if dataset is None else (Path(f"{file}.json"),)):
        if c.is_file() and c != p:
            try:
                data = json.loads(c.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
                raise ImageError(f"sidecar {str(c)!r} is not JSON ({first_line(e, 120)})") from None
            if not isinstance(data, dict):
                raise ImageError(f"sidecar {str(c)!r} must hold a JSON object")
            unknown = set(data) - set(SETTING_FIELDS)
            if unknown:
                raise ImageError(f"sidecar {str(c)!r} has unknown keys {sorted(unknown)} "
                                 f"(allowed: {', '.join(SETTING_FIELDS)})")
            return data
    return {}


def output_name(spec: str, taken: set) -> str:
    """A file-name stem for an image spec, unique among ``taken`` (which it joins)."""
    file, dataset = split_spec(spec)
    stem = Path(file).name + (dataset or "")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
    name, k = stem, 2
    while name in taken:
        name, k = f"{stem}-{k}", k + 1
    taken.add(name)
    return name


def write_outputs(out: Path, name: str, image: np.ndarray, res: Prediction, spec: str,
                  units: dict | None = None) -> list[str]:
    """DIR/NAME.h5 (phase_gradient, phase, valid, image) and DIR/NAME.png, each written atomically.
    units: the trap's units (``TrapUnits.as_dict``), kept as the attribute "trap_units"."""
    import h5py

    from bec_jax.deploy.plots import plot_prediction

    def write_h5(tmp):
        with h5py.File(tmp, "w") as f:
            kw = dict(compression="gzip", fletcher32=True)
            f.create_dataset("phase_gradient", data=res.phase_gradient, **kw)
            f.create_dataset("phase", data=res.phase, **kw)
            f.create_dataset("valid", data=res.valid, **kw)
            f.create_dataset("image", data=image.astype(np.float32), **kw)
            f.attrs["source"] = spec
            f.attrs["summary"] = json.dumps(res.summary())
            f.attrs["units"] = ("phase_gradient: (d/dx, d/dy) of the in-trap phase, inverse oscillator lengths, "
                                "channel 0 along columns; phase: radians; NaN outside the cloud")
            if units is not None:  # a gradient of 1/a⊥ is a velocity of velocity_mm_per_s
                f.attrs["trap_units"] = json.dumps(units)

    atomic_write(out / f"{name}.h5", write_h5)
    plot_prediction(image, res, out / f"{name}.png", title=spec, units=units)
    return [f"{name}.h5", f"{name}.png"]


def _read_summary(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        images = data["images"]
        if not isinstance(images, list):
            raise TypeError
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise CorruptArtifact(f"{str(path)!r} is not a predict summary (delete it or use another --out)") from None
    return [r for r in images if isinstance(r, dict) and "file" in r]


def weights_digest(model: LoadedModel) -> str:
    """A short SHA-256 of a model's weights and statistics: the identity of what predicts."""
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves((model.params, model.batch_stats)):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()[:16]


def _file_stamp(spec: str) -> list[int] | None:
    """[size, modification time in ns, inode] of an image spec's file (None: no such file); the inode catches
    a file replaced by another that kept its time (``rsync -t``)."""
    try:
        st = os.stat(split_spec(spec)[0])
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def predict_files(model, specs, out, settings: ImageSettings | None = None, *, estimate: bool = False,
                  zero_momentum: bool = True, progress: bool = True, **fields) -> dict:
    """``predict`` every image spec (``expand_inputs``) into folder ``out``; returns the summary dict.

    Writes per image NAME.h5 and NAME.png, and out/summary.json after every image
    (atomically). A rerun skips images whose "ok" record (same settings, same model
    weights, the image file unchanged since: size, modification time and inode; its files
    present) is already in summary.json, and tries those that failed again (a file
    since mended or written); records of other images are kept. The returned dict is
    summary.json's content plus "skipped": the specs of this call found done.
    settings: the ``ImageSettings`` of every image (default: its defaults), with ``fields`` (ImageSettings
    fields: ``pixel_size=0.25``) in place; an image's sidecar IMAGE.json overrides them. estimate: also
    estimate (g, Ω) per image (``estimate_parameters``; the record's "parameters"). zero_momentum: as
    ``predict``'s (the record's "flow_removed").
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    records = {r["file"]: r for r in _read_summary(summary_path)}
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    weights = weights_digest(model)
    base = (settings or ImageSettings()).updated(fields)
    taken = {r["output"] for r in records.values() if r.get("output")}
    skipped = []
    for spec in tqdm(specs, desc="predict", unit="image", disable=not progress, dynamic_ncols=True):
        rec = dict(file=spec, status="error", error=None, n_vortices=0, vortices=[])
        try:
            side = _sidecar(spec)
            try:
                s = base.updated(side).in_trap_units()
            except ImageError as e:  # name where the value came from
                raise ImageError(f"{e} (with its sidecar's {', '.join(sorted(side))})" if side else str(e)) from None
            # a retrained model, a file written anew
            settings = dataclasses.asdict(s) | dict(model=model.source, weights=weights, image=_file_stamp(spec))
            if estimate:  # a rerun that asks for the estimate redoes images done without it, or in another box
                settings["estimate_parameters"] = True
                settings["box"] = model.ranges
            settings["zero_momentum"] = bool(zero_momentum)  # always: records made before it existed are redone
            settings = json.loads(json.dumps(settings))  # as summary.json reads back (tuples become lists)
            old = records.get(spec)
            done = (old is not None and old.get("settings") == settings and old.get("status") == "ok"
                    and old.get("files") and all((out / f).is_file() for f in old["files"])
                    # an estimate recorded before some of its fields existed is redone
                    and (not estimate or set(PARAMETER_KEYS) <= set(old.get("parameters") or {})))
            if done:
                skipped.append(spec)
                continue
            rec["settings"] = settings
            name = old["output"] if old is not None and old.get("output") else output_name(spec, taken)
            rec["output"] = name
            _check_settings(s.pixel_size, s.tof, s.atom_number, s.psf_width, s.rotation)
            image = _check_image(load_image(spec), spec)
            res = predict(model, image, pixel_size=s.pixel_size, tof=s.tof, atom_number=s.atom_number,
                          psf_width=s.psf_width, rotation=s.rotation, estimate=estimate, zero_momentum=zero_momentum,
                          name=spec)
            units = None if s.units is None else s.units.as_dict()
            files = write_outputs(out, name, image, res, spec, units)
            rec.update(res.summary(), units=units, status="ok", files=files)
        except ImageError as e:
            rec["error"] = first_line(e, 500)
            rec.setdefault("settings", None)
        except (ValueError, OSError, FloatingPointError, OverflowError) as e:  # anything else about this image
            rec["error"] = f"{type(e).__name__}: {first_line(e, 500)}"
            rec.setdefault("settings", None)
        records[spec] = rec
        _write_summary(summary_path, records, model)
    _write_summary(summary_path, records, model)
    return json.loads(summary_path.read_text()) | dict(skipped=skipped)


def _write_summary(path: Path, records: dict, model: LoadedModel):
    images = list(records.values())
    doc = dict(model=model.source, model_grid=dict(n=model.grid.n, length=model.grid.length), target=model.target,
               n_images=len(images), n_ok=sum(r["status"] == "ok" for r in images),
               n_error=sum(r["status"] == "error" for r in images), images=images)
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False))
