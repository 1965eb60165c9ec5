#!/usr/bin/env python
"""Reproduce the three experiments of Schnell & Thuerey (2023), gradient-flow paper.

Writes to --out (default runs/gradient_flow):
  toy.png          Fig. 1: loss curves and x-y trajectories for S, L2, M
  prediction.png   Fig. 2a: quantum loss of the next-state network (seed band, mean bold)
  control.png      Fig. 2b: quantum loss of the control network
  results.json     configs, per-seed final losses, mean/std, timings
  results.md       table of final losses (mean +- std over seeds) per method

Each prediction or control training (one per method) is saved when done (--out/units/): a
killed run, started again with the same flags, resumes there (the toy task takes seconds).

Examples:
  python experiments/gradient_flow.py --quick            # ~1-2 min on a laptop CPU
  python experiments/gradient_flow.py                    # paper sizes, 3 seeds
  python experiments/gradient_flow.py --tasks control --control-epochs 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bec_jax.flags import positive_int

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling helper, also when loaded by the tests
from _units import Units  # noqa: E402

TASKS = ("toy", "prediction", "control")
COLORS = {"S": "tab:blue", "L2": "tab:red", "M": "tab:green"}
LABELS = {"S": "S (standard)", "L2": "L2 (MSE)", "M": "M (modified)"}
# Full-run defaults (paper sizes; the paper gives no epoch counts) and --quick ones.
FULL = {"prediction_epochs": 200, "control_epochs": 1000, "toy_steps": 60}
QUICK = {"prediction_epochs": 8, "control_epochs": 60, "toy_steps": 60}


def _tasks(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"tasks must be a comma list from {','.join(TASKS)}, got {text!r}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Gradient-flow paper experiments: toy, prediction and control "
        "with the standard (S), L2 and modified (M) gradients.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/gradient_flow"),
                   help="output directory (default: runs/gradient_flow)")
    p.add_argument("--seeds", type=positive_int, default=3,
                   help="number of network seeds per method, 0..N-1 (default: 3)")
    p.add_argument("--tasks", type=_tasks, default=TASKS,
                   help="comma list of toy,prediction,control (default: all)")
    p.add_argument("--quick", action="store_true",
                   help=f"small CPU run: {QUICK['prediction_epochs']} prediction and "
                   f"{QUICK['control_epochs']} control epochs")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="set both --prediction-epochs and --control-epochs")
    p.add_argument("--prediction-epochs", type=positive_int, default=None,
                   help=f"(default: {FULL['prediction_epochs']}; 50 Adam steps each)")
    p.add_argument("--control-epochs", type=positive_int, default=None,
                   help=f"(default: {FULL['control_epochs']}; 10 Adam steps each)")
    p.add_argument("--steps", "--toy-steps", dest="toy_steps", type=positive_int, default=None,
                   help=f"gradient-descent steps of the toy problem (default: {FULL['toy_steps']})")
    p.add_argument("--smooth", type=positive_int, default=1,
                   help="moving-average window (epochs) for the plotted curves; the paper "
                   "used 10 (default: 1, raw)")
    p.add_argument("--n-modes", type=positive_int, default=5,
                   help="random states mix the lowest N box modes, 1..20 (default: 5)")
    p.add_argument("--checkpoint", action="store_true",
                   help="jax.checkpoint the 50 simulator steps of the control task")
    p.add_argument("--no-progress", action="store_true", help="disable tqdm progress bars")
    p.add_argument("--replot", action="store_true",
                   help="no training: redraw the PNGs and results.md from --out/results.json "
                   "(e.g. with another --smooth)")
    return p


def resolve(args: argparse.Namespace) -> dict:
    """Epoch/step counts after --quick, --epochs and the per-task overrides."""
    base = dict(QUICK if args.quick else FULL)
    if args.epochs is not None:
        base["prediction_epochs"] = base["control_epochs"] = args.epochs
    for key in base:
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    return base


# ---------------------------------------------------------------------- plotting


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    """Trailing moving average of log(y) over the last axis (window shrinks at the start).

    Geometric, because the curves are drawn on a log axis: a linear average would let
    the O(1) initial loss dominate the first k epochs of a curve that falls by 1e4.
    """
    if k <= 1:
        return y
    logy = np.log(np.maximum(y, np.finfo(np.float64).tiny))
    c = np.cumsum(np.concatenate([np.zeros(y.shape[:-1] + (1,)), logy], -1), -1)
    idx = np.arange(1, y.shape[-1] + 1)
    lo = np.maximum(idx - k, 0)
    return np.exp((c[..., idx] - c[..., lo]) / (idx - lo))


def plot_toy(res, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4), layout="constrained")
    ax = axes[0]
    for m in ("S", "L2", "M"):
        ax.semilogy(res.loss[m], color=COLORS[m], lw=2, label=LABELS[m])
    ax.set_xlabel("gradient-descent step")
    ax.set_ylabel(r"loss $1-\langle v,w\rangle^2$")
    ax.set_title("a) toy loss (log scale)")
    ax.legend()
    t = np.linspace(0, 2 * np.pi, 200)
    for ax, m, tag in zip(axes[1:], ("S", "L2", "M"), "bcd"):
        ax.plot(np.cos(t), np.sin(t), color="0.8", lw=1, ls="--")
        xy = res.xy[m]
        ax.plot(xy[:, 0], xy[:, 1], color=COLORS[m], lw=1, alpha=0.5)
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=np.arange(len(xy)), cmap="viridis", s=14, zorder=3)
        ax.plot(*xy[0], "ko", ms=7, mfc="none", label="start")
        ax.plot(1, 0, "r*", ms=13, label="target w")
        ax.set_aspect("equal")
        ax.set_xlim(-0.15, 1.15)
        ax.set_ylim(-0.15, 1.15)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(f"{tag}) {LABELS[m]}")
        ax.legend(loc="lower left", fontsize=8)
    fig.colorbar(sc, ax=axes[-1], shrink=0.8, label="gradient-descent step")
    fig.suptitle(r"Toy problem: $v(\theta)=(\cos\theta,\sin\theta)$, $\theta_0=\pi/2-%.3g$"
                 % (math.pi / 2 - res.theta["S"][0]))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(panels: list[tuple[str, dict]], title: str, smooth: int, path: Path,
                xlabel: str = "epoch") -> None:
    """panels: (subtitle, {method: array (seeds, epochs+1)}); seed band (min-max over
    seeds of the smoothed runs) shaded, seed mean bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(8.0, 6.5 * len(panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.8), squeeze=False,
                             layout="constrained")
    for ax, (subtitle, curves) in zip(axes[0], panels):
        for m, runs in curves.items():
            runs = np.asarray(runs, np.float64)
            x = np.arange(runs.shape[1])
            sm = _smooth(runs, smooth)
            ax.fill_between(x, sm.min(0), sm.max(0), color=COLORS[m], alpha=0.2, lw=0)
            mean = _smooth(runs.mean(0), smooth)  # mean of the raw losses, then smoothed
            ax.semilogy(x, mean, color=COLORS[m], lw=2.2, label=f"{LABELS[m]} mean")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(r"quantum loss $1-|\langle\psi,\psi_{\rm target}\rangle|^2$")
        ax.set_title(subtitle)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend()
    note = f"; {smooth}-epoch moving average of log L" if smooth > 1 else ""
    fig.suptitle(f"{title}\nband: min-max over {len(runs)} seeds, line: seed mean{note}")
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------ summary


