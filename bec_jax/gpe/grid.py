"""The computational grid: a square, periodic, spectral n x n grid.

Conventions (DESIGN.md §2): points on [-L/2, L/2)^2, spacing dx = L/n, arrays
indexed [..., y, x] (rows are y, columns are x).
"""

from __future__ import annotations

import dataclasses
import jax.numpy as jnp
import numpy as np


def real_dtype():
    """float64 when jax x64 is enabled, else float32."""
    return jnp.result_type(float)


def complex_dtype():
    """complex128 when jax x64 is enabled, else complex64."""
    return jnp.result_type(complex)


@dataclasses.dataclass(frozen=True)
class Grid:
    """Square periodic grid of ``n x n`` points on ``[-length/2, length/2)^2``.

    Immutable and hashable, so it can be a static argument of ``jax.jit``.
    Coordinate arrays are numpy (compile-time constants) in the current jax
    real dtype; spectral wavenumbers follow ``numpy.fft.fftfreq``.

    Args:
      n: points per side; even and >= 16 (even so that the Nyquist mode is
        unambiguous and vortex plaquettes tile the grid).
      length: box side L in trap units (a_perp = sqrt(hbar/(m omega))), > 0.
    """

    n: int
    length: float

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)):
            raise ValueError(f"Grid.n must be an int, got {self.n!r}")
        if self.n < 16 or self.n % 2:
            raise ValueError(f"Grid.n must be even and >= 16, got n={self.n}")
        length = float(self.length)
        if not np.isfinite(length) or length <= 0:
            raise ValueError(f"Grid.length must be finite and > 0, got length={self.length}")
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "length", length)

    @property
    def dx(self) -> float:
        """Grid spacing L/n (same along x and y)."""
        return self.length / self.n

    @property
    def cell_area(self) -> float:
        """Integration measure dx*dy."""
        return self.dx * self.dx

    @property
    def x(self) -> np.ndarray:
        """1-D coordinates, shape (n,), from -L/2 to L/2 - dx."""
        return (-0.5 * self.length + self.dx * np.arange(self.n)).astype(real_dtype())

    @property
    def k(self) -> np.ndarray:
        """1-D angular wavenumbers 2*pi*fftfreq(n, dx), shape (n,)."""
        return (2 * np.pi * np.fft.fftfreq(self.n, d=self.dx)).astype(real_dtype())

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y) coordinate arrays of shape (n, n), indexed [y, x]."""
        return np.meshgrid(self.x, self.x, indexing="xy")

    def potential(self) -> np.ndarray:
        """Harmonic trap V = (x^2 + y^2)/2, shape (n, n)."""
        X, Y = self.mesh()
        return 0.5 * (X * X + Y * Y)

    def coarsened(self, factor: int) -> "Grid":
        """The grid of the same box with n/factor points per side (ValueError unless that is an even int >= 16)."""
        ok = isinstance(factor, (int, np.integer)) and factor >= 1 and self.n % factor == 0
        if not (ok and (factor == 1 or (self.n // factor >= 16 and self.n // factor % 2 == 0))):
            raise ValueError(f"coarsening factor must be an integer >= 1 with n/factor an even integer >= 16 "
                             f"(n={self.n}), got {factor!r}")
        return Grid(self.n // factor, self.length)


def resample(field, n: int):
    """Band-limited (Fourier) interpolation of ``field`` (..., m, m) onto n x n points of the same box.

    Both grids start at -L/2, so zero-padding (n > m) or truncating (n < m) the
    spectrum is exact for fields with no content at or above the smaller grid's
    Nyquist wavenumber; that mode itself is dropped (it has no unambiguous
    counterpart on the other grid). Pointwise values are kept (not the norm:
    ∑|ψ|² dx² changes only by the dropped modes). Complex in, complex out.
    """
    m = field.shape[-1]
    if n == m:
        return field
    spec = jnp.fft.fftshift(jnp.fft.fft2(field), axes=(-2, -1))  # zero frequency at index m/2
    small = min(m, n)
    lo = (max(m, n) - small) // 2
    pad = [(0, 0)] * (field.ndim - 2) + [(lo, lo)] * 2
    spec = jnp.pad(spec, pad) if n > m else spec[..., lo:lo + n, lo:lo + n]
    # index lo of the larger grid (0 of the smaller) is the smaller grid's Nyquist mode
    nyq = lo if n > m else 0
    spec = spec.at[..., nyq, :].set(0).at[..., :, nyq].set(0)
    return jnp.fft.ifft2(jnp.fft.ifftshift(spec, axes=(-2, -1))) * (n / m) ** 2
