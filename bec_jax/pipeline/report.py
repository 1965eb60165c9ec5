"""report.json (schema ``SCHEMA``, documented in the README) and report.md of a pipeline run."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from bec_jax.artifacts import atomic_write_text
from bec_jax.pipeline.clock import CLOCK_HEARTBEAT

__all__ = ["SCHEMA", "build_report", "write_report", "plot_compression"]

SCHEMA = "bec_jax.pipeline.report/1"
# Per-model metrics copied from the evaluation summary into report.json.
METRICS = ("mse", "mse_ref", "fidelity_mean", "fidelity_median", "vortex_count_accuracy", "vortex_count_mae",
           "precision", "recall", "position_error_xi_median")


def build_report(config, results: dict) -> dict:
    """The report.json dict from the config and the stage results."""
    import jax

    import bec_jax

    gen, train, ev = results["generate"], results["train"], results["evaluate"]
    sizes = results["quantize"]["sizes"]
    variants = results["evaluate_compressed"]["variants"]
    dense = variants["dense"]
    table = {}
    for name, v in variants.items():
        s = v["summary"]
        table[name] = dict(
            source=v["source"], scheme=v["scheme"], stored_sparse=v["stored_sparse"],
            bytes_on_disk=sizes[name]["bytes_on_disk"], payload_bytes=sizes[name]["payload_bytes"],
            size_ratio_vs_dense=sizes["dense"]["bytes_on_disk"] / sizes[name]["bytes_on_disk"],
            **{k: s[k] for k in METRICS}, mse_ratio_vs_dense=s["mse"] / dense["summary"]["mse"],
            latency_ms=v["latency_ms"]["median_ms"],
            latency_int8_ms=v["latency_int8_ms"]["median_ms"] if "latency_int8_ms" in v else None)
    return dict(
        schema=SCHEMA, bec_jax_version=bec_jax.__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        backend=jax.default_backend(), device=str(jax.devices()[0].device_kind),
        config=config.to_dict(),
        dataset=dict(file="data.h5", n_samples=gen["n_samples"], n_failed=gen["n_failed"], grid_n=config.data.n,
                     grid_length=config.data.resolved_length, size_bytes=gen["size_bytes"],
                     generation_seconds=gen["stage_seconds"]),
        training=dict(epochs=train["epochs"], best_epoch=train["best_epoch"], best_val_mse=train["best_val_mse"],
                      seconds=train["seconds"]),
        evaluation=dict(split="test", checkpoint="best", n_samples=ev["summary"]["n_samples"],
                        inputs="camera images (imaging model)" if config.imaging.enabled else "clean",
                        **{k: ev["summary"][k] for k in METRICS},
                        fidelity_ceiling_mean=ev["summary"]["fidelity_ceiling_mean"],
                        fidelity_zero_phase_mean=ev["summary"]["fidelity_zero_phase_mean"],
                        # absent from evaluations made before it existed (a resumed run)
                        fidelity_zero_momentum_mean=ev["summary"].get("fidelity_zero_momentum_mean")),
        pruning={k: results["prune"].get(k) for k in ("method", "target_sparsity", "achieved_sparsity", "ft_epochs",
                                                      "last_ft_epochs", "ft_lr", "eval_to_train_ratio", "warning")},
        models=table,
        latency=dict(batch=dense["latency_ms"]["batch"], repeats=config.report.latency_repeats,
                     statistic="median"),
        deployment=_deployment(results.get("deploy")),
        stage_seconds={k: r["stage_seconds"] for k, r in results.items() if "stage_seconds" in r},
        # None: a record written before stages timed every invocation (its seconds are the last one's)
        stage_invocations={k: r.get("invocations") for k, r in results.items() if "stage_seconds" in r},
    )


def _deployment(d: dict | None) -> dict:
    """The deploy stage's record: format, one-line note, {variant: file, bytes, latency_ms, mse, …}."""
    if d is None:
        return dict(format=None, note="no deploy stage in this run", artifacts={})
    return dict(format=d["format"], note=d["note"], latency_batch=d.get("latency_batch"), artifacts=d["files"])


