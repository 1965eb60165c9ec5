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
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from bec_jax.gpe.grid import Grid, complex_dtype
from bec_jax.gpe.hamiltonian import check_inputs, density, per_state, rotation_symbols
from bec_jax.gpe.sharding import backend_of, batch_mesh, cpu_chunk, map_batch, place, resolve_chunk, shard_batch

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
    for name, v, given in (("g", g_np, g), ("omega", om_np, omega)):
        if v is not None and v.dtype.kind in "USOcmM":  # text, objects, complex, times (bfloat16 is "V")
            raise ValueError(f"{name} must be a real number or array of them, got {given!r}")
        if v is not None and not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite, got {np.ravel(v[~np.isfinite(v)])[:4].tolist()}")
    if om_np is not None:
        if np.any(np.abs(om_np) >= 1):
            bad = om_np[~(np.abs(om_np) < 1)] if om_np.ndim else om_np
            raise ValueError(
                f"omega must satisfy |omega| < 1 (trap units), got {np.ravel(bad)[:4].tolist()}: "
                "for |omega| >= 1 the centrifugal force overcomes the harmonic trap, "
                "which can no longer confine the condensate"
            )
    if g_np is not None:
        if np.any(g_np < 0):
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


def _swap_xy(p):
    """[..., y, x] <-> [..., x, y]: the layout change between the two sweeps."""
    return jnp.swapaxes(p, -1, -2)


def _times(u, e):
    """u * e for complex u and a real or complex factor e.

    A real e is kept real (two real products): spelled u * e, XLA converts a
    loop-invariant e to complex once, outside the time loop, and every step
    then streams twice the bytes and does a complex product.
    """
    if jnp.iscomplexobj(e):
        return (u * e).astype(u.dtype)
    return jax.lax.complex(jnp.real(u) * e, jnp.imag(u) * e)


def _amp_and_scale(grid: Grid, phi):
    """(|phi|, (∫|phi|²)^(-1/2)): one pass gives the norm and the next density."""
    amp = jnp.abs(phi)
    return amp, jax.lax.rsqrt(jnp.sum(amp * amp, axis=(-2, -1)) * grid.cell_area)


def make_step(grid: Grid, g, omega, dt, *, imaginary: bool, trap: bool = True):
    """Factory: ``step(carry, reverse) -> carry``, one split step.

    ``carry = (phi, amp, scale)``. In imaginary time the state is ``phi *
    scale`` (scale per state, shape batch) and ``amp = |phi|``: phi is left
    unnormalised, and the one pass that reduces its norm also gives the next
    step's nonlinear factor its density, so no pass over the batch
    normalises in place or recomputes |phi| (the steps are memory-bound on
    CPU and GPU). In real time ``amp`` and ``scale`` are None.

    Layouts alternate so that every FFT runs along the last (contiguous)
    axis: ``reverse=False`` takes phi indexed [..., y, x], applies A (FFT
    along x), transposes, applies B (FFT along y) and returns phi indexed
    [..., x, y]; ``reverse=True`` takes [..., x, y], applies B then A and
    returns [..., y, x]. A pair of steps is a symmetric (Strang) product and
    ends in the layout it started from. That is one transpose a step, where
    an FFT along axis -2 costs two (XLA runs it as transpose, FFT,
    transpose); in imaginary time the nonlinear factor of the step's start is
    read transposed by the multiply at its end.
    Propagators are computed once here, outside any time loop; in imaginary
    time they are real, which halves their memory traffic.
    phi: complex (..., n, n), batch shape broadcastable to g and omega.
    trap: False drops the harmonic potential V (free expansion after release).
    """
    rdt = jnp.result_type(float)
    dt = jnp.asarray(dt, rdt)
    a, b = rotation_symbols(grid, omega)
    V = jnp.asarray(grid.potential() if trap else np.zeros((grid.n, grid.n), grid.x.dtype))  # symmetric under x <-> y: one array serves both layouts
    gg = per_state(g, rdt)
    tau = dt if imaginary else 1j * dt
    ea = jnp.exp(-tau * a)  # [y, k_x]
    eb = _swap_xy(jnp.exp(-tau * b))  # [x, k_y]
    ev = jnp.exp(-0.5 * tau * V)

    def sweep(p, e):
        return jnp.fft.ifft(_times(jnp.fft.fft(p, axis=-1), e), axis=-1).astype(p.dtype)

    def kinetic(p, reverse: bool):
        if reverse:  # [x, y] -> B -> [y, x] -> A
            return sweep(_swap_xy(sweep(p, eb)), ea)
        return sweep(_swap_xy(sweep(p, ea)), eb)  # [y, x] -> A -> [x, y] -> B

    def step(carry, reverse: bool):
        phi, amp, scale = carry
        if not imaginary:
            # Real time: the W flow keeps |ψ|, so e^{-iτW(ψ)/2} at the current ψ
            # is its exact solution (Strang).
            half_w = lambda p: ev * jnp.exp((-0.5 * tau) * gg * density(p))
            phi = _times(phi, half_w(phi))
            phi = kinetic(phi, reverse)
            return _times(phi, half_w(phi)), None, None
        s = per_state(scale)
        # Both half-steps use W at the step's start (frozen nonlinearity): the
        # step is then a symmetric product of fixed linear propagators and its
        # fixed point is the stationary state up to O(dt²); re-evaluating W
        # midway makes that O(dt).
        ew = ev * jnp.exp((-0.5 * tau) * gg * (s * s * (amp * amp)))
        psi = kinetic(_times(phi, ew * s), reverse)
        phi = _times(psi, _swap_xy(ew))
        return (phi, *_amp_and_scale(grid, phi))

    return step


