"""Split-step Fourier integrators in imaginary and real time.

One step of size dt applies

    e^{-τW/2} · e^{-τA} · e^{-τB} · e^{-τW/2},   W = V + g|ψ|²,

with τ = dt (imaginary time, followed by renormalisation) or τ = i·dt (real
time). A and B (see ``hamiltonian``) are each exact in their mixed
representation, so a step costs four 1-D FFT passes. Consecutive steps
alternate the order (A then B, B then A): a pair of steps is a symmetric
(Strang) composition, second order in dt, at four FFT passes a step instead of
six for the symmetric step. ``steps`` is therefore best even; an odd count
ends with one first-order step.

In imaginary time both nonlinear half-steps of a step use the density at the
step's start, so the fixed point is the stationary state of H up to O(dt²); in
real time each half-step is the exact nonlinear phase rotation.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from bec_jax.gpe.grid import Grid, complex_dtype
from bec_jax.gpe.hamiltonian import density, norm, per_state, rotation_symbols
from bec_jax.gpe.sharding import batch_mesh, place, shard_batch

__all__ = ["imaginary_time", "real_time", "check_parameters", "make_step", "evolve"]


def _concrete(x):
    """x as a numpy array, or None when it is traced (values unknown at trace time)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_parameters(g, omega):
    """Raise ValueError for unphysical (g, omega); traced values pass through.

    |Ω| < 1 is required: for |Ω| ≥ 1 the centrifugal term cancels the harmonic
    trap and the energy is unbounded below. g ≥ 0 (repulsive): for g < 0 the 2-D
    condensate collapses and has no ground state.
    """
    g_np, om_np = _concrete(g), _concrete(omega)
    if om_np is not None:
        if not np.all(np.isfinite(om_np)) or np.any(np.abs(om_np) >= 1):
            bad = om_np[~(np.abs(om_np) < 1)] if om_np.ndim else om_np
            raise ValueError(
                f"omega must satisfy |omega| < 1 (trap units), got {np.ravel(bad)[:4].tolist()}: "
                "for |omega| >= 1 the centrifugal force overcomes the harmonic trap, "
                "which can no longer confine the condensate"
            )
    if g_np is not None:
        if not np.all(np.isfinite(g_np)) or np.any(g_np < 0):
            bad = g_np[~(g_np >= 0)] if g_np.ndim else g_np
            raise ValueError(
                f"g must be finite and >= 0 (repulsive interaction), got {np.ravel(bad)[:4].tolist()}"
            )


def _check_dt_steps(dt, steps):
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    dt_np = _concrete(dt)
    if dt_np is not None and (not np.all(np.isfinite(dt_np)) or np.any(dt_np <= 0)):
        raise ValueError(f"dt must be finite and > 0, got {dt!r}")


def _as_state(grid: Grid, psi):
    psi = jnp.asarray(psi)
    if psi.ndim < 2 or psi.shape[-2:] != (grid.n, grid.n):
        raise ValueError(f"psi must have shape (..., {grid.n}, {grid.n}) for {grid}, got {psi.shape}")
    if not jnp.issubdtype(psi.dtype, jnp.complexfloating):
        psi = psi.astype(complex_dtype())
    return psi


def make_step(grid: Grid, g, omega, dt, *, imaginary: bool):
    """Factory: ``step(phi, scale, reverse) -> (phi, scale)``, one split step.

    The state is carried as ``phi * scale`` (scale per state, shape batch):
    in imaginary time ``phi`` is left unnormalised and its norm is reduced in
    the same memory pass that writes it, then applied inside the next step's
    first multiply — one pass over the batch per step less than normalising
    in place (the steps are memory-bound on CPU and GPU). In real time scale
    stays 1.

    ``reverse`` (a Python bool) selects the order: False applies A then B, True
    B then A; alternating them makes a pair a symmetric (Strang) product. FFTs
    run along axis -1 (A) and -2 (B) in place: XLA handles the strided axis
    without copies (measured 2.3x faster on CPU than explicit transposes).
    Propagators are computed once here, outside any time loop; in imaginary
    time they are real, which halves their memory traffic.
    phi: complex (..., n, n), batch shape broadcastable to g and omega.
    """
    rdt = jnp.result_type(float)
    dt = jnp.asarray(dt, rdt)
    a, b = rotation_symbols(grid, omega)
    V = jnp.asarray(grid.potential())
    gg = per_state(g, rdt)
    tau = dt if imaginary else 1j * dt
    ea, eb = jnp.exp(-tau * a), jnp.exp(-tau * b)  # [y, k_x] and [k_y, x]
    ev = jnp.exp(-0.5 * tau * V)

    def half_w(p, scale2):
        return ev * jnp.exp((-0.5 * tau) * gg * (scale2 * density(p)))

    def sweep_a(p):
        return jnp.fft.ifft(jnp.fft.fft(p, axis=-1) * ea, axis=-1).astype(p.dtype)

    def sweep_b(p):
        return jnp.fft.ifft(jnp.fft.fft(p, axis=-2) * eb, axis=-2).astype(p.dtype)

    def step(phi, scale, reverse: bool):
        if not imaginary:
            # Real time: the W flow keeps |ψ|, so e^{-iτW(ψ)/2} at the current ψ
            # is its exact solution (Strang).
            phi = (half_w(phi, 1.0) * phi).astype(phi.dtype)
            phi = sweep_a(sweep_b(phi)) if reverse else sweep_b(sweep_a(phi))
            return (half_w(phi, 1.0) * phi).astype(phi.dtype), scale
        s = per_state(scale)
        # Both half-steps use W at the step's start (frozen nonlinearity): the
        # step is then a symmetric product of fixed linear propagators and its
        # fixed point is the stationary state up to O(dt²); re-evaluating W
        # midway makes that O(dt).
        ew = half_w(phi, s * s)
        psi = (phi * (ew * s)).astype(phi.dtype)
        psi = sweep_a(sweep_b(psi)) if reverse else sweep_b(sweep_a(psi))
        phi = (psi * ew).astype(phi.dtype)
        return phi, jax.lax.rsqrt(norm(grid, phi))

    return step