def plot_compression(models: dict, path, zero_phase: float | None = None) -> Path:
    """Size on disk, test MSE, mean fidelity and vortex count accuracy of every model variant (bars).

    zero_phase: the zero-phase guess's mean fidelity on the same split (√n alone): the fidelity axis starts
    there, so that a bar's length is what the model adds to the guess; None: from 0."""
    from matplotlib.ticker import MaxNLocator

    from bec_jax.plotting import save_figure, subplots

    names = list(models)
    y = np.arange(len(names))
    panels = [("size on disk (MB)", [models[n]["bytes_on_disk"] / 1e6 for n in names], "{:.2f}"),
              ("test masked MSE", [models[n]["mse"] for n in names], "{:.2e}"),
              ("mean fidelity", [models[n]["fidelity_mean"] for n in names], "{:.4f}"),
              ("vortex count accuracy", [models[n]["vortex_count_accuracy"] for n in names], "{:.2f}")]
    fig, axes = subplots(1, len(panels), figsize=(3.4 * len(panels), 0.45 * len(names) + 1.4), sharey=True,
                             constrained_layout=True)
    colors = ["C0" if models[n]["scheme"] is None else "C1" for n in names]
    for ax, (title, vals, fmt) in zip(axes, panels):
        ax.barh(y, vals, color=colors)
        if title == "mean fidelity" and zero_phase is not None and zero_phase < min(vals):
            ax.set_xlim(zero_phase, 1.0 + 0.35 * (1.0 - zero_phase))
            ax.set_xticks([t for t in MaxNLocator(4).tick_values(zero_phase, 1.0) if zero_phase <= t <= 1.0])
            ax.set_xlabel(f"axis from the zero-phase guess's {zero_phase:.3f}", fontsize=7)
        elif title == "mean fidelity":
            ax.set_xlim(0.0, 1.3)
            ax.set_xticks([0.0, 0.5, 1.0])
        elif title == "vortex count accuracy":
            ax.set_xlim(0.0, 1.3)  # room for the labels, no tick beyond 1
            ax.set_xticks([0.0, 0.5, 1.0])
        for yi, v in zip(y, vals):
            ax.text(v, yi, " " + fmt.format(v), va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        if title not in ("vortex count accuracy", "mean fidelity"):
            ax.xaxis.set_major_locator(MaxNLocator(4))  # long tick labels (1.0e-02) must not overlap
        if title in ("size on disk (MB)", "test masked MSE"):
            ax.margins(x=0.3)  # room for the value labels
    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    fig.suptitle("Reloaded models on the test split (orange: int8)", fontsize=10)
    save_figure(fig, path, dpi=110)
    return Path(path)


def _markdown(r: dict, figures: dict) -> str:
    c, d, t, e = r["config"], r["dataset"], r["training"], r["evaluation"]
    m = c["model"]
    L = ["# bec_jax pipeline report", "",
         f"{r['created']} · bec_jax {r['bec_jax_version']} · backend {r['backend']} ({r['device']}) · "
         f"total {sum(r['stage_seconds'].values()):.0f} s", "",
         "## Dataset", "",
         f"{d['n_samples']} ground states ({d['n_failed']} not converged or touching the box edge, "
         f"{'kept, flagged' if c['data'].get('keep_unconverged') else 'dropped'}) on a "
         f"{d['grid_n']}² grid, L = {d['grid_length']:g}; g ∈ {c['data']['g_range']}, "
         f"Ω ∈ {c['data']['omega_range']}; generated in {d['generation_seconds']:.0f} s, "
         f"{d['size_bytes'] / 1e6:.1f} MB.", "",
         f"![samples]({figures['data']})", "",
         "## Training", "",
         f"U-Net base width {m['base_width']}, depth {m['depth']}; {c['train']['optimizer']} "
         f"lr {c['train']['learning_rate']:g}, batch {c['train']['batch_size']}, {t['epochs']} epochs in "
         f"{t['seconds']:.0f} s; best validation masked MSE {t['best_val_mse']:.3e} at epoch {t['best_epoch']}.", "",
         f"![loss]({figures['train']})", "",
         "## Test split (dense model, best checkpoint)", "",
         f"Inputs: {e.get('inputs', 'clean')}; every model below is scored on the same inputs.", "",
         "| samples | masked MSE | mean fidelity | without momentum | fidelity ceiling | zero-phase fidelity "
         "| vortex count accuracy | position error (ξ, median) |", "|---|---|---|---|---|---|---|---|",
         f"| {e['n_samples']} | {e['mse']:.3e} | {e['fidelity_mean']:.4f} | "
         f"{_num(e.get('fidelity_zero_momentum_mean'), '{:.4f}')} | {e['fidelity_ceiling_mean']:.4f} | "
         f"{e['fidelity_zero_phase_mean']:.4f} | {e['vortex_count_accuracy']:.3f} | "
         f"{_num(e['position_error_xi_median'], '{:.2f}')} |", "",
         "Without momentum: the prediction less its uniform flow (a ground state carries no momentum; "
         "`bec-jax predict` takes it off). Fidelity ceiling: the same phase reconstruction applied to the true "
         "gradient; zero-phase: √n alone.", ""]
    if "predictions" in figures:
        L += [f"![predictions]({figures['predictions']})", ""]
    p = r["pruning"]
    L += ["## Compressed models (saved with orbax, reloaded, evaluated)", "",
          f"Pruning: {p['method']} to {p['target_sparsity']:.0%} global magnitude sparsity (achieved "
          f"{p['achieved_sparsity']:.1%}), {p['ft_epochs']} fine-tuning epochs" +
          (f" ({p['last_ft_epochs']} in the last stage)" if p.get("last_ft_epochs") not in (None, p["ft_epochs"])
           else "") + f" at lr {p['ft_lr']:g}. " + (f"**Warning**: {p['warning']}. " if p.get("warning") else "") +
          f"Latency: median of {r['latency']['repeats']} jitted forward calls, batch {r['latency']['batch']}, "
          f"on {r['backend']}; 'int8 path' runs int8 × int8 → int32 convolutions.", "",
          "| model | size on disk | ×smaller | masked MSE | MSE / dense | mean fidelity | vortex count acc. "
          "| latency (ms) | int8 path (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, v in r["models"].items():
        L.append(f"| {name} | {v['bytes_on_disk'] / 1e6:.2f} MB | {v['size_ratio_vs_dense']:.1f} | {v['mse']:.3e} | "
                 f"{v['mse_ratio_vs_dense']:.2f} | {v['fidelity_mean']:.4f} | {v['vortex_count_accuracy']:.3f} | "
                 f"{v['latency_ms']:.1f} | {_num(v['latency_int8_ms'], '{:.1f}')} |")
    L += ["", f"![compression]({figures['compression']})", "", "## Deployed artifacts", ""]
    dep = r["deployment"]
    if dep["artifacts"]:
        L += [f"Exported with `bec-jax export` ({dep['note']}), reloaded from the file and run by "
              f"{'ONNX Runtime' if dep['format'] == 'onnx' else 'JAX'}: latency median of "
              f"{r['latency']['repeats']} calls at batch {dep['latency_batch']}, masked MSE on the test split (MSE / "
              "dense: against the JAX dense model on the same inputs).", "",
              "| file | precision | size | latency (ms) | masked MSE | MSE / dense |", "|---|---|---|---|---|---|"]
        L += [f"| {a['file']} | {a['precision']} | {a['bytes'] / 1e6:.2f} MB | {a['latency_ms']:.2f} | "
              f"{a['mse']:.3e} | {a['mse_ratio_vs_dense']:.3f} |" for a in dep["artifacts"].values()]
    else:
        L.append(f"None: {dep['note']}.")
    inv = r.get("stage_invocations") or {}
    L += ["", "## Time per stage", "",
          "Wall seconds of each stage over all the invocations that worked on it (a stage stopped and resumed "
          f"counts the time of every part; a kill loses at most the last {CLOCK_HEARTBEAT:.0f} s of it)."
          + (" A stage without an invocation count was recorded before stages timed every invocation: its "
             "seconds are those of the invocation that finished it." if None in inv.values() else ""), "",
          "| stage | seconds | invocations |", "|---|---|---|"]
    L += [f"| {k} | {v:.0f} | {inv.get(k) or '–'} |" for k, v in r["stage_seconds"].items()]
    L += ["", "Reproduce: `bec-jax pipeline --config config.json --out <folder>` (config.json of this run).", ""]
    return "\n".join(L)


def _num(v, fmt: str) -> str:
    return "–" if v is None else fmt.format(v)


def write_report(out, config, results: dict) -> dict:
    """Write report.json, report.md and compression.png into ``out``; returns the report dict."""
    out = Path(out)
    r = build_report(config, results)
    figures = dict(data=results["generate"]["figure"], train=results["train"]["figure"],
                   compression=plot_compression(r["models"], out / "compression.png",
                                               r["evaluation"].get("fidelity_zero_phase_mean")).name)
    if "figure" in results["evaluate"]:
        figures["predictions"] = results["evaluate"]["figure"]
    r["figures"] = sorted(figures.values())
    atomic_write_text(out / "report.json", json.dumps(r, indent=2))
    atomic_write_text(out / "report.md", _markdown(r, figures))
    return dict(report_json=str(out / "report.json"), report_md=str(out / "report.md"), figures=r["figures"])
