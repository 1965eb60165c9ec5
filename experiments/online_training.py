"""Online training: solver-in-the-loop vs a fixed data set on the same grid.

Online: ``bec_jax.train.make_online_step`` — every step solves ``batch_size``
fresh ground states (seeded vortex-lattice guesses, imaginary-time warm-up,
preconditioned CG with a per-step budget) and updates the U-Net, in ONE
jit-compiled program; no sample is ever seen twice.
Fixed: the same generator (``sample_states``, other seed) run once for N
states, then ordinary epochs over them (``make_train_step`` + ``BatchLoader``).
Both use the same model, optimizer, batch size and number of steps, and are
scored on one test set made by the full ``ground_state`` solver (4 starts,
polish; converged states only). Writes to --out:

    online_training.json   settings, per-method curves (test MSE vs samples seen / wall time), final metrics
    online_training.md     table
    online_training.png    test masked MSE vs samples seen and vs wall time

Wall times: generation (including its compilation) + training steps
(including the first call's compilation), evaluation excluded.

    python experiments/online_training.py                 # CPU: n = 32, 600 steps, ~10 min on 2 cores
    python experiments/online_training.py --quick         # smoke run
    python experiments/online_training.py --n 64 --steps 5000 --fixed-sizes 512,2048 --width 8 --depth 5  # GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np


def _pair(s: str, name: str):
    try:
        lo, hi = (float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be 'lo,hi', got {s!r}") from None
    return lo, hi


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="experiments/results/online_training")
    p.add_argument("--n", type=int, default=32, help="grid points per side")
    p.add_argument("--g-range", default="50,150")
    p.add_argument("--omega-range", default="0.45,0.75")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=600, help="train steps of every method")
    p.add_argument("--fixed-sizes", default="64,256", help="comma-separated fixed data set sizes")
    p.add_argument("--eval-every", type=int, default=50, help="steps between test evaluations")
    p.add_argument("--n-test", type=int, default=64, help="test states (full ground_state solver)")
    p.add_argument("--n-starts", type=int, default=2, help="solver starts per generated state")
    p.add_argument("--max-iter", type=int, default=300, help="CG iterations per start (per-step budget)")
    p.add_argument("--warmup", type=int, default=100, help="imaginary-time warm-up steps (even)")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: 40 steps, sizes 16,32, 16 test states")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.fixed_sizes, args.eval_every, args.n_test, args.width, args.depth = 40, "16,32", 10, 16, 4, 2
    try:
        args.g_range = _pair(args.g_range, "--g-range")
        args.omega_range = _pair(args.omega_range, "--omega-range")
        args.fixed_sizes = [int(s) for s in args.fixed_sizes.split(",") if s.strip()]
    except (argparse.ArgumentTypeError, ValueError) as e:
        p.error(str(e))
    for name in ("steps", "eval_every", "n_test", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    bad = [s for s in args.fixed_sizes if s < args.batch_size]
    if bad:
        p.error(f"--fixed-sizes must be >= batch size {args.batch_size}, got {bad}")
    return args


def plot(curves: dict, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, c in curves.items():
        ax[0].plot(c["samples_seen"], c["test_mse"], marker=".", label=name)
        ax[1].plot(c["wall_seconds"], c["test_mse"], marker=".", label=name)
    ax[0].set(xlabel="training samples seen", ylabel="test masked MSE", yscale="log", title="sample efficiency")
    ax[1].set(xlabel="wall time: generation + training (s)", ylabel="test masked MSE", yscale="log",
              title="wall time")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    import optax

    from bec_jax.data.loader import BatchLoader
    from bec_jax.data.targets import make_example
    from bec_jax.gpe import PCG, Grid, box_length, ground_state
    from bec_jax.models.unet import UNetConfig, count_params, init_model
    from bec_jax.train.evaluate import evaluate_predictions, summarize
    from bec_jax.train.losses import masked_mse, masked_sq_error_sums
    from bec_jax.train.online import OnlineConfig, init_online_state, make_online_step, sample_states
    from bec_jax.train.core import TrainConfig, init_state, make_loss, make_predict, make_train_step

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    length = float(box_length(args.g_range[1], args.omega_range[1]))
    grid = Grid(n=args.n, length=length)
    ocfg = OnlineConfig(batch_size=args.batch_size, g_range=args.g_range, omega_range=args.omega_range,
                        n_starts=args.n_starts,
                        solver=PCG(warmup_steps=args.warmup, max_iter=args.max_iter, tol_residual=1e-4, tol_energy=1e-7))
    mcfg = UNetConfig(base_width=args.width, depth=args.depth, input_size=args.n)
    tx = optax.adam(args.lr)
    print(f"online vs fixed: grid {args.n}² L = {length:.3f}, g {args.g_range}, Ω {args.omega_range}, "
          f"batch {args.batch_size}, {args.steps} steps, fixed sizes {args.fixed_sizes}", flush=True)

    # --- test set: the full solver, converged states only
    rng = np.random.default_rng(10_000 + args.seed)
    g_t = rng.uniform(*args.g_range, args.n_test)
    om_t = rng.uniform(*args.omega_range, args.n_test)
    t0 = time.perf_counter()
    res = ground_state(grid, g_t, om_t, key=jax.random.key(10_000 + args.seed))
    keep = np.asarray(res.converged & ~res.touches_edge)
    test_psi, test_mu = jnp.asarray(res.psi)[keep], np.asarray(res.mu)[keep]
    test_seconds = time.perf_counter() - t0
    x_t, y_t, m_t = make_example(grid, test_psi, ocfg.target_config)
    x_t = x_t.astype(jnp.float32)
    print(f"test set: {int(keep.sum())}/{args.n_test} converged states in {test_seconds:.1f} s", flush=True)

    def test_mse(predict, state):
        pred = predict(state.params, state.batch_stats, x_t)
        sq, valid, _ = masked_sq_error_sums(pred, y_t.astype(jnp.float32), m_t)
        return float(sq / (2 * valid)), pred

    def final_metrics(pred):
        r = evaluate_predictions(grid, test_psi, pred, test_mu, ocfg.target_config)
        s = summarize(r)
        return {k: s[k] for k in ("mse", "fidelity_mean", "fidelity_median", "vortex_count_accuracy",
                                  "position_error_xi_mean", "precision", "recall")}

    def fresh():
        model = init_model(mcfg, args.seed)
        return (model,) + init_state(model, tx)

    n_params = count_params(init_model(mcfg, args.seed))
    results, curves = {}, {}

    # --- online: solver + update in one jitted step
    _, gd_train, gd_eval, state = fresh()
    traces = []

    def counted_loss(pred, batch):
        traces.append(1)  # runs once per trace of the step
        return masked_mse(pred, batch.y, batch.mask)

    step = make_online_step(grid, gd_train, tx, counted_loss, ocfg)
    predict = make_predict(gd_eval)
    state = init_online_state(state, jax.random.key(args.seed))
    curve = dict(samples_seen=[], wall_seconds=[], test_mse=[])
    train_s, conv, first = 0.0, [], None
    for k in range(1, args.steps + 1):
        t = time.perf_counter()
        state, m = step(state)
        jax.block_until_ready(m["loss"])
        dt = time.perf_counter() - t
        first = dt if first is None else first
        train_s += dt
        conv.append(float(m["converged_fraction"]))
        if k % args.eval_every == 0 or k == args.steps:
            mse, pred = test_mse(predict, state[0])
            curve["samples_seen"].append(k * args.batch_size)
            curve["wall_seconds"].append(train_s)
            curve["test_mse"].append(mse)
            print(f"  online step {k}: test MSE {mse:.3e}, {train_s:.1f} s", flush=True)
    curves["online"] = curve
    results["online"] = dict(distinct_samples=args.steps * args.batch_size, samples_seen=args.steps * args.batch_size,
                             generation_seconds=None, train_seconds=train_s, wall_seconds=train_s,
                             first_step_seconds=first,
                             steady_seconds_per_step=(train_s - first) / max(args.steps - 1, 1),
                             compilations=len(traces), converged_fraction=float(np.mean(conv)),
                             final_test_mse=curve["test_mse"][-1], best_test_mse=min(curve["test_mse"]),
                             **final_metrics(pred))

    # --- fixed data sets of the same generator
    gen = jax.jit(lambda key: sample_states(grid, key, ocfg))
    for size in args.fixed_sizes:
        t = time.perf_counter()
        parts, conv = [], []
        for b in range(-(-size // args.batch_size)):
            psi, info = gen(jax.random.fold_in(jax.random.key(args.seed + 1), b))
            parts.append(np.asarray(psi))
            conv.append(np.asarray(info["converged"]))
        psi = np.concatenate(parts)[:size]
        gen_s = time.perf_counter() - t
        loader = BatchLoader(grid, psi, args.batch_size, ocfg.target_config, shuffle=True, drop_last=True,
                             seed=args.seed)
        _, gd_train, gd_eval, state = fresh()
        tstep = make_train_step(gd_train, tx, make_loss(TrainConfig(), grid))
        predict = make_predict(gd_eval)
        curve = dict(samples_seen=[], wall_seconds=[], test_mse=[])
        train_s, first, k, epoch = 0.0, None, 0, 0
        while k < args.steps:
            epoch += 1
            for batch in loader.epoch(epoch):
                t = time.perf_counter()
                state, loss = tstep(state, batch)
                jax.block_until_ready(loss)
                dt = time.perf_counter() - t
                first = dt if first is None else first
                train_s += dt
                k += 1
                if k % args.eval_every == 0 or k == args.steps:
                    mse, pred = test_mse(predict, state)
                    curve["samples_seen"].append(k * args.batch_size)
                    curve["wall_seconds"].append(gen_s + train_s)
                    curve["test_mse"].append(mse)
                if k == args.steps:
                    break
        print(f"  fixed N={size}: {epoch} epochs, test MSE {curve['test_mse'][-1]:.3e}, "
              f"generation {gen_s:.1f} s + training {train_s:.1f} s", flush=True)
        name = f"fixed N={size}"
        curves[name] = curve
        results[name] = dict(distinct_samples=size, samples_seen=args.steps * args.batch_size, epochs=epoch,
                             generation_seconds=gen_s, train_seconds=train_s, wall_seconds=gen_s + train_s,
                             first_step_seconds=first,
                             steady_seconds_per_step=(train_s - first) / max(args.steps - 1, 1),
                             converged_fraction=float(np.mean(np.concatenate(conv)[:size])),
                             final_test_mse=curve["test_mse"][-1], best_test_mse=min(curve["test_mse"]),
                             **final_metrics(pred))

    report = dict(settings=dict(vars(args)), grid=dict(n=grid.n, length=grid.length),
                  online_config=dataclasses.asdict(ocfg),
                  model_config=mcfg.to_dict(), n_params=n_params,
                  test=dict(n_states=int(keep.sum()), n_requested=args.n_test, solver_seconds=test_seconds),
                  backend=jax.default_backend(), results=results, curves=curves)
    (out / "online_training.json").write_text(json.dumps(report, indent=2))
    title = (f"{args.n}² grid, U-Net w{args.width} d{args.depth}, batch {args.batch_size}, {args.steps} steps, "
             f"test {int(keep.sum())} ground states ({jax.default_backend()})")
    plot(curves, out / "online_training.png", title)

    def f(v, fmt):
        return "–" if v is None else fmt.format(v)

    lines = [
        f"Online vs fixed-data training: grid {args.n}² (L = {length:.2f}), g ∈ {list(args.g_range)}, "
        f"Ω ∈ {list(args.omega_range)}, U-Net width {args.width} depth {args.depth} ({n_params:,} parameters), "
        f"Adam lr {args.lr:g}, batch {args.batch_size}, {args.steps} steps each; generator: {args.n_starts} starts, "
        f"{args.warmup} imaginary-time steps + ≤ {args.max_iter} CG iterations per start. Test: "
        f"{int(keep.sum())} converged `ground_state` states. Backend: {jax.default_backend()}.",
        "",
        "| method | distinct samples | epochs | test MSE (final) | test MSE (best) | fidelity mean | vortex count acc. "
        "| generation (s) | training (s) | total wall (s) | s/step (steady) | solver converged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['distinct_samples']} | {r.get('epochs', 1)} | {r['final_test_mse']:.3e} | "
            f"{r['best_test_mse']:.3e} | {r['fidelity_mean']:.4f} | {r['vortex_count_accuracy']:.3f} | "
            f"{f(r['generation_seconds'], '{:.1f}')} | {r['train_seconds']:.1f} | {r['wall_seconds']:.1f} | "
            f"{r['steady_seconds_per_step']:.4f} | {r['converged_fraction']:.3f} |")
    lines += ["", f"Online step compilations: {results['online']['compilations']} "
              f"(first call {results['online']['first_step_seconds']:.1f} s). "
              "Written by experiments/online_training.py."]
    (out / "online_training.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'online_training.json'}, .md and .png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
