"""Figures of the compression study (paper Figs. 4–7). Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bec_jax.plotting import save_figure, subplots

__all__ = ["plot_error_vs_sparsity", "plot_pruning_comparison", "plot_weight_histograms",
           "plot_residual_percentiles", "plot_quantized_predictions"]

_LABELS = {"prune": "prune only", "finetune": "prune + fine-tune", "iterative": "iterative prune + fine-tune"}
_COLORS = {"prune": "tab:green", "finetune": "tab:blue", "iterative": "tab:red"}


def plot_error_vs_sparsity(rows: list[dict], out) -> Path:
    """Fig. 5: test MSE / dense control (same total epochs) vs sparsity, one line per method.

    rows: dicts with "sparsity", "method", "ratio".
    """
    fig, axes = subplots(1, 2, figsize=(11, 4.2))
    for ax, zoom in zip(axes, (False, True)):
        for m in ("prune", "finetune", "iterative"):
            r = sorted((x for x in rows if x["method"] == m), key=lambda x: x["sparsity"])
            if not r:
                continue
            s = np.array([x["sparsity"] for x in r])
            v = np.array([x["ratio"] for x in r])
            sel = s >= 0.9 if zoom else np.ones_like(s, bool)
            ax.plot(100 * s[sel], v[sel], "o-" if m != "iterative" else "o--", color=_COLORS[m], label=_LABELS[m])
        ax.axhline(1.0, color="k", lw=0.8, label="dense (same epochs)")
        ax.axhline(1.5, color="gray", lw=0.8, ls=":", label="1.5 × dense")
        ax.set_yscale("log")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("test MSE / dense")
        ax.set_title("zoom: sparsity ≥ 90 %" if zoom else "error vs sparsity")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    save_figure(fig, out, dpi=120)
    return out


def plot_pruning_comparison(curves: dict, out, reference: dict | None = None, baselines: dict | None = None,
                            reference_label: str = "published", title: str | None = None) -> Path:
    """Test MSE (left, log) and vortex count accuracy (right) vs sparsity of pruning runs at one scale, with
    published MSEs as stars. The sparsity axis is −log10(1 − s), so 99, 99.5 and 99.9 % stand apart.

    curves: {label: [{"sparsity" (< 1), "mse", "vortex_count_accuracy" (or None)}, ...]}, each drawn as a line
    with its own marker (a point where it has one). reference: {sparsity: MSE}, labelled ``reference_label``.
    baselines: {label: {"mse", "vortex_count_accuracy"} (either may be missing)}: horizontal lines, up to four
    (dense models).
    """
    def x(s):
        return -np.log10(1 - np.asarray(s, float))

    baselines = baselines or {}
    if len(baselines) > 4:
        raise ValueError(f"plot_pruning_comparison draws up to 4 baselines, got {len(baselines)}")
    sparsities = [p["sparsity"] for pts in curves.values() for p in pts] + [float(s) for s in reference or ()]
    bad = [s for s in sparsities if not 0 <= s < 1]
    if bad:
        raise ValueError(f"plot_pruning_comparison: sparsity must be in [0, 1), got {bad[0]}")
    fig, axes = subplots(1, 2, figsize=(11.5, 4.2), constrained_layout=True)
    for i, (label, points) in enumerate(curves.items()):
        pts = sorted(points, key=lambda p: p["sparsity"])
        style = dict(marker="osD^vP"[i % 6], color=f"C{i}", label=label, ls="-" if len(pts) > 1 else "none")
        axes[0].plot(x([p["sparsity"] for p in pts]), [p["mse"] for p in pts], **style)
        kept = [p for p in pts if p.get("vortex_count_accuracy") is not None]
        axes[1].plot(x([p["sparsity"] for p in kept]), [p["vortex_count_accuracy"] for p in kept], **style)
    if reference:
        axes[0].plot(x([float(s) for s in reference]), list(reference.values()), marker="*", ms=13, ls="none",
                     color="k", label=reference_label)
    for (label, b), ls in zip(baselines.items(), ("--", ":", "-.", (0, (1, 4)))):
        for ax, key in zip(axes, ("mse", "vortex_count_accuracy")):
            if b.get(key) is not None:
                ax.axhline(b[key], color="gray", ls=ls, lw=1, label=label)
    ticks = [s for s in (0.5, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999, 0.9995, 0.9999)
             if min(sparsities, default=0.8) <= s <= max(sparsities, default=0.999)]
    for ax, ylabel in zip(axes, ("test MSE", "vortex count accuracy")):
        ax.set_xticks(x(ticks), [f"{100 * s:g}" for s in ticks])
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_yscale("log")
    axes[1].set_ylim(-0.02, 1.02)
    legend = {}  # both panels' entries once, outside: a legend never hides a point
    for ax in axes:
        legend.update({label: h for h, label in zip(*ax.get_legend_handles_labels()) if label not in legend})
    axes[1].legend(legend.values(), legend.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title, fontsize=9)
    out = Path(out)
    save_figure(fig, out, dpi=120)
    return out


def plot_weight_histograms(stages: dict, out, sparsity: float) -> Path:
    """Fig. 4: histograms of conv-kernel weights; stages = {"dense"|"pruned"|"finetuned": {name: array}}.

    Pruned stages show their non-zero weights only (the zeros are counted in the title).
    """
    fig, axes = subplots(1, len(stages), figsize=(4 * len(stages), 3.4), sharex=True)
    axes = np.atleast_1d(axes)
    dense = np.concatenate([np.asarray(v).ravel() for k, v in stages["dense"].items() if k.endswith("kernel")])
    lim = np.percentile(np.abs(dense), 99.9)
    bins = np.linspace(-lim, lim, 121)
    for ax, (name, leaves) in zip(axes, stages.items()):
        w = np.concatenate([np.asarray(v).ravel() for k, v in leaves.items() if k.endswith("kernel")])
        nz = w[w != 0]
        ax.hist(nz, bins=bins, color="tab:blue")
        ax.set_title(f"{name}: {len(nz)} of {len(w)} non-zero" + (f" ({sparsity:.0%} target)" if name != "dense"
                                                                   else ""), fontsize=9)
        ax.set_xlabel("conv weight")
    axes[0].set_ylabel("count")
    fig.tight_layout()
    out = Path(out)
    save_figure(fig, out, dpi=120)
    return out


def plot_residual_percentiles(stats: dict, out) -> Path:
    """Fig. 6: per-layer |W − Ŵ| percentiles, one heat map per scheme (``weight_error_stats`` dicts)."""
    fig, axes = subplots(1, len(stats), figsize=(5.5 * len(stats), 3.6))
    axes = np.atleast_1d(axes)
    vmax = max(np.max(s["residual_percentiles"]) for s in stats.values())
    for ax, (scheme, s) in zip(axes, stats.items()):
        r = np.asarray(s["residual_percentiles"]).T
        im = ax.imshow(r, aspect="auto", cmap="magma", vmin=0, vmax=vmax, origin="lower")
        ax.set_yticks(range(len(s["percentiles"])), [f"p{p}" for p in s["percentiles"]])
        ax.set_xticks(range(len(s["layers"])), s["layers"], rotation=90, fontsize=6)
        ax.set_title(f"{scheme}: |W − Ŵ|", fontsize=10)
        ax.set_xlabel("conv layer")
    axes[0].set_ylabel("percentile over the layer's weights")
    fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label="|W − Ŵ| (the weights' own units)")
    out = Path(out)
    save_figure(fig, out, dpi=120, bbox_inches="tight")
    return out


def plot_quantized_predictions(x, y, mask, preds: dict, out) -> Path:
    """Fig. 7: input, target, and per scheme the prediction (x-component), |error| on valid
    pixels and |difference to fp32|. x (n, n, 1), y (n, n, 2), mask (n, n), preds {name: (n, n, 2)}."""
    names = list(preds)
    fig, axes = subplots(len(names) + 1, 3, figsize=(9, 3 * (len(names) + 1)))
    axes[0, 0].imshow(x[..., 0], cmap="viridis")
    axes[0, 0].set_title("log density")
    axes[0, 1].imshow(y[..., 0], cmap="twilight", vmin=-np.pi, vmax=np.pi)
    axes[0, 1].set_title("target Δθ_x")
    axes[0, 2].imshow(mask, cmap="gray")
    axes[0, 2].set_title("valid mask")
    emax = max(np.max(np.abs(p[..., 0] - y[..., 0]) * mask) for p in preds.values())
    dmax = max(max(np.max(np.abs(p[..., 0] - preds[names[0]][..., 0])) for p in preds.values()), 1e-12)
    for i, n in enumerate(names, start=1):
        p = preds[n]
        axes[i, 0].imshow(p[..., 0], cmap="twilight", vmin=-np.pi, vmax=np.pi)
        axes[i, 0].set_title(f"{n}: prediction Δθ_x", fontsize=9)
        axes[i, 1].imshow(np.abs(p[..., 0] - y[..., 0]) * mask, cmap="inferno", vmin=0, vmax=emax)
        axes[i, 1].set_title(f"|error| (masked), MSE {np.sum(((p - y) ** 2) * mask[..., None]) / (2 * mask.sum()):.2e}",
                             fontsize=9)
        d = np.abs(p[..., 0] - preds[names[0]][..., 0])
        axes[i, 2].imshow(d, cmap="inferno", vmin=0, vmax=dmax)
        axes[i, 2].set_title(f"|Δ to {names[0]}|, max {d.max():.2e}", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out = Path(out)
    save_figure(fig, out, dpi=100)
    return out
