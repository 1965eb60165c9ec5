"""Physics-aware evaluation of predicted phase-gradient fields.

Conventions: a *difference field* d (..., n, n, 2) holds per-pixel forward
differences of the phase in radians, channel 0 along x (columns):
d[..., j, i, 0] ≈ θ[j, i+1] − θ[j, i], channel 1 along y (rows), periodic at the
last column/row — the reference target ("phase_diff"). A "velocity" target
(∂θ/∂x, ∂θ/∂y in inverse trap units) is first turned into a difference field by
the trapezoid rule (``to_differences``).

From a difference field:

- vortices: the circulation around each plaquette (j,i)→(j,i+1)→(j+1,i+1)→(j+1,i),
  d_x[j,i] + d_y[j,i+1] − d_x[j+1,i] − d_y[j,i], divided by 2π and rounded
  (``winding_from_differences``); for the true target this is exactly
  ``bec_jax.plaquette_winding(ψ)``. Predicted fields also get a second pass
  over 2×2-plaquette loops (``detect_vortices``): a core on a pixel leaves that
  pixel's edges undetermined and a smooth prediction spreads its 2π over four
  plaquettes. True vortices are ``plaquette_winding(ψ)``. Only plaquettes
  inside the cloud count (``bec_jax.gpe.observables.vortex_mask`` of the
  density — known to the experimenter).
- phase: a field with vortices is not a gradient, so plain least-squares
  integration would erase them. ``reconstruct_phase`` subtracts the
  singular phase Σ_v w_v·atan2(y − y_v, x − x_v) of the detected vortices,
  integrates the (now nearly curl-free) remainder by least squares on the
  periodic grid (``integrate_differences``: the Poisson equation of the
  forward-difference operator, solved by FFT; weighted to the valid pixels —
  the network's output where there is no density is unconstrained — by
  conjugate gradients with the FFT solve as preconditioner), and adds the
  vortex phase back.
- fidelity: ψ_pred = √n·e^{iθ_pred} against the true ψ,
  F = |⟨ψ_pred, ψ_true⟩|² / (‖ψ_pred‖²‖ψ_true‖²), invariant to the global phase.
  Two references are reported beside it: the same reconstruction applied to the
  *true* target (the ceiling of the method) and the zero-phase guess √n.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from bec_jax.data.targets import TargetConfig, make_example
from bec_jax.gpe.grid import Grid
from bec_jax.gpe.observables import plaquette_winding, vortex_mask
from bec_jax.train.losses import masked_sq_error_sums

__all__ = [
    "EvalConfig", "to_differences", "plaquette_circulation", "winding_from_differences", "detect_vortices",
    "integrate_differences", "vortex_phase", "reconstruct_phase", "fidelity", "match_vortices",
    "positions_from_winding", "evaluate_predictions", "summarize", "evaluate_model", "evaluate_run",
]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings.

    match_radius: a predicted vortex matches a true one of the same sign within
      this distance, in healing lengths ξ = 1/√(2μ) (> 0).
    vortex_threshold, vortex_sigma: the cloud region where vortices count
      (``vortex_mask``: blurred density > threshold·max, blur σ in trap units).
    max_vortices: most vortices per image used by the phase reconstruction
      (a static size for jit); more raise an error.
    """

    match_radius: float = 3.0
    vortex_threshold: float = 0.05
    vortex_sigma: float = 0.75
    max_vortices: int = 256

    def __post_init__(self):
        if not (self.match_radius > 0):
            raise ValueError(f"match_radius must be > 0 healing lengths, got {self.match_radius}")
        if not (0 < self.vortex_threshold < 1):
            raise ValueError(f"vortex_threshold must be in (0, 1), got {self.vortex_threshold}")
        if not (self.vortex_sigma >= 0):
            raise ValueError(f"vortex_sigma must be >= 0, got {self.vortex_sigma}")
        if self.max_vortices < 1:
            raise ValueError(f"max_vortices must be >= 1, got {self.max_vortices}")


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


