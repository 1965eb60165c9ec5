"""Differentiable 1-D Schrödinger simulator (Crank–Nicolson, Dirichlet walls).

Solves i dpsi/dt = (-d^2/dx^2 + V(x, t)) psi on [x0, x0 + length] with psi = 0 at
both walls (the paper's convention: no factor 1/2 on the Laplacian, hbar = 1,
mass 1/2). The n unknowns sit at the interior nodes x_j = x0 + j*dx, j = 1..n,
dx = length / (n + 1). The discrete Hamiltonian is the Hermitian tridiagonal
matrix H = tridiag(-1/dx^2, 2/dx^2 + V_j, -1/dx^2).

One time step is the Crank–Nicolson (Cayley) map
    (I + i dt/2 H_k) psi_{k+1} = (I - i dt/2 H_k) psi_k,
unitary for Hermitian H_k, hence norm-preserving to round-off. As in the
"modified" Crank–Nicolson scheme of Winckel, Borzì & Volkwein (2009) the
potential is held at one value V_k per step (its mid-step value), so a control
u(t) is a sequence u_k with V_k(x) = V_static(x) + u_k x.

Style: a frozen ``Grid1D``, pure functions of arrays, and one ``lax.scan``
(``evolve``) with optional segment-wise ``jax.checkpoint``: reverse mode then
stores O(steps/segment + segment) states instead of every step's residuals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.lax.linalg import tridiagonal_solve

__all__ = [
    "DEFAULT_DT",
    "Grid1D",
    "apply_hamiltonian",
    "box_eigenstate",
    "box_eigenvalue",
    "cn_step",
    "dipole_potentials",
    "evolve",
    "norm",
    "random_states",
]

#: The paper's time step (in units where the kinetic term is -d^2/dx^2).
DEFAULT_DT = 0.2


@dataclass(frozen=True)
class Grid1D:
    """Uniform grid of ``n`` interior nodes on [x0, x0 + length], Dirichlet walls.

    Attributes:
      n: number of unknowns (interior nodes), >= 3. Default 20 (the paper's).
      length: box length, > 0 (length units). Default 2.0, i.e. the box [0, 2]
        used by the authors' control code.
      x0: position of the left wall.
    """

    n: int = 20
    length: float = 2.0
    x0: float = 0.0

    def __post_init__(self):
        if not isinstance(self.n, (int, np.integer)) or isinstance(self.n, bool) or self.n < 3:
            raise ValueError(f"Grid1D.n must be an integer >= 3, got {self.n!r}")
        if not (math.isfinite(self.length) and self.length > 0):
            raise ValueError(f"Grid1D.length must be finite and > 0, got {self.length!r}")
        if not math.isfinite(self.x0):
            raise ValueError(f"Grid1D.x0 must be finite, got {self.x0!r}")

    @property
    def dx(self) -> float:
        """Node spacing length / (n + 1)."""
        return self.length / (self.n + 1)

    def x(self, dtype=None) -> jax.Array:
        """Interior node positions x0 + j dx, j = 1..n, shape (n,), default float dtype."""
        # numpy constant: no per-op compilation when called eagerly
        x = self.x0 + np.arange(1, self.n + 1) * self.dx
        return jnp.asarray(x, dtype=dtype or jnp.result_type(float))


def _check_dt(dt) -> None:
    """Reject dt <= 0 / non-finite when dt is concrete (a traced dt cannot be checked)."""
    if isinstance(dt, jax.core.Tracer):
        return
    arr = np.asarray(dt)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"dt must be a real scalar > 0, got {dt!r}")
    if not (math.isfinite(float(arr.real)) and float(arr.real) > 0 and arr.imag == 0):
        raise ValueError(f"dt must be finite and > 0, got {dt!r}")


def _complex_dtype(*arrays):
    return jnp.result_type(*[jnp.asarray(a).dtype for a in arrays], jnp.complex64)


def _check_state(grid: Grid1D, psi, name: str = "psi") -> None:
    if psi.ndim < 1 or psi.shape[-1] != grid.n:
        raise ValueError(
            f"{name} must have shape (..., {grid.n}) for grid.n={grid.n}, got {psi.shape}"
        )


@partial(jax.jit, static_argnums=0)
def norm(grid: Grid1D, psi) -> jax.Array:
    """Discrete L2 norm sqrt(sum |psi_j|^2 dx), shape psi.shape[:-1], real."""
    return jnp.sqrt(jnp.sum(jnp.abs(psi) ** 2, axis=-1) * grid.dx)


def box_eigenvalue(grid: Grid1D, k) -> jax.Array:
    """Eigenvalue of the discrete -d^2/dx^2 for mode k = 1..n (closed form).

    lambda_k = (4/dx^2) sin^2(k pi / (2(n+1)))  ->  (k pi / length)^2 as n -> inf.
    """
    if isinstance(k, jax.core.Tracer):
        return (4.0 / grid.dx**2) * jnp.sin(k * jnp.pi / (2 * (grid.n + 1))) ** 2
    lam = (4.0 / grid.dx**2) * np.sin(np.asarray(k) * np.pi / (2 * (grid.n + 1))) ** 2
    return jnp.asarray(lam, dtype=jnp.result_type(float))


def box_eigenstate(grid: Grid1D, k: int, dtype=jnp.complex64) -> jax.Array:
    """Normalised eigenvector sqrt(2/length) sin(k pi (x - x0)/length), shape (n,).

    Exact eigenvector of the discrete Laplacian (and of the continuum one).
    """
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= grid.n:
        raise ValueError(f"mode k must be an integer in [1, {grid.n}], got {k!r}")
    return jnp.asarray(_box_mode(grid, k), dtype=dtype)


def _box_mode(grid: Grid1D, k: int) -> np.ndarray:
    j = np.arange(1, grid.n + 1)
    return np.sin(k * np.pi * j / (grid.n + 1)) * np.sqrt(2.0 / grid.length)


def random_states(
    key: jax.Array, grid: Grid1D, shape: tuple[int, ...] = (), *, n_modes: int = 5,
    dtype=jnp.complex64,
) -> jax.Array:
    """Random smooth states: complex Gaussian superpositions of the lowest box modes.

    Mode k has coefficient c_k ~ CN(0, 1)/k, k = 1..n_modes, so low modes dominate
    and states resolve on the grid. Returns shape (*shape, n), discrete norm 1.
    """
    if not isinstance(n_modes, (int, np.integer)) or not 1 <= n_modes <= grid.n:
        raise ValueError(f"n_modes must be an integer in [1, {grid.n}], got {n_modes!r}")
    return _random_states(key, grid, tuple(int(s) for s in shape), int(n_modes), jnp.dtype(dtype))


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _random_states(key, grid: Grid1D, shape: tuple, n_modes: int, dtype):
    modes = jnp.asarray(np.stack([_box_mode(grid, k) for k in range(1, n_modes + 1)]), dtype)
    scale = jnp.asarray(1.0 / np.arange(1, n_modes + 1), dtype)
    # one complex draw (Re, Im each N(0, 1/2)): a single threefry kernel to compile
    c = jax.random.normal(key, (*shape, n_modes), dtype) * scale
    # full float32 products: a GPU's default (TF32) leaves 1e-4 of the higher modes in psi
    psi = jnp.einsum("...k,kj->...j", c, modes, precision=jax.lax.Precision.HIGHEST)
    return psi / norm(grid, psi)[..., None].astype(dtype)


def apply_hamiltonian(grid: Grid1D, psi, potential) -> jax.Array:
    """H psi = -D2 psi + V psi with Dirichlet walls. psi (..., n); V broadcastable."""
    psi = jnp.asarray(psi)
    _check_state(grid, psi)
    return _apply_h(grid, psi, potential)


@partial(jax.jit, static_argnums=0)
def _apply_h(grid: Grid1D, psi, potential):
    return (2.0 * psi - _neighbours(psi)) / grid.dx**2 + potential * psi


def cn_step(grid: Grid1D, psi, potential, dt=DEFAULT_DT) -> jax.Array:
    """One Crank–Nicolson step psi_k -> psi_{k+1} under potential V_k.

    Args:
      grid: the grid.
      psi: complex state(s), shape (..., n).
      potential: real V_k at the nodes, shape broadcastable to psi (e.g. (n,) or
        (..., n)), energy units.
      dt: time step (> 0).

    Returns:
      psi_{k+1}, same shape, complex dtype of psi.
    """
    _check_dt(dt)
    psi = jnp.asarray(psi)
    _check_state(grid, psi)
    potential = jnp.asarray(potential)
    try:
        np.broadcast_shapes(psi.shape, potential.shape)
    except ValueError:
        raise ValueError(
            f"potential shape {potential.shape} does not broadcast against psi {psi.shape}"
        ) from None
    return _cn_core(grid, psi, potential, dt)


@partial(jax.jit, static_argnums=0)
def _cn_core(grid: Grid1D, psi, potential, dt):
    cdt = _complex_dtype(psi, potential)
    psi = psi.astype(cdt)
    shape = jnp.broadcast_shapes(psi.shape, potential.shape)
    psi = jnp.broadcast_to(psi, shape)
    a = 1j * dt / 2  # (I + a H) psi' = (I - a H) psi
    off = -1.0 / grid.dx**2
    diag = jnp.broadcast_to(1.0 + a * (2.0 / grid.dx**2 + potential), shape).astype(cdt)
    edge = jnp.arange(grid.n) == 0
    dl = jnp.broadcast_to(jnp.where(edge, 0.0, a * off), shape).astype(cdt)
    du = jnp.broadcast_to(jnp.where(edge[::-1], 0.0, a * off), shape).astype(cdt)
    rhs = 2.0 * psi - (diag * psi + a * off * _neighbours(psi))
    return tridiagonal_solve(dl, diag, du, rhs[..., None])[..., 0]


def _neighbours(psi):
    """psi_{j-1} + psi_{j+1} with zero Dirichlet values outside."""
    z = jnp.zeros_like(psi[..., :1])
    left = jnp.concatenate([z, psi[..., :-1]], axis=-1)
    return left + jnp.concatenate([psi[..., 1:], z], axis=-1)


def dipole_potentials(grid: Grid1D, u, static_potential=None) -> jax.Array:
    """Time-major potentials V_k(x) = V_static(x) + u_k x for a control u.

    Args:
      u: real control, shape (..., steps) (batch-major, e.g. a network output),
        energy / length units.
      static_potential: optional real (n,) or broadcastable; default 0.

    Returns:
      Array of shape (steps, ..., n), the layout ``evolve`` scans over.
    """
    u = jnp.asarray(u)
    if u.ndim < 1:
        raise ValueError(f"u must have shape (..., steps), got a scalar {u.shape}")
    return _dipole(grid, u, static_potential)


@partial(jax.jit, static_argnums=0)
def _dipole(grid: Grid1D, u, static_potential):
    x = grid.x(jnp.finfo(jnp.result_type(u.dtype, jnp.float32)).dtype)
    v = jnp.moveaxis(u, -1, 0)[..., None] * x
    return v if static_potential is None else v + static_potential


def _segment_length(steps: int, checkpoint) -> int:
    if checkpoint is True:
        return max(1, math.isqrt(steps))
    if not isinstance(checkpoint, (int, np.integer)) or checkpoint < 1:
        raise ValueError(
            f"checkpoint must be False, True or a segment length >= 1, got {checkpoint!r}"
        )
    return int(checkpoint)


def evolve(
    grid: Grid1D,
    psi0,
    potentials,
    *,
    dt=DEFAULT_DT,
    checkpoint: bool | int = False,
    trajectory: bool = False,
):
    """Evolve psi0 through len(potentials) Crank–Nicolson steps (one lax.scan).

    Args:
      grid: the grid.
      psi0: complex initial state(s), shape (..., n).
      potentials: real V_k, shape (steps, ...) with each V_k broadcastable against
        psi0 (e.g. (steps, n) shared by the batch, or (steps, B, n) per sample).
        See ``dipole_potentials`` for V = u(t) x.
      dt: time step > 0 (time units; total time steps * dt).
      checkpoint: False (store every step's residuals for reverse mode), True
        (segments of isqrt(steps) steps) or an int segment length: each segment
        is wrapped in ``jax.checkpoint`` and recomputed on the backward pass, so
        only segment-boundary states are stored. Values and gradients are
        unchanged. With trajectory=True every state is returned anyway.
      trajectory: if True also return all states.

    Returns:
      psi_T of shape broadcast(psi0, V_k).shape, or (psi_T, states) with states
      of shape (steps + 1, ...) including psi0.
    """
    _check_dt(dt)
    psi0 = jnp.asarray(psi0)
    _check_state(grid, psi0, "psi0")
    potentials = jnp.asarray(potentials)
    if potentials.ndim < 1 or potentials.shape[0] < 1:
        raise ValueError(f"potentials must have shape (steps >= 1, ...), got {potentials.shape}")
    try:
        shape = np.broadcast_shapes(psi0.shape, potentials.shape[1:])
    except ValueError:
        raise ValueError(
            f"potentials per step {potentials.shape[1:]} do not broadcast against psi0 {psi0.shape}"
        ) from None
    if shape[-1] != grid.n:
        raise ValueError(f"potentials per step {potentials.shape[1:]} must end in n={grid.n}")
    steps = potentials.shape[0]
    seg = 0 if checkpoint is False else min(_segment_length(steps, checkpoint), steps)
    return _evolve_core(grid, psi0, potentials, dt, seg, bool(trajectory))


@partial(jax.jit, static_argnums=(0, 4, 5))
def _evolve_core(grid: Grid1D, psi0, potentials, dt, seg: int, trajectory: bool):
    """seg = 0: plain scan; seg > 0: scan over jax.checkpoint-ed segments of seg steps."""
    shape = jnp.broadcast_shapes(psi0.shape, potentials.shape[1:])
    steps = potentials.shape[0]
    psi0 = jnp.broadcast_to(psi0.astype(_complex_dtype(psi0, potentials)), shape)

    def body(psi, v):
        new = _cn_core(grid, psi, v, dt)
        return new, (new if trajectory else None)

    if not seg:
        psi_t, states = jax.lax.scan(body, psi0, potentials)
    else:
        n_seg, rest = divmod(steps, seg)

        @jax.checkpoint
        def segment(psi, vs):
            return jax.lax.scan(body, psi, vs)

        head = potentials[: n_seg * seg].reshape(n_seg, seg, *potentials.shape[1:])
        psi_t, states = jax.lax.scan(segment, psi0, head)
        if trajectory:
            states = states.reshape(n_seg * seg, *states.shape[2:])
        if rest:
            psi_t, tail = segment(psi_t, potentials[n_seg * seg :])
            if trajectory:
                states = jnp.concatenate([states, tail], axis=0)
    if not trajectory:
        return psi_t
    return psi_t, jnp.concatenate([psi0[None], states], axis=0)
