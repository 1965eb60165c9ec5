"""Figures for training and evaluation (``bec_jax.plotting.subplots``: headless, no pyplot state)."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from bec_jax.plotting import colormap, save_figure, subplots

__all__ = ["plot_history", "plot_optimizer_comparison", "plot_predictions"]

COLORS = {"sgd": "tab:green", "adam": "tab:blue", "adamw": "tab:orange"}


def plot_history(history: list, path, title: str | None = None):
    """Train and validation loss vs epoch (log y). history: list of fit rows. Returns path."""
    ep = [r["epoch"] for r in history]
    fig, ax = subplots(figsize=(5, 3.4), constrained_layout=True)
    ax.semilogy(ep, [r["train_loss"] for r in history], label="train (batch mean)")
    ax.semilogy(ep, [r["val_loss"] for r in history], label="validation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, also for short runs
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked MSE")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=120)
    return path


def plot_optimizer_comparison(curves: dict, path, ylabel: str, title: str | None = None,
                              reference: dict | None = None, reference_epoch: int | None = None):
    """Validation loss vs epoch per optimizer: mean over seeds and min–max band (paper Fig. 3).

    curves: {optimizer: array (n_seeds, n_epochs)}. reference: optional
    {optimizer: value} drawn as markers at ``reference_epoch`` (the paper's
    numbers, on other data). Returns path.
    """
    fig, ax = subplots(figsize=(8.2, 4), constrained_layout=True)
    for name, c in curves.items():
        c = np.asarray(c, float)
        ep = np.arange(1, c.shape[1] + 1)
        color = COLORS.get(name)
        ax.semilogy(ep, c.mean(0), color=color, label=f"{name} (mean of {c.shape[0]})")
        ax.fill_between(ep, c.min(0), c.max(0), color=color, alpha=0.25, lw=0)
        if reference and name in reference and reference_epoch and c.shape[1] >= reference_epoch:
            ax.plot([reference_epoch], [reference[name]], marker="*", ms=11, color=color, ls="none",
                    markeredgecolor="k", label=f"{name}: paper, epoch {reference_epoch} (other data)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a curve
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=130)
    return path


def _vortex_xy(winding):
    j, i = np.nonzero(winding)
    return i + 0.5, j + 0.5, winding[j, i]


def plot_predictions(samples: dict, path, title: str | None = None):
    """Per test sample (rows): input log-density, true phase arg ψ, reconstructed
    phase, true and predicted x-difference channel, |error| (both channels, masked)
    and the mask (paper Fig. 7 style).

    samples: the ``samples`` dict of ``evaluate_run`` (numpy arrays, leading
    axis = sample). Vortices: white ○ true, black × predicted (+ winding),
    red for −1. Pixel axes, y up. Returns path.
    """
    psi, x, pred, tgt, valid = (np.asarray(samples[k]) for k in ("psi", "x", "pred", "target", "valid"))
    theta_pred = np.asarray(samples["theta_pred"])
    B = psi.shape[0]
    cols = ["input log n", "true phase (rad)", "reconstructed phase (rad)", "true Δθ_x", "predicted Δθ_x",
            "|error|, both channels", "mask (valid pixels)"]
    fig, axes = subplots(B, len(cols), figsize=(2.05 * len(cols), 2.15 * B + 0.5), squeeze=False,
                             constrained_layout=True)
    tw, rb, hot = (colormap(c).with_extremes(bad="0.85") for c in ("twilight", "RdBu_r", "inferno"))  # grey: masked
    for b in range(B):
        inval = ~valid[b]
        # Align the reconstructed phase's free constant with the truth for display.
        shift = np.angle(np.sum(np.conj(np.abs(psi[b]) * np.exp(1j * theta_pred[b])) * psi[b]))
        ph_true = np.ma.masked_where(inval, np.angle(psi[b]))
        ph_pred = np.ma.masked_where(inval, np.angle(np.exp(1j * (theta_pred[b] + shift))))
        # one symmetric scale for truth and prediction (inside the mask)
        lim = max(np.abs(tgt[b, ..., 0][valid[b]]).max(initial=0), np.abs(pred[b, ..., 0][valid[b]]).max(initial=0),
                  1e-3)
        err = np.sqrt(np.sum((pred[b] - tgt[b]) ** 2, axis=-1))
        panels = [
            (x[b, ..., 0], dict(cmap="magma")),
            (ph_true, dict(cmap=tw, vmin=-np.pi, vmax=np.pi)),
            (ph_pred, dict(cmap=tw, vmin=-np.pi, vmax=np.pi)),
            (np.ma.masked_where(inval, tgt[b, ..., 0]), dict(cmap=rb, vmin=-lim, vmax=lim)),
            (np.ma.masked_where(inval, pred[b, ..., 0]), dict(cmap=rb, vmin=-lim, vmax=lim)),
            (np.ma.masked_where(inval, err), dict(cmap=hot, vmin=0)),
            (valid[b].astype(float), dict(cmap="gray", vmin=0, vmax=1)),
        ]
        for c, (img, kw) in enumerate(panels):
            ax = axes[b, c]
            im = ax.imshow(img, origin="lower", interpolation="nearest", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if c in (0, 2, 3, 4, 5):
                fig.colorbar(im, ax=ax, shrink=0.75, pad=0.02)
            if b == 0:
                ax.set_title(cols[c], fontsize=8)
        for c, key in ((1, "winding_true"), (2, "winding_pred")):
            vx, vy, w = _vortex_xy(np.asarray(samples[key][b]))
            pos, marker, col = w > 0, ("o" if c == 1 else "x"), ("w" if c == 1 else "k")
            kw = dict(s=16, linewidths=0.9)
            if marker == "o":
                axes[b, c].scatter(vx[pos], vy[pos], facecolors="none", edgecolors=col, **kw)
                axes[b, c].scatter(vx[~pos], vy[~pos], facecolors="none", edgecolors="r", **kw)
            else:
                axes[b, c].scatter(vx[pos], vy[pos], c=col, marker="x", **kw)
                axes[b, c].scatter(vx[~pos], vy[~pos], c="r", marker="x", **kw)
        label = f"#{int(samples['index'][b])}\ng={float(samples['g'][b]):.0f} Ω={float(samples['omega'][b]):.2f}"
        axes[b, 0].set_ylabel(label, fontsize=7)
        axes[b, 2].set_xlabel(f"fidelity {float(samples['fidelity'][b]):.4f}", fontsize=7)
    key = ("vortices: ○ true, × predicted (white/black +1, red −1); grey: outside the mask; pixels, row 0 at the "
           "bottom; Δθ_x: the x (column) channel of the target")
    fig.suptitle(f"{title}\n{key}" if title else key, fontsize=8)
    save_figure(fig, path, dpi=110)
    return path
