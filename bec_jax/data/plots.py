"""Dataset figure (reference paper Fig. 2 style)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bec_jax.data.storage import load_grid, read_h5
from bec_jax.data.targets import TARGETS, TargetConfig, make_example
from bec_jax.plotting import colormap, save_figure, subplots


@dataclasses.dataclass(frozen=True)
class SampleFigure:
    """Which samples ``bec-jax show-data`` draws.

    samples: samples shown, one row each (1 to 16; a dataset with fewer shows all of its own).
    seed: seed of the random choice of samples, in [0, 2**31).
    target: the gradient drawn: "phase_diff" (radians per pixel) or "velocity" (inverse oscillator lengths).
    """

    samples: int = 3
    seed: int = 0
    target: str = "phase_diff"

    def __post_init__(self):
        if not 1 <= self.samples <= 16:  # one figure row each
            raise ValueError(f"samples must be in [1, 16], got {self.samples}")
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"seed must be in [0, 2**31), got {self.seed}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")


def plot_samples(path, out, n_samples: int = 3, seed: int = 0, target: str = "phase_diff"):
    """Density, x- and y-phase-gradient targets and the mask for a few samples of the dataset ``path``
    (a file or a shard folder).

    Masked (invalid) pixels are shown grey in the gradient panels.
    """
    N = len(read_h5(path, fields=["g"], psi=False)[0]["g"])
    if N == 0:
        raise ValueError(f"{path} holds no samples")
    idx = np.sort(np.random.default_rng(seed).choice(N, min(n_samples, N), replace=False))
    arrays, attrs = read_h5(path, fields=["g", "omega", "vortices"], rows=idx)
    psi, g, om, nv = arrays["psi"], arrays["g"], arrays["omega"], arrays["vortices"]
    grid = load_grid(attrs)
    x, y, m = (np.asarray(a) for a in make_example(grid, psi, TargetConfig(target=target)))
    ext = [grid.x[0], grid.x[-1] + grid.dx] * 2
    fig, axes = subplots(len(idx), 4, figsize=(12, 3 * len(idx)), squeeze=False, constrained_layout=True)
    unit = "rad/pixel" if target == "phase_diff" else "1/a⊥"
    # Robust colour limit: vortex-core pixels (±π) would otherwise hide the flow.
    lim = float(np.percentile(np.abs(y[m]), 98)) if m.any() else 1.0
    cmap = colormap("RdBu_r").with_extremes(bad="0.8")
    for r in range(len(idx)):
        rho = np.exp(x[r, ..., 0])
        dens = axes[r, 0].imshow(rho, origin="lower", extent=ext, cmap="magma")
        fig.colorbar(dens, ax=axes[r, 0], shrink=0.8, format="%.2g", label="density |ψ|² (1/a⊥²)")
        vort = "1 vortex" if nv[r] == 1 else f"{nv[r]} vortices"
        axes[r, 0].set_title(f"g={g[r]:.0f}, Ω={om[r]:.2f}, {vort}", fontsize=9)
        for c, name in ((0, "x"), (1, "y")):
            im = axes[r, 1 + c].imshow(np.ma.masked_where(~m[r], y[r, ..., c]), origin="lower", extent=ext,
                                      cmap=cmap, vmin=-lim, vmax=lim)
            axes[r, 1 + c].set_title(f"{name}-phase gradient [{unit}]", fontsize=9)
            fig.colorbar(im, ax=axes[r, 1 + c], shrink=0.8, extend="both")  # arrows: the clipped core values
        axes[r, 3].imshow(m[r], origin="lower", extent=ext, cmap="gray")
        axes[r, 3].set_title("mask (white = valid)", fontsize=9)
        axes[r, 0].set_ylabel("y (a⊥)")
    for ax in axes[-1]:
        ax.set_xlabel("x (a⊥)")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out, dpi=100)
    return out
