"""Gross–Pitaevskii physics core: grid, Hamiltonian, integrators, ground states."""

from bec_jax.gpe.grid import Grid
from bec_jax.gpe.hamiltonian import (
    angular_momentum,
    apply_hamiltonian,
    chemical_potential,
    density,
    energy,
    energy_terms,
    norm,
    normalize,
    residual,
)
from bec_jax.gpe.splitstep import imaginary_time, real_time

__all__ = [
    "Grid",
    "angular_momentum",
    "apply_hamiltonian",
    "chemical_potential",
    "density",
    "energy",
    "energy_terms",
    "norm",
    "normalize",
    "residual",
    "imaginary_time",
    "real_time",
]

from bec_jax.gpe.groundstate import (PCG, BoxTooSmallWarning, GridTooCoarseWarning, GroundStateResult, ImaginaryTime,
                                     box_length, ground_state, healing_length, initial_guess, solver_method)
from bec_jax.gpe.observables import (
    RegionConfig,
    edge_density,
    phase,
    phase_gradient,
    plaquette_winding,
    rms_radius,
    thomas_fermi,
    vortex_count,
    vortex_positions,
)

__all__ += [
    "RegionConfig",
    "GroundStateResult",
    "PCG",
    "ImaginaryTime",
    "solver_method",
    "box_length",
    "healing_length",
    "BoxTooSmallWarning",
    "GridTooCoarseWarning",
    "ground_state",
    "initial_guess",
    "edge_density",
    "phase",
    "phase_gradient",
    "plaquette_winding",
    "rms_radius",
    "thomas_fermi",
    "vortex_count",
    "vortex_positions",
]

from bec_jax.gpe.sharding import use_cpu_cores

__all__ += ["use_cpu_cores"]
