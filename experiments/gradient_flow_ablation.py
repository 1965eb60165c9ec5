#!/usr/bin/env python
"""Why the modified gradient G_M = grad L / sqrt(1 - L) does or does not beat S: an ablation.

Trains the gradient-flow paper's prediction and control networks (bec_jax.quantum.gradient_flow)
under one setting change at a time and scores every run with the quantum loss
L = 1 - |<psi, psi_target>|^2 on the training set:

  lr_sweep   Adam, SGD, SGD + momentum 0.9, three learning rates each, methods S, L2, M and
             (Adam, SGD) M-batch (M's factor 1/sqrt(1 - L) taken once per batch from the batch-mean loss:
             a global rescale of S's gradient, which Adam undoes and SGD does not)
  time_loss  control loss on every simulator state, summed vs averaged over time (Adam, SGD)
  horizon    the paper's setting (3 seeds, the reference of horizon, dtype and size) and
             harder ones where L stays large: 100 simulator steps, 10 steps, a box
             eigenstate as target; prediction of all-mode states and of 400-step trajectories
  dtype      float64 against float32
  size       hidden width 16 and 128 against 64
  long       control at Adam lr 0.015 (the short sweep's largest M/S gap) for 1000 epochs

One JSON file per (group, task, method, setting) is written atomically under --out/runs and
skipped when it exists, so an interrupted or extended study reruns only what is missing.
--report (also run at the end) pools the files into results.json, results.md and PNGs.

  python experiments/gradient_flow_ablation.py                 # ~35 min on 2 CPU cores
  python experiments/gradient_flow_ablation.py --quick --out /tmp/gfa   # seconds: the pipeline
  python experiments/gradient_flow_ablation.py --groups lr_sweep,horizon
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bec_jax.flags import positive_int

GROUPS = ("lr_sweep", "time_loss", "horizon", "dtype", "size", "long")
METHODS = ("S", "L2", "M")
VARIANTS = (*METHODS, "M-batch")  # M-batch: method M with reduction="batch"
COLORS = {"S": "tab:blue", "L2": "tab:red", "M": "tab:green", "M-batch": "tab:olive"}
LRS = {
    "adam": (0.0015, 0.005, 0.015),
    "sgd": (0.1, 0.3, 1.0),
    "momentum": (0.01, 0.03, 0.1),
}
PAPER_LR = 0.005
TAIL = 0.1  # score: mean quantum loss over the last 10 % of epochs (the paper smooths 10 epochs)


@dataclass(frozen=True)
class Spec:
    """One result file: a method trained under one setting, seeds x learning rates vmapped."""

    group: str
    task: str  # "prediction" | "control"
    variant: str  # one of VARIANTS
    setting: str  # short label of the setting, e.g. "adam" or "sim_steps=100"
    overrides: tuple = ()  # sorted (field, value) pairs for the task config
    lrs: tuple = (PAPER_LR,)
    seeds: int = 3

    def config_fields(self) -> dict:
        fields = dict(self.overrides)
        if self.variant == "M-batch":
            fields["reduction"] = "batch"
        return fields

    def key(self) -> str:
        text = json.dumps([self.task, self.variant, sorted(self.config_fields().items()),
                           list(self.lrs), self.seeds], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    def filename(self) -> str:
        return f"{self.group}-{self.task}-{self.variant}-{self.key()}.json"


@dataclass(frozen=True)
class Sizes:
    """Epochs and seeds of the ablation (full or --quick)."""

    pred_epochs: int = 20  # 1000 steps of batch 200
    ctrl_epochs: int = 60  # 600 steps of batch 10
    long_ctrl_epochs: int = 1000  # the paper-size run's length, for the "long" group
    seeds: int = 3
    sweep_seeds: int = 2  # per rate in the learning-rate sweep
    pred_base: dict = field(default_factory=dict)
    ctrl_base: dict = field(default_factory=dict)
    lrs: dict = field(default_factory=lambda: dict(LRS))


FULL = Sizes()
QUICK = Sizes(
    pred_epochs=2, ctrl_epochs=2, long_ctrl_epochs=3, seeds=1, sweep_seeds=1,
    pred_base={"n_trajectories": 4, "steps": 10, "test_trajectories": 0, "batch_size": 20},
    ctrl_base={"sim_steps": 5, "n_initial": 10, "batch_size": 5},
    lrs={"adam": (0.005,), "sgd": (0.3,), "momentum": (0.03,)},
)


def plan(sizes: Sizes, groups=GROUPS) -> list[Spec]:
    """Every Spec of the study, in run order."""
    base = {
        "prediction": {**sizes.pred_base, "epochs": sizes.pred_epochs},
        "control": {**sizes.ctrl_base, "epochs": sizes.ctrl_epochs},
    }

    def spec(group, task, variant, setting, lrs=(PAPER_LR,), seeds=sizes.seeds, **over):
        fields = {**base[task], **over}
        return Spec(group, task, variant, setting, tuple(sorted(fields.items())), tuple(lrs),
                    seeds)

    def sweep(opts):
        if "lr_sweep" not in groups:
            return []
        specs = []
        for opt in opts:
            # M-batch (a global rescale of S) under Adam (scale-invariant) and plain SGD
            variants = VARIANTS if opt in ("adam", "sgd") else METHODS
            for task in ("prediction", "control"):
                specs += [spec("lr_sweep", task, v, opt, sizes.lrs[opt], sizes.sweep_seeds,
                               optimizer=opt) for v in variants]
        return specs

    out = sweep(["adam"])  # most informative first: the driver can be stopped any time
    if "horizon" in groups:
        sim = base["control"].get("sim_steps", 50)
        hard = {
            "control": [("paper setting", {}),
                        (f"sim_steps={2 * sim}", {"sim_steps": 2 * sim}),
                        (f"sim_steps={max(1, sim // 5)}", {"sim_steps": max(1, sim // 5)}),
                        ("target=box mode 3", {"target_mode": 3}),
                        ("target=box mode 8", {"target_mode": 8})],
            "prediction": [("paper setting", {}),
                           ("n_modes=20", {"n_modes": 20}),
                           ("trajectories 4x longer",
                            {"steps": 4 * base["prediction"].get("steps", 100),
                             "n_trajectories": max(1, base["prediction"].get(
                                 "n_trajectories", 100) // 4)})],
        }
        for task, settings in hard.items():
            # control: M-batch too, to separate per-sample reweighting from global scale
            variants = VARIANTS if task == "control" else METHODS
            for label, over in settings:
                out += [spec("horizon", task, v, label, **over) for v in variants]
    out += sweep([o for o in sizes.lrs if o != "adam"])
    if "time_loss" in groups:
        for opt, lr in (("adam", PAPER_LR), ("sgd", sizes.lrs["sgd"][0])):
            for tl in ("sum", "mean"):
                out += [spec("time_loss", "control", v, f"{opt} lr={lr:g} {tl}", (lr,),
                             optimizer=opt, time_loss=tl) for v in ("S", "M")]
    if "dtype" in groups:
        for task in ("prediction", "control"):
            out += [spec("dtype", task, v, "float64", dtype="float64") for v in ("S", "M")]
    if "size" in groups:
        for task in ("control", "prediction"):
            for hidden in (16, 128):
                out += [spec("size", task, v, f"hidden={hidden}", hidden=hidden)
                        for v in ("S", "M")]
    if "long" in groups:
        # the short sweep's largest M/S gap (control, Adam at 3x the paper's rate), run as
        # long as the paper-size run
        out += [spec("long", "control", v, f"adam lr=0.015, {sizes.long_ctrl_epochs} epochs",
                     (0.015,), epochs=sizes.long_ctrl_epochs) for v in ("S", "M")]
    return out


# ---------------------------------------------------------------------------- running


def _per_sample_final(task: str, cfg, params) -> np.ndarray:
    """Quantum loss per training sample of every run's final network: (runs, samples)."""
    import jax

    from bec_jax.quantum import gradient_flow as gf

    with jax.enable_x64(cfg.dtype == "float64"):
        if task == "prediction":
            x, y = gf.make_prediction_data(cfg)

            def one(p):
                pred = gf.features_to_states(gf.mlp_apply(p, gf.states_to_features(x)))
                return gf.per_sample_quantum_loss(pred, y)
        else:
            psi0, target = gf.make_control_data(cfg)

            def one(p):
                return gf.per_sample_quantum_loss(gf.control_final_states(cfg, p, psi0), target)

        return np.asarray(jax.jit(jax.vmap(one))(params), np.float64)


