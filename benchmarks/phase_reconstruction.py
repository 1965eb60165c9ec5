"""Phase reconstruction's cost: the vortex phase summed over the vortices found against over every slot of its cap.

``reconstruct_phase`` adds back the singular phase Σ_v w_v·atan2(y − y_v, x − x_v) of the vortices
it detects, one full-grid atan2 per vortex. Its cap (``max_vortices``, a static size: 256 in
``EvalConfig`` and ``predict``) was once looped over slot by slot, empty slots included; the loop
now stops at the vortices found (vmapped, at the batch's largest count). Contenders, interleaved
in one process on the same inputs:

  found   the library's ``vortex_phase`` (a loop over the vortices found)
  slots   the former one: a scan over all ``max_vortices`` slots, empty ones adding 0

timed on (1) ``reconstruct_phase`` vmapped over the batch and (2) the evaluation's device work per
batch (``train.evaluate._batch_fields``: three reconstructions, targets, masks, fidelities), with
the two variants' outputs compared. Inputs: the first ``--batch`` states of a dataset (``--data``;
default: states of the paper preset's ranges generated at ``--n`` into a temporary folder), and a
prediction that is the true target plus Gaussian noise of ``--noise`` (relative to its RMS).

    python benchmarks/phase_reconstruction.py --out benchmarks/results/phase_reconstruction.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tempfile
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from bec_jax.bench.measure import interleaved_times, load_average  # noqa: E402
from bec_jax.data.generate import PRESETS, generate  # noqa: E402
from bec_jax.data.storage import load_grid, read_h5  # noqa: E402
from bec_jax.data.targets import TargetConfig, make_example  # noqa: E402
from bec_jax.gpe import phase_field  # noqa: E402
from bec_jax.train import evaluate  # noqa: E402
from bec_jax.train.evaluate import EvalConfig  # noqa: E402


def slots_vortex_phase(winding, n: int, max_vortices: int):
    """The former ``vortex_phase``: a scan over all ``max_vortices`` slots (empty ones add 0·atan2)."""
    flat = winding.reshape(-1)
    idx = jnp.nonzero(flat, size=max_vortices, fill_value=0)[0]
    w = jnp.where(jnp.arange(max_vortices) < jnp.count_nonzero(flat), flat[idx], 0).astype(jnp.float32)
    yv, xv = idx // (n - 1) + 0.5, idx % (n - 1) + 0.5
    y, x = jnp.arange(n, dtype=jnp.float32)[:, None], jnp.arange(n, dtype=jnp.float32)[None, :]

    def add(acc, v):
        wv, xc, yc = v
        return acc + wv * jnp.arctan2(y - yc, x - xc), None

    return jax.lax.scan(add, jnp.zeros((n, n), jnp.float32), (w, xv, yv))[0]


@contextlib.contextmanager
def variant(vortex_phase):
    """Trace with ``vortex_phase`` in the library: JAX caches traces by function, across jit objects, so the
    caches are cleared on the way in and out (callers keep compiled executables, which the patch cannot reach)."""
    saved = phase_field.vortex_phase
    phase_field.vortex_phase = vortex_phase
    jax.clear_caches()
    try:
        yield
    finally:
        phase_field.vortex_phase = saved
        jax.clear_caches()


def compiled_calls(grid, psi, pred, tcfg, ecfg, vortex_phase):
    """(reconstruction of pred's differences, the evaluation's device work): compiled with ``vortex_phase``."""
    d = phase_field.to_differences(pred, tcfg.target, grid.dx)
    _, _, valid = make_example(grid, psi, tcfg)
    region = phase_field.vortex_mask(grid, jnp.abs(psi), ecfg.vortex_threshold, ecfg.vortex_sigma)
    with variant(vortex_phase):
        rec = jax.jit(jax.vmap(partial(phase_field.reconstruct_phase, max_vortices=ecfg.max_vortices)))
        rec = rec.lower(d, valid, region).compile()
        fields = evaluate._batch_fields.lower(grid, psi, pred, tcfg, ecfg).compile()
    return (lambda: jax.block_until_ready(rec(d, valid, region)),
            lambda: jax.block_until_ready(fields(psi, pred)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="a dataset file or folder (default: generated at --n)")
    p.add_argument("--n", type=int, default=200, help="grid of the generated states (without --data)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-vortices", type=int, default=EvalConfig.max_vortices)
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/phase_reconstruction.json")
    args = p.parse_args()
    if args.batch < 1 or args.repeats < 1 or args.max_vortices < 1 or args.noise < 0:
        p.error("--batch, --repeats and --max-vortices must be >= 1 and --noise >= 0")
    if args.data is not None and not args.data.exists():
        p.error(f"no dataset at {args.data}")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:  # the paper preset's ranges, 4 states per (g, Ω) as it has
            data = Path(tmp) / "states.h5"
            cfg = dataclasses.replace(PRESETS["paper"], n=args.n, n_groups=-(-args.batch // 4), batch_size=args.batch)
            generate(cfg, data, progress=False)
        available = len(read_h5(data, fields=["g"], psi=False)[0]["g"])  # unconverged states are dropped
        if available < args.batch:
            p.error(f"{data} holds {available} states, fewer than --batch {args.batch}")
        arrays, attrs = read_h5(data, rows=np.arange(args.batch))
    grid = load_grid(attrs)
    tcfg, ecfg = TargetConfig(), dataclasses.replace(EvalConfig(), max_vortices=args.max_vortices)
    psi = jnp.asarray(arrays["psi"])
    _, y, _ = make_example(grid, psi, tcfg)
    rms = float(jnp.sqrt(jnp.mean(y**2)))
    pred = y + args.noise * rms * jax.random.normal(jax.random.key(0), y.shape, y.dtype)

    load_start = load_average()
    calls = {name: compiled_calls(grid, psi, pred, tcfg, ecfg, vp)
             for name, vp in (("found", phase_field.vortex_phase), ("slots", slots_vortex_phase))}
    outs = {name: (jax.device_get(c[0]()), jax.device_get(c[1]())) for name, c in calls.items()}
    times = interleaved_times({f"{name}/{what}": c[i] for name, c in calls.items()
                               for i, what in enumerate(("reconstruct", "evaluate"))}, args.repeats)
    med = {k: float(np.median(v)) for k, v in times.items()}
    (th_f, w_f), f_found = outs["found"][0], outs["found"][1]
    (th_s, w_s), f_slots = outs["slots"][0], outs["slots"][1]
    counts = np.count_nonzero(np.asarray(w_f), axis=(-2, -1))
    result = dict(
        n=grid.n, batch=args.batch, max_vortices=args.max_vortices, noise=args.noise, repeats=args.repeats,
        data=str(args.data) if args.data else f"generated: the paper preset's ranges at n = {grid.n}",
        vortices_per_state=counts.tolist(), vortices_true_per_state=np.asarray(arrays["vortices"]).tolist(),
        reconstruct_s=dict(found=med["found/reconstruct"], slots=med["slots/reconstruct"]),
        evaluate_s=dict(found=med["found/evaluate"], slots=med["slots/evaluate"]),
        speedup_reconstruct=med["slots/reconstruct"] / med["found/reconstruct"],
        speedup_evaluate=med["slots/evaluate"] / med["found/evaluate"],
        evaluate_ms_per_state=dict(found=1e3 * med["found/evaluate"] / args.batch,
                                   slots=1e3 * med["slots/evaluate"] / args.batch),
        max_abs_diff_theta=float(np.max(np.abs(np.asarray(th_f) - np.asarray(th_s)))),
        windings_equal=bool(np.array_equal(w_f, w_s)),
        max_abs_diff_fidelity=float(np.max(np.abs(f_found["fidelity"] - f_slots["fidelity"]))),
        times_s={k: v.tolist() for k, v in times.items()},
        load_average_start=load_start, load_average_end=load_average(),
    )
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