def _stats(final: np.ndarray) -> dict:
    final = np.asarray(final, np.float64)
    return {
        "per_seed": final.tolist(),
        "mean": float(final.mean()),
        "std": float(final.std(ddof=1)) if final.size > 1 else 0.0,
    }


def summarise_training(res, tail_frac: float = 0.1) -> dict:
    """Final and last-10%-of-epochs quantum losses per seed (eval on the training set)."""
    ev = res.eval_loss
    tail = max(1, int(round(tail_frac * (ev.shape[1] - 1))))
    out = {
        "final": _stats(ev[:, -1]),
        "tail_mean": _stats(ev[:, -tail:].mean(1)),
        "initial": _stats(ev[:, 0]),
        "tail_epochs": tail,
    }
    if res.test_loss is not None:
        out["final_heldout"] = _stats(res.test_loss[:, -1])
    return out


def _fmt(s: dict) -> str:
    return f"{s['mean']:.3g} ± {s['std']:.2g}"


def results_markdown(results: dict) -> str:
    lines = ["# Gradient-flow experiments (bec_jax)", ""]
    lines.append(f"Command: `{results['command']}`  ")
    lines.append(f"Seeds per method: {results['seeds']}; std is the sample std (ddof=1) "
                 "over seeds. All methods are scored with the quantum loss "
                 "L = 1 − |⟨ψ, ψ_target⟩|², evaluated on the full data set after the last epoch.")
    lines.append("")
    if "toy" in results:
        t = results["toy"]
        lines += ["## Toy (Fig. 1)", "",
                  f"θ₀ = π/2 − {t['config']['offset']:.3g}, lr = {t['config']['lr']}, "
                  f"{t['config']['steps']} steps.", "",
                  "| method | steps to L < 1e-2 | final L |", "|---|---|---|"]
        for m in ("S", "L2", "M"):
            k = t["steps_to_1e-2"][m]
            lines.append(f"| {m} | {k if k is not None else 'not reached'} | {t['final'][m]:.3g} |")
        lines.append("")
    for task, fig in (("prediction", "2a"), ("control", "2b")):
        if task not in results:
            continue
        r = results[task]
        lines += [f"## {task.capitalize()} (Fig. {fig}), {r['epochs']} epochs, "
                  f"{r['wall_s']:.0f} s", ""]
        head = "| method | final L (mean ± std) | mean L, last {} epochs | initial L |".format(
            next(iter(r["methods"].values()))["tail_epochs"])
        sep = "|---|---|---|---|"
        if task == "prediction":
            head += " final L held-out |"
            sep += "---|"
        lines += [head, sep]
        for m in ("S", "L2", "M"):
            s = r["methods"][m]
            row = f"| {m} | {_fmt(s['final'])} | {_fmt(s['tail_mean'])} | {_fmt(s['initial'])} |"
            if task == "prediction":
                row += f" {_fmt(s['final_heldout'])} |"
            lines.append(row)
        lines.append("")
        for key, what in (("final", "final"), ("tail_mean", "last-epochs mean")):
            mm = r["methods"]["M"][key]["mean"]
            lines.append(f"Ratio of {what} loss to M's: " + ", ".join(
                f"{m}/M = {r['methods'][m][key]['mean'] / mm:.2f}" for m in ("S", "L2")) + "  ")
        lines.append("")
    return "\n".join(lines) + "\n"