def evolve(grid: Grid, psi, g, omega, dt, steps: int, imaginary: bool):
    """``steps`` split steps (pure, un-jitted: the shared loop of both
    integrators and of ``ground_state``). Shapes as in ``imaginary_time``;
    in imaginary time the result is normalised."""
    step = make_step(grid, g, omega, dt, imaginary=imaginary)
    scale = jax.lax.rsqrt(norm(grid, psi)) if imaginary else jnp.ones(psi.shape[:-2], jnp.result_type(float))

    def pair(carry, _):
        phi, s = step(*carry, False)
        return step(phi, s, True), None

    (psi, scale), _ = jax.lax.scan(pair, (psi, scale), None, length=steps // 2)
    if steps % 2:
        psi, scale = step(psi, scale, False)
    return (psi * per_state(scale)).astype(psi.dtype) if imaginary else psi


@functools.partial(jax.jit, static_argnames=("grid", "steps", "imaginary", "mesh"))
def _evolve(grid: Grid, psi, g, omega, dt, steps: int, imaginary: bool, mesh=None):
    run = lambda p, gi, oi, dti: evolve(grid, p, gi, oi, dti, steps, imaginary)
    return shard_batch(run, mesh, n_replicated=1)(psi, g, omega, dt)


def _run(grid: Grid, psi, g, omega, dt, steps, imaginary: bool, shard: bool):
    check_parameters(g, omega)
    _check_dt_steps(dt, steps)
    psi = _as_state(grid, psi)
    # A batch (B, n, n) with a scalar dt is split over the local devices.
    mesh = batch_mesh(psi.shape[0]) if shard and psi.ndim == 3 and jnp.ndim(dt) == 0 else None
    if mesh is not None:
        rdt = jnp.result_type(float)
        g, omega = (jnp.broadcast_to(jnp.asarray(a, rdt), psi.shape[:1]) for a in (g, omega))
        psi, g, omega = place((psi, g, omega), mesh)
        dt = place(jnp.asarray(dt, rdt), mesh, split=False)
    return _evolve(grid, psi, g, omega, dt, int(steps), imaginary, mesh)


def imaginary_time(grid: Grid, psi, g, omega, *, dt, steps: int, shard: bool = True):
    """Imaginary-time split-step evolution, renormalised every step.

    Args:
      grid: the ``Grid``.
      psi: complex (..., n, n) initial state(s), any normalisation.
      g, omega: scalars or arrays broadcastable to ``psi.shape[:-2]``.
      dt: imaginary time step (> 0, trap units 1/ω⊥); traced, so changing it
        does not recompile.
      steps: number of steps (static: one compiled program per value).
      shard: for a batch psi (B, n, n), split it over all local devices when
        there are several and they divide B (``sharding.shard_batch``; on a
        CPU host see ``use_cpu_cores``). Results agree to round-off.

    Returns:
      psi after ``steps`` steps, normalised, same shape and dtype.
    """
    return _run(grid, psi, g, omega, dt, steps, True, shard)


def real_time(grid: Grid, psi, g, omega, *, dt, steps: int, shard: bool = True):
    """Real-time split-step evolution in the rotating frame (unitary).

    Same arguments as ``imaginary_time``; conserves the norm to round-off and
    the rotating-frame energy to O(dt²) without drift.
    """
    return _run(grid, psi, g, omega, dt, steps, False, shard)
