"""(g, Ω) from a density snapshot through a trained surrogate network.

The surrogate is a coordinate network f(r, g, Ω) → (c_0, |c_1|, …, |c_M|)(r):
at radius r it returns the ring-averaged density mass c_0 and the azimuthal
power spectrum |c_m| of the ground state at (g, Ω) — the rotation-invariant
features of ``features.azimuthal_features``, so that it is trained on, and
inverted with, exactly the loss used by the solver inversion. Why features
and not the raw image: the lattice orientation of a ground state is random
(rotational degeneracy), so the best pixel-wise prediction from (g, Ω) is
the orientation average, which throws away the lattice; the invariants keep
it and are single-valued in (g, Ω). Channel 0 rendered on the grid
(``render_density``) is the orientation-averaged density image.

Inputs: r/r_max with 8 Fourier features sin/cos(kπr/r_max), and (g, Ω)
mapped to [−1, 1] by the box. Inversion: Adam on unconstrained u with
(g, Ω) = box.to_physical(u) (scaled sigmoid), from a few starts, best kept.
Weights are stored in HDF5 (no pickle).
"""

from __future__ import annotations

import dataclasses
import json

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bec_jax.gpe.grid import Grid
from bec_jax.inverse.features import FeatureConfig, feature_loss, ring_basis
from bec_jax.inverse.ranges import ParamBox
from bec_jax.optim import make_gradient_step

__all__ = ["SurrogateConfig", "FeatureSurrogate", "train_surrogate", "invert_with_surrogate", "render_density",
           "save_surrogate", "load_surrogate"]


