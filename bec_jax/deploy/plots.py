"""The figure of one prediction: the image, the phase, the vortices with their signs."""

from __future__ import annotations

import numpy as np
from matplotlib.patches import Circle

from bec_jax.plotting import colormap, save_figure, subplots

__all__ = ["plot_prediction"]


def plot_prediction(image, res, path, title: str | None = None, units: dict | None = None):
    """Three panels: the image with the fitted Thomas–Fermi disc; the reconstructed phase
    (grey outside the cloud); the image with the vortices (+1 red circles, −1 blue crosses,
    marker opacity = confidence). Under the title: the settings the phase depends on (sense of
    rotation, pixel size in a⊥ and, with ``units`` (``TrapUnits.as_dict``), µm; the (g, Ω) estimate).
    Written atomically to ``path`` (PNG); returns it."""
    fig, axes = subplots(1, 3, figsize=(12.6, 4.4), constrained_layout=True)
    kw = dict(origin="lower", interpolation="nearest")
    im0 = axes[0].imshow(image, cmap="viridis", **kw)
    fig.colorbar(im0, ax=axes[0], shrink=0.8, label="counts")
    r0, c0 = res.center
    axes[0].add_patch(Circle((c0, r0), res.tf_radius, fill=False, color="w", lw=0.8, ls="--"))
    axes[0].set_title(f"image (Thomas–Fermi R = {res.tf_radius:.1f} px)")
    ph = np.ma.masked_invalid(res.phase)
    cmap = colormap("twilight").with_extremes(bad="0.85")
    im1 = axes[1].imshow(ph, cmap=cmap, vmin=-np.pi, vmax=np.pi, **kw)
    fig.colorbar(im1, ax=axes[1], shrink=0.8, label="phase (rad)")
    axes[1].set_title("reconstructed phase")
    axes[2].imshow(image, cmap="gray", **kw)
    n_pos = n_neg = 0
    for v in res.vortices:
        a = 0.3 + 0.7 * v.confidence
        if v.sign > 0:
            n_pos += 1
            axes[2].plot(v.col, v.row, "o", mfc="none", mec="red", ms=7, mew=1.5, alpha=a)
        else:
            n_neg += 1
            axes[2].plot(v.col, v.row, "x", color="deepskyblue", ms=7, mew=1.5, alpha=a)
    # +1 turns counter-clockwise as drawn: row 0 at the bottom, unlike most camera viewers
    axes[2].set_title(f"vortices: {n_pos} of +1 ↺ (o), {n_neg} of −1 ↻ (x)")
    for ax in axes:
        ax.set_xlabel("column (px)")
        ax.set_ylabel("row (px, 0 at the bottom)")
    fig.suptitle("\n".join(filter(None, (title, _settings_line(res, units)))), fontsize=9)

    return save_figure(fig, path, dpi=110)


def _settings_line(res, units: dict | None) -> str:
    """"trap turning counter-clockwise (as given) · pixel 0.25 a⊥ = 0.27 µm · TOF 10 /ω⊥ · g = …, Ω = …"."""
    parts = [f"trap turning {'clockwise' if res.rotation == 'cw' else 'counter-clockwise'} (as given)",
             f"pixel {res.pixel_size:.3g} a⊥" + (f" = {res.pixel_size * units['length_um']:.3g} µm" if units else "")]
    if res.tof:
        parts.append(f"time of flight {res.tof:.3g}/ω⊥" + (f" = {res.tof * units['time_ms']:.3g} ms" if units else ""))
    if res.parameters:
        parts.append(f"estimate g = {res.parameters['g']:.3g}, Ω = {res.parameters['omega']:.3g} ω⊥")
    if units:
        parts.append(f"{units['species']}, ω⊥ = 2π·{units['trap_frequency_hz']:.4g} Hz")
    return " · ".join(parts)
