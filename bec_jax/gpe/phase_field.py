"""Phase and vortices from phase-difference fields: winding, detection, matching, integration.

Conventions: a *difference field* d (..., n, n, 2) holds per-pixel forward
differences of the phase in radians, channel 0 along x (columns):
d[..., j, i, 0] ≈ θ[j, i+1] − θ[j, i], channel 1 along y (rows), periodic at the
last column/row (``bec_jax.data.targets.phase_differences`` of a state). A
"velocity" field (∂θ/∂x, ∂θ/∂y in inverse trap units) becomes a difference field
by the trapezoid rule (``to_differences``).

- vortices: the circulation around each plaquette (j,i)→(j,i+1)→(j+1,i+1)→(j+1,i),
  d_x[j,i] + d_y[j,i+1] − d_x[j+1,i] − d_y[j,i], divided by 2π and rounded
  (``winding_from_differences``); for the exact field of ψ this is
  ``plaquette_winding(ψ)``. Predicted fields also get a second pass over
  2×2-plaquette loops (``detect_vortices``). Only plaquettes inside the cloud
  count (``RegionConfig``: ``vortex_mask`` of the density, known to the
  experimenter).
- phase: a field with vortices is not a gradient, so plain least-squares
  integration would erase them. ``reconstruct_phase`` subtracts the singular
  phase Σ_v w_v·atan2(y − y_v, x − x_v) of the detected vortices, integrates
  the (now nearly curl-free) remainder by weighted least squares on the periodic
  grid (``integrate_differences``: conjugate gradients preconditioned by the
  exact FFT solve of the unweighted problem), and adds the vortex phase back.
- momentum: a stationary state of the isotropic rotating trap (|Ω| < 1) carries no
  momentum, ⟨p⟩ = ∫ n ∇θ = 0, while a uniform flow error costs a model's MSE little
  and its fidelity much: across a cloud 2R/dx pixels wide, an error of c radians per
  pixel is a phase ramp of 2Rc/dx. ``zero_momentum`` takes off the ``uniform_flow``.
- fidelity: |⟨ψ_a, ψ_b⟩|² / (‖ψ_a‖²‖ψ_b‖²) (``quantum.overlap``), invariant to
  the global phase.
- positions: inside its plaquette, each vortex is placed where a point vortex
  in a uniform flow best explains the differences around it
  (``refine_vortices``), to a fraction of a pixel; the plaquette centre alone
  can be half a diagonal off.
- matching: predicted and true vortices of the same sign, one to one
  (Hungarian algorithm, ``match_vortices``).

Everything except ``positions_from_winding`` and ``match_vortices`` (numpy,
data-dependent sizes) is jit/vmap-able.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from bec_jax.gpe.grid import Grid
from bec_jax.gpe.observables import RegionConfig, plaquette_winding, vortex_mask
from bec_jax.quantum.fidelity import overlap

__all__ = [
    "RegionConfig", "to_differences", "to_velocity", "plaquette_circulation", "winding_from_differences",
    "detect_vortices", "uniform_flow", "zero_momentum", "forward_differences", "integrate_differences",
    "vortex_phase", "wrap", "reconstruct_phase", "fidelity", "refine_vortices", "positions_from_winding",
    "match_vortices", "plaquette_winding", "vortex_mask",
]


def to_differences(field, target: str, dx: float):
    """Difference field (..., n, n, 2) in radians from a target field of kind ``target``.

    "phase_diff": returned as is. "velocity" (inverse trap units): trapezoid rule
    d_x[j, i] = dx·(v_x[j, i] + v_x[j, i+1])/2 (periodic), likewise along y.
    """
    if target == "phase_diff":
        return field
    if target != "velocity":
        raise ValueError(f"target must be 'phase_diff' or 'velocity', got {target!r}")
    vx, vy = field[..., 0], field[..., 1]
    return jnp.stack([0.5 * dx * (vx + jnp.roll(vx, -1, axis=-1)),
                      0.5 * dx * (vy + jnp.roll(vy, -1, axis=-2))], axis=-1)


def to_velocity(field, target: str, dx: float):
    """Velocity (..., n, n, 2) at the pixels, inverse trap units, from a target field of kind ``target``.

    "velocity": returned as is. "phase_diff": forward differences sit between pixels, so each
    pixel gets the mean of its two neighbouring edges, v_x[j, i] = (d_x[j, i−1] + d_x[j, i])/(2 dx)
    (periodic), likewise along y.
    """
    if target == "velocity":
        return field
    d = to_differences(field, target, dx)
    return 0.5 * jnp.stack([d[..., 0] + jnp.roll(d[..., 0], 1, axis=-1),
                            d[..., 1] + jnp.roll(d[..., 1], 1, axis=-2)], axis=-1) / dx


def uniform_flow(field, density, target: str = "phase_diff", dx: float | None = None):
    """The uniform flow that carries the momentum of a field (..., n, n, 2) of kind ``target``: its
    density-weighted mean per channel, (..., 2), in the field's units ("phase_diff": radians per pixel;
    "velocity": a⊥ω⊥), or with ``dx`` (trap units) as a velocity, a⊥ω⊥ (a uniform difference c is the
    velocity c/dx). ``zero_momentum`` subtracts it.

    density: (..., n, n), real, ≥ 0 (negative values, camera noise, count as 0); a difference sits on the
    edge between two pixels and is weighted by their mean density. An all-zero density has no flow (0).
    ValueError for another target, a complex density (|ψ|² is meant, not ψ) or one of another shape.
    """
    if target not in ("phase_diff", "velocity"):
        raise ValueError(f"target must be 'phase_diff' or 'velocity', got {target!r}")
    if jnp.iscomplexobj(density):
        raise ValueError("density must be real (|ψ|², not ψ)")
    if jnp.shape(density) != jnp.shape(field)[:-1] or jnp.shape(field)[-1] != 2:
        raise ValueError(f"field (..., n, n, 2) and density (..., n, n) do not match: shapes {jnp.shape(field)} "
                         f"and {jnp.shape(density)}")
    n = jnp.maximum(density, 0).astype(field.dtype)
    w = (jnp.stack([n, n], -1) if target == "velocity" else
         0.5 * jnp.stack([n + jnp.roll(n, -1, axis=-1), n + jnp.roll(n, -1, axis=-2)], -1))
    total = jnp.sum(w, axis=(-3, -2))
    mean = jnp.sum(w * field, axis=(-3, -2)) / jnp.where(total > 0, total, 1)
    return mean / dx if dx is not None and target == "phase_diff" else mean


def zero_momentum(field, density, target: str = "phase_diff"):
    """``field`` (..., n, n, 2) of kind ``target`` less its ``uniform_flow``, so that Σ n·field = 0.

    Why: a cloud whose centre of mass is at rest carries no momentum, ⟨p⟩ = d⟨r⟩/dt = ∫ n ∇θ = 0 (ħ = m = 1).
    Every stationary state of the rotating isotropic trap is one: Ehrenfest's theorem in the rotating frame
    gives ⟨p⟩ = Ω × ⟨r⟩ and (1 − Ω²)⟨r⟩ = 0 for |Ω| < 1 (interactions exert no net force: ∫ n ∇(gn) = 0);
    the ground states of ``bec_jax.ground_state`` meet it to the solver's convergence. Translations,
    rotations and the radial flow of a time-of-flight expansion keep it; a sloshing cloud (the dipole mode)
    does not. Curl-free: vortices (``detect_vortices``) are unchanged. density: as ``uniform_flow``'s.
    """
    return field - uniform_flow(field, density, target)[..., None, None, :]


def plaquette_circulation(d):
    """Sum of a difference field (..., n, n, 2) around each plaquette, (..., n-1, n-1), radians.

    Counter-clockwise loop (j,i)→(j,i+1)→(j+1,i+1)→(j+1,i)→(j,i) in (x, y),
    the orientation of ``bec_jax.plaquette_winding``.
    """
    dx, dy = d[..., 0], d[..., 1]
    return dx[..., :-1, :-1] + dy[..., :-1, 1:] - dx[..., 1:, :-1] - dy[..., :-1, :-1]



def winding_from_differences(d):
    """Integer winding per plaquette, int32 (..., n-1, n-1): round(circulation / 2π)."""
    return jnp.round(plaquette_circulation(d) / (2 * np.pi)).astype(jnp.int32)



def detect_vortices(d, region):
    """Vortex windings int32 (n-1, n-1) of ONE difference field d (n, n, 2).

    Two loop sizes, because a vortex core sitting on a pixel makes that pixel's
    phase (and so its four edges) undetermined, and a network predicts smooth
    values there that spread the 2π over the four plaquettes around it:

    1. plaquettes whose circulation rounds to ±2π (``winding_from_differences``);
    2. of the circulation left unexplained by (1), 2×2 blocks of plaquettes
       (the loop around 3×3 pixels: only its outer edges count) whose sum
       exceeds π in magnitude and is the largest among the neighbouring
       blocks (no double counting) add round(sum / 2π) at the block's
       plaquette with the largest same-signed remainder.

    For an exact difference field (1) already finds every vortex and (2) adds
    nothing. Only plaquettes with ``region`` (bool (n-1, n-1)) count.
    """
    c = plaquette_circulation(d)
    region = region.astype(bool)
    w1 = jnp.where(region, jnp.round(c / (2 * np.pi)), 0.0)
    r = jnp.where(region, c - 2 * np.pi * w1, 0.0)
    quads = jnp.stack([r[:-1, :-1], r[:-1, 1:], r[1:, :-1], r[1:, 1:]])  # the 4 plaquettes of each block
    block = quads.sum(0)
    m = block.shape[0]
    # strict tie-break so that equal neighbouring blocks cannot both be maxima
    mag = jnp.abs(block) + 1e-6 * jnp.arange(m * block.shape[1]).reshape(block.shape) / block.size
    padded = jnp.pad(mag, 1, constant_values=-1.0)
    neigh = jnp.max(jnp.stack([padded[1 + dy : 1 + dy + m, 1 + dx : 1 + dx + block.shape[1]]
                               for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]), axis=0)
    k = jnp.where((jnp.abs(block) > np.pi) & (mag > neigh), jnp.round(block / (2 * np.pi)), 0.0)
    pick = jnp.argmax(quads * jnp.sign(block), axis=0)
    w2 = jnp.zeros_like(c)
    for q, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        w2 = w2.at[dy : dy + m, dx : dx + block.shape[1]].add(jnp.where(pick == q, k, 0.0))
    return (w1 + w2 * region).astype(jnp.int32)



def forward_differences(theta):
    """D θ: periodic forward differences (..., n, n) → (..., n, n, 2)."""
    return jnp.stack([jnp.roll(theta, -1, axis=-1) - theta, jnp.roll(theta, -1, axis=-2) - theta], axis=-1)



def _forward_diff_adjoint(d):
    """Dᵀ d: (..., n, n, 2) → (..., n, n) (minus a backward-difference divergence)."""
    return (jnp.roll(d[..., 0], 1, axis=-1) - d[..., 0]) + (jnp.roll(d[..., 1], 1, axis=-2) - d[..., 1])



def _spectral_inverse(rhs):
    """Solve DᵀD θ = rhs (..., n, n) by FFT (the periodic Laplacian of D), mean θ = 0."""
    n_y, n_x = rhs.shape[-2], rhs.shape[-1]
    ex = jnp.exp(2j * np.pi * jnp.fft.fftfreq(n_x)) - 1
    ey = (jnp.exp(2j * np.pi * jnp.fft.fftfreq(n_y)) - 1)[:, None]
    den = jnp.abs(ex) ** 2 + jnp.abs(ey) ** 2
    rh = jnp.fft.fft2(rhs)
    return jnp.real(jnp.fft.ifft2(jnp.where(den > 0, rh / jnp.where(den > 0, den, 1.0), 0.0))).astype(rhs.dtype)



def integrate_differences(d, valid=None, *, outside_weight: float = 1e-4, maxiter: int = 100):
    """Least-squares phase θ (n, n) from a difference field d (n, n, 2) (vmap for batches).

    Without ``valid``: minimises Σ (D_x θ − d_x)² + (D_y θ − d_y)² over periodic
    θ, D the forward difference, solved exactly by FFT:
    θ̂ = (conj(e_x − 1) d̂_x + conj(e_y − 1) d̂_y) / (|e_x − 1|² + |e_y − 1|²),
    e = e^{2πi m/n}. Exact (to rounding) when d is the difference field of a
    periodic θ.

    With ``valid`` (bool (n, n)): only edges between two valid pixels are data
    (weight 1); on every other edge the difference is ignored and replaced by a
    smoothness prior D θ ≈ 0 of weight ``outside_weight``, so θ is continued
    harmonically into the empty region instead of being pulled by the
    unconstrained differences there. Solved by conjugate gradients
    preconditioned with the FFT solve above (``maxiter`` iterations at most;
    typically ~10). Mean θ = 0 in both cases.
    """
    if valid is None:
        return _spectral_inverse(_forward_diff_adjoint(d))
    valid = valid.astype(bool)
    inside = jnp.stack([valid & jnp.roll(valid, -1, axis=-1), valid & jnp.roll(valid, -1, axis=-2)], -1)
    inside = inside.astype(d.dtype)
    w = inside + outside_weight * (1 - inside)
    theta, _ = jax.scipy.sparse.linalg.cg(lambda t: _forward_diff_adjoint(w * forward_differences(t)),
                                          _forward_diff_adjoint(inside * d), M=_spectral_inverse, tol=1e-6,
                                          maxiter=maxiter)
    return theta - jnp.mean(theta)



def vortex_phase(winding, n: int, max_vortices: int):
    """Σ_v w_v·atan2(y − y_v, x − x_v) on the pixel grid, (n, n) float32, for ONE
    winding map (n-1, n-1) (plaquette centres at half-integer pixel coordinates).

    Uses the first ``max_vortices`` nonzero plaquettes (static size, jit-able).
    """
    flat = winding.reshape(-1)
    idx = jnp.nonzero(flat, size=max_vortices, fill_value=0)[0]
    w = flat[idx].astype(jnp.float32)
    yv, xv = idx // (n - 1) + 0.5, idx % (n - 1) + 0.5
    y, x = jnp.arange(n, dtype=jnp.float32)[:, None], jnp.arange(n, dtype=jnp.float32)[None, :]

    def add(i, acc):
        return acc + w[i] * jnp.arctan2(y - yv[i], x - xv[i])

    # a loop over the vortices found, not the cap's slots (vmapped, a batch loops to its largest count): with a
    # full-grid arctan2 per slot, the reconstruction took 6.3x as long at 3-14 vortices a state and the cap of
    # 256 (benchmarks/phase_reconstruction.py)
    count = jnp.minimum(jnp.count_nonzero(flat), max_vortices)
    return jax.lax.fori_loop(0, count, add, jnp.zeros((n, n), jnp.float32))



def wrap(a):
    """Angles wrapped into (−π, π]."""
    return jnp.angle(jnp.exp(1j * a))



@partial(jax.jit, static_argnames=("vortices", "max_vortices", "maxiter"))
def reconstruct_phase(d, valid, region=None, *, vortices: bool = True, max_vortices: int = 256,
                      outside_weight: float = 1e-4, maxiter: int = 100):
    """Phase θ (n, n) from ONE difference field d (n, n, 2) (vmap for batches); differentiable in d.

    valid: bool (n, n) pixels with density (differences elsewhere are ignored).
    region: bool (n-1, n-1) plaquettes where vortices count (inside the cloud).
    vortices: subtract the singular phase of the vortices ``detect_vortices`` finds
      (integer windings, held fixed: no gradient flows through them), integrate the
      remainder, add the vortex phase back; False: plain weighted least squares (θ
      then lacks the vortices, and is linear in d). max_vortices: static cap of the
      vortex phase (``vortex_phase``). outside_weight, maxiter: ``integrate_differences``.
    Returns (θ (n, n) with the dtype of d, winding int32 (n-1, n-1) of the vortices used).
    dθ/dd is the implicit derivative of the least-squares solve, not a backpropagation
    through its CG iterations.
    """
    n = d.shape[0]
    if not vortices:
        return (integrate_differences(d, valid, outside_weight=outside_weight, maxiter=maxiter),
                jnp.zeros((n - 1, n - 1), jnp.int32))
    if region is None:
        raise ValueError("reconstruct_phase with vortices=True needs the cloud region (vortex_mask)")
    w = jax.lax.stop_gradient(detect_vortices(d, region))
    theta_v = vortex_phase(w, n, max_vortices).astype(d.dtype)
    rest = wrap(d - wrap(forward_differences(theta_v)))
    return integrate_differences(rest, valid, outside_weight=outside_weight, maxiter=maxiter) + theta_v, w


def fidelity(psi_a, psi_b):
    """|⟨a, b⟩|² / (‖a‖²‖b‖²) over the last two axes, float (...,), in [0, 1] (``quantum.overlap``)."""
    return jnp.abs(overlap(psi_a, psi_b, state_ndim=2)) ** 2


def _patch_edges(k: int):
    """Edges of a k×k pixel patch: start and end points (x = column, y = row), and the (row, column,
    channel) of each edge's difference in the patch (a difference field's layout)."""
    a, b, at = [], [], []
    for r in range(k):
        for c in range(k - 1):
            a.append((c, r)), b.append((c + 1, r)), at.append((r, c, 0))
    for r in range(k - 1):
        for c in range(k):
            a.append((c, r)), b.append((c, r + 1)), at.append((r, c, 1))
    return np.asarray(a, np.float32), np.asarray(b, np.float32), np.asarray(at)


@partial(jax.jit, static_argnames=("max_vortices", "iters"))
def refine_vortices(d, winding, *, max_vortices: int, iters: int = 10):
    """Sub-plaquette vortex positions of ONE difference field d (n, n, 2) with its winding map (n-1, n-1).

    A vortex of winding w at p with a uniform background flow u adds
    w·∠(a − p, b − p) + u·(b − a) to the phase difference of an edge a → b
    (the angle the edge subtends at p). For each nonzero plaquette this model is
    fitted by Gauss–Newton to the 24 edge differences of the 4×4 pixels around it
    (3×3 plaquettes, the vortex's in the middle; residuals wrapped into (−π, π]),
    starting at the plaquette's centre with u = 0, p kept inside the plaquette (its
    winding says the core is there; the centre where the fit is not finite). Exact for a point vortex in a uniform flow;
    neighbouring vortices and density gradients bias it by a fraction of a pixel.
    Plaquette-centre positions instead are off by up to half a diagonal, which is
    about a healing length on a grid of one pixel per ξ.

    max_vortices: static number of rows; the first nonzero plaquettes in row-major
    order are used. Returns float (max_vortices, 3) rows (column, row, w) in pixel
    coordinates (pixel centres at integers), unused rows w = 0. jit/vmap-able.
    """
    n = d.shape[0]
    if max_vortices < 1:
        raise ValueError(f"max_vortices must be >= 1, got {max_vortices}")
    if d.shape != (n, n, 2) or winding.shape != (n - 1, n - 1) or n < 4:
        raise ValueError(f"need a difference field (n, n, 2), n >= 4, and its winding map (n-1, n-1); got "
                         f"{d.shape} and {winding.shape}")
    k = 4
    a0, b0, at = _patch_edges(k)
    flat = winding.reshape(-1)
    sel = jnp.nonzero(flat, size=max_vortices, fill_value=0)[0]
    w = jnp.where(jnp.arange(max_vortices) < jnp.count_nonzero(flat), flat[sel], 0).astype(d.dtype)

    def one(plaquette, w):
        j, i = plaquette // (n - 1), plaquette % (n - 1)
        r0, c0 = jnp.clip(j - 1, 0, n - k), jnp.clip(i - 1, 0, n - k)
        obs = jax.lax.dynamic_slice(d, (r0, c0, 0), (k, k, 2))[at[:, 0], at[:, 1], at[:, 2]]
        corner = jnp.stack([c0, r0]).astype(d.dtype)
        a, b = a0 + corner, b0 + corner
        lo = jnp.stack([i, j]).astype(d.dtype)

        def residual(q):
            p, u = q[:2], q[2:]
            angle = jnp.arctan2(b[:, 1] - p[1], b[:, 0] - p[0]) - jnp.arctan2(a[:, 1] - p[1], a[:, 0] - p[0])
            return wrap(obs - w * wrap(angle) - (b - a) @ u)

        def step(q, _):
            r, jac = residual(q), jax.jacfwd(residual)(q)
            q = q - jnp.linalg.solve(jac.T @ jac + 1e-6 * jnp.eye(4, dtype=d.dtype), jac.T @ r)
            # off the corners, where the subtended angles have no derivative
            return q.at[:2].set(jnp.clip(q[:2], lo + 1e-3, lo + 1 - 1e-3)), None

        q, _ = jax.lax.scan(step, jnp.concatenate([lo + 0.5, jnp.zeros(2, d.dtype)]), None, length=iters)
        return q[:2]  # a non-finite field: the plaquette centre

    p = jax.vmap(one)(sel, w)
    return jnp.concatenate([p, w[:, None]], axis=-1)


def positions_from_winding(grid: Grid, winding, d=None) -> np.ndarray:
    """(x, y, w) rows in trap units of the nonzero plaquettes of ONE winding map (n-1, n-1).

    Without d: the plaquette centres. With the difference field d (n, n, 2) the map
    came from: the sub-plaquette positions of ``refine_vortices``.
    """
    w = np.asarray(winding)
    j, i = np.nonzero(w)
    if d is not None and len(i):
        rows = np.asarray(refine_vortices(jnp.asarray(d), jnp.asarray(w),
                                          max_vortices=max(8, 1 << (len(i) - 1).bit_length())))[:len(i)]
    else:  # the centres: pixel coordinates (i + ½, j + ½)
        rows = np.stack([i + 0.5, j + 0.5, w[j, i]], axis=-1).reshape(-1, 3)
    x0 = float(np.asarray(grid.x)[0])
    return np.stack([x0 + rows[:, 0] * grid.dx, x0 + rows[:, 1] * grid.dx, rows[:, 2]], axis=-1)


def match_vortices(true, pred, max_dist: float):
    """Optimal one-to-one matching of vortices of the same sign (Hungarian algorithm).

    true, pred: (N, 3), (M, 3) rows (x, y, winding), positions in any length unit.
    A pair matches if the signs agree and the distance is ≤ max_dist.
    Returns (pairs int (K, 2) of (true index, pred index), distances (K,)).
    """
    true, pred = np.asarray(true, float).reshape(-1, 3), np.asarray(pred, float).reshape(-1, 3)
    if len(true) == 0 or len(pred) == 0:
        return np.zeros((0, 2), int), np.zeros(0)
    dist = np.hypot(true[:, None, 0] - pred[None, :, 0], true[:, None, 1] - pred[None, :, 1])
    ok = (np.sign(true[:, None, 2]) == np.sign(pred[None, :, 2])) & (dist <= max_dist)
    cost = np.where(ok, dist, 1e6 + dist)
    r, c = linear_sum_assignment(cost)
    keep = ok[r, c]
    return np.stack([r[keep], c[keep]], axis=-1), dist[r[keep], c[keep]]
