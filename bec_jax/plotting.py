"""Figures: ``subplots``, ``colormap`` and ``save_figure`` for every plot in bec_jax, and the ground-state
figure.

Figures are ``matplotlib.figure.Figure`` objects that pyplot never sees: they render
headless on any machine, and importing bec_jax changes nothing in a notebook's
matplotlib (no backend is forced, no figure is left open).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from bec_jax.artifacts import atomic_write
from bec_jax.gpe.grid import Grid
from bec_jax.gpe.observables import vortex_positions

__all__ = ["subplots", "colormap", "save_figure", "plot_ground_states"]


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, constrained_layout=None, **kwargs):
    """(figure, axes) as ``pyplot.subplots``, on a Figure outside pyplot (module doc)."""
    fig = Figure(figsize=figsize, constrained_layout=constrained_layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def colormap(name: str):
    """The registered matplotlib colormap ``name``."""
    return matplotlib.colormaps[name]


def save_figure(fig, path, **savefig_kwargs):
    """Write ``fig`` to ``path`` (the format its suffix names) atomically (``artifacts.atomic_write``): a
    stop while it is written leaves the old file or none, never a truncated image. Returns ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **savefig_kwargs)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
    return path


def plot_ground_states(grid: Grid, psi, g, omega, energies, path, title: str | None = None):
    """Density (top row) and phase (bottom row, grey where |ψ|² < 1e-3 max) per
    state, vortices marked, axes in oscillator lengths a⊥.

    psi: (B, n, n) complex; g, omega, energies: (B,). Vortices (+1 cyan circles,
    −1 lime crosses) are those inside the cloud (``vortex_mask``).
    Writes a PNG to ``path`` and returns it.
    """
    psi = np.asarray(psi)
    B = psi.shape[0]
    ext = [grid.x[0], grid.x[-1] + grid.dx, grid.x[0], grid.x[-1] + grid.dx]
    fig, axes = subplots(2, B, figsize=(2.9 * B + 1.0, 5.9), squeeze=False, constrained_layout=True)
    cmap = colormap("twilight").with_extremes(bad="0.85")
    for b in range(B):
        rho = np.abs(psi[b]) ** 2
        v = vortex_positions(grid, psi[b])
        pos, neg = v[v[:, 2] > 0], v[v[:, 2] < 0]
        ax = axes[0, b]
        im = ax.imshow(rho, origin="lower", extent=ext, cmap="magma")
        fig.colorbar(im, ax=ax, shrink=0.75, format="%.2g").ax.tick_params(labelsize=7)
        count = f"{len(pos)} vortex" if len(pos) == 1 else f"{len(pos)} vortices"
        if len(neg):
            count += f", {len(neg)} anti"
        ax.set_title(f"g={float(g[b]):.0f}, Ω={float(omega[b]):.2f}\nE={float(energies[b]):.4f}, {count}", fontsize=8)
        # The phase of the near-empty region is numerical noise: grey it out.
        ph = np.ma.masked_where(rho < 1e-3 * rho.max(), np.angle(psi[b]))
        phase = axes[1, b].imshow(ph, origin="lower", extent=ext, cmap=cmap, vmin=-np.pi, vmax=np.pi)
        for a in (ax, axes[1, b]):
            a.scatter(pos[:, 0], pos[:, 1], s=14, facecolors="none", edgecolors="cyan", linewidths=0.8)
            a.scatter(neg[:, 0], neg[:, 1], s=16, c="lime", marker="x", linewidths=0.9)
            a.tick_params(labelsize=7)
        axes[1, b].set_xlabel("x (a⊥)", fontsize=8)
    bar = fig.colorbar(phase, ax=axes[1, -1], shrink=0.75, ticks=[-np.pi, 0, np.pi])
    bar.ax.set_yticklabels(["−π", "0", "π"], fontsize=7)
    axes[0, 0].set_ylabel("density |ψ|² (1/a⊥²)\ny (a⊥)", fontsize=8)
    axes[1, 0].set_ylabel("phase arg ψ\ny (a⊥)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=110)