def _weight_stats(per_sample: np.ndarray) -> dict:
    """M's per-sample factor w = 1/sqrt(1 - L_i) across the training set, per run.

    Under Adam only the *relative* weights matter: w_max/w_min and std(w)/mean(w).
    """
    w = 1.0 / np.sqrt(np.clip(1.0 - per_sample, 1e-12, None))
    return {
        "L_median": np.median(per_sample, 1).tolist(),
        "L_p90": np.quantile(per_sample, 0.9, 1).tolist(),
        "L_max": per_sample.max(1).tolist(),
        "w_max_over_min": (w.max(1) / w.min(1)).tolist(),
        "w_cv": (w.std(1) / w.mean(1)).tolist(),
    }


def _round(a):
    """float32-rounded nested lists; a diverged (non-finite) value becomes null."""
    a = np.asarray(np.asarray(a, np.float64), np.float32).round(8)
    return np.where(np.isfinite(a), a, None).tolist()


def run_spec(spec: Spec) -> dict:
    from bec_jax.quantum import gradient_flow as gf

    method = "M" if spec.variant == "M-batch" else spec.variant
    cls, run = ((gf.PredictionConfig, gf.run_prediction) if spec.task == "prediction"
                else (gf.ControlConfig, gf.run_control))
    cfg = cls(**spec.config_fields())
    seeds = [s for _ in spec.lrs for s in range(spec.seeds)]
    lrs = [lr for lr in spec.lrs for _ in range(spec.seeds)]
    t0 = time.perf_counter()
    res = run(cfg, method, seeds, lrs=lrs, chunk=max(1, min(50, cfg.epochs)))
    wall = time.perf_counter() - t0
    ev = np.asarray(res.eval_loss, np.float64)
    tail = max(1, int(round(TAIL * (ev.shape[1] - 1))))
    per_sample = _per_sample_final(spec.task, cfg, res.params)
    return {
        "spec": {"group": spec.group, "task": spec.task, "variant": spec.variant,
                 "setting": spec.setting, "overrides": dict(spec.overrides),
                 "lrs": list(spec.lrs), "seeds": spec.seeds, "key": spec.key()},
        "config": {k: (v if not hasattr(v, "__dataclass_fields__") else str(v))
                   for k, v in cfg.__dict__.items()},
        "seeds": seeds,
        "lr": lrs,
        "tail_epochs": tail,
        "final": _round(ev[:, -1]),
        "tail_mean": _round(ev[:, -tail:].mean(1)),
        "initial": _round(ev[:, 0]),
        "heldout_final": None if res.test_loss is None else _round(res.test_loss[:, -1]),
        "weights": _weight_stats(per_sample),
        "curves": _round(ev),
        "wall_s": wall,
    }


