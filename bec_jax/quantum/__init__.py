"""Quantum-fidelity loss with the modified gradient and a differentiable 1-D
Schrödinger simulator (Schnell & Thuerey 2023, "gradient flow" paper).

    from bec_jax.quantum import fidelity_loss, Grid1D, evolve, dipole_potentials
    loss = fidelity_loss(psi_pred, psi_true, modified=True)   # G_M = grad L / sqrt(1-L)

The experiments (toy, prediction, control) live in ``bec_jax.quantum.gradient_flow``.
"""

from bec_jax.quantum.fidelity import DEFAULT_EPS, fidelity_loss, l2_state_loss, overlap
from bec_jax.quantum.schrodinger1d import (
    DEFAULT_DT,
    Grid1D,
    apply_hamiltonian,
    box_eigenstate,
    box_eigenvalue,
    cn_step,
    dipole_potentials,
    evolve,
    norm,
    random_states,
)

__all__ = [
    "DEFAULT_DT",
    "DEFAULT_EPS",
    "Grid1D",
    "apply_hamiltonian",
    "box_eigenstate",
    "box_eigenvalue",
    "cn_step",
    "dipole_potentials",
    "evolve",
    "fidelity_loss",
    "l2_state_loss",
    "norm",
    "overlap",
    "random_states",
]
