"""``bec_jax.imaging``: a pure-JAX, differentiable forward model from ψ to a camera image.

Steps (each a module with small pure functions): ``expansion`` (time of flight
by the lens transform; exact grid rotations), ``psf`` (Gaussian or Airy
blur), ``camera`` (pixels integrating over their area; exact area-weighted
resampling), ``noise`` (shot noise, fringes, read noise), composed in ``model``
(``ImagingConfig``, ``ImagingParams``, ``sample_params``, ``expected_image``,
``render``). ``frame`` maps an image back onto a model's grid (``bec-jax predict``
and training share it); ``imaging.training`` renders training examples on the
fly (``ImagingTrainConfig``, ``imaged_examples``). Lengths in trap oscillator
lengths a⊥, times in 1/ω⊥; ``units`` converts a lab's µm, ms and Hz (``TrapUnits``).
See docs/imaging.md.
"""

from bec_jax.imaging.camera import cell_edges, integrate_pixels, overlap_matrix, pixel_edges, resample_density
from bec_jax.imaging.frame import CLOUD_MARGIN, cloud_signal, model_input, signal_to_grid
from bec_jax.imaging.expansion import expand_density, expansion_angle, expansion_factor, magnify, rotate
from bec_jax.imaging.model import (ImagingConfig, ImagingParams, ImagingRanges, cloud_angle, expected_image, render,
                                   sample_params)
from bec_jax.imaging.noise import fringes, read_noise, shot_noise
from bec_jax.imaging.psf import (PSF_KINDS, airy_otf, airy_radius, blur, box_transfer, gaussian_otf,
                                observation_transfer, otf)
from bec_jax.imaging.units import ATOMIC_MASS_U, TrapUnits, atomic_mass

__all__ = [
    "cell_edges", "integrate_pixels", "overlap_matrix", "pixel_edges", "resample_density",
    "expand_density", "expansion_angle", "expansion_factor", "magnify", "rotate",
    "CLOUD_MARGIN", "cloud_signal", "model_input", "signal_to_grid",
    "ImagingConfig", "ImagingParams", "ImagingRanges", "cloud_angle", "expected_image", "render", "sample_params",
    "fringes", "read_noise", "shot_noise",
    "ATOMIC_MASS_U", "TrapUnits", "atomic_mass",
    "PSF_KINDS", "airy_otf", "airy_radius", "blur", "box_transfer", "gaussian_otf", "observation_transfer", "otf",
]