def run_all(specs: list[Spec], out: Path, log=print) -> None:
    from bec_jax.artifacts import atomic_write_text

    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(specs, 1):
        path = runs / spec.filename()
        tag = f"[{i}/{len(specs)}] {spec.group} {spec.task} {spec.variant} {spec.setting}"
        if path.is_file():
            log(f"{tag}: done before, skipped")
            continue
        rec = run_spec(spec)
        atomic_write_text(path, json.dumps(rec))
        tm = np.asarray(rec["tail_mean"]).reshape(len(spec.lrs), spec.seeds).mean(1)
        log(f"{tag}: tail-mean L {' '.join(f'{x:.3g}' for x in tm)} ({rec['wall_s']:.0f} s)")


# --------------------------------------------------------------------------- report


def _load(out: Path, specs: list[Spec]) -> list[dict]:
    recs = []
    for spec in specs:
        path = out / "runs" / spec.filename()
        if path.is_file():
            recs.append(json.loads(path.read_text()))
    return recs


def _by_lr(rec: dict, key: str = "tail_mean") -> dict:
    """lr -> array over seeds of a per-run score; NaN (diverged) counts as L = 1."""
    vals = np.nan_to_num(np.asarray(rec[key], np.float64), nan=1.0)
    lrs = np.asarray(rec["lr"])
    return {lr: vals[lrs == lr] for lr in rec["spec"]["lrs"]}


