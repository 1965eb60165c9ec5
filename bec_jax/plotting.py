"""Figures: ``subplots`` and ``colormap`` for every plot in bec_jax, and the ground-state figure.

Figures are ``matplotlib.figure.Figure`` objects that pyplot never sees: they render
headless on any machine, and importing bec_jax changes nothing in a notebook's
matplotlib (no backend is forced, no figure is left open).
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from bec_jax.gpe.grid import Grid
from bec_jax.gpe.observables import vortex_positions

__all__ = ["subplots", "colormap", "plot_ground_states"]


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, constrained_layout=None, **kwargs):
    """(figure, axes) as ``pyplot.subplots``, on a Figure outside pyplot (module doc)."""
    fig = Figure(figsize=figsize, constrained_layout=constrained_layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def colormap(name: str):
    """The registered matplotlib colormap ``name``."""
    return matplotlib.colormaps[name]


def plot_ground_states(grid: Grid, psi, g, omega, energies, path, title: str | None = None):
    """Density (top row) and phase (bottom row, grey where |ψ|² < 1e-3 max) per
    state, vortices marked.

    psi: (B, n, n) complex; g, omega, energies: (B,). Vortices (+1 white
    circles, -1 black crosses) are those inside the cloud (``vortex_mask``).
    Writes a PNG to ``path`` and returns it.
    """
    psi = np.asarray(psi)
    B = psi.shape[0]
    ext = [grid.x[0], grid.x[-1] + grid.dx, grid.x[0], grid.x[-1] + grid.dx]
    fig, axes = subplots(2, B, figsize=(2.6 * B, 5.4), squeeze=False, constrained_layout=True)
    for b in range(B):
        rho = np.abs(psi[b]) ** 2
        v = vortex_positions(grid, psi[b])
        ax = axes[0, b]
        ax.imshow(rho, origin="lower", extent=ext, cmap="magma")
        nv = f"{len(v)} vortex" if len(v) == 1 else f"{len(v)} vortices"
        ax.set_title(f"g={float(g[b]):.0f}, Ω={float(omega[b]):.2f}\nE={float(energies[b]):.4f}, {nv}", fontsize=8)
        ax2 = axes[1, b]
        # The phase of the near-empty region is numerical noise: grey it out.
        ph = np.ma.masked_where(rho < 1e-3 * rho.max(), np.angle(psi[b]))
        cmap = colormap("twilight").with_extremes(bad="0.85")
        ax2.imshow(ph, origin="lower", extent=ext, cmap=cmap, vmin=-np.pi, vmax=np.pi)
        for a in (ax, ax2):
            pos, neg = v[v[:, 2] > 0], v[v[:, 2] < 0]
            a.scatter(pos[:, 0], pos[:, 1], s=14, facecolors="none", edgecolors="cyan", linewidths=0.8)
            a.scatter(neg[:, 0], neg[:, 1], s=14, c="k", marker="x", linewidths=0.8)
            a.set_xticks([])
            a.set_yticks([])
    axes[0, 0].set_ylabel("density |ψ|²")
    axes[1, 0].set_ylabel("phase arg ψ")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path
