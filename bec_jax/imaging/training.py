"""Training under the imaging model: network inputs rendered through the camera, on the fly.

``imaged_examples(grid, psi, key, settings, target_config)`` turns a batch of
states ψ (B, n, n) on the solver grid into (x, y, mask) as ``data.targets.make_example``
does for clean inputs, but with x what ``bec-jax predict`` would feed the model
for a camera image of that state:

1. per sample, imaging parameters are drawn from ``settings.ranges``
   (``model.sample_params``) and the image is rendered (``model.render``: flight,
   PSF, camera pixels, shot noise, background, fringes, read noise);
2. the image goes back onto the model's grid by ``frame.cloud_signal`` /
   ``frame.signal_to_grid`` / ``frame.model_input``, the functions ``predict`` uses,
   with the cloud where it was rendered: centre at the trap centre's pixel
   coordinates, Thomas–Fermi radius √(3⟨r²⟩) of the in-trap density (exact for a
   Thomas–Fermi profile), background the drawn offset. Predict fits these to the
   image instead; their fit errors are not simulated;
3. the target: the image shows the cloud rotated by ``model.cloud_angle``
   (Ω·arctan t of the flight plus the drawn orientation) and predict does not undo
   it, so targets and mask are those of the rotated state,
   ``expansion.rotate(grid, ψ, angle)`` (phase differences or velocity, and
   ``valid_mask``), in the same frame as the input.

Everything is jit/vmap-able; ``data.loader.BatchLoader(imaging=...)`` calls it
inside its compiled batch function with a key derived from (seed, epoch, batch
index), so epochs are reproducible and resumed runs exact. Lengths in a⊥,
times in 1/ω⊥ (docs/imaging.md).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp

from bec_jax.data.targets import TargetConfig, make_example
from bec_jax.gpe.grid import Grid
from bec_jax.imaging.expansion import expansion_factor, rotate
from bec_jax.imaging.frame import CLOUD_MARGIN, cloud_signal, model_input, signal_to_grid
from bec_jax.imaging.model import ImagingConfig, ImagingRanges, cloud_angle, render, sample_params

__all__ = ["ImagingTrainConfig", "imaged_state", "imaged_states", "imaged_example", "imaged_examples", "cloud_radius"]

_RANGE_FIELDS = tuple(f.name for f in dataclasses.fields(ImagingRanges))
_CAMERA_FIELDS = tuple(f.name for f in dataclasses.fields(ImagingConfig))


@dataclasses.dataclass(frozen=True)
class ImagingTrainConfig:
    """Training under the imaging model (the pipeline's ``imaging`` section, flags ``--imaging-*``).

    enabled: render every training and validation input through the camera model (false: the clean
    log-density inputs, unchanged).
    rows, cols: camera pixels; the camera must cover the largest imaged cloud (pixels beyond it record nothing).
    psf: point-spread function, "none", "gaussian" (width = σ) or "airy" (width = first-dark-ring radius).
    shot_noise: Poisson counts. n_fringes: plane waves in the fringe pattern (0: none).
    fringe_period: (lo, hi) fringe periods in pixels.
    tof: (lo, hi) flight time, 1/ω⊥. omega: (lo, hi) rotation rate Ω of the states, ω⊥; it sets the
    flight's rotation Ω·arctan t (irrelevant when angle spans the full circle).
    angle: (lo, hi) extra orientation of the cloud, radians. pixel_size: (lo, hi) object-plane pixel size at
    imaging, a⊥. center_x, center_y: (lo, hi) camera centre relative to the trap centre, a⊥ in the imaged plane.
    psf_width: (lo, hi) PSF width in the imaged plane, a⊥. atom_number: (lo, hi) atom number, drawn
    log-uniformly. background: (lo, hi) counts per pixel. read_noise: (lo, hi) σ of the read noise, counts.
    fringe_amplitude: (lo, hi) fringe amplitude, counts.
    margin: the cloud's disc kept, in Thomas–Fermi radii (predict's); beyond it the input is empty.
    """

    enabled: bool = False
    rows: int = 96
    cols: int = 96
    psf: str = "gaussian"
    shot_noise: bool = True
    n_fringes: int = 3
    fringe_period: tuple[float, float] = (16.0, 64.0)
    tof: tuple[float, float] = (0.0, 1.0)
    omega: tuple[float, float] = (0.45, 0.75)
    angle: tuple[float, float] = (0.0, 2 * math.pi)
    pixel_size: tuple[float, float] = (0.2, 0.3)
    center_x: tuple[float, float] = (-0.5, 0.5)
    center_y: tuple[float, float] = (-0.5, 0.5)
    psf_width: tuple[float, float] = (0.0, 0.5)
    atom_number: tuple[float, float] = (1e4, 1e6)
    background: tuple[float, float] = (0.0, 20.0)
    read_noise: tuple[float, float] = (0.0, 5.0)
    fringe_amplitude: tuple[float, float] = (0.0, 10.0)
    margin: float = CLOUD_MARGIN

    def __post_init__(self):
        for name in _RANGE_FIELDS + ("fringe_period",):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self.camera  # validates the camera fields (ImagingConfig)
        self.ranges  # validates the ranges (ImagingRanges)
        if not (isinstance(self.margin, (int, float)) and 1.0 <= self.margin < math.inf):
            raise ValueError(f"imaging.margin must be a finite number >= 1 (Thomas-Fermi radii), got {self.margin!r}")

    @property
    def camera(self) -> ImagingConfig:
        """The static camera structure (``ImagingConfig``)."""
        return ImagingConfig(**{f: getattr(self, f) for f in _CAMERA_FIELDS})

    @property
    def ranges(self) -> ImagingRanges:
        """The parameter ranges drawn per sample (``ImagingRanges``)."""
        return ImagingRanges(**{f: getattr(self, f) for f in _RANGE_FIELDS})


def cloud_radius(grid: Grid, density):
    """Thomas–Fermi radius √(3⟨r²⟩) of a density (n, n) about the grid's origin, a⊥ (exact for
    n ∝ max(0, 1 − r²/R²), whose ⟨r²⟩ = R²/3)."""
    X, Y = grid.mesh()
    r2 = jnp.asarray(X * X + Y * Y, density.dtype)
    return jnp.sqrt(3.0 * jnp.sum(r2 * density) / jnp.sum(density))


def imaged_state(grid: Grid, psi, key, settings: ImagingTrainConfig, eps: float = TargetConfig.eps):
    """(x float (n, n, 1), ψ_rot complex (n, n)) of ONE state ψ (n, n) seen through the camera.

    x: the input predict would make of the rendered image (module doc); ψ_rot: ψ rotated by the
    image's ``cloud_angle``, the state whose targets x stands for (eps: ``TargetConfig.eps``).
    """
    k_params, k_noise = jax.random.split(key)
    p = sample_params(k_params, settings.ranges)
    cam = settings.camera
    image = render(grid, psi, p, cam, key=k_noise)
    scale = p.pixel_size / expansion_factor(p.tof)  # in-trap length of one pixel
    # trap centre in pixel coordinates: pixel i's centre is at center_x + (i − (cols − 1)/2)·P (imaged plane)
    row = 0.5 * (cam.rows - 1) - p.center_y / p.pixel_size
    col = 0.5 * (cam.cols - 1) - p.center_x / p.pixel_size
    psi_rot = rotate(grid, psi, cloud_angle(p))
    radius = cloud_radius(grid, jnp.abs(psi_rot) ** 2) / scale
    signal = cloud_signal(image, row, col, radius, p.background, settings.margin)
    density, _ = signal_to_grid(grid, signal, row, col, scale)
    return model_input(density, eps)[..., None], psi_rot


def imaged_example(grid: Grid, psi, key, settings: ImagingTrainConfig, config: TargetConfig = TargetConfig()):
    """(x float (n, n, 1), y float (n, n, 2), mask bool (n, n)) of ONE state ψ (n, n) seen through the camera.

    x: ``imaged_state``'s; y, mask: the target of ``config`` and its mask for ψ rotated by the
    image's ``cloud_angle``.
    """
    x, psi_rot = imaged_state(grid, psi, key, settings, config.eps)
    _, y, mask = make_example(grid, psi_rot, config)
    return x, y, mask


@partial(jax.jit, static_argnames=("grid", "settings", "eps"))
def imaged_states(grid: Grid, psi, keys, settings: ImagingTrainConfig, eps: float = TargetConfig.eps):
    """``imaged_state`` of a batch ψ (B, n, n) with one key per sample, keys (B,):
    (x float32 (B, n, n, 1), ψ_rot (B, n, n)). Evaluation renders with keys of the sample indices,
    so every model of a run is scored on the same images."""
    x, psi_rot = jax.vmap(lambda s, k: imaged_state(grid, s, k, settings, eps))(psi, keys)
    return x.astype(jnp.float32), psi_rot


@partial(jax.jit, static_argnames=("grid", "settings", "config"))
def imaged_examples(grid: Grid, psi, key, settings: ImagingTrainConfig, config: TargetConfig = TargetConfig()):
    """``imaged_example`` of a batch ψ (B, n, n), one key per sample split from ``key``:
    (x float32 (B, n, n, 1), y float32 (B, n, n, 2), mask bool (B, n, n))."""
    keys = jax.random.split(key, psi.shape[0])
    x, y, m = jax.vmap(lambda s, k: imaged_example(grid, s, k, settings, config))(psi, keys)
    return x.astype(jnp.float32), y.astype(jnp.float32), m