def _fmt(v: np.ndarray) -> str:
    return f"{v.mean():.3g} ± {v.std(ddof=1) if v.size > 1 else 0.0:.2g}"


def summarise(recs: list[dict]) -> dict:
    """Pooled numbers per (group, task, setting): score per variant at each lr, best lr,
    ratios S/M at the paper's rate and at each method's best rate, weight spread."""
    table: dict = {}
    for r in recs:
        s = r["spec"]
        row = table.setdefault(s["group"], {}).setdefault(s["task"], {}).setdefault(
            s["setting"], {})
        by = _by_lr(r)
        best = min(by, key=lambda lr: by[lr].mean())
        row[s["variant"]] = {
            "per_lr": {str(lr): {"mean": float(v.mean()), "std": float(v.std(ddof=1))
                                 if v.size > 1 else 0.0, "per_seed": v.tolist()}
                       for lr, v in by.items()},
            "best_lr": best,
            "best": float(by[best].mean()),
            "diverged_runs": int(np.sum(~np.isfinite(np.asarray(r["tail_mean"], float)))),
            "w_max_over_min_median": float(np.median(r["weights"]["w_max_over_min"])),
            "w_cv_median": float(np.median(r["weights"]["w_cv"])),
            "L_p90_median": float(np.median(r["weights"]["L_p90"])),
            "wall_s": r["wall_s"],
        }
    for group in table.values():
        for task in group.values():
            for row in task.values():
                if "S" in row and "M" in row:
                    row["S_over_M_best"] = row["S"]["best"] / row["M"]["best"]
                    common = set(row["S"]["per_lr"]) & set(row["M"]["per_lr"])
                    row["S_over_M_same_lr"] = {
                        lr: row["S"]["per_lr"][lr]["mean"] / row["M"]["per_lr"][lr]["mean"]
                        for lr in sorted(common, key=float)}
                if "M-batch" in row and "S" in row:
                    common = set(row["S"]["per_lr"]) & set(row["M-batch"]["per_lr"])
                    row["Mbatch_over_S_same_lr"] = {
                        lr: row["M-batch"]["per_lr"][lr]["mean"] / row["S"]["per_lr"][lr]["mean"]
                        for lr in sorted(common, key=float)}
    return table


def wins(table: dict, factor: float = 2.0) -> list[str]:
    """Every setting and rate where M's score is >= factor x better than S's."""
    lines = []
    for gname, group in table.items():
        for task, settings in group.items():
            for setting, row in settings.items():
                for lr, ratio in row.get("S_over_M_same_lr", {}).items():
                    if ratio >= factor:
                        lines.append(f"{gname} / {task} / {setting} / lr {lr}: S/M = {ratio:.2f} "
                                     f"(S {row['S']['per_lr'][lr]['mean']:.3g}, "
                                     f"M {row['M']['per_lr'][lr]['mean']:.3g}); at each one's "
                                     f"best rate S/M = {row['S_over_M_best']:.2f}")
    return lines


