"""Imaging robustness: a model trained on clean inputs vs one trained under the imaging model.

Both are ordinary ``bec_jax.train.fit`` runs on the same dataset, model, seed and
epochs (``RUNS/clean``, ``RUNS/lab``; resumable), the second with the
``lab`` preset's imaging settings (``bec_jax.pipeline.config.PRESETS["lab"].imaging``).
Both are then shown camera images of the test split's held-out (g, Ω) groups,
rendered and mapped back exactly as in training (``imaging.training.imaged_examples``,
the functions ``bec-jax predict`` uses, with the cloud's true position: the
cloud-fit errors of predict are not included), at fixed settings:

    realistic   10⁵ atoms, Gaussian PSF σ = one healing length in the image (ξ·λ, the
                test split's median ξ = 1/√(2μ)), flight t = 0.5/ω⊥, 0.25 a⊥ pixels on a
                112² camera, shot noise, background 10 counts, read noise 3 counts,
                fringes of amplitude 5 counts (3 waves)
    sweeps      atom number 10³…10⁶, PSF 0…3 ξ in the image, flight time 0…1 (the others
                at the realistic values)

plus the clean inputs themselves. No rotation (Ω = 0, angle 0 in the imaging
parameters): a rigid rotation, which the lab model saw uniformly in training.
Metrics per setting (``train.evaluate.evaluate_predictions`` with a matching radius of
one healing length): fidelity of √n·e^{iθ} with θ reconstructed from the prediction;
vortex F1 = 2TP/(2TP + FP + FN); position error of matched vortices in ξ; relative L2
error of the velocity over the bulk (density ≥ 5 % of the peak) farther than 2ξ from
every true vortex, pooled over the states (a vortex-free state has no flow), the velocity of
a prediction and of the true target (the floor) taken alike by ``phase_field.to_velocity``. Writes to OUT: imaging_robustness.json, .md, .png.

    python experiments/imaging_robustness.py --data runs/lab/data.h5 --epochs 10
    (checkpoints in --runs, default runs/imaging_robustness; the report in --out)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

SWEEPS = dict(atom_number=(1e3, 1e4, 1e5, 1e6), psf_xi=(0.0, 1.0, 2.0, 3.0), tof=(0.0, 0.5, 1.0))
REALISTIC = dict(atom_number=1e5, psf_xi=1.0, tof=0.5)
#: the camera of every evaluation point (the lab preset's 112² camera; counts per pixel)
CAMERA = dict(pixel_size=0.25, camera=112, background=10.0, read_noise=3.0, fringe_amplitude=5.0, n_fringes=3)
MODELS = ("clean", "lab")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset .h5 (bec-jax generate / pipeline), 64² for the lab camera")
    p.add_argument("--out", default="experiments/results/imaging_robustness", help="folder of the report")
    p.add_argument("--runs", default="runs/imaging_robustness", help="folder of the two training runs (checkpoints)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=8)
    return p.parse_args(argv)


def settings_for(base, atom_number, psf_xi, tof, xi):
    """Fixed (lo = hi) imaging settings of one evaluation point (``ImagingTrainConfig``)."""
    lam = float(np.sqrt(1 + tof**2))
    fix = lambda v: (float(v), float(v))
    c = CAMERA
    return dataclasses.replace(base, enabled=True, psf="gaussian" if psf_xi > 0 else "none", shot_noise=True,
                               n_fringes=c["n_fringes"], rows=c["camera"], cols=c["camera"], tof=fix(tof),
                               omega=fix(0.0), angle=fix(0.0), pixel_size=fix(c["pixel_size"]), center_x=fix(0.0),
                               center_y=fix(0.0), psf_width=fix(psf_xi * xi * lam), atom_number=fix(atom_number),
                               background=fix(c["background"]), read_noise=fix(c["read_noise"]),
                               fringe_amplitude=fix(c["fringe_amplitude"]))


def velocity_error(grid, psi, pred, y, tcfg, mu, vortices_true):
    """(relative L2 velocity error, the same for the true target) over the bulk outside cores, pooled over
    the samples: √(Σ|v_pred − v|²)/√(Σ|v|²). Pooled, not a mean of per-sample ratios: a vortex-free ground
    state has no flow, and its ratio would divide by ~0."""
    import jax.numpy as jnp

    from bec_jax.data.targets import velocity
    from bec_jax.gpe.phase_field import to_velocity

    v_true = np.asarray(velocity(grid, jnp.asarray(psi)))
    v_pred, v_floor = (np.asarray(to_velocity(jnp.asarray(f), tcfg.target, grid.dx)) for f in (pred, y))
    rho = np.abs(np.asarray(psi)) ** 2
    X, Y = grid.mesh()
    err = floor = norm = 0.0
    for b in range(len(rho)):
        xi = 1.0 / np.sqrt(2.0 * mu[b])
        keep = rho[b] >= 0.05 * rho[b].max()
        for x, yv, _ in vortices_true[b]:
            keep &= np.hypot(X - x, Y - yv) > 2 * xi
        norm += np.sum(v_true[b][keep] ** 2)
        err += np.sum((v_pred[b] - v_true[b])[keep] ** 2)
        floor += np.sum((v_floor[b] - v_true[b])[keep] ** 2)
    return float(np.sqrt(err / norm)), float(np.sqrt(floor / norm))


def evaluate(grid, psi, mu, predict, tcfg, settings, key):
    """Summary metrics of one model at one imaging setting (None: clean inputs)."""
    import jax.numpy as jnp

    from bec_jax.data.targets import make_example
    from bec_jax.imaging.training import imaged_examples
    from bec_jax.train.evaluate import EvalConfig, evaluate_predictions

    psi = jnp.asarray(psi)
    if settings is None:
        x, y, _ = make_example(grid, psi, tcfg)
        x = x.astype(jnp.float32)
    else:
        x, y, _ = imaged_examples(grid, psi, key, settings, tcfg)
    pred = np.asarray(predict(x))
    r = evaluate_predictions(grid, psi, pred, mu, tcfg, EvalConfig(match_radius=1.0))
    tp, fp, fn = (int(np.sum(r[k])) for k in ("matched", "false_pos", "false_neg"))
    errs = [e for row in r["pos_err_xi"] for e in row]
    vel, floor = velocity_error(grid, psi, pred, np.asarray(y), tcfg, mu, r["vortices_true"])
    return dict(fidelity=float(np.mean(r["fidelity"])), f1=2 * tp / max(2 * tp + fp + fn, 1), tp=tp, fp=fp, fn=fn,
                position_error_xi=float(np.mean(errs)) if errs else None, velocity_error=vel,
                velocity_error_floor=floor, mse=float(np.mean(r["mse"])))


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    from flax import nnx

    from bec_jax.models.unet import UNetConfig, default_depth
    from bec_jax.pipeline.config import PRESETS
    from bec_jax.train import TrainConfig, fit
    from bec_jax.train.core import make_predict
    from bec_jax.train.trainer import load_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lab = PRESETS["lab"].imaging
    tc = TrainConfig(epochs=args.epochs, seed=args.seed)
    grid, arrays, _, splits = load_dataset(args.data, tc)
    mcfg = UNetConfig(base_width=args.width, depth=default_depth(grid.n), input_size=grid.n)
    predictors, train_info = {}, {}
    for name in MODELS:
        res = fit(args.data, Path(args.runs) / name, mcfg, tc, imaging=lab if name == "lab" else None, progress=False,
                  log=None)
        # the epochs' own times: a rerun resumes the finished run instead of training again
        train_info[name] = dict(seconds=sum(h["seconds"] for h in res.history), best_epoch=res.best_epoch,
                                final_val_mse=res.history[-1]["val_mse"])
        model = res.model
        model.eval()
        gd, params, stats = nnx.split(model, nnx.Param, ...)
        f = make_predict(gd)
        predictors[name] = lambda x, f=f, p=params, s=stats: f(p, s, x)
        print(f"trained {name}: {train_info[name]}", flush=True)

    test = splits["test"]
    psi, mu = arrays["psi"][test], np.asarray(arrays["mu"][test], float)
    xi = float(np.median(1.0 / np.sqrt(2.0 * mu)))
    tcfg = tc.target_config
    points = [("clean inputs", None, None)]
    points.append(("realistic", "realistic", REALISTIC))
    for field, values in SWEEPS.items():
        for v in values:
            points.append((f"{field}={v:g}", field, {**REALISTIC, field: v}))
    rows = []
    key = jax.random.key(args.seed + 1)
    for label, sweep, point in points:
        settings = None if point is None else settings_for(lab, point["atom_number"], point["psf_xi"], point["tof"], xi)
        row = dict(label=label, sweep=sweep, point=point)
        for name in MODELS:
            row[name] = evaluate(grid, psi, mu, predictors[name], tcfg, settings, key)
        rows.append(row)
        print(label, {m: {k: round(v, 4) if isinstance(v, float) else v for k, v in row[m].items()} for m in MODELS},
              flush=True)

    result = dict(data=str(args.data), n_test=int(len(test)), test_groups=int(len(np.unique(arrays["group"][test]))),
                  median_healing_length=xi, epochs=args.epochs, seed=args.seed, model=mcfg.to_dict(),
                  lab_imaging=dataclasses.asdict(lab), realistic=REALISTIC, sweeps=SWEEPS, train=train_info,
                  rows=rows)
    (out / "imaging_robustness.json").write_text(json.dumps(result, indent=2))
    write_markdown(out / "imaging_robustness.md", result)
    plot(out / "imaging_robustness.png", result)
    return 0


def _fmt(v, f="{:.3f}"):
    return "–" if v is None else f.format(v)


def write_markdown(path, result):
    lines = [f"# Imaging robustness ({result['n_test']} test states of {result['test_groups']} held-out groups, "
             f"{result['epochs']} epochs, median ξ = {result['median_healing_length']:.3f} a⊥)", "",
             "| setting | model | fidelity | vortex F1 | TP/FP/FN | pos. error (ξ) | velocity error | "
             "velocity floor |", "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for m in MODELS:
            r = row[m]
            lines.append(f"| {row['label']} | {m} | {r['fidelity']:.4f} | {r['f1']:.3f} "
                         f"| {r['tp']}/{r['fp']}/{r['fn']} "
                         f"| {_fmt(r['position_error_xi'])} | {r['velocity_error']:.3f} | "
                         f"{r['velocity_error_floor']:.3f} |")
    Path(path).write_text("\n".join(lines) + "\n")


def plot(path, result):
    from bec_jax.plotting import subplots

    metrics = (("fidelity", "fidelity"), ("f1", "vortex F1 (1 ξ)"), ("velocity_error", "rel. L2 velocity error"))
    xlabels = dict(atom_number="atom number", psf_xi="PSF σ (healing lengths in the image)",
                   tof="flight time (1/ω⊥)")
    fig, axes = subplots(len(metrics), len(SWEEPS), figsize=(12, 9), squeeze=False)
    clean = next(r for r in result["rows"] if r["sweep"] is None)
    for j, field in enumerate(SWEEPS):
        rows = [r for r in result["rows"] if r["sweep"] == field]
        xs = [r["point"][field] for r in rows]
        for i, (key, label) in enumerate(metrics):
            ax = axes[i][j]
            for m, style in zip(MODELS, ("o-", "s-")):
                ax.plot(xs, [r[m][key] for r in rows], style, label=f"{m}-trained")
                ax.axhline(clean[m][key], ls=":", lw=0.8, color=ax.lines[-1].get_color())
            if field == "atom_number":
                ax.set_xscale("log")
            ax.set_xlabel(xlabels[field])
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="dotted: clean inputs", title_fontsize=8)
    fig.suptitle("camera images of held-out groups (others at 1e5 atoms, PSF 1 ξ, t = 0.5)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