@dataclasses.dataclass(frozen=True)
class SurrogateConfig:
    """width/depth: MLP hidden size and hidden layers. n_freq: Fourier features
    of r. steps/lr/seed: full-batch Adam training (cosine decay).
    inv_steps/inv_lr/inv_starts: inversion Adam steps, rate and starts per
    axis (inv_starts² starts on a grid in u)."""

    width: int = 128
    depth: int = 3
    n_freq: int = 8
    steps: int = 4000
    lr: float = 3e-3
    seed: int = 0
    inv_steps: int = 300
    inv_lr: float = 0.1
    inv_starts: int = 3

    def __post_init__(self):
        for name in ("width", "depth", "n_freq", "steps", "inv_steps", "inv_starts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class FeatureSurrogate(nnx.Module):
    """MLP (r-features, g, Ω) → M+1 rotation-invariant features at radius r."""

    def __init__(self, n_out: int, cfg: SurrogateConfig, *, rngs: nnx.Rngs):
        n_in = 2 * cfg.n_freq + 1 + 2
        sizes = [n_in] + [cfg.width] * cfg.depth
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(cfg.width, n_out, rngs=rngs)
        self.n_freq = cfg.n_freq

    def __call__(self, rho, pn):
        """rho (R,) radii / r_max; pn (..., 2) box-normalised (g, Ω) in [−1, 1]
        → (..., n_out, R)."""
        k = jnp.arange(1, self.n_freq + 1) * jnp.pi
        rf = jnp.concatenate([rho[:, None], jnp.sin(k * rho[:, None]), jnp.cos(k * rho[:, None])], -1)  # (R, F)
        rf = jnp.broadcast_to(rf, pn.shape[:-1] + rf.shape)
        pp = jnp.broadcast_to(pn[..., None, :], pn.shape[:-1] + (rho.shape[0], 2))
        h = jnp.concatenate([rf, pp], -1)
        for lyr in self.layers:
            h = jax.nn.gelu(lyr(h))
        return jnp.swapaxes(self.out(h), -1, -2)


def _normalise(box: ParamBox, p):
    lo, hi = jnp.asarray(box.lo, p.dtype), jnp.asarray(box.hi, p.dtype)
    return 2 * (p - lo) / (hi - lo) - 1


def _predict(model, box: ParamBox, rho, scale, p):
    return model(rho, _normalise(box, p)) * scale


def train_surrogate(grid: Grid, params, feats, box: ParamBox, fcfg: FeatureConfig = FeatureConfig(),
                    cfg: SurrogateConfig = SurrogateConfig()):
    """Fit the surrogate to (params (N, 2), feats (N, M+1, B)) by full-batch Adam.

    Returns (model, info) with info = {"scale", "rho", "train_loss"}:
    ``scale`` (M+1,) per-channel output scale, ``rho`` (B,) ring radii / r_max.
    Loss: mean squared error of the scaled features.
    """
    radii, _ = ring_basis(grid, fcfg)
    rho = jnp.asarray(radii / radii[-1], jnp.float32)
    feats = jnp.asarray(feats, jnp.float32)
    scale = jnp.max(jnp.abs(feats), axis=(0, 2)) + 1e-8
    y = feats / scale[:, None]
    p = jnp.asarray(params, jnp.float32)
    model = FeatureSurrogate(feats.shape[1], cfg, rngs=nnx.Rngs(cfg.seed))
    tx = optax.adam(optax.cosine_decay_schedule(cfg.lr, cfg.steps, alpha=1e-2))
    gdef, state = nnx.split(model)
    opt = tx.init(state)
    pn = _normalise(box, p)
    step = jax.jit(make_gradient_step(lambda s: jnp.mean((nnx.merge(gdef, s)(rho, pn) - y) ** 2), tx))

    losses = []
    for i in range(cfg.steps):
        state, opt, l = step(state, opt)
        if i % 100 == 0 or i == cfg.steps - 1:
            losses.append(float(l))
    return nnx.merge(gdef, state), dict(scale=scale, rho=rho, train_loss=losses)


def invert_with_surrogate(model, info: dict, f_obs, box: ParamBox, fcfg: FeatureConfig = FeatureConfig(),
                          cfg: SurrogateConfig = SurrogateConfig()):
    """Recover (g, Ω) for observed features f_obs (B, M+1, R) → (params (B, 2), loss (B,)).

    inv_starts² starts on a grid of u ∈ [−1.5, 1.5]², Adam on each, the
    lowest final loss wins; everything is one jitted vmapped program.
    """
    f_obs = jnp.asarray(f_obs, jnp.float32)
    if f_obs.ndim != 3:
        raise ValueError(f"f_obs must have shape (B, M+1, R), got {f_obs.shape}")
    s = np.linspace(-1.5, 1.5, cfg.inv_starts)
    u0 = jnp.asarray(np.stack(np.meshgrid(s, s), -1).reshape(-1, 2), jnp.float32)
    gdef, state = nnx.split(model)
    tx = optax.adam(cfg.inv_lr)
    rho, scale = info["rho"], info["scale"][:, None]

    def loss(u, fo):
        f = nnx.merge(gdef, state)(rho, _normalise(box, box.to_physical(u))) * scale
        return feature_loss(f, fo, fcfg)

    def solve(u, fo):
        def body(c, _):
            u, o = c
            gr = jax.grad(loss)(u, fo)
            upd, o = tx.update(gr, o, u)
            return (optax.apply_updates(u, upd), o), None
        (u, _), _ = jax.lax.scan(body, (u, tx.init(u)), None, length=cfg.inv_steps)
        return u, loss(u, fo)

    @jax.jit
    def run(fo):
        us, ls = jax.vmap(jax.vmap(solve, (0, None)), (None, 0))(u0, fo)  # (B, S, 2), (B, S)
        best = jnp.argmin(jnp.where(jnp.isfinite(ls), ls, jnp.inf), axis=1)
        u = jnp.take_along_axis(us, best[:, None, None], 1)[:, 0]
        return box.to_physical(u), jnp.min(ls, axis=1)

    return run(f_obs)


def render_density(grid: Grid, model, info: dict, p, box: ParamBox, fcfg: FeatureConfig = FeatureConfig()):
    """Orientation-averaged density image (n, n) at one (g, Ω) p (2,): channel 0
    divided by the ring area, interpolated linearly in r onto the pixels."""
    radii, basis = ring_basis(grid, fcfg)
    area = np.real(basis[0]).sum(axis=(-2, -1))
    c0 = model(info["rho"], _normalise(box, jnp.asarray(p, jnp.float32)))[0] * info["scale"][0]
    prof = np.asarray(c0) / area
    X, Y = grid.mesh()
    return np.interp(np.hypot(X, Y), radii, prof, right=0.0).clip(0)


def save_surrogate(path, model, info: dict, cfg: SurrogateConfig, fcfg: FeatureConfig, box: ParamBox):
    """Weights + scales + configs to one HDF5 file (no pickle)."""
    state = nnx.state(model)
    leaves = jax.tree_util.tree_leaves_with_path(state)
    with h5py.File(path, "w") as f:
        for kp, v in leaves:
            f.create_dataset("params/" + jax.tree_util.keystr(kp), data=np.asarray(v))
        f.create_dataset("scale", data=np.asarray(info["scale"]))
        f.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
        f.attrs["features"] = json.dumps(dataclasses.asdict(fcfg))
        f.attrs["box"] = json.dumps(dataclasses.asdict(box))


def load_surrogate(path, grid: Grid):
    """Inverse of ``save_surrogate`` → (model, info, cfg, fcfg, box)."""
    with h5py.File(path, "r") as f:
        cfg = SurrogateConfig(**json.loads(f.attrs["config"]))
        fcfg = FeatureConfig(**json.loads(f.attrs["features"]))
        box = ParamBox(**json.loads(f.attrs["box"]))
        scale = jnp.asarray(f["scale"][()])
        model = FeatureSurrogate(len(scale), cfg, rngs=nnx.Rngs(0))
        state = nnx.state(model)
        leaves = jax.tree_util.tree_leaves_with_path(state)
        new = [jnp.asarray(f["params/" + jax.tree_util.keystr(kp)][()]) for kp, _ in leaves]
    nnx.update(model, jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(state), new))
    radii, _ = ring_basis(grid, fcfg)
    return model, dict(scale=scale, rho=jnp.asarray(radii / radii[-1], jnp.float32)), cfg, fcfg, box