def evolve(grid: Grid, psi, g, omega, dt, steps: int, imaginary: bool, trap: bool = True):
    """``steps`` split steps (pure, un-jitted: the shared loop of both
    integrators and of ``ground_state``). Shapes as in ``imaginary_time``;
    in imaginary time the result is normalised."""
    step = make_step(grid, g, omega, dt, imaginary=imaginary, trap=trap)
    carry = (psi, *_amp_and_scale(grid, psi)) if imaginary else (psi, None, None)

    def pair(c, _):
        return step(step(c, False), True), None

    carry, _ = jax.lax.scan(pair, carry, None, length=steps // 2)
    if steps % 2:
        carry = step(carry, False)
    psi, _, scale = carry
    if steps % 2:
        psi = _swap_xy(psi)
    return (psi * per_state(scale)).astype(psi.dtype) if imaginary else psi


@functools.partial(jax.jit, static_argnames=("grid", "steps", "imaginary", "mesh", "chunk", "trap"))
def _evolve(grid: Grid, psi, g, omega, dt, steps: int, imaginary: bool, mesh=None, chunk=None, trap: bool = True):
    """``evolve`` as one program: split over ``mesh``, and on each device over
    chunks of ``chunk`` states (``sharding.map_batch``; None: all at once)."""

    def run(p, gi, oi, dti):
        if chunk is None or p.ndim < 3 or math.prod(p.shape[:-2]) <= chunk:
            return evolve(grid, p, gi, oi, dti, steps, imaginary, trap)
        # Per-state g, omega are mapped with the states; scalars stay shared, so a chunk's
        # propagators are one (n, n) array, not one per state.
        per_state_args = {k: jnp.broadcast_to(v, p.shape[:-2]).reshape(-1)
                          for k, v in (("g", gi), ("omega", oi)) if jnp.ndim(v)}
        one = lambda q, m: evolve(grid, q, m.get("g", gi), m.get("omega", oi), dti, steps, imaginary, trap)
        out = map_batch(one, chunk)(p.reshape((-1,) + p.shape[-2:]), per_state_args)
        return out.reshape(p.shape)

    return shard_batch(run, mesh, n_replicated=1)(psi, g, omega, dt)


#: largest imaginary time step: beyond it e^{-dt·V} and e^{-dt·k²/2} underflow to zero on typical grids
MAX_IMAGINARY_DT = 1.0


def _run(grid: Grid, psi, g, omega, dt, steps, imaginary: bool, shard: bool, chunk="auto", trap: bool = True):
    check_parameters(g, omega)
    _check_dt_steps(dt, steps)
    dt_np = _concrete(dt)
    if imaginary and dt_np is not None and np.any(dt_np > MAX_IMAGINARY_DT):
        raise ValueError(f"imaginary-time dt must be in (0, {MAX_IMAGINARY_DT}] (trap units), got {dt!r}: larger "
                         "steps underflow the propagators to zero and the state to NaN")
    psi = _as_state(grid, psi)
    check_inputs(psi)
    # A batch (B, n, n) with a scalar dt is split over the local devices.
    mesh = batch_mesh(psi.shape[0]) if shard and psi.ndim == 3 and jnp.ndim(dt) == 0 else None
    if mesh is not None:
        rdt = jnp.result_type(float)
        g, omega = (jnp.broadcast_to(jnp.asarray(a, rdt), psi.shape[:1]) for a in (g, omega))
        psi, g, omega = place((psi, g, omega), mesh)
        dt = place(jnp.asarray(dt, rdt), mesh, split=False)
    chunk = resolve_chunk(chunk, cpu_chunk(grid.n, psi.dtype, backend_of(psi)))
    if jnp.ndim(dt) > 0:  # a dt per state is broadcast against the whole batch: no chunks
        chunk = None
    return _evolve(grid, psi, g, omega, dt, int(steps), imaginary, mesh, chunk, bool(trap))


def imaginary_time(grid: Grid, psi, g, omega, *, dt, steps: int, shard: bool = True, chunk="auto"):
    """Imaginary-time split-step evolution, renormalised every step.

    Args:
      grid: the ``Grid``.
      psi: complex (..., n, n) initial state(s), any normalisation.
      g: interaction strength(s), scalar or an array broadcastable to ``psi.shape[:-2]``.
      omega: rotation rate(s) |Ω| < 1 in units of ω⊥, broadcast the same way.
      dt: imaginary time step (> 0, trap units 1/ω⊥); traced, so changing it
        does not recompile.
      steps: number of steps (static: one compiled program per value).
      shard: for a batch psi (B, n, n), split it over all local devices when
        there are several and they divide B (``sharding.shard_batch``; on a
        CPU host see ``use_cpu_cores``). Results agree to round-off.
      chunk: states each device evolves at a time (``sharding.map_batch``):
        "auto" (default) picks a few states (``cpu_chunk``, whose passes stay
        in cache) on a CPU and the whole batch on a GPU/TPU; None: the whole
        batch; or an int >= 1. Results agree to round-off.

    Returns:
      psi after ``steps`` steps, normalised, same shape and dtype.
    """
    return _run(grid, psi, g, omega, dt, steps, True, shard, chunk)


def real_time(grid: Grid, psi, g, omega, *, dt, steps: int, shard: bool = True, chunk="auto", trap: bool = True):
    """Real-time split-step evolution in the rotating frame (unitary).

    Same arguments as ``imaginary_time``; conserves the norm to round-off and
    the rotating-frame energy to O(dt²) without drift. trap=False switches the
    harmonic potential off (free flight after release; with omega=0, in the lab
    frame), as in a time-of-flight measurement.
    """
    return _run(grid, psi, g, omega, dt, steps, False, shard, chunk, trap)
