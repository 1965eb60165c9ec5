"""The composed imaging model: ψ on the solver grid → the image a camera records.

    n₀ = |ψ|²/‖ψ‖²                                  (in-trap density, norm 1)
    rotate by α = Ω·arctan t + angle                  (``expansion``; exact)
    blur by the PSF, width scaled by 1/λ, λ = √(1+t²) (``psf``; PSF set in the imaged plane)
    integrate over camera pixels whose edges are      (``camera``; exact area weights)
      divided by λ (the dilation of the flight)
    × N atoms → expected counts                       (noiseless: ``expected_image``)
    Poisson shot noise + background + fringes + read noise  (``render``; ``noise``)

The blur is applied before the dilation, with the PSF scaled accordingly:
blurring n_t(r) = n₀(R⁻¹r/λ)/λ² by a PSF K equals blurring n₀ by K(λ R ·) and
dilating, and the Gaussian and Airy PSFs are isotropic. Units: lengths in trap
oscillator lengths a⊥ in the atoms' plane at the moment of imaging (pixel size,
camera centre, PSF width), times in 1/ω⊥, rotation rates in ω⊥, counts per pixel.

``ImagingConfig`` (frozen, hashable: a static jit argument) fixes the shapes and
which effects are on; ``ImagingParams`` (a pytree of scalars, traced) holds the
physical values, so one compiled ``render`` serves every draw of
``sample_params`` and vmaps over a batch of parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from bec_jax.gpe.grid import Grid
from bec_jax.imaging.camera import cell_edges, integrate_pixels, pixel_edges
from bec_jax.imaging.expansion import expansion_angle, expansion_factor, rotate
from bec_jax.imaging.noise import fringes, read_noise, shot_noise
from bec_jax.imaging.psf import PSF_KINDS, blur, otf

__all__ = ["ImagingConfig", "ImagingParams", "ImagingRanges", "sample_params", "check_params", "expected_image",
           "render"]


@dataclasses.dataclass(frozen=True)
class ImagingConfig:
    """Static structure of the imaging model.

    rows, cols: camera pixel count (≥ 1 each).
    psf: one of "none", "gaussian" (width ``psf_width`` = σ), "airy" (width =
      first-dark-ring radius r_A, see ``psf.airy_radius``).
    shot_noise: Poisson counts (else the expected counts).
    n_fringes: plane waves in the fringe pattern (0: none).
    fringe_period: (lo, hi) fringe periods in pixels, 0 < lo ≤ hi.
    """

    rows: int = 64
    cols: int = 64
    psf: str = "gaussian"
    shot_noise: bool = True
    n_fringes: int = 3
    fringe_period: tuple = (16.0, 64.0)

    def __post_init__(self):
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.psf not in PSF_KINDS:
            raise ValueError(f"psf must be one of {PSF_KINDS}, got {self.psf!r}")
        if isinstance(self.n_fringes, bool) or not isinstance(self.n_fringes, numbers.Integral) or self.n_fringes < 0:
            raise ValueError(f"n_fringes must be an integer >= 0, got {self.n_fringes!r}")
        lo, hi = self.fringe_period
        if not (0 < lo <= hi < math.inf):
            raise ValueError(f"fringe_period must be (lo, hi) with 0 < lo <= hi (pixels), got {self.fringe_period}")
        object.__setattr__(self, "fringe_period", (float(lo), float(hi)))


_FIELDS = ("tof", "omega", "angle", "pixel_size", "center_x", "center_y", "psf_width", "atom_number",
           "background", "read_noise", "fringe_amplitude")


@functools.partial(jax.tree_util.register_dataclass, data_fields=list(_FIELDS), meta_fields=[])
@dataclasses.dataclass(frozen=True)
class ImagingParams:
    """Physical imaging parameters (each a float scalar, or an array for vmap).

    tof: flight time t ≥ 0 (1/ω⊥). omega: rotation rate Ω of the state's frame (ω⊥),
    sets the rotation Ω·arctan t during the flight. angle: extra orientation of the
    cloud (radians, counter-clockwise). pixel_size: pixel side > 0 (a⊥, imaged
    plane). center_x, center_y: camera centre relative to the trap centre (a⊥,
    imaged plane). psf_width: σ or r_A (a⊥, imaged plane), > 0 unless psf="none".
    atom_number: N > 0. background: counts per pixel added. read_noise: σ of the
    Gaussian read noise (counts). fringe_amplitude: fringe amplitude (counts).
    """

    tof: float = 0.0
    omega: float = 0.0
    angle: float = 0.0
    pixel_size: float = 0.25
    center_x: float = 0.0
    center_y: float = 0.0
    psf_width: float = 0.3
    atom_number: float = 1e5
    background: float = 0.0
    read_noise: float = 0.0
    fringe_amplitude: float = 0.0


@dataclasses.dataclass(frozen=True)
class ImagingRanges:
    """(lo, hi) ranges of ``sample_params`` (units as in ``ImagingParams``); lo == hi fixes a value.

    atom_number is drawn log-uniformly, everything else uniformly.
    """

    tof: tuple = (0.0, 0.0)
    omega: tuple = (0.0, 0.0)
    angle: tuple = (0.0, 2 * math.pi)
    pixel_size: tuple = (0.2, 0.3)
    center_x: tuple = (-0.5, 0.5)
    center_y: tuple = (-0.5, 0.5)
    psf_width: tuple = (0.0, 0.5)
    atom_number: tuple = (1e4, 1e6)
    background: tuple = (0.0, 20.0)
    read_noise: tuple = (0.0, 5.0)
    fringe_amplitude: tuple = (0.0, 10.0)

    def __post_init__(self):
        for name in _FIELDS:
            r = getattr(self, name)
            if len(r) != 2 or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in r) or r[0] > r[1]:
                raise ValueError(f"{name} range must be (lo, hi) with finite lo <= hi, got {r!r}")
            object.__setattr__(self, name, (float(r[0]), float(r[1])))
        for name, lo in (("tof", 0.0), ("psf_width", 0.0), ("background", 0.0), ("read_noise", 0.0),
                         ("fringe_amplitude", 0.0)):
            if getattr(self, name)[0] < lo:
                raise ValueError(f"{name} range must lie in [{lo}, inf), got {getattr(self, name)}")
        if self.pixel_size[0] <= 0 or self.atom_number[0] <= 0:
            raise ValueError(f"pixel_size and atom_number ranges must be > 0, got {self.pixel_size}, "
                             f"{self.atom_number}")
        if not (-1 < self.omega[0] and self.omega[1] < 1):
            raise ValueError(f"omega range must lie in (-1, 1), got {self.omega}")


#: allowed values of each ImagingParams field: (lower bound, lower bound included, upper bound (excluded))
_LIMITS = dict(tof=(0.0, True, math.inf), omega=(-1.0, False, 1.0), angle=(-math.inf, False, math.inf),
               pixel_size=(0.0, False, math.inf), center_x=(-math.inf, False, math.inf),
               center_y=(-math.inf, False, math.inf), psf_width=(0.0, True, math.inf),
               atom_number=(0.0, False, math.inf), background=(-math.inf, False, math.inf),
               read_noise=(0.0, True, math.inf), fringe_amplitude=(0.0, True, math.inf))


def check_params(params: ImagingParams, config: ImagingConfig | None = None) -> None:
    """ValueError naming a field whose concrete value is out of range (traced values pass: jit-safe).

    Ranges: tof ≥ 0, |omega| < 1, pixel_size > 0, psf_width ≥ 0 (> 0 for psf="airy"), atom_number > 0,
    read_noise ≥ 0, fringe_amplitude ≥ 0; all finite.
    """
    for name, (lo, closed, hi) in _LIMITS.items():
        try:
            v = np.asarray(getattr(params, name), dtype=float)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
            continue
        if config is not None and config.psf == "airy" and name == "psf_width":
            closed = False
        ok = np.isfinite(v) & ((v >= lo) if closed else (v > lo)) & (v < hi)
        if not np.all(ok):
            bad = np.ravel(v[~ok] if v.ndim else v)[:4].tolist()
            interval = f"{'[' if closed else '('}{lo:g}, {hi:g})"
            raise ValueError(f"ImagingParams.{name} must be finite and in {interval}, got {bad}")


def sample_params(key, ranges: ImagingRanges = ImagingRanges(), shape=()) -> ImagingParams:
    """Draw ``ImagingParams`` (each field of ``shape``) from ``ranges`` with ``key`` (jit-able)."""
    keys = jax.random.split(key, len(_FIELDS))
    out = {}
    for k, name in zip(keys, _FIELDS):
        lo, hi = getattr(ranges, name)
        if name == "atom_number":
            out[name] = jnp.exp(jax.random.uniform(k, shape, minval=math.log(lo), maxval=math.log(hi)))
        else:
            out[name] = jax.random.uniform(k, shape, minval=lo, maxval=hi)
    return ImagingParams(**out)


def expected_image(grid: Grid, psi, params: ImagingParams, config: ImagingConfig = ImagingConfig()):
    """Noiseless expected counts per camera pixel, float (config.rows, config.cols).

    psi: ONE complex state (n, n) on ``grid`` (or a real density; any normalisation:
    it is normalised to ``params.atom_number`` atoms). The grid box must hold the
    cloud (and its blur); the camera may be larger or smaller than the box and
    offset from it: pixels outside the box receive nothing. vmap for batches.
    Concrete out-of-range parameters raise ValueError (``check_params``).
    """
    check_params(params, config)
    psi = jnp.asarray(psi)
    if psi.shape != (grid.n, grid.n):
        raise ValueError(f"psi must have shape ({grid.n}, {grid.n}) for {grid} (vmap for batches), got {psi.shape}")
    return _expected_image(grid, psi, params, config)


@functools.partial(jax.jit, static_argnames=("grid", "config"))
def _expected_image(grid: Grid, psi, params: ImagingParams, config: ImagingConfig):
    n0 = jnp.abs(psi) ** 2 if jnp.iscomplexobj(psi) else psi
    n0 = n0 / (jnp.sum(n0) * grid.cell_area)
    lam = expansion_factor(params.tof)
    n0 = rotate(grid, n0, expansion_angle(params.tof, params.omega) + params.angle)
    if config.psf != "none":
        n0 = blur(n0, otf(grid, config.psf, params.psf_width, scale=lam))
    src = cell_edges(grid)
    dst_y = pixel_edges(config.rows, params.pixel_size, params.center_y) / lam
    dst_x = pixel_edges(config.cols, params.pixel_size, params.center_x) / lam
    return params.atom_number * integrate_pixels(n0, src, src, dst_y, dst_x)


def render(grid: Grid, psi, params: ImagingParams, config: ImagingConfig = ImagingConfig(), *, key):
    """The recorded image, float (config.rows, config.cols) counts: ``expected_image`` with
    shot noise (if ``config.shot_noise``), background, fringes and read noise. vmap for batches."""
    counts = expected_image(grid, psi, params, config)  # checks the inputs
    return _add_noise(counts, params, config, key)


@functools.partial(jax.jit, static_argnames=("config",))
def _add_noise(counts, params: ImagingParams, config: ImagingConfig, key):
    k_shot, k_fringe, k_read = jax.random.split(key, 3)
    if config.shot_noise:
        counts = shot_noise(k_shot, counts)
    shape = (config.rows, config.cols)
    counts = counts + params.background
    counts = counts + fringes(k_fringe, shape, params.fringe_amplitude, config.n_fringes, config.fringe_period)
    return counts + read_noise(k_read, shape, params.read_noise)
