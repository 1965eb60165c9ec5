"""(g, Ω) from a camera image: the accuracy of ``bec-jax predict --estimate-parameters``.

Held-out test states of a trained run (its test split: (g, Ω) groups it never saw) are
imaged at the realistic setting of experiments/imaging_robustness.py (10⁵ atoms, Gaussian
PSF σ = one healing length ξ = 1/√(2μ) of the state in the image, i.e. ξ·λ, flight
t = 0.5/ω⊥, 0.25 a⊥ pixels on a 112² camera, shot noise, background 10 counts, read noise
3 counts, fringes of amplitude 5 counts), each in a random orientation and with the trap
centre a random fraction of a pixel off the camera's centre. ``bec_jax.predict`` then
finds the cloud, predicts the phase, and estimates (g, Ω): gradient descent through the
ground-state solver, seeded with the network's vortices, with the imaging model inside
the loss (``imaging.observation_transfer``; ``deploy.predict.estimate_parameters``).

Variants: "imaging model" (the PSF width given, as a lab knows it), "PSF ignored"
(psf_width 0: only the pixels in the loss), and the closed-form Thomas–Fermi first guess
the descent starts from. Metrics: relative errors of g and Ω (median, 90th percentile,
max), and how often the seeded vortex count equals the true one; the same over the states
whose vortex count the network got right (the descent keeps the seeded count). Writes to OUT:
parameter_estimation.json, .md, .png.

    python experiments/parameter_estimation.py --run runs/lab --count 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from imaging_robustness import CAMERA, REALISTIC

#: the realistic imaging setting of experiments/imaging_robustness.py
SETTING = REALISTIC | CAMERA
VARIANTS = ("imaging model", "PSF ignored")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a trained model folder (bec-jax pipeline / train run)")
    p.add_argument("--out", default="experiments/results/parameter_estimation")
    p.add_argument("--count", type=int, default=16, help="test states (spread over the test split)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def image_of(grid, psi, mu, rng, key):
    """(camera image, psf σ in the object plane) of one state at SETTING, random orientation and offset."""
    from bec_jax import imaging as im

    s = SETTING
    lam = float(np.sqrt(1 + s["tof"] ** 2))
    psf = float(s["psf_xi"] / np.sqrt(2.0 * mu) * lam)
    cx, cy = rng.uniform(-0.5, 0.5, 2) * s["pixel_size"]
    params = im.ImagingParams(tof=s["tof"], angle=float(rng.uniform(0, 2 * np.pi)), pixel_size=s["pixel_size"],
                              center_x=float(cx), center_y=float(cy), psf_width=psf, atom_number=s["atom_number"],
                              background=s["background"], read_noise=s["read_noise"],
                              fringe_amplitude=s["fringe_amplitude"])
    cfg = im.ImagingConfig(rows=s["camera"], cols=s["camera"], psf="gaussian", n_fringes=s["n_fringes"])
    return np.asarray(im.render(grid, psi, params, cfg, key=key)), psf


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    from bec_jax.deploy.predict import ImageError, load_model, predict
    from bec_jax.train.trainer import load_dataset, load_trained, run_data_path

    run = Path(args.run)
    run = run / "train" if (run / "train" / "checkpoints").is_dir() else run
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(run)
    _, info = load_trained(run, "best")
    grid, arrays, _, splits = load_dataset(run_data_path(run), info["train_config"])
    test = splits["test"]
    pick = test[np.unique(np.linspace(0, len(test) - 1, min(args.count, len(test))).round().astype(int))]
    rng = np.random.default_rng(args.seed)
    rows, t0 = [], time.perf_counter()
    for k, i in enumerate(pick):
        g, om, mu = (float(arrays[f][i]) for f in ("g", "omega", "mu"))
        nv = int(arrays["vortices"][i])
        img, psf = image_of(grid, arrays["psi"][i], mu, rng, jax.random.key(args.seed * 100_000 + int(i)))
        row = dict(index=int(i), g=g, omega=om, vortices=nv, psf_width=psf)
        for name, width in zip(VARIANTS, (psf, 0.0)):
            t = time.perf_counter()
            try:
                p = predict(model, img, pixel_size=SETTING["pixel_size"], tof=SETTING["tof"], psf_width=width,
                            estimate=True).parameters
            except ImageError as e:
                row[name] = dict(error=str(e))
                continue
            row[name] = dict(p, seconds=time.perf_counter() - t)
        guess = row[VARIANTS[0]].get("initial_guess")
        if guess is not None:
            row["closed-form guess"] = dict(guess, n_vortices=row[VARIANTS[0]]["n_vortices"])
        rows.append(row)
        print(f"[{k + 1}/{len(pick)}] g {g:.1f} Ω {om:.3f} ({nv} vortices): "
              + "; ".join(f"{n} g {row[n]['g']:.1f} Ω {row[n]['omega']:.3f} ({row[n]['n_vortices']})"
                          for n in (*VARIANTS, "closed-form guess") if n in row and "g" in row[n]), flush=True)
    summary = {name: summarize(rows, name) for name in (*VARIANTS, "closed-form guess")}
    # the descent cannot change the seeded vortex number: where the network's count is right
    summary |= {f"{name}, vortex count right": summarize(rows, name, True) for name in (*VARIANTS, "closed-form guess")}
    result = dict(run=str(run), data=str(run_data_path(run)), n_states=len(rows), setting=SETTING, seed=args.seed,
                  box=rows[0][VARIANTS[0]].get("box") if rows else None, seconds=time.perf_counter() - t0,
                  summary=summary, rows=rows)
    (out / "parameter_estimation.json").write_text(json.dumps(result, indent=2))
    write_markdown(out / "parameter_estimation.md", result)
    plot(out / "parameter_estimation.png", result)
    print(json.dumps(summary, indent=1))
    return 0


def summarize(rows, name, right_count_only: bool = False) -> dict:
    ok = [r for r in rows if name in r and "g" in r[name]
          and (not right_count_only or r[name]["n_vortices"] == r["vortices"])]
    if not ok:
        return dict(n=0)
    eg = np.array([abs(r[name]["g"] / r["g"] - 1) for r in ok])
    eo = np.array([abs(r[name]["omega"] / r["omega"] - 1) for r in ok])
    stat = lambda e: dict(median=float(np.median(e)), p90=float(np.percentile(e, 90)), max=float(np.max(e)))
    return dict(n=len(ok), g_rel_error=stat(eg), omega_rel_error=stat(eo),
                vortex_count_exact=float(np.mean([r[name]["n_vortices"] == r["vortices"] for r in ok])),
                at_box_edge=int(sum(bool(r[name].get("at_box_edge")) for r in ok)))


def write_markdown(path, result):
    s = result["setting"]
    lines = [f"# (g, Ω) from camera images ({result['n_states']} held-out test states)", "",
             f"Setting: {s['atom_number']:.0e} atoms, Gaussian PSF σ = {s['psf_xi']:g} ξ in the image, flight "
             f"t = {s['tof']:g}, {s['pixel_size']:g} a⊥ pixels on a {s['camera']}² camera, shot noise, background "
             f"{s['background']:g}, read noise {s['read_noise']:g}, fringes {s['fringe_amplitude']:g} counts; random "
             f"orientation and sub-pixel offset. Model: `{result['run']}`; box {result['box']}. "
             f"{result['seconds']:.0f} s in all.", "",
             "| estimate | states | g error median / p90 / max | Ω error median / p90 / max | vortex count exact "
             "| at box edge |", "|---|---|---|---|---|---|"]
    pct = lambda d: f"{100 * d['median']:.1f} / {100 * d['p90']:.1f} / {100 * d['max']:.1f} %"
    for name, r in result["summary"].items():
        if r["n"]:
            lines.append(f"| {name} | {r['n']} | {pct(r['g_rel_error'])} | {pct(r['omega_rel_error'])} | "
                         f"{r['vortex_count_exact']:.2f} | {r['at_box_edge']} |")
    lines += ["", "| state | g | Ω | vortices | " + " | ".join(f"{n}: g, Ω (vortices)" for n in VARIANTS) + " |",
              "|---|---|---|---|" + "---|" * len(VARIANTS)]
    for r in result["rows"]:
        cells = [f"{r[n]['g']:.1f}, {r[n]['omega']:.3f} ({r[n]['n_vortices']})" if "g" in r.get(n, {}) else
                 r.get(n, {}).get("error", "–") for n in VARIANTS]
        lines.append(f"| {r['index']} | {r['g']:.1f} | {r['omega']:.3f} | {r['vortices']} | " + " | ".join(cells) + " |")
    Path(path).write_text("\n".join(lines) + "\n")


def plot(path, result):
    from bec_jax.plotting import subplots

    fig, axes = subplots(1, 2, figsize=(10, 4.5), constrained_layout=True)
    marks = {"imaging model": ("o", "C0"), "PSF ignored": ("x", "C3"), "closed-form guess": ("^", "0.6")}
    for ax, key, label in ((axes[0], "g", "g"), (axes[1], "omega", "Ω")):
        true = [r[key] for r in result["rows"]]
        lo, hi = min(true), max(true)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        for name, (m, c) in marks.items():
            pts = [(r[key], r[name][key]) for r in result["rows"] if key in r.get(name, {})]
            if pts:
                ax.scatter(*zip(*pts), marker=m, color=c, label=name, s=30)
        ax.set_xlabel(f"true {label}")
        ax.set_ylabel(f"estimated {label}")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"(g, Ω) from camera images: {result['n_states']} held-out states, realistic imaging")
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    sys.exit(main())
