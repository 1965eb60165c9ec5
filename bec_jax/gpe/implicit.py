"""Implicit differentiation of stationary states: gradients through ``ground_state``.

The ground state is a fixed point, F(ψ; g, Ω) = Hψ − μψ = 0 on the unit sphere,
so its derivative depends only on the converged ψ, not on the iterations that
found it: no backprop through the solver's loops, O(1) memory in the iteration
count, one linear solve per backward pass.

* Linearisation: the (real-linear, self-adjoint) Hessian of the energy on the
  sphere, K v = (H − μ)v + g(|ψ|²v + ψ²v̄) (``hessian_apply``), restricted to
  the tangent space Re⟨ψ, v⟩ = 0. It is singular along the symmetry directions
  iψ (global phase) and iL_zψ (rotation about the trap axis: the rotationally
  symmetric trap makes every rotated lattice a ground state too). Both are
  projected out (``zero_modes``); on their complement K is positive definite
  at a strict minimum, and the adjoint system K λ = P G (G the cotangent of ψ,
  P the projection) is solved by CG (``cg``) preconditioned with the solver's
  own preconditioner (``minimize.rotating_preconditioner`` by default). The
  rotation zero mode gets no response, which is exact for observables that do
  not depend on the orientation of the lattice (energies, ⟨L_z⟩, radial
  profiles); a density at a fixed pixel of a vortex lattice has no derivative
  in Ω anyway (the orientation is arbitrary).
* Parameter cotangents: dL/dθ = −⟨λ, ∂_θ(Hψ)⟩ with ∂_g(Hψ) = |ψ|²ψ and
  ∂_Ω(Hψ) = −L_zψ (⟨a, b⟩ = Re Σ ā b; the μψ part drops because λ ⊥ ψ).

Where the derivative does not exist the gradient is NaN, never a silently
wrong number (``make_stationary``): (1) the Hessian is not positive definite
on the tangent space (the state is a saddle, or sits at the end of a
metastable branch), detected as non-positive curvature in the adjoint CG;
(2) the state is at a level crossing: another start of ``ground_state`` ended
on a distinct stationary state (another vortex number, or a clearly different
energy with other energy slopes) within ``TRANSITION_GAP`` of the winner's
energy (``branch_gap``),
e.g. at a vortex-number transition, where the ground state jumps from one
branch to the other and E(Ω) has a kink.

Functions act on ONE state (n, n) unless said otherwise; vmap them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bec_jax.gpe.grid import Grid
from bec_jax.gpe.hamiltonian import (angular_momentum, apply_hamiltonian, apply_kinetic_rotation, chemical_potential,
                                     density, energy)
from bec_jax.gpe.minimize import PRECONDITIONER_PASSES, kinetic_preconditioner, rotating_preconditioner

__all__ = [
    "AdjointSettings",
    "TRANSITION_GAP",
    "inner",
    "minus_lz",
    "hessian_apply",
    "zero_modes",
    "cg",
    "adjoint_solve",
    "make_stationary",
    "state_tangent",
    "energy_slopes",
    "branch_gap",
    "attach_gradients",
]

#: relative energy gap, E_other − E_winner ≤ TRANSITION_GAP·max(1, |E|), below which a ground state counts as
#: sitting at a level crossing (its gradient is NaN). Since dE/dΩ = −⟨L_z⟩ differs by O(1) per vortex between
#: branches, it flags states within ~1e-4·|E| in Ω of a vortex-number transition.
TRANSITION_GAP = 1e-4
#: relative energy difference below which two starts count as the same state, by real dtype: the energy
#: error of a state converged to the default tolerances (soft lattice modes make it larger than residual²)
#: and round-off stay below it. Measured in float32 at n = 128 (benchmarks/ground_state_gradient.py): starts
#: on one vortex configuration differ by up to 2.3e-6; in float64 at n = 64, g = 100, Ω = 0.8, by 1e-8.
SAME_STATE = {"float32": 1e-5, "float64": 1e-7}
#: relative difference of the energy slopes (``energy_slopes``) below which two starts lie on one branch even
#: when their energies differ by more than SAME_STATE: copies of one state pinned to different grid positions
#: (whose energies differ by discretisation error: 1.7e-6, 4e-7 relative, on 32² in float64) have the same slopes to
#: 1.3e-5 (⟨L_z⟩) and 1.4e-6 (½∫|ψ|⁴), and where slopes agree the minimum over the starts has a derivative (the
#: one of either). At the vortex-free/one-vortex crossing they differ by 0.99 and 7 %. Measured on the case of
#: tests/gpe/test_gradients.py::test_vortex_number_transition_gives_nan_gradient; the bound is kept tight because
#: two distinct states of one vortex number whose slopes agree to it would count as one branch although ψ jumps
#: between them.
SAME_SLOPE = 1e-4

_PRECONDITIONERS = {"kinetic": kinetic_preconditioner, "rotating": rotating_preconditioner}


@dataclasses.dataclass(frozen=True)
class AdjointSettings:
    """Adjoint CG of the backward pass (hashable: a static jit argument).

    iters: CG iteration cap (each one Hessian + one preconditioner
    application, ~10 1-D FFT passes); tol: relative residual ‖r‖/‖P G‖ at
    which it stops. The gradient's relative error is about tol·cond(K) at
    worst, typically ~tol.
    """

    iters: int = 300
    tol: float = 1e-6

    def __post_init__(self):
        if self.iters < 1 or not self.tol > 0:
            raise ValueError(f"need iters >= 1 and tol > 0, got iters={self.iters}, tol={self.tol}")


def inner(a, b):
    """Real inner product Re Σ ā b over the last two axes (no cell area), shape a.shape[:-2]."""
    return jnp.real(jnp.sum(jnp.conj(a) * b, axis=(-2, -1)))


def minus_lz(grid: Grid, psi):
    """−L_z ψ = ∂_Ω(Hψ), shape of psi (the Ω-linear part of T − ΩL_z)."""
    return apply_kinetic_rotation(grid, psi, 1.0) - apply_kinetic_rotation(grid, psi, 0.0)


def hessian_apply(grid: Grid, psi, g, omega, mu, v):
    """K v = (H − μ)v + g(|ψ|²v + ψ² v̄): the Hessian of E − μ(‖ψ‖² − 1) (÷2).

    Real-linear in v (not complex-linear), self-adjoint for Re Σ ā b.
    """
    lin = apply_kinetic_rotation(grid, v, omega) + jnp.asarray(grid.potential()) * v
    rho = density(psi)
    return lin - mu * v + g * (2 * rho * v + psi * psi * jnp.conj(v))


def _orthonormal_span(vectors, tiny: float = 1e-6):
    """Gram–Schmidt in the real inner product; near-dependent vectors are dropped
    (e.g. iL_zψ ∝ iψ for a vortex-free or single-central-vortex state)."""
    basis = []
    for v in vectors:
        n0 = jnp.sqrt(inner(v, v))
        for b in basis:
            v = v - inner(b, v) * b
        nv = jnp.sqrt(inner(v, v))
        keep = nv > tiny * jnp.maximum(n0, 1e-30)
        basis.append(jnp.where(keep, v / jnp.where(keep, nv, 1.0), 0.0))
    return basis


def zero_modes(grid: Grid, psi):
    """Orthonormal basis (list of (n, n)) of span{ψ, iψ, iL_zψ}: the normal of the
    sphere, the phase mode and the rotation mode, dependent ones dropped (zeros)."""
    return _orthonormal_span([psi, 1j * psi, 1j * minus_lz(grid, psi)])


def cg(apply_a, b, precond, iters: int, tol: float):
    """Preconditioned CG for a real-self-adjoint operator on complex arrays.

    Real inner product, fixed-cap while_loop (vmappable). Stops when
    ‖r‖ ≤ tol·‖b‖ or after ``iters`` iterations, or at the first direction of
    non-positive curvature ⟨p, Ap⟩ ≤ 0. That direction counts as negative
    (the operator is not positive definite) when ⟨p, Ap⟩ < −√ε‖p‖‖Ap‖ (ε the
    dtype's machine epsilon); a smaller |⟨p, Ap⟩| is round-off in a nearly
    converged solve. Returns (x, info) with info = dict(iterations int32,
    rel_residual ‖r‖/‖b‖, positive bool: no negative curvature met).
    """
    neg_tol = float(np.sqrt(np.finfo(b.real.dtype).eps))
    x = jnp.zeros_like(b)
    z = precond(b)
    rz = inner(b, z)
    bn = jnp.sqrt(inner(b, b))
    safe_bn = jnp.where(bn == 0, 1.0, bn)

    def cond(c):
        x, r, p, rz, k, pos, go = c
        return (k < iters) & (jnp.sqrt(inner(r, r)) > tol * bn) & go

    def body(c):
        x, r, p, rz, k, pos, go = c
        ap = apply_a(p)
        pap = inner(p, ap)
        go = pap > 0
        pos = pap >= -neg_tol * jnp.sqrt(inner(p, p) * inner(ap, ap))
        alpha = jnp.where(go, rz / jnp.where(go, pap, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        z = precond(r)
        rz_new = inner(r, z)
        p = z + (rz_new / jnp.where(rz == 0, 1.0, rz)) * p
        return x, r, p, rz_new, k + 1, pos, go

    init = (x, b, z, rz, jnp.int32(0), jnp.bool_(True), jnp.bool_(True))
    x, r, _, _, k, pos, _ = jax.lax.while_loop(cond, body, init)
    return x, dict(iterations=k, rel_residual=jnp.sqrt(inner(r, r)) / safe_bn, positive=pos)


def adjoint_solve(grid: Grid, psi, g, omega, G, *, preconditioner: str = "rotating", iters: int = 300,
                  tol: float = 1e-6):
    """λ with P K P λ = P G on the complement P of ``zero_modes`` (pseudo-inverse).

    psi: converged stationary state (n, n), normalised; G (n, n): the real
    gradient ∂L/∂(Re ψ) + i ∂L/∂(Im ψ). preconditioner: "rotating" or "kinetic"
    (``minimize``), applied as P M P. Returns (λ, info) (``cg``); one iteration
    costs one Hessian application (4 1-D FFT passes) plus the preconditioner
    (``PRECONDITIONER_PASSES``).
    """
    if preconditioner not in PRECONDITIONER_PASSES:
        raise ValueError(f"preconditioner must be one of {sorted(PRECONDITIONER_PASSES)}, got {preconditioner!r}")
    mu = inner(psi, apply_hamiltonian(grid, psi, g, omega)) / inner(psi, psi)
    basis = zero_modes(grid, psi)

    def proj(v):
        for b in basis:
            v = v - inner(b, v) * b
        return v

    def a_op(v):  # P K P + (I − P): SPD at a strict minimum, identity on the symmetry span
        pv = proj(v)
        return proj(hessian_apply(grid, psi, g, omega, mu, pv)) + (v - pv)

    m = _PRECONDITIONERS[preconditioner](grid, g, omega)

    def precond(r):  # P M P + (I − P): M is symmetric positive definite
        pr = proj(r)
        return proj(m(pr, mu, psi)) + (r - pr)

    return cg(a_op, proj(G), precond, iters, tol)


def _param_cotangents(grid: Grid, psi, lam):
    """(ḡ, Ω̄) = (−⟨λ, |ψ|²ψ⟩, −⟨λ, −L_zψ⟩)."""
    return -inner(lam, density(psi) * psi), -inner(lam, minus_lz(grid, psi))


def make_stationary(grid: Grid, *, preconditioner: str = "rotating", cg_iters: int = 300, cg_tol: float = 1e-6):
    """Factory: ``stationary(psi, g, omega, valid=True) -> psi`` with an implicit VJP.

    Forward is the identity: psi (n, n) complex must already be a converged
    stationary state at (g, Ω) (real scalars); vmap it for batches. Backward
    solves the adjoint system (``adjoint_solve``) and returns ḡ, Ω̄; psi gets
    no cotangent (it is the solver's output, not an independent input), nor
    does ``valid`` (bool). The parameter cotangents are NaN where the derivative does
    not exist: ``valid`` False (a level crossing, ``attach_gradients``) or
    non-positive curvature of the Hessian on the tangent space (not a strict
    minimum). cg_iters / cg_tol: adjoint CG cap and relative tolerance.
    """
    AdjointSettings(cg_iters, cg_tol)  # validates

    @jax.custom_vjp
    def stationary(psi, g, omega, valid=True):
        return psi

    def fwd(psi, g, omega, valid=True):
        return psi, (psi, g, omega, jnp.asarray(valid))

    def bwd(res, ct):
        psi, g, omega, valid = res
        G = jnp.conj(ct)  # JAX's cotangent of a complex output is the conjugate of the real gradient
        lam, info = adjoint_solve(grid, psi, g, omega, G, preconditioner=preconditioner, iters=cg_iters, tol=cg_tol)
        g_bar, om_bar = _param_cotangents(grid, psi, lam)
        ok = valid & info["positive"]
        g_bar, om_bar = (jnp.where(ok, a, jnp.nan) for a in (g_bar, om_bar))
        return (jnp.zeros_like(psi), g_bar.astype(jnp.result_type(g)), om_bar.astype(jnp.result_type(omega)),
                None)

    stationary.defvjp(fwd, bwd)
    return stationary


def state_tangent(grid: Grid, psi, g, omega, dg, domega, *, preconditioner: str = "rotating",
                  adjoint: AdjointSettings = AdjointSettings()):
    """Forward-mode derivative dψ = ∂ψ/∂g·dg + ∂ψ/∂Ω·dΩ of a stationary state (n, n).

    One CG solve, P K P dψ = −P(dg·|ψ|²ψ − dΩ·L_zψ), whatever the number of
    outputs: a whole sensitivity map ∂n/∂Ω = 2 Re(ψ̄ ∂ψ/∂Ω) costs what one
    gradient does, where reverse mode would need one backward pass per pixel.
    Zero modes as in the VJP (dψ ⊥ ψ, iψ, iL_zψ), which it matches:
    ⟨G, dψ/dθ⟩ = θ̄ of ``make_stationary``. NaN where the Hessian is not
    positive definite. Returns (dψ (n, n) complex, info of ``cg``).
    """
    rhs = -(dg * density(psi) * psi + domega * minus_lz(grid, psi))
    dpsi, info = adjoint_solve(grid, psi, g, omega, rhs, preconditioner=preconditioner, iters=adjoint.iters,
                               tol=adjoint.tol)
    return jnp.where(info["positive"], dpsi, jnp.nan), info


def energy_slopes(grid: Grid, psi):
    """(∂E/∂g, ∂E/∂Ω) = (½∫|ψ|⁴, −⟨L_z⟩) of stationary states (Hellmann–Feynman): psi (..., n, n) ->
    real (..., 2). A kink of the ground-state energy, where branches cross, is a jump of these."""
    rho = density(psi)
    return jnp.stack([0.5 * jnp.sum(rho * rho, axis=(-2, -1)) * grid.cell_area, -angular_momentum(grid, psi)], -1)


def branch_gap(res):
    """E_other − E_winner: energy gap (≥ 0) between the ground state of a
    ``GroundStateResult`` and the lowest start that ended on a distinct state:
    another vortex number (``start_vortices``), or more than
    ``SAME_STATE[dtype]``·max(1, |E|) above it with other energy slopes
    (``start_slopes`` differing from the winner's by more than ``SAME_SLOPE``
    relative: ½∫|ψ|⁴ to itself, ⟨L_z⟩ to max(1, |⟨L_z⟩|)). inf when every
    start found the winner. Shape: the batch shape of ``res``. A gap near zero
    means a level crossing (e.g. a vortex-number transition): the ground state
    jumps there and has no derivative. Only crossings the starts found are
    seen."""
    e = jax.lax.stop_gradient(res.energy)[..., None]
    s = res.start_energies
    above = s - e > SAME_STATE[jnp.dtype(s.dtype).name] * jnp.maximum(1.0, jnp.abs(e))
    win = jnp.take_along_axis(res.start_slopes, res.start_winner[..., None, None], axis=-2)  # (..., 1, 2)
    # ½∫|ψ|⁴ > 0 relative to itself, ⟨L_z⟩ relative to max(1, |⟨L_z⟩|) (it is ~0 without vortices)
    scale = jnp.maximum(jnp.abs(win), jnp.asarray([0.0, 1.0], win.dtype))
    other_slopes = jnp.any(jnp.abs(res.start_slopes - win) > SAME_SLOPE * scale, axis=-1)
    distinct = (res.start_vortices != res.vortices[..., None]) | (above & other_slopes)
    other = jnp.isfinite(s) & distinct
    return jnp.min(jnp.where(other, jnp.maximum(s - e, 0.0), jnp.inf), axis=-1)


def attach_gradients(grid: Grid, res, g, omega, *, preconditioner: str = "rotating",
                     adjoint: AdjointSettings = AdjointSettings()):
    """The batch ``GroundStateResult`` (B,) ``res`` with psi, energy and mu
    differentiable in g, omega (B,) (implicitly, ``make_stationary``).

    ``res`` must come from a solve on ``stop_gradient`` parameters; the other
    fields carry no gradient (counts, flags) or are diagnostics (residual,
    start energies). Gradients are NaN at level crossings (``branch_gap`` ≤
    ``TRANSITION_GAP``·max(1, |E|)) and at non-minima (``make_stationary``).
    """
    stationary = make_stationary(grid, preconditioner=preconditioner, cg_iters=adjoint.iters, cg_tol=adjoint.tol)
    valid = branch_gap(res) > TRANSITION_GAP * jnp.maximum(1.0, jnp.abs(res.energy))
    psi = jax.vmap(stationary)(res.psi, g, omega, valid)
    return dataclasses.replace(res, psi=psi, energy=energy(grid, psi, g, omega),
                               mu=chemical_potential(grid, psi, g, omega))
