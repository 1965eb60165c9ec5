"""A lab's units and the trap units bec_jax computes in.

bec_jax sets ħ = m = ω⊥ = 1: lengths in the oscillator length a⊥ = √(ħ/mω⊥), times in 1/ω⊥, velocities
in a⊥ω⊥ (a phase gradient ∇θ in 1/a⊥ is the velocity (ħ/m)∇θ in a⊥ω⊥). ``TrapUnits`` holds what sets
them, the radial trap frequency ω⊥/2π and the atom's mass, and converts.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from bec_jax.artifacts import short_repr

__all__ = ["ATOMIC_MASS_U", "TrapUnits", "atomic_mass"]

HBAR = 1.054571817e-34  # J s (exact, SI 2019)
DALTON = 1.66053906660e-27  # kg (CODATA 2018)

#: masses (u, AME2020) of isotopes condensed in labs; any other is given as its mass in u
ATOMIC_MASS_U = {
    "6Li": 6.0151228874, "7Li": 7.0160034366, "23Na": 22.9897692820, "39K": 38.9637064864,
    "40K": 39.963998166, "41K": 40.9618252579, "52Cr": 51.9405062, "85Rb": 84.9117897379,
    "87Rb": 86.9091805310, "133Cs": 132.9054519610, "164Dy": 163.9291819, "168Er": 167.9323702,
    "174Yb": 173.9388664,
}


#: the masses (u) accepted when given as numbers: an atom or a small molecule
MASS_RANGE_U = (1.0, 1000.0)


def _isotope(species) -> str | None:
    """The ``ATOMIC_MASS_U`` name ``species`` spells in any case ("87rb" -> "87Rb"), or None."""
    text = str(species).strip().lower()
    return next((k for k in ATOMIC_MASS_U if k.lower() == text), None)


def atomic_mass(species) -> float:
    """The mass in u of ``species``: an isotope of ``ATOMIC_MASS_U`` ("87Rb", any case) or a mass in u (a
    number, or its text) in ``MASS_RANGE_U``. ValueError naming the value and the isotopes known otherwise."""
    if isinstance(species, numbers.Real) and not isinstance(species, bool):
        mass = float(species) if abs(species) < 1e300 else math.inf  # an int too large for a float
    else:
        if (name := _isotope(species)) is not None:
            return ATOMIC_MASS_U[name]
        try:
            mass = float(str(species))
        except (TypeError, ValueError):
            raise ValueError(f"species must be one of {', '.join(ATOMIC_MASS_U)} or a mass in u, "
                             f"got {species!r}") from None
    lo, hi = MASS_RANGE_U
    if not lo <= mass <= hi:  # NaN too
        raise ValueError(f"species: a mass in u must be in [{lo:g}, {hi:g}], got {short_repr(species)}")
    return mass


def canonical_species(species):
    """An isotope's name as ``ATOMIC_MASS_U`` spells it ("87rb" -> "87Rb"), or a mass in u as a float."""
    return _isotope(species) or atomic_mass(species)


@dataclasses.dataclass(frozen=True)
class TrapUnits:
    """The oscillator units of a trap.

    trap_frequency_hz: the radial trap frequency ω⊥/2π (Hz, > 0); species: the atom, as ``atomic_mass``
    reads it ("87Rb", or a mass in u).
    """

    trap_frequency_hz: float
    species: str | float

    def __post_init__(self):
        f = self.trap_frequency_hz
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not (0 < f < 1e300):  # also NaN, inf
            raise ValueError(f"trap_frequency_hz must be a number in (0, 1e300) Hz, got {short_repr(f)}")
        atomic_mass(self.species)  # within these bounds the units are finite and > 0

    @property
    def omega(self) -> float:
        """ω⊥ (rad/s)."""
        return 2 * math.pi * float(self.trap_frequency_hz)

    @property
    def length_um(self) -> float:
        """a⊥ = √(ħ/mω⊥) in µm."""
        return math.sqrt(HBAR / (atomic_mass(self.species) * DALTON * self.omega)) * 1e6

    @property
    def time_ms(self) -> float:
        """1/ω⊥ in ms."""
        return 1e3 / self.omega

    @property
    def velocity_mm_per_s(self) -> float:
        """a⊥ω⊥ in mm/s (= µm/ms)."""
        return self.length_um / self.time_ms

    def as_dict(self) -> dict:
        """JSON-able: the trap's settings and its units (a⊥ in µm, 1/ω⊥ in ms, a⊥ω⊥ in mm/s)."""
        return dict(trap_frequency_hz=float(self.trap_frequency_hz), species=canonical_species(self.species),
                    mass_u=atomic_mass(self.species), length_um=self.length_um, time_ms=self.time_ms,
                    velocity_mm_per_s=self.velocity_mm_per_s)
