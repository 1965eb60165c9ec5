"""Direct minimisation of E[ψ] on the unit sphere: preconditioned nonlinear CG.

Split-step imaginary time converges to the stationary state of a modified
Hamiltonian: at fast rotation its residual floor is large (g = 100, Ω = 0.8:
‖Hψ − μψ‖ ≈ 7·dt²), so reaching 1e-4 would need dt ≈ 4e-3 and 10⁵ steps. The
energy is minimised here without splitting error, following Antoine, Levitt &
Tang, J. Comput. Phys. 343 (2017) 92: Riemannian gradient r = Hψ − λψ
(λ = ⟨ψ,Hψ⟩), a preconditioner P, Polak–Ribière+ conjugate directions with
restarts, geodesic retraction, and a Newton step along the geodesic from the
closed-form first and second derivatives of E. The default preconditioner
(``preconditioner="rotating"`` in ``make_pcg``, ``pcg_minimize`` and
``ground_state``) is built for the rotating frame (``rotating_preconditioner``):
to residual 1e-6 it needs 1.6–2.6× fewer FFT passes than ALT's lab-frame
kinetic one (``kinetic_preconditioner``, ``preconditioner="kinetic"``) at
g = 100, Ω = 0.8 and g = 500, Ω = 0.85 (benchmarks/README.md,
ground_state_methods), so callers with a fixed iteration budget reach a
smaller residual in it.

All functions act on ONE state (n, n) and are meant to be vmapped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bec_jax.gpe.grid import Grid
from bec_jax.gpe.hamiltonian import apply_hamiltonian, density, energy, rotation_symbols

__all__ = ["make_pcg", "pcg_minimize", "kinetic_preconditioner", "rotating_preconditioner", "PRECONDITIONER_PASSES"]


def _inner(grid: Grid, a, b):
    """Re ∫ a* b."""
    return jnp.real(jnp.vdot(a, b)) * grid.cell_area


def _alpha(lam):
    """Shift α of the preconditioners: the chemical-potential scale keeps P
    positive and O(1/μ) on the smooth part of the error."""
    return jnp.maximum(lam, 1.0)


def _project(grid: Grid, z, psi):
    """Component of z orthogonal to psi (tangent space of the sphere at psi)."""
    return z - _inner(grid, psi, z).astype(z.dtype) * psi


def kinetic_preconditioner(grid: Grid, g, omega):
    """P = (α + k²/2)⁻¹ (lab-frame kinetic energy; Antoine–Levitt–Tang 2017).

    Returns ``precondition(r, lam, psi)`` -> P r projected on the tangent space;
    4 1-D FFT passes. At fast rotation it mismatches the ground state: a vortex
    lattice rotating with Ω carries local momenta k ≈ Ωr, which this P damps as
    if they were kinetic energy ½(Ωr)², although −ΩL_z cancels most of it.
    """
    k = jnp.asarray(grid.k)
    kin = 0.5 * (k[:, None] ** 2 + k[None, :] ** 2)

    def precondition(r, lam, psi):
        z = jnp.fft.ifft2(jnp.fft.fft2(r) / (_alpha(lam) + kin).astype(r.dtype))
        return _project(grid, z, psi)

    return precondition


def rotating_preconditioner(grid: Grid, g, omega):
    """Rotating-frame kinetic + effective-potential preconditioner.

    In the rotating frame T − ΩL_z + V = T_x + T_y + (1 − Ω²)V exactly, with
    T_x = ½(k_x + Ωy)² diagonal in (y, k_x) and T_y = ½(k_y − Ωx)² diagonal in
    (k_y, x) (the ``rotation_symbols`` plus ½Ω²y², ½Ω²x²). (α + T_x + T_y)⁻¹ is
    approximated by the symmetric product α S_x (α + T_y)⁻¹ S_x with
    S_x = (α + T_x)^(−1/2) (exact at k = Ωr, where the lattice lives), and
    wrapped in the real-space scaling D^(1/2) with D = 2α/(α + (1 − Ω²)V + g|ψ|²)
    (≈ 1 inside the cloud, where the Thomas–Fermi potential is flat at μ ≈ α;
    small outside), as in ALT's combined kinetic + potential preconditioner.
    Returns ``precondition(r, lam, psi)``; 6 1-D FFT passes.
    """
    a, b = rotation_symbols(grid, omega)
    x = jnp.asarray(grid.x)
    tx = a + 0.5 * omega**2 * x[:, None] ** 2  # [y, k_x]
    ty = b + 0.5 * omega**2 * x[None, :] ** 2  # [k_y, x]
    v_rot = (1 - omega**2) * jnp.asarray(grid.potential())

    def precondition(r, lam, psi):
        alpha = _alpha(lam)
        d = jnp.sqrt(2 * alpha / (alpha + v_rot + g * density(psi))).astype(r.dtype)
        sx = jnp.sqrt(alpha / (alpha + tx)).astype(r.dtype)
        z = jnp.fft.ifft(jnp.fft.fft(d * r, axis=-1) * sx, axis=-1)
        z = jnp.fft.ifft(jnp.fft.fft(z, axis=-2) / (alpha + ty).astype(r.dtype), axis=-2)
        z = jnp.fft.ifft(jnp.fft.fft(z, axis=-1) * sx, axis=-1)
        return _project(grid, d * z, psi)

    return precondition


_PRECONDITIONERS = {"kinetic": kinetic_preconditioner, "rotating": rotating_preconditioner}
PRECONDITIONER_PASSES = {"kinetic": 4, "rotating": 6}  # 1-D FFT passes per application


def make_pcg(grid: Grid, g, omega, *, max_angle: float = 0.3, preconditioner="rotating"):
    """Factory: ``(init, step)`` of preconditioned NLCG for ONE state.

    ``init(psi)`` takes a normalised (n, n) state and returns the carry (a dict:
    psi, r = Hψ − λψ, lam = λ, res = ‖r‖, it, de = model energy decrease of the
    last step, and the CG memory); ``step(carry)`` does one iteration: one
    Hamiltonian application (4 1-D FFT passes), one preconditioner application
    (``PRECONDITIONER_PASSES``) and one quadratic form (2): 12 passes with
    ``preconditioner="rotating"`` (default), 10 with "kinetic"; or a factory of one's own, called as the
    named ones are: ``factory(grid, g, omega) -> precondition(r, lam, psi)``. ``max_angle``
    caps the step (radians on the sphere).
    """
    if not callable(preconditioner) and not (isinstance(preconditioner, str) and preconditioner in _PRECONDITIONERS):
        raise ValueError(f"preconditioner must be one of {sorted(_PRECONDITIONERS)}, got {preconditioner!r} "
                         "(or a factory (grid, g, omega) -> precondition)")

    def grad(p):
        h = apply_hamiltonian(grid, p, g, omega)
        lam = _inner(grid, p, h)
        r = h - lam.astype(p.dtype) * p
        return r, lam, jnp.sqrt(_inner(grid, r, r))

    precondition = (preconditioner if callable(preconditioner) else _PRECONDITIONERS[preconditioner])(grid, g, omega)

    def step(c):
        psi, r, lam = c["psi"], c["r"], c["lam"]
        z = precondition(r, lam, psi)
        rz = _inner(grid, r, z)
        beta = jnp.maximum(_inner(grid, r - c["r_prev"], z) / jnp.maximum(c["rz_prev"], 1e-30), 0.0)
        beta = jnp.where(c["it"] == 0, 0.0, beta)
        # Transport the old direction to the new tangent space by projection.
        p_old = c["p"] - _inner(grid, psi, c["p"]).astype(psi.dtype) * psi
        p = -z + beta.astype(psi.dtype) * p_old
        # Not a descent direction: restart along the preconditioned gradient.
        p = jnp.where(_inner(grid, r, p) < 0, p, -z)
        # Newton step along the geodesic ψ(θ) = cos θ ψ + sin θ u, with E'(0) and
        # E''(0) in closed form: no energy differences, so it works in float32.
        s_p = jnp.sqrt(jnp.maximum(_inner(grid, p, p), 1e-30))
        u = p / s_p.astype(p.dtype)
        rho = density(psi)
        a = 2 * jnp.real(jnp.conj(psi) * u)
        lin_psi = lam - g * jnp.sum(rho * rho) * grid.cell_area  # <ψ, (T - ΩL_z + V) ψ>
        lin_u = energy(grid, u, 0.0, omega)  # <u, (T - ΩL_z + V) u>
        slope = 2 * _inner(grid, r, u)
        curv = 2 * (lin_u - lin_psi) + g * jnp.sum(a * a + 2 * rho * (density(u) - rho)) * grid.cell_area
        theta = jnp.where(curv > 0, -slope / jnp.maximum(curv, 1e-30), 0.1)
        theta = jnp.clip(theta, 0.0, max_angle)
        new = jnp.cos(theta).astype(psi.dtype) * psi + jnp.sin(theta).astype(psi.dtype) * u
        r_new, lam_new, res_new = grad(new)
        de = -(slope * theta + 0.5 * curv * theta**2)  # model energy decrease, ≥ 0
        return dict(psi=new, r=r_new, lam=lam_new, res=res_new, p=p, r_prev=r, rz_prev=rz, it=c["it"] + 1, de=de)

    def init(psi):
        r, lam, res = grad(psi)
        return dict(psi=psi, r=r, lam=lam, res=res, p=jnp.zeros_like(psi), r_prev=jnp.zeros_like(psi),
                    rz_prev=jnp.ones_like(res), it=jnp.int32(0), de=jnp.full_like(res, jnp.inf))

    return init, step


def pcg_minimize(grid: Grid, psi, g, omega, *, max_iter: int, tol_residual: float, tol_energy: float,
                 max_angle: float = 0.3, preconditioner: str = "rotating"):
    """Minimise E on ∫|ψ|² = 1 from normalised psi (n, n) by preconditioned NLCG.

    Stops when ‖Hψ − λψ‖ ≤ tol_residual and the last step lowered E by at most
    tol_energy·max(1, |λ|), or after max_iter iterations.
    ``preconditioner``: "rotating" (default) or "kinetic" (module doc).
    Returns (psi, residual, iterations, converged); one iteration costs 12
    (rotating) or 10 (kinetic) 1-D FFT passes (``make_pcg``).
    """
    init, step = make_pcg(grid, g, omega, max_angle=max_angle, preconditioner=preconditioner)

    def converged(c):
        return (c["res"] <= tol_residual) & (c["de"] <= tol_energy * jnp.maximum(1.0, jnp.abs(c["lam"])))

    def cond(c):
        return ~converged(c) & (c["it"] < max_iter) & jnp.isfinite(c["res"])

    c = jax.lax.while_loop(cond, step, init(psi))
    return c["psi"], c["res"], c["it"], converged(c) & jnp.isfinite(c["res"])