def markdown(table: dict, command: str, sizes: Sizes) -> str:
    L = ["# Gradient-flow ablation: modified gradient M against S and L2", "",
         f"Command: `{command}`  ",
         f"Score: quantum loss L on the training set, mean over the last {int(TAIL * 100)} % of "
         f"epochs, mean ± std over {sizes.seeds} seeds ({sizes.sweep_seeds} per rate in the learning-rate "
         "sweep; diverged runs count as L = 1). "
         f"Prediction {sizes.pred_epochs} epochs (50 steps each), control "
         f"{sizes.ctrl_epochs} epochs (10 steps each); paper sizes otherwise. "
         "M-batch: M's factor from the batch-mean loss (a global rescale of S's gradient). "
         "w = 1/√(1−L_i) is M's per-sample weight on the training set after training "
         "(median over runs of max/min).", ""]
    win = wins(table)
    L += ["## Settings where M beats S by ≥ 2× (same rate)", ""]
    L += [f"- {w}" for w in win] if win else ["- none"]
    L.append("")
    for gname, group in table.items():
        L += [f"## {gname}", ""]
        for task, settings in group.items():
            variants = [v for v in VARIANTS if any(v in row for row in settings.values())]
            L += [f"### {task}", "",
                  "| setting | lr | " + " | ".join(variants) + " | S/M | M-batch/S |",
                  "|---|---|" + "---|" * (len(variants) + 2)]
            for setting, row in settings.items():
                lrs = sorted({lr for v in variants if v in row for lr in row[v]["per_lr"]},
                             key=float)
                for lr in lrs:
                    cells = []
                    for v in variants:
                        c = row.get(v, {}).get("per_lr", {}).get(lr)
                        if c is None:
                            cells.append("")
                            continue
                        star = " **best**" if len(lrs) > 1 and float(lr) == row[v]["best_lr"] \
                            else ""
                        cells.append(f"{c['mean']:.3g} ± {c['std']:.2g}{star}")
                    sm = row.get("S_over_M_same_lr", {}).get(lr)
                    mb = row.get("Mbatch_over_S_same_lr", {}).get(lr)
                    L.append(f"| {setting} | {float(lr):g} | " + " | ".join(cells) +
                             f" | {'' if sm is None else f'{sm:.2f}'} | "
                             f"{'' if mb is None else f'{mb:.2f}'} |")
                if "S_over_M_best" in row and len(lrs) > 1:
                    L.append(f"| {setting} | each best | " + " | ".join(
                        f"{row[v]['best']:.3g} @ {row[v]['best_lr']:g}" if v in row else ""
                        for v in variants) + f" | {row['S_over_M_best']:.2f} | |")
            L += ["", "M's weight spread after training (w_max/w_min, median over runs; "
                  "90th-percentile L_i):", ""]
            for setting, row in settings.items():
                if "M" in row:
                    parts = [f"{v} {row[v]['w_max_over_min_median']:.3g} "
                             f"(L_p90 {row[v]['L_p90_median']:.2g})"
                             for v in variants if v in row]
                    L.append(f"- {setting}: " + ", ".join(parts))
            L.append("")
    return "\n".join(L) + "\n"


def _band(ax, curves: np.ndarray, color: str, label: str) -> None:
    """Geometric seed mean (line) and min-max over seeds (band), log y."""
    c = np.clip(np.asarray(curves, np.float64), 1e-12, None)
    x = np.arange(c.shape[1])
    ax.fill_between(x, c.min(0), c.max(0), color=color, alpha=0.2, lw=0)
    ax.semilogy(x, np.exp(np.log(c).mean(0)), color=color, lw=1.8, label=label)