def _forward_diff(theta):
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
    theta, _ = jax.scipy.sparse.linalg.cg(lambda t: _forward_diff_adjoint(w * _forward_diff(t)),
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
    w = jnp.where(jnp.arange(max_vortices) < jnp.count_nonzero(flat), flat[idx], 0).astype(jnp.float32)
    yv, xv = idx // (n - 1) + 0.5, idx % (n - 1) + 0.5
    y, x = jnp.arange(n, dtype=jnp.float32)[:, None], jnp.arange(n, dtype=jnp.float32)[None, :]

    def add(acc, v):
        wv, xc, yc = v
        return acc + wv * jnp.arctan2(y - yc, x - xc), None

    return jax.lax.scan(add, jnp.zeros((n, n), jnp.float32), (w, xv, yv))[0]


def _wrap(a):
    return jnp.angle(jnp.exp(1j * a))


@partial(jax.jit, static_argnames=("max_vortices",))
def reconstruct_phase(d, valid, region, max_vortices: int = 256):
    """Phase θ (n, n) from ONE difference field d (n, n, 2) (vmap for batches).

    valid: bool (n, n) pixels with density (differences elsewhere are ignored).
    region: bool (n-1, n-1) plaquettes where vortices count (inside the cloud).
    Returns (θ float32 (n, n), winding int32 (n-1, n-1) of the vortices used,
    from ``detect_vortices``).
    """
    n = d.shape[0]
    w = detect_vortices(d, region)
    theta_v = vortex_phase(w, n, max_vortices)
    rest = _wrap(d - _wrap(_forward_diff(theta_v)))
    return integrate_differences(rest, valid) + theta_v, w


def fidelity(psi_a, psi_b):
    """|⟨a, b⟩|² / (‖a‖²‖b‖²) over the last two axes, float (...,), in [0, 1]."""
    ov = jnp.sum(jnp.conj(psi_a) * psi_b, axis=(-2, -1))
    na = jnp.sum(jnp.abs(psi_a) ** 2, axis=(-2, -1))
    nb = jnp.sum(jnp.abs(psi_b) ** 2, axis=(-2, -1))
    return jnp.abs(ov) ** 2 / (na * nb)


def positions_from_winding(grid: Grid, winding) -> np.ndarray:
    """(x, y, w) rows in trap units of the nonzero plaquettes of ONE winding map (n-1, n-1)."""
    w = np.asarray(winding)
    j, i = np.nonzero(w)
    xc = np.asarray(grid.x)[:-1] + 0.5 * grid.dx
    return np.stack([xc[i], xc[j], w[j, i]], axis=-1) if len(i) else np.zeros((0, 3))


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


@partial(jax.jit, static_argnames=("grid", "tcfg", "ecfg"))
def _batch_fields(grid: Grid, psi, pred, tcfg: TargetConfig, ecfg: EvalConfig):
    """Targets, masks, reconstructions and fidelities of one batch (jitted)."""
    _, y, valid = make_example(grid, psi, tcfg)
    amp = jnp.abs(psi)
    region = vortex_mask(grid, amp, ecfg.vortex_threshold, ecfg.vortex_sigma)
    d_pred = to_differences(pred, tcfg.target, grid.dx)
    d_true = to_differences(y, tcfg.target, grid.dx)
    recon = jax.vmap(partial(reconstruct_phase, max_vortices=ecfg.max_vortices))
    th_pred, w_pred = recon(d_pred, valid, region)
    th_true, _ = recon(d_true, valid, region)
    w_true = plaquette_winding(psi) * region
    psi_pred = amp * jnp.exp(1j * th_pred)
    psi_ceiling = amp * jnp.exp(1j * th_true)
    sq = jax.vmap(masked_sq_error_sums)(pred, y, valid)
    return dict(
        target=y, valid=valid, region=region, theta_pred=th_pred, winding_pred=w_pred, winding_true=w_true,
        fidelity=fidelity(psi_pred, psi), fidelity_ceiling=fidelity(psi_ceiling, psi),
        fidelity_zero_phase=fidelity(amp.astype(psi.dtype), psi),
        sq=sq[0], n_valid=sq[1], n_pixels=sq[2],
        n_over=jnp.maximum(jnp.count_nonzero(w_pred, axis=(-2, -1)), jnp.count_nonzero(w_true, axis=(-2, -1))),
    )


def evaluate_predictions(grid: Grid, psi, pred, mu, tcfg: TargetConfig = TargetConfig(),
                         ecfg: EvalConfig = EvalConfig()) -> dict:
    """Per-sample physics metrics of one batch of predictions.

    psi: complex (B, n, n) true states; pred: float (B, n, n, 2) predicted
    targets of kind ``tcfg.target``; mu: (B,) chemical potentials (trap units;
    healing length ξ = 1/√(2μ)). Returns numpy arrays keyed by metric, one entry
    per sample, plus the fields used (for plots): target, valid, theta_pred,
    winding_pred, winding_true. Vortex counts are numbers of plaquettes with
    nonzero winding inside the cloud region.
    """
    psi = jnp.asarray(psi)
    pred = jnp.asarray(pred)
    f = jax.device_get(_batch_fields(grid, psi, pred, tcfg, ecfg))
    if np.any(f["n_over"] > ecfg.max_vortices):
        raise ValueError(f"more than max_vortices={ecfg.max_vortices} vortices in an image; raise max_vortices")
    C = pred.shape[-1]
    xi = 1.0 / np.sqrt(2.0 * np.asarray(mu, float))
    rows = dict(mse=f["sq"] / (C * np.maximum(f["n_valid"], 1)), mse_ref=f["sq"] / (C * f["n_pixels"]),
                fidelity=f["fidelity"], fidelity_ceiling=f["fidelity_ceiling"],
                fidelity_zero_phase=f["fidelity_zero_phase"], sq=f["sq"], n_valid=f["n_valid"],
                n_pixels=f["n_pixels"], n_true=[], n_pred=[], matched=[], false_pos=[], false_neg=[], pos_err_xi=[])
    for b in range(psi.shape[0]):
        vt = positions_from_winding(grid, f["winding_true"][b])
        vp = positions_from_winding(grid, f["winding_pred"][b])
        pairs, dist = match_vortices(vt, vp, ecfg.match_radius * xi[b])
        k = len(pairs)
        rows["n_true"].append(len(vt))
        rows["n_pred"].append(len(vp))
        rows["matched"].append(k)
        rows["false_pos"].append(len(vp) - k)
        rows["false_neg"].append(len(vt) - k)
        rows["pos_err_xi"].append(list(dist / xi[b]))
    out = {k: (np.asarray(v) if k != "pos_err_xi" else v) for k, v in rows.items()}
    out.update(target=f["target"], valid=f["valid"], theta_pred=f["theta_pred"],
               winding_pred=f["winding_pred"], winding_true=f["winding_true"])
    return out


def summarize(per_sample: dict) -> dict:
    """Dataset-level numbers from concatenated per-sample metrics (JSON-able floats)."""
    n_true, n_pred = np.asarray(per_sample["n_true"]), np.asarray(per_sample["n_pred"])
    tp, fp, fn = (int(np.sum(per_sample[k])) for k in ("matched", "false_pos", "false_neg"))
    errs = np.asarray([e for row in per_sample["pos_err_xi"] for e in row], float)
    sq, valid, pix = (float(np.sum(per_sample[k])) for k in ("sq", "n_valid", "n_pixels"))
    C = 2
    return dict(
        n_samples=int(len(n_true)),
        mse=sq / (C * max(valid, 1.0)), mse_ref=sq / (C * max(pix, 1.0)),
        mse_per_sample_median=float(np.median(per_sample["mse"])),
        fidelity_mean=float(np.mean(per_sample["fidelity"])),
        fidelity_median=float(np.median(per_sample["fidelity"])),
        fidelity_min=float(np.min(per_sample["fidelity"])),
        fidelity_ceiling_mean=float(np.mean(per_sample["fidelity_ceiling"])),
        fidelity_zero_phase_mean=float(np.mean(per_sample["fidelity_zero_phase"])),
        vortex_count_accuracy=float(np.mean(n_true == n_pred)),
        vortex_count_mae=float(np.mean(np.abs(n_true - n_pred))),
        vortices_true=int(n_true.sum()), vortices_pred=int(n_pred.sum()),
        true_positives=tp, false_positives=fp, false_negatives=fn,
        precision=tp / max(tp + fp, 1), recall=tp / max(tp + fn, 1),
        position_error_xi_mean=float(errs.mean()) if errs.size else None,
        position_error_xi_median=float(np.median(errs)) if errs.size else None,
        position_error_xi_max=float(errs.max()) if errs.size else None,
    )


def evaluate_model(model, grid: Grid, arrays: dict, idx, tcfg: TargetConfig, *, batch_size: int = 16,
                   ecfg: EvalConfig = EvalConfig(), progress: bool = True, keep: int = 0,
                   desc: str = "evaluate") -> tuple[dict, dict]:
    """(summary, samples) of ``model`` (any U-Net-like nnx module, put in eval
    mode) on the samples ``idx`` of a dataset's ``arrays`` (from ``read_h5``).

    The shared core of ``evaluate_run`` and the pipeline's evaluation of
    compressed models. summary: ``summarize`` of the per-sample metrics;
    samples: the fields of ``keep`` samples spread evenly over ``idx``.
    """
    from flax import nnx
    from tqdm.auto import tqdm

    from bec_jax.train.trainer import make_predict

    model.eval()
    # everything that is not a Param (BatchNorm statistics, int8 kernels and scales) rides along
    gd, params, batch_stats = nnx.split(model, nnx.Param, ...)
    run_predict = make_predict(gd)
    parts, samples = [], {}
    # samples to return for plots: spread evenly over the split (groups are contiguous)
    show = set(np.unique(np.linspace(0, len(idx) - 1, keep).round().astype(int)).tolist()) if keep else set()
    for lo in tqdm(range(0, len(idx), batch_size), desc=desc, unit="batch", disable=not progress):
        sel = idx[lo : lo + batch_size]
        psi = jnp.asarray(arrays["psi"][sel])
        x, _, _ = make_example(grid, psi, tcfg)
        pred = run_predict(params, batch_stats, x.astype(jnp.float32))
        r = evaluate_predictions(grid, psi, pred, arrays["mu"][sel], tcfg, ecfg)
        parts.append({k: r[k] for k in ("mse", "mse_ref", "fidelity", "fidelity_ceiling", "fidelity_zero_phase",
                                         "sq", "n_valid", "n_pixels", "n_true", "n_pred", "matched",
                                         "false_pos", "false_neg")} | dict(pos_err_xi=r["pos_err_xi"]))
        rows = [b for b in range(len(sel)) if lo + b in show]
        if rows:
            new = dict(psi=np.asarray(psi), x=np.asarray(x), pred=np.asarray(pred), target=r["target"],
                       valid=r["valid"], theta_pred=r["theta_pred"], winding_pred=r["winding_pred"],
                       winding_true=r["winding_true"], fidelity=r["fidelity"], index=sel,
                       g=arrays["g"][sel], omega=arrays["omega"][sel])
            new = {k: np.asarray(v)[rows] for k, v in new.items()}
            samples = {k: (np.concatenate([samples[k], v]) if k in samples else v) for k, v in new.items()}
    per = {k: (sum((p[k] for p in parts), []) if k == "pos_err_xi" else np.concatenate([p[k] for p in parts]))
           for k in parts[0]}
    return summarize(per), samples


def evaluate_run(run_dir, *, data=None, which: str = "best", split: str = "test", batch_size: int = 16,
                 ecfg: EvalConfig = EvalConfig(), progress: bool = True, keep: int = 0) -> dict:
    """Evaluate a trained run on a dataset split.

    run_dir: folder written by ``fit`` / ``bec-jax train``. data: dataset .h5
    (default: the one the run was trained on, from its metrics.json).
    which: "best" or "latest" checkpoint. split: "test", "val", "train" (the
    run's group-wise split) or "all" (every sample; for other datasets).
    keep: number of samples, spread evenly over the split, whose fields are
      returned for plotting.

    Returns {"summary": dict (JSON-able), "config": dict, "samples": dict of
    numpy arrays for the first ``keep`` samples}.
    """
    from pathlib import Path

    from bec_jax.data.splits import split_by_group
    from bec_jax.data.storage import load_grid, read_h5
    from bec_jax.train.trainer import load_trained, run_data_path

    if split not in ("test", "val", "train", "all"):
        raise ValueError(f"split must be one of test, val, train, all; got {split!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    run_dir = Path(run_dir)
    model, info = load_trained(run_dir, which)
    tc = info["train_config"]
    if data is None:
        data = run_data_path(run_dir)
    if not Path(data).exists():
        raise ValueError(f"no dataset at {str(data)!r}")
    arrays, attrs = read_h5(data)
    grid = load_grid(attrs)
    if grid.n != info["model_config"].input_size:
        raise ValueError(f"dataset grid n={grid.n} differs from the model's input_size "
                         f"{info['model_config'].input_size}")
    idx = (np.arange(len(arrays["group"])) if split == "all"
           else split_by_group(arrays["group"], tc.split, tc.split_seed)[split])
    if len(idx) == 0:
        raise ValueError(f"the {split!r} split of {str(data)!r} is empty")
    tcfg = tc.target_config
    summary, samples = evaluate_model(model, grid, arrays, idx, tcfg, batch_size=batch_size, ecfg=ecfg,
                                      progress=progress, keep=keep)
    config = dict(run=str(run_dir), data=str(data), split=split, checkpoint=which, epoch=int(info["epoch"]),
                  target=tcfg.target, mask_threshold=tcfg.mask_threshold, eval=dataclasses.asdict(ecfg),
                  grid=dict(n=grid.n, length=grid.length))
    return dict(summary=summary, config=config, samples=samples, grid=grid)
