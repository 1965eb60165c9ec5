"""Where a model's vortex errors sit: found, missed and false vortices.

Takes a finished ``experiments/imaging_robustness.py`` output (its trained ``RUNS/lab``
model at its last epoch, the one that script scores) and its dataset, renders the test
split at the realistic setting with the same key, or (``--pipeline``) the saved models of a
``bec-jax pipeline`` run on its clean test split, and classifies every true vortex as
found (matched within one healing length, same sign) or missed, and every predicted one
as found or false (``train.evaluate.evaluate_predictions``, ``gpe.phase_field.match_vortices``).
For each vortex it records the cloud's envelope density there (``gpe.observables.envelope``,
a fraction of the peak: vortices count where it exceeds 0.05), the distance to the nearest
other true vortex, and the distance to the nearest vortex of the other set (predicted for
a missed one, true for a false one, its match for a found one), in healing lengths.
It also scores the same predictions with the vortices placed four ways (plaquette centres,
sub-plaquette positions, the true cores as zeros of ψ; ``estimators``).
False vortices are also counted by sign (every true vortex of a rotating ground state
turns with the trap, so a false antivortex comes from a spurious vortex-antivortex pair).
Writes OUT/vortex_errors.json and .md.

    python experiments/vortex_errors.py --data runs/big/data.h5 --robustness experiments/results/imaging_robustness
    python experiments/vortex_errors.py --pipeline runs/reference/paper --models dense,pruned \
        --out experiments/results/paper_cpu
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: envelope density bins (fraction of the peak); vortices count above RegionConfig.threshold = 0.05
DENSITY_BINS = (0.05, 0.2, 0.4, 0.6, 0.8, 1.01)
#: distance bins, healing lengths (the last one open: a lone vortex has no neighbour)
SPACING_BINS = (0.0, 2.0, 4.0, 6.0, 8.0, np.inf)
OTHER_BINS = (0.0, 1.0, 1.5, 2.0, 3.0, np.inf)


def classify(grid, psi, mu, pred, tcfg):
    """Rows (kind, envelope density fraction, nearest other true vortex in ξ, nearest vortex of the other
    set in ξ, sign of its winding) of every vortex. kind: "found" (a matched true vortex; other set: its
    match's distance), "missed" (unmatched true; other set: the nearest predicted vortex of any sign) or
    "false" (unmatched predicted; other set: the nearest true vortex)."""
    import jax.numpy as jnp

    from bec_jax.gpe.observables import envelope
    from bec_jax.gpe.phase_field import match_vortices
    from bec_jax.train.evaluate import EvalConfig, evaluate_predictions

    r = evaluate_predictions(grid, psi, pred, mu, tcfg, EvalConfig(match_radius=1.0))
    env = np.asarray(envelope(grid, jnp.asarray(psi)))
    x0, dx = float(np.asarray(grid.x)[0]), grid.dx
    rows = []
    for b in range(len(psi)):
        xi = 1.0 / np.sqrt(2.0 * mu[b])
        vt, vp = r["vortices_true"][b], r["vortices_pred"][b]
        pairs, dist = match_vortices(vt, vp, xi)

        def nearest(v, others):
            d = np.hypot(others[:, 0] - v[0], others[:, 1] - v[1])
            d = d[d > 1e-9]
            return float(d.min() / xi) if len(d) else np.inf

        def describe(v, kind, other):
            i, j = int(np.floor((v[0] - x0) / dx)), int(np.floor((v[1] - x0) / dx))  # its pixel
            rows.append((kind, float(env[b, j, i]), nearest(v, vt), other, int(np.sign(v[2]))))

        match = {int(t): float(d / xi) for (t, _), d in zip(pairs, dist)}
        found_p = set(pairs[:, 1].tolist())
        for k, v in enumerate(vt):
            describe(v, "found", match[k]) if k in match else describe(v, "missed", nearest(v, vp))
        for k, v in enumerate(vp):
            if k not in found_p:
                describe(v, "false", nearest(v, vt))
    return rows


def estimators(grid, psi, mu, pred, tcfg) -> tuple[list, dict]:
    """F1 within 1 ξ and the mean matched distance (ξ) of the same predictions under four ways of placing
    the vortices: plaquette centres (true and predicted), the evaluation's sub-plaquette positions
    (``gpe.phase_field.refine_vortices`` of the exact and of the predicted field), and the true cores as
    zeros of ψ (``gpe.observables.vortex_cores``) against either predicted placement. Also returns the
    distances (ξ) of the true sub-plaquette positions from the true cores: {"mean", "p99", "max"}."""
    import jax.numpy as jnp

    from bec_jax.gpe.observables import vortex_cores
    from bec_jax.gpe.phase_field import match_vortices, positions_from_winding
    from bec_jax.train.evaluate import EvalConfig, evaluate_predictions

    r = evaluate_predictions(grid, psi, pred, mu, tcfg, EvalConfig(match_radius=1.0))
    names = ("plaquette centres", "sub-plaquette (the evaluation)", "true cores vs predicted sub-plaquette",
             "true cores vs predicted plaquette centres")
    counts = {k: [0, 0, 0, []] for k in names}
    off = []
    for b in range(len(psi)):
        xi = 1.0 / np.sqrt(2.0 * mu[b])
        vt, vp = r["vortices_true"][b], r["vortices_pred"][b]
        ct, cp = positions_from_winding(grid, r["winding_true"][b]), positions_from_winding(grid, r["winding_pred"][b])
        cores = vt
        if len(vt):
            cores = np.concatenate([np.asarray(vortex_cores(grid, jnp.asarray(psi[b]), jnp.asarray(vt[:, :2]))),
                                    vt[:, 2:]], axis=1)
            off.extend(np.hypot(*(cores[:, :2] - vt[:, :2]).T) / xi)
        for name, (t, q) in zip(names, ((ct, cp), (vt, vp), (cores, vp), (cores, cp))):
            pairs, dist = match_vortices(t, q, xi)
            c = counts[name]
            c[0], c[1], c[2] = c[0] + len(pairs), c[1] + len(q) - len(pairs), c[2] + len(t) - len(pairs)
            c[3].extend(dist / xi)
    rows = [dict(positions=k, tp=tp, fp=fp, fn=fn, f1=2 * tp / max(2 * tp + fp + fn, 1),
                 position_error_xi=float(np.mean(e)) if e else None) for k, (tp, fp, fn, e) in counts.items()]
    if not off:  # no true vortex in these states
        return rows, dict(mean=None, p99=None, max=None)
    return rows, dict(mean=float(np.mean(off)), p99=float(np.percentile(off, 99)), max=float(np.max(off)))


def tables(rows) -> dict:
    kinds = ("found", "missed", "false")
    out = {}
    for name, col, bins in (("by_density", 1, DENSITY_BINS), ("by_spacing_xi", 2, SPACING_BINS),
                            ("by_other_set_xi", 3, OTHER_BINS)):
        counts = []
        for lo, hi in zip(bins[:-1], bins[1:]):
            inside = lambda v: lo <= v < hi or (np.isinf(hi) and np.isinf(v))
            c = {k: sum(1 for r in rows if r[0] == k and inside(r[col])) for k in kinds}
            counts.append(dict(lo=lo, hi=None if np.isinf(hi) else hi, **c))
        out[name] = counts
    out["totals"] = {k: sum(1 for r in rows if r[0] == k) for k in kinds}
    out["totals"]["false_antivortices"] = sum(1 for r in rows if r[0] == "false" and r[4] < 0)
    return out


def _table_lines(t) -> list[str]:
    lines = []
    for name, head in (("by_density", "envelope density / peak"), ("by_spacing_xi", "nearest other true vortex (ξ)"),
                       ("by_other_set_xi",
                        "found: match distance; missed: nearest predicted; false: nearest true (ξ)")):
        lines += [f"| {head} | found | missed | false | errors / (found + missed) |", "|---|---|---|---|---|"]
        for r in t[name]:
            hi = "∞" if r["hi"] is None else f"{r['hi']:g}"
            denom = r["found"] + r["missed"]
            share = f"{(r['missed'] + r['false']) / denom:.2f}" if denom else "–"
            lines.append(f"| {r['lo']:g} – {hi} | {r['found']} | {r['missed']} | {r['false']} | {share} |")
        lines.append("")
    return lines


def _totals(t) -> str:
    t = t["totals"]
    return (f"Totals: {t['found']} found, {t['missed']} missed, {t['false']} false "
            f"({t['false_antivortices']} of them antivortices).")


def markdown(result) -> str:
    t = result["tables"]
    lines = [f"# Vortex errors of the imaging-trained model ({result['n_states']} test states, realistic setting)", "",
             f"`python experiments/vortex_errors.py {' '.join(result['argv'])}`", "",
             "Found = true vortices matched within 1 ξ; missed = unmatched true; false = unmatched predicted. "
             + _totals(t), ""]
    lines += ["How vortices are placed (the same predictions; matching within 1 ξ):", "",
              "| positions | F1 | TP/FP/FN | mean matched distance (ξ) |", "|---|---|---|---|"]
    for e in result["estimators"]:
        err = "–" if e["position_error_xi"] is None else f"{e['position_error_xi']:.3f}"
        lines.append(f"| {e['positions']} | {e['f1']:.3f} | {e['tp']}/{e['fp']}/{e['fn']} | {err} |")
    c = result["true_sub_plaquette_vs_cores_xi"]
    if c["mean"] is not None:
        lines += ["", f"True vortices: sub-plaquette positions against the cores (zeros of ψ): mean {c['mean']:.4f} "
                  f"ξ, 99th percentile {c['p99']:.3f} ξ, max {c['max']:.3f} ξ.", ""]
    return "\n".join(lines + _table_lines(t))


def pipeline_markdown(result) -> str:
    lines = [f"# Vortex errors of the saved models of a pipeline run ({result['n_states']} test states, clean inputs)",
             "", f"`python experiments/vortex_errors.py {' '.join(result['argv'])}`", "",
             "Found = true vortices matched within 1 ξ; missed = unmatched true; false = unmatched predicted.", ""]
    for name, t in result["models"].items():
        lines += [f"## {name}", "", _totals(t), ""] + _table_lines(t)
    return "\n".join(lines)


def pipeline_main(args) -> int:
    """``--pipeline RUN --models A,B``: each saved model of a pipeline run (RUN/models/<name>) on the run's
    clean test split."""
    import jax.numpy as jnp
    from flax import nnx

    from bec_jax.compress.quantization import load_quantized
    from bec_jax.data.targets import make_example
    from bec_jax.train.core import make_predict
    from bec_jax.train.trainer import load_dataset, load_trained, run_imaging

    run = Path(args.pipeline)
    _, info = load_trained(run / "train", "best")
    imaging = run_imaging(info["run"])
    if imaging is not None and imaging.enabled:
        raise SystemExit(f"{run} trained on camera images; --pipeline scores clean inputs only")
    tc = info["train_config"]
    grid, arrays, _, splits = load_dataset(run / "data.h5", tc)
    test = np.sort(splits["test"])
    psi, mu = np.asarray(arrays["psi"][test]), np.asarray(arrays["mu"][test], float)
    result = dict(argv=args.argv, run=str(run), n_states=int(len(test)), models={})
    for name in args.models.split(","):
        model, _ = load_quantized(run / "models" / name, info["model_config"])
        model.eval()
        gd, params, stats = nnx.split(model, nnx.Param, ...)
        predict = make_predict(gd)
        pred = np.concatenate([np.asarray(predict(params, stats, make_example(grid, jnp.asarray(psi[i:i + 16]),
                                                                              tc.target_config)[0]))
                               for i in range(0, len(psi), 16)])
        result["models"][name] = tables(classify(grid, psi, mu, pred, tc.target_config))
        print(name, _totals(result["models"][name]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vortex_errors.json").write_text(json.dumps(result, indent=2))
    (out / "vortex_errors.md").write_text(pipeline_markdown(result))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="the dataset imaging_robustness.py trained on")
    p.add_argument("--robustness", default="experiments/results/imaging_robustness",
                   help="imaging_robustness.py output folder (its JSON gives the seed; --runs the model)")
    p.add_argument("--runs", default="runs/imaging_robustness",
                   help="its training runs' folder (its --runs; default runs/imaging_robustness)")
    p.add_argument("--out", default=None, help="output folder (default: ROBUSTNESS)")
    p.add_argument("--pipeline", default=None,
                   help="instead: a `bec-jax pipeline` run folder, whose --models are scored on its clean test split")
    p.add_argument("--models", default="dense,pruned",
                   help="with --pipeline: names under RUN/models, comma-separated")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.pipeline is not None:
        run = Path(args.pipeline)
        models = [run / "models" / m for m in args.models.split(",")]
        for path in [run / "data.h5", run / "train" / "checkpoints"] + models:
            if not path.exists():
                p.error(f"{path} does not exist (a finished `bec-jax pipeline` run is needed)")
        if args.out is None:
            p.error("--pipeline needs --out")
        return pipeline_main(args)
    if args.data is None:
        p.error("--data is needed (or --pipeline)")
    runs = Path(args.runs)
    for path in (Path(args.data), Path(args.robustness) / "imaging_robustness.json", runs / "lab" / "checkpoints"):
        if not path.exists():
            p.error(f"{path} does not exist (an imaging_robustness.py output, its --runs and its dataset are needed)")
    import jax

    from imaging_robustness import REALISTIC, settings_for

    from bec_jax.imaging.training import imaged_examples
    from bec_jax.pipeline.config import PRESETS
    from bec_jax.train import TrainConfig
    from bec_jax.train.core import make_predict
    from bec_jax.train.trainer import load_dataset, load_trained

    rob = Path(args.robustness)
    info = json.loads((rob / "imaging_robustness.json").read_text())
    out = Path(args.out) if args.out else rob
    tc = TrainConfig(epochs=info["epochs"], seed=info["seed"])
    grid, arrays, _, splits = load_dataset(args.data, tc)
    test = splits["test"]
    psi, mu = arrays["psi"][test], np.asarray(arrays["mu"][test], float)
    xi = float(np.median(1.0 / np.sqrt(2.0 * mu)))
    settings = settings_for(PRESETS["lab"].imaging, REALISTIC["atom_number"], REALISTIC["psf_xi"], REALISTIC["tof"], xi)
    x, _, _ = imaged_examples(grid, jax.numpy.asarray(psi), jax.random.key(info["seed"] + 1), settings,
                              tc.target_config)
    from flax import nnx

    model, _ = load_trained(runs / "lab", "latest")  # the model imaging_robustness.py scored (fit's last epoch)
    gd, params, stats = nnx.split(model, nnx.Param, ...)
    pred = np.asarray(make_predict(gd)(params, stats, x))
    rows = classify(grid, psi, mu, pred, tc.target_config)
    result = dict(argv=args.argv, n_states=int(len(test)), median_xi=xi,
                  realistic=REALISTIC, tables=tables(rows))
    result["estimators"], result["true_sub_plaquette_vs_cores_xi"] = estimators(grid, psi, mu, pred, tc.target_config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vortex_errors.json").write_text(json.dumps(result, indent=2))
    (out / "vortex_errors.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
