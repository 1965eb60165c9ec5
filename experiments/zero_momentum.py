"""How much of a model's lost fidelity is a uniform flow: each trained run scored as predicted and with the
uniform flow that carries its momentum taken off (``bec_jax.gpe.phase_field.zero_momentum``; a stationary state
of the trap has ⟨p⟩ = ∫ n ∇θ = 0, which the dataset's own states are checked to meet).

For each run: ``train.evaluate.evaluate_run`` on one split and checkpoint, which scores both (mean and median
fidelity as predicted and without momentum, the median speed of the flow taken off) beside the masked MSE and
the vortex count accuracy. For the dataset: the speed of the same flow in the true targets of that split, against
their density-weighted rms speed. Writes OUT/zero_momentum.json, .md and .png.

    python experiments/zero_momentum.py --runs runs/reference/paper/train runs/reference/optimizers/adamw_seed0 \
        --split val --which latest --out experiments/results/paper_cpu/zero_momentum
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

KEYS = ("mse", "mse_ref", "fidelity_mean", "fidelity_median", "fidelity_zero_momentum_mean",
        "fidelity_zero_momentum_median", "flow_speed_median", "fidelity_ceiling_mean", "fidelity_zero_phase_mean",
        "vortex_count_accuracy")


def true_flow(data, tc, split: str, batch: int = 64) -> dict:
    """Speeds (a⊥ω⊥) of the uniform flow (``gpe.phase_field.uniform_flow``) in the true targets of ``split`` of
    ``data`` under training config ``tc`` (its split and target): median and max, and the targets'
    density-weighted rms speed (median over states)."""
    import jax.numpy as jnp

    from bec_jax.data.splits import split_by_group
    from bec_jax.data.storage import load_grid, read_h5
    from bec_jax.data.targets import make_example
    from bec_jax.gpe.phase_field import to_velocity, uniform_flow

    arrays, attrs = read_h5(data)
    grid = load_grid(attrs)
    idx = split_by_group(arrays["group"], tc.split, tc.split_seed)[split]
    tcfg = tc.target_config
    flows, rms = [], []
    for lo in range(0, len(idx), batch):
        psi = jnp.asarray(arrays["psi"][idx[lo:lo + batch]])
        _, y, _ = make_example(grid, psi, tcfg)
        n = jnp.abs(psi) ** 2
        flows += np.linalg.norm(np.asarray(uniform_flow(y, n, tcfg.target, grid.dx)), axis=-1).tolist()
        v = to_velocity(y, tcfg.target, grid.dx)
        rms += np.sqrt(np.asarray(jnp.sum(n[..., None] * v**2, axis=(1, 2, 3)) / jnp.sum(n, axis=(1, 2)))).tolist()
    return dict(n_states=len(flows), flow_median=float(np.median(flows)), flow_max=float(np.max(flows)),
                rms_speed_median=float(np.median(rms)))


def markdown(result: dict) -> str:
    t = result["true_targets"]
    L = ["# The uniform flow in a model's phase gradient", "",
         f"Split {result['split']!r}, checkpoint {result['which']!r}; fidelity of the state √n·e^(iθ) with θ "
         "reconstructed from the prediction as predicted, and from the prediction less its density-weighted mean "
         "flow (\"without momentum\"), with the median speed of that flow (a⊥ω⊥). The true targets of this split "
         f"carry a flow of {t['flow_median']:.1e} (median; max {t['flow_max']:.1e}) against a typical speed of "
         f"{t['rms_speed_median']:.2f} ({t['n_states']} states): a ground state has no momentum.", "",
         "| run | epoch | masked MSE | MSE (reference's convention) | vortex count accuracy | fidelity (mean, median) "
         "| without momentum (mean, median) | flow taken off (median) |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        s = r["summary"]
        L.append(f"| {r['name']} | {r['epoch']} | {s['mse']:.2e} | {s['mse_ref']:.2e} | "
                 f"{s['vortex_count_accuracy']:.3f} | {s['fidelity_mean']:.3f}, {s['fidelity_median']:.3f} | "
                 f"{s['fidelity_zero_momentum_mean']:.3f}, {s['fidelity_zero_momentum_median']:.3f} | "
                 f"{s['flow_speed_median']:.3f} |")
    return "\n".join(L + ["", "![fidelity as predicted and without momentum](zero_momentum.png)", ""])


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    x = np.arange(len(runs))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(runs) + 2), 3.6))
    for dx, key, label in ((-0.2, "fidelity_mean", "as predicted"),
                           (0.2, "fidelity_zero_momentum_mean", "without momentum")):
        ax.bar(x + dx, [r["summary"][key] for r in runs], 0.4, label=label)
    ax.plot(x, [r["summary"]["fidelity_zero_phase_mean"] for r in runs], "k_", ms=20, label="zero-phase guess")
    ax.set_xticks(x, [r["name"] for r in runs], rotation=20, ha="right")
    ax.set_ylabel("mean fidelity")
    ax.set_ylim(0, 1)
    ax.set_title(f"{result['split']} split, {result['which']} checkpoint")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _settings(runs: list) -> tuple[str, object]:
    """(dataset, training config) the runs share; ValueError naming what differs."""
    from bec_jax.train.trainer import run_data_path, run_settings

    missing = [str(r) for r in runs if not (r / "checkpoints").is_dir()]
    if missing:
        raise ValueError(f"no training run (checkpoints/) at {', '.join(missing)}")
    names = [_name(r) for r in runs]
    if len(set(names)) < len(names):
        raise ValueError(f"two runs have the same name: {names}")
    data = {str(Path(run_data_path(r)).resolve()) for r in runs}
    if len(data) > 1:
        raise ValueError(f"the runs trained on different datasets: {sorted(data)}")
    configs = [run_settings(r)[1] for r in runs]
    split = {(c.split, c.split_seed, c.target) for c in configs}
    if len(split) > 1:
        raise ValueError(f"the runs split or target their data differently: {sorted(map(str, split))}")
    if not Path(data.pop()).exists():
        raise ValueError(f"no dataset at {str(run_data_path(runs[0]))!r}")
    return str(run_data_path(runs[0])), configs[0]


def _name(run: Path) -> str:
    return f"{run.parent.name}/{run.name}" if run.name == "train" else run.name  # a pipeline's run is its train/


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="training run folders (bec-jax train or a pipeline's "
                                                             "train/), all on the same dataset and split")
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--which", default="latest", choices=("latest", "best"))
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from bec_jax.train.evaluate import evaluate_run

    runs = [Path(r) for r in args.runs]
    try:
        data, tc = _settings(runs)
        truth = true_flow(data, tc, args.split)  # cheap, and first: a bad dataset fails before minutes of scoring
        rows = []
        for r in runs:
            ev = evaluate_run(r, which=args.which, split=args.split, progress=True)
            rows.append(dict(name=_name(r), run=str(r), epoch=ev["config"]["epoch"],
                             summary={k: ev["summary"][k] for k in KEYS}))
    except (ValueError, OSError) as e:  # a corrupt file is a ValueError (artifacts.CorruptArtifact)
        print(f"zero_momentum.py: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    result = dict(split=args.split, which=args.which, data=data, true_targets=truth, runs=rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zero_momentum.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    (out / "zero_momentum.md").write_text(markdown(result))
    plot(result, out / "zero_momentum.png")
    print(json.dumps(dict(out=str(out), runs={r["name"]: [round(r["summary"]["fidelity_mean"], 4),
                                                           round(r["summary"]["fidelity_zero_momentum_mean"], 4)]
                                              for r in rows})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