def _panels(name: str, entry: dict) -> list[tuple[str, dict]]:
    arr = lambda d: {m: np.asarray(v) for m, v in d.items()}  # noqa: E731
    panels = [("training pairs" if name == "prediction" else "100 initial states",
               arr(entry["curves"]))]
    if name == "prediction":
        panels.append(("held-out trajectories", arr(entry["heldout_curves"])))
    return panels


TITLES = {
    "prediction": "Prediction task (Fig. 2a): network learns one CN step",
    "control": "Control task (Fig. 2b): network outputs u(t), V = u(t)x, 50 CN steps",
}


def replot(results: dict, out: Path, smooth: int) -> None:
    """Redraw figures and results.md from a results.json (toy only if it has xy)."""
    if "toy" in results and "xy" in results["toy"]:
        from types import SimpleNamespace

        t = results["toy"]
        plot_toy(SimpleNamespace(**{k: {m: np.asarray(v) for m, v in t[k].items()}
                                    for k in ("loss", "xy", "theta")}), out / "toy.png")
    for name in ("prediction", "control"):
        if name in results:
            plot_curves(_panels(name, results[name]), TITLES[name], smooth, out / f"{name}.png")
    (out / "results.md").write_text(results_markdown(results))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    counts = resolve(args)
    if args.n_modes > 20:
        parser.error(f"--n-modes must be in [1, 20] (the grid has 20 points), got {args.n_modes}")
    out: Path = args.out
    if args.replot:
        if not (out / "results.json").is_file():
            parser.error(f"--replot needs {str(out / 'results.json')!r}, which does not exist")
        replot(json.loads((out / "results.json").read_text()), out, args.smooth)
        print(f"redrew {out} from results.json", flush=True)
        return 0
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parser.error(f"cannot create --out {str(out)!r}: {e.strerror}")

    import jax

    from bec_jax.quantum.gradient_flow import (
        METHODS,
        ControlConfig,
        PredictionConfig,
        ToyConfig,
        run_control,
        run_prediction,
        run_toy,
    )

    seeds = tuple(range(args.seeds))
    progress = not args.no_progress
    results: dict = {
        "command": " ".join(["python", "experiments/gradient_flow.py", *(argv or sys.argv[1:])]),
        "seeds": list(seeds),
        "counts": counts,
        "smooth": args.smooth,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "python": platform.python_version(),
    }

    # first: a refusal (another run's units in --out) comes before any work or figure
    units = Units(out / "units", dict(seeds=args.seeds, counts=counts, n_modes=args.n_modes,
                                      checkpoint=args.checkpoint))
    if "toy" in args.tasks:
        cfg = ToyConfig(steps=counts["toy_steps"])
        res = run_toy(cfg)
        reach = {}
        for m in METHODS:
            hit = np.flatnonzero(res.loss[m] < 1e-2)
            reach[m] = int(hit[0]) if hit.size else None
        results["toy"] = {
            "config": {"theta0": cfg.theta0, "offset": math.pi / 2 - cfg.theta0, "lr": cfg.lr,
                       "steps": cfg.steps},
            "steps_to_1e-2": reach,
            "final": {m: float(res.loss[m][-1]) for m in METHODS},
            "loss": {m: res.loss[m].tolist() for m in METHODS},
            "xy": {m: res.xy[m].tolist() for m in METHODS},
            "theta": {m: res.theta[m].tolist() for m in METHODS},
        }
        plot_toy(res, out / "toy.png")
        print(f"toy: steps to L<1e-2 {reach}", flush=True)

    tasks = []
    if "prediction" in args.tasks:
        tasks.append(("prediction", PredictionConfig(epochs=counts["prediction_epochs"],
                                                      n_modes=args.n_modes), run_prediction))
    if "control" in args.tasks:
        tasks.append(("control", ControlConfig(epochs=counts["control_epochs"],
                                                n_modes=args.n_modes, checkpoint=args.checkpoint),
                      run_control))

    def train(run, cfg, m) -> dict:
        t0 = time.perf_counter()
        r = run(cfg, m, seeds, chunk=10, progress=progress)
        return dict(eval_loss=r.eval_loss.tolist(), test_loss=None if r.test_loss is None else r.test_loss.tolist(),
                    wall_s=time.perf_counter() - t0)

    for name, cfg, run in tasks:
        saved = {m: units(f"{name}_{m}", lambda: train(run, cfg, m)) for m in METHODS}
        runs = {m: SimpleNamespace(eval_loss=np.asarray(u["eval_loss"]),
                                   test_loss=None if u["test_loss"] is None else np.asarray(u["test_loss"]))
                for m, u in saved.items()}
        wall = sum(u["wall_s"] for u in saved.values())
        entry = {
            "config": dataclasses.asdict(cfg),
            "epochs": cfg.epochs,
            "wall_s": wall,
            "methods": {m: summarise_training(r) for m, r in runs.items()},
            "curves": {m: r.eval_loss.tolist() for m, r in runs.items()},
        }
        if name == "prediction":
            entry["heldout_curves"] = {m: r.test_loss.tolist() for m, r in runs.items()}
        plot_curves(_panels(name, entry), TITLES[name], args.smooth, out / f"{name}.png")
        results[name] = entry
        summary = ", ".join(f"{m} {_fmt(entry['methods'][m]['final'])}" for m in METHODS)
        print(f"{name}: final quantum loss {summary} ({wall:.0f} s)", flush=True)

    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(results_markdown(results))
    units.finish()
    print(f"wrote {out}/results.json, results.md and PNGs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
