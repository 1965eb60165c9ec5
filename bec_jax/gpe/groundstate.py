"""Batched ground states of the rotating GPE: seeded starts, relaxation, selection.

Strategy (why each piece is there):

* **Seeded vortex lattices, several starts.** Descent from one random start
  stalls in metastable vortex configurations at fast rotation (g = 100,
  Ω = 0.8: a 6-vortex stationary state 4e-3 above the 7-vortex ground state).
  Each state is started from ``n_starts`` guesses: a Thomas–Fermi-sized
  Gaussian carrying a patch of triangular vortex lattice of Feynman spacing
  a = √(2π/(√3 Ω)), with a different number of vortices per start (the integers
  nearest N = ``vortex_number_estimate`` first: Feynman's count less a vortex-free
  rim), each patch the most compact one around a site, a triangle centroid or a
  bond midpoint (``compact_centre``), randomly rotated and jittered. The lowest
  final energy among the starts wins.
* **``PCG`` (default, ``method=PCG(...)``).** ``warmup_steps`` split-step imaginary-time steps
  at ``dt`` (cheap; heals the seeded cores and settles the cloud), then
  preconditioned nonlinear CG on the unit sphere (``minimize.pcg_minimize``,
  rotating-frame preconditioner by default, ALT's lab-frame kinetic one with
  ``preconditioner="kinetic"``), which converges to the stationary state of H
  itself.
* **``ImaginaryTime``.** Split-step imaginary time only; each state
  starts at ``dt`` and halves it (down to ``dt_min``) whenever its energy has
  stopped changing (|ΔE| per check ≤ max(tol_energy, 1e-3·residual²)) while
  the residual is still above tolerance, because the
  split-step fixed point has an O(dt²) residual (≈ 7·dt² at g = 100, Ω = 0.8).
  Needs 10⁴–10⁵ steps at fast rotation; kept for comparison and as the
  reference scheme.
* **Convergence criterion** (both methods): ``converged = residual ≤
  tol_residual and |ΔE| ≤ tol_energy·max(1, |E|)`` with residual =
  ‖Hψ − μψ‖ (``hamiltonian.residual``) and ΔE the energy change of the last
  iteration (pcg: model decrease of the last step; imaginary time: change over
  the last ``check_every`` steps), everything finite. NaN/inf never counts as
  converged. A converged state stops while the rest of the batch goes on.

The whole batch — guesses, relaxation of every start, selection — is one
compiled program per (grid, batch size, method), split over local devices
along the batch axis (``sharding.shard_batch``), or along the starts when the
devices divide those but not the batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from bec_jax.gpe.grid import Grid, complex_dtype, real_dtype, resample
from bec_jax.gpe.hamiltonian import check_inputs, chemical_potential, energy, normalize, per_state, residual
from bec_jax.gpe.implicit import AdjointSettings, attach_gradients, energy_slopes
from bec_jax.gpe.observables import edge_density, rms_radius, thomas_fermi, vortex_count
from bec_jax.gpe.minimize import PRECONDITIONER_PASSES, pcg_minimize
from bec_jax.gpe.sharding import backend_of, batch_mesh, check_memory, loop_chunk, map_batch, place, resolve_chunk, shard_batch
from bec_jax.gpe.splitstep import _concrete, check_parameters, evolve

__all__ = [
    "GroundStateResult",
    "PCG",
    "ImaginaryTime",
    "METHODS",
    "solver_method",
    "ground_state",
    "initial_guess",
    "box_length",
    "vortex_number_estimate",
    "lattice_spacing",
    "start_vortex_numbers",
    "compact_centre",
    "coarse_resolves",
    "healing_length",
    "BoxTooSmallWarning",
    "GridTooCoarseWarning",
]

EDGE_THRESHOLD = 1e-4  # boundary density / peak density above which the box is too small


class BoxTooSmallWarning(RuntimeWarning):
    """``ground_state`` found clouds whose density reaches the box's edge (``touches_edge``):
    the periodic box clips them, and their energy, μ and vortices are those of another problem."""


#: grid spacing over the healing length above which ``ground_state`` warns (``GridTooCoarseWarning``)
COARSE_DX_OVER_XI = 2.0


class GridTooCoarseWarning(RuntimeWarning):
    """``ground_state`` was asked for states whose vortex cores are too fine for the grid: spacing dx
    above ``COARSE_DX_OVER_XI`` healing lengths (``healing_length``). The grid pins and deforms the
    cores, so the vortex number and positions depend on the grid."""


def box_length(g, omega, margin: float = 3.5):
    """Box side L that holds the cloud: L = 2 (max(R_TF, 1.5) + margin).

    R_TF from ``thomas_fermi``; 1.5 covers the non-interacting Gaussian and
    ``margin`` (trap units) the density tail beyond R_TF. g = 500, Ω = 0.85
    gives L ≈ 20.8. Works on numpy arrays (elementwise).
    """
    check_parameters(g, omega)
    _, R = thomas_fermi(np.asarray(g, float), np.asarray(omega, float))
    return 2.0 * (np.maximum(R, 1.5) + margin)


def healing_length(g, omega):
    """ξ = 1/√(2μ) at the Thomas–Fermi μ (``thomas_fermi``; at least the trap's own μ = 1), trap units:
    the vortex core size. numpy, the broadcast shape of g and omega."""
    mu, _ = thomas_fermi(np.asarray(g, float), np.asarray(omega, float))
    return 1.0 / np.sqrt(2.0 * np.maximum(mu, 1.0))


def coarse_resolves(grid: Grid, coarsen: int, g, omega):
    """Whether ``PCG(coarsen=c)``'s coarse grid resolves the vortex cores of (g, Ω): c·dx ≤ ξ
    (``healing_length``). numpy bool, the broadcast shape of g and omega."""
    return coarsen * grid.dx <= healing_length(g, omega)


def _check_tolerances(tol_residual, tol_energy):
    for name, v in (("tol_residual", tol_residual), ("tol_energy", tol_energy)):
        if v is not None and not v > 0:
            raise ValueError(f"{name} must be > 0 (or None: by dtype), got {v}")


@dataclasses.dataclass(frozen=True)
class PCG:
    """Ground-state method (default): an imaginary-time warm-up, then preconditioned
    nonlinear conjugate gradients on the unit sphere (``minimize.pcg_minimize``).

    warmup_steps: split-step imaginary-time steps before CG, even, >= 0.
    dt: imaginary time step of the warm-up in units of 1/ω⊥, in (0, 0.5].
    max_iter: CG iteration cap per start and grid (with coarsen > 1 the coarse and the fine CG each), >= 1.
    preconditioner: "rotating" (rotating-frame, default) or "kinetic" (lab-frame, ALT's).
    tol_residual: converged when ‖Hψ − μψ‖ is at most this (None: by dtype, ``default_tolerances``).
    tol_energy: and the relative energy change of the last iteration at most this (None: by dtype).
    coarsen: >= 1. With c > 1 each start first relaxes (warm-up and CG) on the grid of the same box
      with n/c points per side, then CG finishes it on the grid itself from the band-limited
      interpolation (``grid.resample``): the start's slow part (the vortex lattice settling) runs
      at ~1/c² the cost per iteration. The coarse spacing c·dx must resolve the vortex cores,
      c·dx ≲ the healing length 1/√(2μ) (``coarse_resolves``); at the paper preset (200², c = 2) the
      coarse energies agree with the fine ones to ~1e-5 and the fine stage needs tens of iterations.

    A frozen, hashable value (a static jit argument), passed as
    ``ground_state(..., method=PCG(max_iter=500))``.
    """

    warmup_steps: int = 200
    dt: float = 0.05
    max_iter: int = 2_000
    preconditioner: str = "rotating"
    tol_residual: float | None = None
    tol_energy: float | None = None
    coarsen: int = 1

    def __post_init__(self):
        if isinstance(self.coarsen, bool) or not isinstance(self.coarsen, (int, np.integer)) or self.coarsen < 1:
            raise ValueError(f"coarsen must be an integer >= 1, got {self.coarsen!r}")
        if self.preconditioner not in PRECONDITIONER_PASSES:
            raise ValueError(
                f"preconditioner must be one of {sorted(PRECONDITIONER_PASSES)}, got {self.preconditioner!r}"
            )
        if self.warmup_steps < 0 or self.warmup_steps % 2 or self.max_iter < 1:
            raise ValueError(
                f"need warmup_steps even and >= 0 and max_iter >= 1, got {self.warmup_steps}, {self.max_iter}"
            )
        if not (0 < self.dt <= 0.5):
            raise ValueError(f"dt must be in (0, 0.5], got {self.dt}")
        _check_tolerances(self.tol_residual, self.tol_energy)

    def relax(self, grid: Grid, psi, g, omega):
        """Relax ONE state (n, n) -> (psi, energy, residual, steps, converged); vmap it.

        steps: warm-up steps plus CG iterations, on the coarse grid and then the grid
        itself when ``coarsen`` > 1 (a coarse iteration costs ~1/coarsen² of a fine one).
        """
        steps = 0
        if self.coarsen > 1:
            coarse = grid.coarsened(self.coarsen)
            p, _, _, steps, _ = dataclasses.replace(self, coarsen=1).relax(
                coarse, normalize(coarse, resample(psi, coarse.n)), g, omega)
            psi = normalize(grid, resample(p, grid.n))
        else:
            psi = evolve(grid, psi, g, omega, self.dt, self.warmup_steps, True)
            steps = self.warmup_steps
        psi, res, it, conv = pcg_minimize(grid, psi, g, omega, max_iter=self.max_iter,
                                          tol_residual=self.tol_residual, tol_energy=self.tol_energy,
                                          preconditioner=self.preconditioner)
        return psi, energy(grid, psi, g, omega), res, it + steps, conv

    def polish(self):
        """The method that finishes a winning start which hit ``max_iter`` (no warm-up, on the grid itself)."""
        return dataclasses.replace(self, warmup_steps=0, coarsen=1)


@dataclasses.dataclass(frozen=True)
class ImaginaryTime:
    """Ground-state method: split-step imaginary time with a step schedule (module doc).

    dt: first imaginary time step in units of 1/ω⊥, in (0, 0.5]; halved whenever the energy stalls.
    dt_min: smallest step, in (0, dt].
    check_every: steps between convergence checks, even, >= 2.
    max_steps: imaginary-time step cap per start, >= check_every.
    tol_residual: converged when ‖Hψ − μψ‖ is at most this (None: by dtype, ``default_tolerances``).
    tol_energy: and the relative energy change over the last check at most this (None: by dtype).
    """

    dt: float = 0.05
    dt_min: float = 0.002
    check_every: int = 100
    max_steps: int = 20_000
    tol_residual: float | None = None
    tol_energy: float | None = None

    def __post_init__(self):
        if not (0 < self.dt_min <= self.dt <= 0.5):
            raise ValueError(f"need 0 < dt_min <= dt <= 0.5, got dt={self.dt}, dt_min={self.dt_min}")
        if self.check_every < 2 or self.check_every % 2:
            raise ValueError(f"check_every must be even and >= 2, got {self.check_every}")
        if self.max_steps < self.check_every:
            raise ValueError(f"max_steps must be >= check_every={self.check_every}, got {self.max_steps}")
        _check_tolerances(self.tol_residual, self.tol_energy)

    def relax(self, grid: Grid, psi, g, omega):
        """Relax ONE state (n, n) -> (psi, energy, residual, steps, converged); vmap it."""
        init, check = make_imaginary_time(grid, g, omega, self)
        c = jax.lax.while_loop(lambda c: (~c["done"]) & (c["steps"] < self.max_steps), check, init(psi))
        return c["psi"], c["e"], c["r"], c["steps"], c["conv"]

    def polish(self):
        return None  # the schedule already ran to its own end


#: ground-state methods by name (``GenerateConfig.method``, ``ground_state(method="pcg")``)
METHODS = {"pcg": PCG, "imaginary_time": ImaginaryTime}


def solver_method(method="pcg", **settings):
    """The method object of ``method`` (a name of ``METHODS`` or a method object) with ``settings``
    applied: fields of either method; those the chosen method does not have are ignored (a
    ``max_steps`` means nothing to PCG), any other name is a TypeError. Tolerances left None
    are filled by dtype (``default_tolerances``)."""
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)} or a method object, got {method!r}")
        method = METHODS[method]()
    elif not isinstance(method, tuple(METHODS.values())):
        raise ValueError(f"method must be one of {sorted(METHODS)} or a method object, got {method!r}")
    known = {f.name for cls in METHODS.values() for f in dataclasses.fields(cls)}
    if unknown := sorted(set(settings) - known):
        raise TypeError(f"unknown ground-state setting(s) {unknown}; known: {sorted(known)}")
    own = {f.name for f in dataclasses.fields(method)}
    method = dataclasses.replace(method, **{k: v for k, v in settings.items() if k in own and v is not None})
    tr, te = default_tolerances()
    return dataclasses.replace(method, tol_residual=method.tol_residual or tr, tol_energy=method.tol_energy or te)


def default_tolerances(dtype=None) -> tuple[float, float]:
    """(tol_residual, tol_energy) reachable in the dtype: round-off in Hψ sets
    a residual floor near 1e-5 in float32 on typical grids."""
    dtype = real_dtype() if dtype is None else jnp.dtype(dtype)
    return (1e-4, 1e-7) if dtype == jnp.float32 else (1e-7, 1e-12)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GroundStateResult:
    """Per-state results; leading axes = batch shape of (g, omega) (none for scalars).

    psi: complex (..., n, n) normalised ground state. energy, mu, residual:
    real (...). steps: int32 (...) iterations of the winning start
    (imaginary-time steps + CG iterations; each costs about one H application).
    converged: bool (...) (criterion in the module doc). vortices: int32 (...)
    vortices inside the cloud. start_energies: (..., n_starts) final energy of
    every start (spread = how rugged the landscape is). start_steps: int32
    (..., n_starts) iterations of every start before polishing (the starts of
    a batch run in lockstep, so the batch costs about max(start_steps) each).
    start_vortices: int32 (..., n_starts) vortices of every start's final state
    (with start_energies: which branches the starts found, ``implicit.branch_gap``).
    start_slopes: real (..., n_starts, 2) (∂E/∂g, ∂E/∂Ω) = (½∫|ψ|⁴, −⟨L_z⟩) of
    every start's final state (``implicit.energy_slopes``; starts tied in
    energy with equal slopes are one branch). start_winner: int32 (...) index
    of the winning start (lowest finite energy and residual; psi is it, polished).
    touches_edge: bool
    (...) boundary density above 1e-4 of the peak. length_needed: real (...)
    box side that would hold the cloud (from its rms radius).
    """

    psi: jax.Array
    energy: jax.Array
    mu: jax.Array
    residual: jax.Array
    steps: jax.Array
    converged: jax.Array
    vortices: jax.Array
    start_energies: jax.Array
    start_steps: jax.Array
    start_vortices: jax.Array
    start_slopes: jax.Array
    start_winner: jax.Array
    touches_edge: jax.Array
    length_needed: jax.Array


def _lattice(n_max: int = 64) -> np.ndarray:
    """Triangular lattice points (unit spacing) sorted by distance, (n_max, 2)."""
    r = np.arange(-10, 11)
    i, j = np.meshgrid(r, r)
    pts = np.stack([i + 0.5 * j, j * np.sqrt(3) / 2], -1).reshape(-1, 2)
    return pts[np.argsort(np.hypot(pts[:, 0], pts[:, 1]), kind="stable")][:n_max]


_LATTICE = _lattice(128)

#: high-symmetry points of the unit triangular lattice: a site (C6), a triangle centroid (C3), a bond midpoint (C2)
_CENTRES = np.array([[0.0, 0.0], [0.5, np.sqrt(3) / 6], [0.5, 0.0]])


def _compactness(n_max: int = 128) -> np.ndarray:
    """(3, n_max + 1): mean squared distance of the N lattice points nearest each of ``_CENTRES`` (N = 0..n_max)."""
    pts = _lattice(441)
    d2 = np.sort(np.sum((pts[None] - _CENTRES[:, None]) ** 2, -1), axis=1)[:, :n_max]
    n = np.arange(1, n_max + 1)
    return np.concatenate([np.zeros((3, 1)), np.cumsum(d2, axis=1) / n], axis=1)


_COMPACTNESS = _compactness()
# index into _CENTRES of the most compact patch per N, decided once in float64 (ties: the first centre)
_COMPACT_INDEX = np.argmin(np.round(_COMPACTNESS, 9), axis=0).astype(np.int32)


def compact_centre(n_vortices):
    """Lattice centre (2,), unit spacing, whose ``n_vortices`` nearest points form the most compact patch.

    Of a site, a triangle centroid and a bond midpoint, the one that minimises the
    mean squared distance of the N nearest lattice points (ties: in that order).
    Low-energy finite vortex lattices take such compact, closed-shell shapes:
    7, 19, 37 (around a site), 12, 27 (a centroid) and 14 (a bond midpoint) are
    ground-state counts at g ∈ [100, 500] (experiments/vortex_count_estimate.py),
    and at g = 500, Ω = 0.85 every centroid-centred seed of 21–29 vortices relaxes
    to the 27-vortex lowest state (experiments/results/start_count_n200). Seeds
    around a point of the wrong family lock into that family's state instead.
    n_vortices may be traced (0..128).
    """
    best = jnp.asarray(_COMPACT_INDEX)[jnp.clip(n_vortices, 0, len(_COMPACT_INDEX) - 1)]
    return jnp.asarray(_CENTRES, real_dtype())[best]


#: width of the vortex-free rim of the rotating cloud in Feynman lattice spacings (``vortex_number_estimate``)
RIM_SPACINGS = 0.6


def lattice_spacing(omega):
    """Feynman's triangular-lattice spacing a = √(2π/(√3|Ω|)) (a⊥) of the areal vortex density |Ω|/π,
    |Ω| floored at 1e-3 (no lattice without rotation). Numpy or jax arrays."""
    return jnp.sqrt(2 * np.pi / (np.sqrt(3) * jnp.maximum(jnp.abs(omega), 1e-3)))


def vortex_number_estimate(g, omega):
    """Expected vortex count of the ground state, N ≈ |Ω|(R² − 2κaR) = |Ω|R² − 2κa|Ω|R.

    Feynman's areal vortex density |Ω|/π (ħ = m = 1) over the Thomas–Fermi disc of the
    softened trap (R from ``thomas_fermi``) gives |Ω|R²; the outermost ring of the lattice
    does not form (the density there is too low to hold a vortex against the trap), so the
    lattice fills a disc of radius R − κa, a = √(2π/(√3|Ω|)) the lattice spacing, and to
    first order in κa/R the count loses 2κa|Ω|R. κ = ``RIM_SPACINGS`` is fitted to the true
    counts of converged ground states at g ∈ {100, 500}, Ω ∈ [0.6, 0.9] and checked on
    g = 300 (experiments/vortex_count_estimate.py). Only a seed: the starts spread around it.
    g ≥ 0, |Ω| < 1; works on numpy or jax arrays; float, ≥ 0.
    """
    _, R = thomas_fermi(g, omega)
    om = jnp.abs(omega)
    return jnp.maximum(om * R * (R - 2 * RIM_SPACINGS * lattice_spacing(omega)), 0.0)


def initial_guess(grid: Grid, g, omega, key, n_vortices, centre=None):
    """One seeded initial state (n, n), complex, normalised.

    A Gaussian of the Thomas–Fermi size times Π_j (z − z_j)/√(|z − z_j|² + ξ²)
    over the ``n_vortices`` points of a triangular lattice (Feynman spacing
    √(2π/(√3|Ω|))) nearest to a centre, randomly rotated and jittered (0.1
    spacing), plus 1 % complex noise to break symmetries. For Ω < 0 the vortices
    wind the other way. n_vortices may be traced (≤ 128).

    centre: None (default): ``compact_centre(n_vortices)``, the high-symmetry point
    with the most compact patch; "random": a uniform random point of the unit cell
    (the seeds before the compact centres, kept for studies); or a (2,) point in
    lattice units.
    """
    rdt = real_dtype()
    mu, R = thomas_fermi(jnp.asarray(g, rdt), jnp.asarray(omega, rdt))
    width = jnp.maximum(R / 2, 1.0)
    X, Y = (jnp.asarray(a) for a in grid.mesh())
    amp = jnp.exp(-(X**2 + Y**2) / (2 * width**2))
    k_rot, k_off, k_jit, k_noise = jax.random.split(key, 4)
    spacing = lattice_spacing(omega)
    ang = jax.random.uniform(k_rot, (), rdt, 0, 2 * np.pi)
    rot = jnp.array([[jnp.cos(ang), -jnp.sin(ang)], [jnp.sin(ang), jnp.cos(ang)]])
    if centre is None:
        centre = compact_centre(n_vortices)
    elif isinstance(centre, str):
        if centre != "random":
            raise ValueError(f"centre must be None, 'random' or a (2,) point, got {centre!r}")
        centre = jax.random.uniform(k_off, (2,), rdt, -0.5, 0.5)
    centre = jnp.asarray(centre, rdt)
    pts = jnp.asarray(_LATTICE, rdt) - centre
    keep = jnp.argsort(jnp.argsort(jnp.hypot(pts[:, 0], pts[:, 1]))) < n_vortices
    pts = spacing * (pts @ rot.T)
    pts = pts + 0.1 * spacing * jax.random.normal(k_jit, pts.shape, rdt)
    xi2 = 1.0 / (2 * jnp.maximum(mu, 1.0))
    z = (X + 1j * Y)[..., None]
    dz = z - (pts[:, 0] + 1j * pts[:, 1])
    dz = jnp.where(omega < 0, jnp.conj(dz), dz)
    factors = jnp.where(keep, dz / jnp.sqrt(jnp.abs(dz) ** 2 + xi2), 1.0)
    psi = amp * jnp.prod(factors, axis=-1)
    noise = jax.random.normal(k_noise, (2,) + psi.shape, rdt)
    psi = psi + 0.01 * jnp.max(amp) * (noise[0] + 1j * noise[1]) * amp
    return normalize(grid, psi.astype(complex_dtype()))


def start_vortex_numbers(g, omega, n_starts: int):
    """Vortex counts to seed, int32 (n_starts,): the integers nearest the estimate first.

    With N = ``vortex_number_estimate`` (a float), start i seeds the i-th integer ≥ 0 in order
    of its distance to N (ties: the larger first): N = 26.1 gives 26, 27, 25, 28, 24, …
    The estimate is within 1.5 of the true count over g ∈ [100, 500], Ω ∈ [0.6, 0.9]
    (0.6–0.8 on average; experiments/vortex_count_estimate.py), so the first four
    starts bracket it.
    """
    est = vortex_number_estimate(g, omega)
    # candidates ⌊N⌋ + 1, ⌊N⌋, ⌊N⌋ + 2, ⌊N⌋ − 1, …: n_starts of them are ≥ 1; the stable sort by
    # distance keeps this order on ties, negative counts go last
    offs = np.array([k for j in range(n_starts) for k in (j + 1, -j)])
    cand = jnp.floor(est) + jnp.asarray(offs, real_dtype())
    dist = jnp.where(cand < 0, jnp.inf, jnp.abs(cand - est))
    return cand[jnp.argsort(dist, stable=True)][:n_starts].astype(jnp.int32)


def make_imaginary_time(grid: Grid, g, omega, s: ImaginaryTime):
    """Factory: ``(init, check)`` of the imaginary-time schedule for ONE state.

    ``init(psi)`` returns the carry (psi, e, r = residual, dt, steps, done,
    conv); ``check(carry)`` runs ``s.check_every`` split steps at the carry's
    dt, measures E and the residual, and halves dt when E has stalled
    (module doc). One check costs 4·check_every + 6 1-D FFT passes.
    """
    rdt = real_dtype()

    def measure(p):
        return energy(grid, p, g, omega), residual(grid, p, g, omega)

    def check(c):
        p = evolve(grid, c["psi"], g, omega, c["dt"], s.check_every, True)
        e, r = measure(p)
        de = jnp.abs(e - c["e"]) / jnp.maximum(1.0, jnp.abs(e))
        finite = jnp.isfinite(e) & jnp.isfinite(r)
        conv = (r <= s.tol_residual) & (de <= s.tol_energy) & finite
        # At a fixed dt the residual floors at O(dt²) while E keeps converging;
        # once E changes by less than ~r² per check (its distance to this dt's
        # fixed point) above tolerance, halve dt.
        stalled = (de <= jnp.maximum(s.tol_energy, 1e-3 * r * r)) & ~conv
        dt = jnp.where(stalled, jnp.maximum(0.5 * c["dt"], s.dt_min), c["dt"])
        return dict(psi=p, e=e, r=r, dt=dt, steps=c["steps"] + s.check_every, done=conv | ~finite, conv=conv)

    def init(psi):
        e0, r0 = measure(psi)
        return dict(psi=psi, e=e0, r=r0, dt=jnp.asarray(s.dt, rdt), steps=jnp.int32(0), done=jnp.bool_(False),
                    conv=jnp.bool_(False))

    return init, check


def seeded_guesses(grid: Grid, g, omega, keys, counts=None, centre=None):
    """The seeded starts of ``ground_state``: g, omega (B,), keys (B, S) -> psi (B, S, n, n).

    counts: optional int (B, S) vortex counts to seed instead of ``start_vortex_numbers``;
    centre: ``initial_guess``'s (studies of the seeding rule use both).
    """
    n_starts = keys.shape[1]
    if counts is None:
        counts = jax.vmap(lambda gi, oi: start_vortex_numbers(gi, oi, n_starts))(g, omega)
    return jax.vmap(
        lambda gi, oi, ki, ci: jax.vmap(lambda k, nv: initial_guess(grid, gi, oi, k, nv, centre))(ki, ci)
    )(g, omega, keys, jnp.asarray(counts, jnp.int32))


def _solve(grid: Grid, g, omega, keys, method, psi0=None, start_mesh=None, chunk=None,
           adjoint: AdjointSettings = AdjointSettings()):
    """Batch program: g, omega (B,), keys (B, S) -> GroundStateResult (B,).

    start_mesh: optional mesh over which the B·S starts are relaxed, each
    device its slice (``shard_batch``); the choice of the winners after it is
    replicated. chunk: relax that many starts at a time (``map_batch``; on a
    CPU each chunk's passes stay in cache and its loop stops with its own
    states); None: all at once. psi, energy and mu are differentiable in g and
    omega by implicit differentiation of the stationary state
    (``implicit.attach_gradients``, adjoint CG set by ``adjoint``); the loops
    see no tangents.
    """
    g_in, omega_in = g, omega
    g, omega, psi0 = jax.lax.stop_gradient((g, omega, psi0))
    if psi0 is None:
        guesses = seeded_guesses(grid, g, omega, keys)
    else:
        guesses = normalize(grid, psi0)  # (B, S, n, n), ground_state made it so
    b, s = guesses.shape[:2]

    def relax_start(p, gi, oi):  # each start's vortex count and slopes are taken where it was relaxed
        out = method.relax(grid, p, gi, oi)
        return (*out, vortex_count(grid, out[0]), energy_slopes(grid, out[0]))

    relax = shard_batch(map_batch(relax_start, chunk), start_mesh)
    out = relax(guesses.reshape((b * s,) + guesses.shape[2:]), jnp.repeat(g, s), jnp.repeat(omega, s))
    psi, e, r, steps, conv, start_vortices, start_slopes = (a.reshape((b, s) + a.shape[1:]) for a in out)
    start_energies, start_steps = e, steps
    # The lowest finite energy wins, converged or not: a start still descending
    # below a converged one has found a deeper basin (metastable lattices
    # converge too). A winner that hit max_iter is polished alone below.
    finite = jnp.isfinite(e) & jnp.isfinite(r)
    best = jnp.argmin(jnp.where(finite, e, jnp.inf), axis=1)
    pick = lambda a: jnp.take_along_axis(a, best.reshape((-1,) + (1,) * (a.ndim - 1)), axis=1)[:, 0]
    psi, e, r, steps, conv = (pick(a) for a in (psi, e, r, steps, conv))
    if (finish := method.polish()) is not None:
        p2, e2, r2, s2, c2 = map_batch(lambda p, gi, oi: finish.relax(grid, p, gi, oi), chunk)(psi, g, omega)
        keep = conv
        psi = jnp.where(per_state(keep), psi, p2)
        e, r, conv = jnp.where(keep, e, e2), jnp.where(keep, r, r2), jnp.where(keep, conv, c2)
        steps = jnp.where(keep, steps, steps + s2)
    edge = edge_density(psi)
    res = GroundStateResult(
        psi=psi,
        energy=e,
        mu=chemical_potential(grid, psi, g, omega),
        residual=r,
        steps=steps,
        converged=conv,
        vortices=vortex_count(grid, psi),
        start_energies=start_energies,
        start_steps=start_steps,
        start_vortices=start_vortices,
        start_slopes=start_slopes,
        start_winner=best.astype(jnp.int32),
        touches_edge=~(edge <= EDGE_THRESHOLD),
        length_needed=2 * (math.sqrt(3) * rms_radius(grid, psi) + 3.5),
    )
    # the adjoint is preconditioned like the solve (ImaginaryTime has no preconditioner: the default)
    preconditioner = getattr(method, "preconditioner", PCG.preconditioner)
    return attach_gradients(grid, res, g_in, omega_in, preconditioner=preconditioner, adjoint=adjoint)


def _named(g, omega, mask) -> str:
    """"g = [..], omega = [..]": the first distinct values of (B,) g, Ω where ``mask``, to 6 digits ("traced")."""
    def first(a):
        v = _concrete(a)
        return "traced" if v is None else [float(f"{x:.6g}") for x in np.unique(v[mask])[:4]]
    return f"g = {first(g)}, omega = {first(omega)}"


def warn_if_unresolved(grid: Grid, g, omega, stacklevel: int = 3, coarsen: int = 1) -> None:
    """GridTooCoarseWarning for states (concrete (B,) g, Ω) whose cores the grid cannot resolve, or (coarsen
    > 1) the coarse grid of ``PCG.coarsen`` (``coarse_resolves``)."""
    g_c, om_c = _concrete(g), _concrete(omega)
    if g_c is None or om_c is None:
        return
    xi = healing_length(g_c, om_c)
    if coarsen > 1 and (unresolved := coarsen * grid.dx > xi).any():  # ``coarse_resolves``
        warnings.warn(f"coarsen={coarsen} gives a coarse spacing {coarsen * grid.dx:.3g} wider than the healing "
                      f"length {float(xi.min()):.3g} ({_named(g, omega, unresolved)}): the coarse relaxation may "
                      "settle another lattice; use a smaller coarsen",
                      GridTooCoarseWarning, stacklevel=stacklevel)
    coarse = grid.dx > COARSE_DX_OVER_XI * xi
    if coarse.any():
        n_resolves = 2 * math.ceil(grid.length / float(xi.min()) / 2)  # even n with dx <= ξ
        n_quiet = 2 * math.ceil(grid.length / (COARSE_DX_OVER_XI * float(xi.min())) / 2)  # dx <= 2ξ
        warnings.warn(f"{int(coarse.sum())} of {len(coarse)} ground states have vortex cores (healing length "
                      f"{float(xi.min()):.3g}) the grid cannot resolve (spacing {grid.dx:.3g} > "
                      f"{COARSE_DX_OVER_XI:g}ξ; {_named(g, omega, coarse)}): their vortices depend on the grid; "
                      f"in this box n >= {n_resolves} resolves them (dx <= ξ), n >= {n_quiet} is "
                      f"the least without this warning (dx <= {COARSE_DX_OVER_XI:g}ξ)",
                      GridTooCoarseWarning, stacklevel=stacklevel)


def _check_key(key, batch: int):
    """ValueError unless ``key`` is a jax.random key (typed, or a raw uint32 (2,)) or B typed keys."""
    ok = isinstance(key, jax.Array) and (
        (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape in ((), (batch,)))
        or (key.dtype == jnp.uint32 and key.shape == (2,)))
    if not ok:
        what = f"{type(key).__name__}" + (f" {key.dtype}{tuple(key.shape)}" if hasattr(key, "shape") else "")
        raise ValueError(f"key must be a jax.random key (e.g. jax.random.key(0)) or {batch} typed keys, one per "
                         f"state; got {what}")
    return key


def start_keys(key, batch: int, n_starts: int):
    """Keys (batch, n_starts) of the seeded starts: from one key, or from typed keys (batch,), one per state."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == (batch,):
        return jax.vmap(lambda k: jax.random.split(k, n_starts))(key)
    return jax.random.split(key, (batch, n_starts))


@functools.partial(jax.jit, static_argnames=("grid", "method", "mesh", "start_mesh", "chunk", "adjoint"))
def _solve_jit(grid: Grid, g, omega, keys, method, psi0=None, mesh=None, start_mesh=None, chunk=None,
               adjoint: AdjointSettings = AdjointSettings()):
    """``_solve`` as one program, split over ``mesh`` (each device its slice of
    the states) or, inside, over ``start_mesh`` (each device its slice of the starts)."""
    solve = lambda g, o, k, p: _solve(grid, g, o, k, method, p, start_mesh, chunk, adjoint)
    return shard_batch(solve, mesh)(g, omega, keys, psi0)


def ground_state(
    grid: Grid,
    g,
    omega,
    *,
    key,
    method="pcg",
    psi0=None,
    n_starts: int | None = None,
    shard: bool = True,
    chunk="auto",
    adjoint: AdjointSettings = AdjointSettings(),
    **settings,
) -> GroundStateResult:
    """Ground states of the rotating GPE for one or many (g, Ω).

    Args:
      grid: the ``Grid`` (choose ``length`` ≥ ``box_length(g, omega)``).
      g: interaction strength(s) ≥ 0, scalar or 1-D (B,).
      omega: rotation rate(s), |Ω| < 1, scalar or 1-D, broadcast with g.
      key: ``jax.random`` key for the initial guesses (keyword-only); or a
        batch of typed keys (B,) (``jax.random.key`` arrays), one per state, so
        that a state's result does not depend on the batch it was solved in.
      psi0: optional initial states (B, n, n) (or (n, n)), one start each, or
        (B, S, n, n): S starts per state (the lowest wins, as with seeded starts).
      method: the relaxation, a method object carrying its settings (``PCG(...)``,
        the default, or ``ImaginaryTime(...)``), or its name ("pcg", "imaginary_time").
      n_starts: guesses per state (default 4; psi0's S when psi0 is given).
      **settings: the method's fields as keywords (dt, dt_min, check_every,
        max_steps, warmup_steps, max_iter, preconditioner, coarsen, tol_residual,
        tol_energy), applied over ``method`` (``solver_method``); tolerances
        left None default by dtype (``default_tolerances``).
      shard: split the batch over all local devices when there are several
        and they divide the batch evenly (``sharding.shard_batch``: each device
        relaxes its slice, and stops when its own states have converged); else,
        when they divide batch × n_starts, split the starts (a single state's
        4 starts run 2 per device on 2 devices) and pick the winners replicated.
      chunk: starts each device relaxes at a time, and states it polishes
        at a time (``sharding.map_batch``).
        "auto" (default): on a CPU, one start at a time, so that every
        start stops at its own convergence instead of all running as long
        as the slowest, and its passes stay in cache (2.1-3.1x faster on
        batches of 16-128 states, 1.24x for one state's 4 starts split over
        2 devices, ``benchmarks/solver_throughput.py``); all at once on a
        GPU/TPU. None: all at once; or an int >= 1. Results agree to round-off.
      adjoint: ``implicit.AdjointSettings`` of the backward pass (CG cap and
        tolerance); used only under ``jax.grad``.

    Returns:
      ``GroundStateResult``; arrays have the broadcast batch shape of (g, Ω).
      ``psi``, ``energy`` and ``mu`` are differentiable in g and omega
      (``jax.grad``, also under jit and vmap) by implicit differentiation of
      the stationary state (``implicit``; docs/gradients.md); NaN gradients
      mark states with no derivative (a level crossing such as a vortex-number
      transition, or a non-minimum).

    Raises:
      ValueError: |Ω| ≥ 1, g < 0, non-finite values, or bad settings.

    Warns:
      RuntimeWarning: states that are not finite (the grid cannot hold or resolve them).
      BoxTooSmallWarning: clouds reaching the box's edge (``touches_edge``), with the box side
        they need; not under jit, where the values are traced.
      GridTooCoarseWarning: before the solve, states whose vortex cores the grid spacing cannot
        resolve (dx > 2ξ, ``healing_length``), with the n that does; only for concrete g, Ω.
    """
    check_parameters(g, omega)
    rdt = real_dtype()
    # jnp, not np: g and omega may be traced (under jax.grad, jit or vmap).
    g_arr, om_arr = jnp.broadcast_arrays(jnp.asarray(g, rdt), jnp.asarray(omega, rdt))
    if g_arr.ndim > 1:
        raise ValueError(f"g and omega must be scalars or 1-D, got shape {g_arr.shape}")
    scalar = g_arr.ndim == 0
    g_arr, om_arr = jnp.atleast_1d(g_arr), jnp.atleast_1d(om_arr)
    batch = g_arr.shape[0]
    if batch == 0:
        raise ValueError("g and omega must not be empty")
    method = solver_method(method, **settings)
    if getattr(method, "coarsen", 1) > 1:
        grid.coarsened(method.coarsen)  # the coarse grid must exist
    if psi0 is not None:
        psi0 = jnp.asarray(psi0, complex_dtype())
        if psi0.shape == (grid.n, grid.n):
            psi0 = jnp.broadcast_to(psi0, (batch, grid.n, grid.n))
        if psi0.ndim == 3:
            psi0 = psi0[:, None]
        if psi0.ndim != 4 or psi0.shape[0] != batch or psi0.shape[2:] != (grid.n, grid.n):
            raise ValueError(f"psi0 must have shape ({batch}, {grid.n}, {grid.n}) or ({batch}, S, {grid.n}, "
                             f"{grid.n}), got {psi0.shape}")
        if n_starts is not None and n_starts != psi0.shape[1]:
            raise ValueError(f"with psi0 given, n_starts must be its {psi0.shape[1]} starts per state, got {n_starts}")
        n_starts = psi0.shape[1]
        check_inputs(psi0)
    n_starts = 4 if n_starts is None else n_starts
    if not (isinstance(n_starts, (int, np.integer)) and n_starts >= 1):
        raise ValueError(f"n_starts must be an integer >= 1, got {n_starts!r}")
    resolve_chunk(chunk, None)  # a bad value fails before any work
    keys = start_keys(_check_key(key, batch), batch, n_starts)
    args = [g_arr, om_arr, keys]
    mesh = batch_mesh(batch) if shard else None
    # A batch the devices do not divide (one state, say) may still split by its starts.
    start_mesh = batch_mesh(batch * n_starts) if shard and mesh is None else None
    if start_mesh is not None:
        args, psi0 = place((args, psi0), start_mesh, split=False)
    else:
        args, psi0 = place((args, psi0), mesh)
    chunk = resolve_chunk(chunk, loop_chunk(backend_of(args[0])))
    # State-sized arrays held per start, measured: 24 on a GPU (6.7 GiB for 960 starts at 200²,
    # benchmarks/accelerator_throughput.py), 137 on XLA:CPU at 256² (183 at 128², where compiled
    # buffers weigh more; benchmarks/ground_state_memory.py), chunked or not.
    per_start = 136 if backend_of(args[0]) == "cpu" else 24
    split = mesh if mesh is not None else start_mesh
    devices = 1 if split is None else split.devices.size  # each holds its share
    check_memory(per_start * batch * n_starts * grid.n**2 * jnp.dtype(complex_dtype()).itemsize / devices,
                 f"ground_state ({batch} states x {n_starts} starts on {grid.n}²)", backend_of(args[0]))
    warn_if_unresolved(grid, g_arr, om_arr, coarsen=getattr(method, "coarsen", 1))
    res = _solve_jit(grid, *args, method, psi0, mesh, start_mesh, chunk, adjoint)
    # Under jax.grad the flags and the residual are concrete, the energy and g, Ω traced: the warnings use
    # what is known.
    known = [v for v in (_concrete(res.energy), _concrete(res.residual)) if v is not None]
    bad = ~np.logical_and.reduce([np.isfinite(v) for v in known]) if known else np.zeros(batch, bool)
    if bad.any():
        warnings.warn(f"{int(bad.sum())} of {batch} ground states are not finite ({_named(g_arr, om_arr, bad)}): "
                      f"the grid ({grid}) cannot hold or resolve them; use length >= box_length(g, omega) and more "
                      "points", RuntimeWarning, stacklevel=2)
    touching = _concrete(res.touches_edge)
    if touching is not None and (touching := touching & ~bad).any():
        needed = float(np.max(np.asarray(res.length_needed)[touching]))
        # a state the grid cannot resolve may spread over the box however large: more points, not a larger box
        advice = (f"use length >= {needed:.1f} (res.length_needed)" if needed > grid.length else
                  f"the box is large enough for their clouds (length >= {needed:.1f}): the grid (dx = {grid.dx:.3g}) "
                  "cannot resolve them, use more points")
        warnings.warn(f"{int(touching.sum())} of {batch} ground states reach the edge of the box (side "
                      f"{grid.length:g}; boundary density above {EDGE_THRESHOLD:g} of the peak; "
                      f"{_named(g_arr, om_arr, touching)}): {advice}", BoxTooSmallWarning, stacklevel=2)
    if scalar:
        res = jax.tree_util.tree_map(lambda a: a[0], res)
    return res