def plot(recs: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    paths = []
    sweep = [r for r in recs if r["spec"]["group"] == "lr_sweep"]
    if sweep:
        opts = list(dict.fromkeys(r["spec"]["setting"] for r in sweep))
        fig, axes = plt.subplots(2, len(opts), figsize=(4.6 * len(opts), 7.5), squeeze=False,
                                 layout="constrained")
        for i, task in enumerate(("prediction", "control")):
            for j, opt in enumerate(opts):
                ax = axes[i, j]
                for r in sweep:
                    s = r["spec"]
                    if s["task"] != task or s["setting"] != opt:
                        continue
                    by = _by_lr(r)
                    lrs = np.asarray(list(by))
                    mean = np.asarray([by[lr].mean() for lr in lrs])
                    lo = np.asarray([by[lr].min() for lr in lrs])
                    hi = np.asarray([by[lr].max() for lr in lrs])
                    ax.fill_between(lrs, lo, hi, color=COLORS[s["variant"]], alpha=0.15, lw=0)
                    ax.loglog(lrs, mean, "o-", color=COLORS[s["variant"]], label=s["variant"])
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.set_xticks(LRS.get(opt, ()), [f"{lr:g}" for lr in LRS.get(opt, ())])
                ax.set_title(f"{task}, {opt}")
                ax.set_xlabel("learning rate")
                ax.set_ylabel("quantum loss (last 10 % of epochs)")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=8)
        fig.suptitle("Learning-rate sweep: seed mean (line) and min-max over seeds (band)")
        paths.append(out / "lr_sweep.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    for group in ("horizon", "time_loss", "long"):
        rs = [r for r in recs if r["spec"]["group"] == group]
        if not rs:
            continue
        panels = list(dict.fromkeys((r["spec"]["task"], r["spec"]["setting"]) for r in rs))
        ncol = min(3, len(panels))
        nrow = -(-len(panels) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4 * nrow), squeeze=False,
                                 layout="constrained")
        for ax, (task, setting) in zip(axes.flat, panels):
            for r in rs:
                s = r["spec"]
                if (s["task"], s["setting"]) == (task, setting):
                    _band(ax, r["curves"], COLORS[s["variant"]], s["variant"])
            ax.set_title(f"{task}: {setting}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.set_ylabel("quantum loss")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.suptitle(f"{group}: geometric seed mean (line), min-max over seeds (band)")
        paths.append(out / f"{group}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def report(out: Path, specs: list[Spec], command: str, sizes: Sizes) -> dict:
    from bec_jax.artifacts import atomic_write_text

    recs = _load(out, specs)
    table = summarise(recs)
    summary = {"command": command, "sizes": {k: v for k, v in sizes.__dict__.items()},
               "tail_fraction": TAIL, "wins_2x": wins(table), "table": table,
               "files": sorted("runs/{group}-{task}-{variant}-{key}.json".format(**r["spec"])
                               for r in recs)}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=1, default=str))
    atomic_write_text(out / "results.md", markdown(table, command, sizes))
    plot(recs, out)
    return summary


# ----------------------------------------------------------------------------- main


def _groups(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in names if t not in GROUPS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"groups must be a comma list from {','.join(GROUPS)}, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Ablation of the gradient-flow paper's modified "
                                "gradient (optimizer, learning rate, reduction, horizon, "
                                "dtype, network size).")
    p.add_argument("--out", type=Path, default=Path("runs/gradient_flow_ablation"),
                   help="output folder; finished configurations in --out/runs are skipped "
                   "(default: runs/gradient_flow_ablation)")
    p.add_argument("--groups", type=_groups, default=GROUPS,
                   help=f"comma list from {','.join(GROUPS)} (default: all)")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help=f"seeds per setting (default: {FULL.seeds}; the learning-rate sweep keeps "
                        f"{FULL.sweep_seeds} per rate)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, 1 seed, 1 rate per optimizer: checks the pipeline in seconds")
    p.add_argument("--report", action="store_true",
                   help="no training: pool the finished files into results.json/.md and PNGs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.seeds is not None:
        sizes = Sizes(**{**sizes.__dict__, "seeds": args.seeds})
    specs = plan(sizes, args.groups)
    # the command that trains these files (--report only pools them)
    command = " ".join(["python", "experiments/gradient_flow_ablation.py",
                        *(a for a in (sys.argv[1:] if argv is None else argv) if a != "--report")])
    if not args.report:
        run_all(specs, args.out, log=lambda m: print(m, flush=True))
    summary = report(args.out, specs, command, sizes)
    print(f"wrote {args.out}/results.json, results.md and PNGs; M >= 2x better than S in "
          f"{len(summary['wins_2x'])} setting/rate pairs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
