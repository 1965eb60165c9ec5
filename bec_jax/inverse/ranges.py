"""Parameter boxes for inversion: g = g_lo + (g_hi − g_lo)·sigmoid(u).

Gradient descent runs on unconstrained u ∈ R²; the scaled sigmoid keeps every
iterate inside the box (|Ω| < 1 and g ≥ 0 are never violated, so the solver
never sees an unphysical Hamiltonian).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ParamBox", "check_in_box"]


@dataclasses.dataclass(frozen=True)
class ParamBox:
    """Allowed (g, Ω) ranges (trap units; hashable, a static jit argument).

    g_range: (lo, hi), 0 ≤ lo < hi. omega_range: (lo, hi), −1 < lo < hi < 1.
    """

    g_range: tuple[float, float] = (30.0, 270.0)
    omega_range: tuple[float, float] = (0.4, 0.8)

    def __post_init__(self):
        g = tuple(float(v) for v in self.g_range)
        om = tuple(float(v) for v in self.omega_range)
        if len(g) != 2 or not (np.isfinite(g).all() and 0 <= g[0] < g[1]):
            raise ValueError(f"g_range must be (lo, hi) with 0 <= lo < hi, got {self.g_range}")
        if len(om) != 2 or not (np.isfinite(om).all() and -1 < om[0] < om[1] < 1):
            raise ValueError(f"omega_range must be (lo, hi) with -1 < lo < hi < 1, got {self.omega_range}")
        object.__setattr__(self, "g_range", g)
        object.__setattr__(self, "omega_range", om)

    @property
    def lo(self) -> np.ndarray:
        return np.array([self.g_range[0], self.omega_range[0]])

    @property
    def hi(self) -> np.ndarray:
        return np.array([self.g_range[1], self.omega_range[1]])

    def to_physical(self, u):
        """u (..., 2) real → (g, Ω) stacked as (..., 2), strictly inside the box."""
        lo, hi = jnp.asarray(self.lo, u.dtype), jnp.asarray(self.hi, u.dtype)
        return lo + (hi - lo) * jax.nn.sigmoid(u)

    def to_unconstrained(self, p, margin: float = 1e-4):
        """(g, Ω) (..., 2) → u; values are clipped ``margin`` (fraction of the
        range) inside the box so that the logit stays finite. Raises
        ValueError for concrete values outside the box."""
        check_in_box(self, p)
        lo, hi = jnp.asarray(self.lo), jnp.asarray(self.hi)
        s = jnp.clip((jnp.asarray(p) - lo) / (hi - lo), margin, 1 - margin)
        return jnp.log(s) - jnp.log1p(-s)


def check_in_box(box: ParamBox, p):
    """Raise ValueError naming the offending value and the allowed range."""
    p = np.asarray(p, float)
    if p.shape[-1:] != (2,):
        raise ValueError(f"parameters must have shape (..., 2) = (g, omega), got {p.shape}")
    for i, (name, (lo, hi)) in enumerate((("g", box.g_range), ("omega", box.omega_range))):
        v = p[..., i]
        bad = ~((v >= lo) & (v <= hi))
        if np.any(bad):
            raise ValueError(f"{name}={float(np.ravel(v[bad])[0])!r} is outside the allowed range [{lo}, {hi}]")
