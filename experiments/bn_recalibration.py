"""Is a pruned model's eval-mode failure in its BatchNorm statistics? The same weights, statistics recomputed.

A model pruned far (99.9 %) can score orders of magnitude worse in eval mode than its fine-tuning loss in
train mode. In eval mode BatchNorm normalises with its running statistics, which training's running average
takes from the last few batches (PyTorch momentum 0.2: about the last 5 of 8 samples each), and a channel
that rests on one or two weights swings by orders of magnitude between batches. This script reloads a saved
pruned model (``bec-jax prune``'s ``--out``/model), scores it on the test split, recomputes its BatchNorm
statistics as the mean over one epoch of the training split of each batch's train-mode statistics
("precise BN", ``compress.workflow.precise_batch_stats``; the weights are untouched), and scores it again.
Both scores are full evaluations (``train.evaluate.evaluate_run`` with the model given): masked MSE, the
reference's all-pixel MSE, fidelity, vortex counts. Writes OUT/bn_recalibration.json and .md.

    python experiments/bn_recalibration.py --run runs/reference/paper/train \
        --model runs/reference/prune_iterative/model --out runs/reference/prune_iterative
    (reference_campaign.sh runs it so; its --collect copies the result into results/paper_cpu/prune_iterative/)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

METRICS = (("mse", "masked MSE", "{:.3e}"), ("mse_ref", "MSE (reference's convention)", "{:.3e}"),
           ("fidelity_mean", "fidelity", "{:.3f}"), ("vortex_count_accuracy", "vortex count acc.", "{:.3f}"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="the dense model's training run (bec-jax train / a pipeline's train/)")
    p.add_argument("--model", required=True, help="a saved pruned model folder (bec-jax prune --out DIR: DIR/model)")
    p.add_argument("--out", required=True, help="folder for bn_recalibration.json and .md")
    p.add_argument("--batch-size", type=int, default=16, help="evaluation batch size")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for flag in ("run", "model"):
        if not Path(getattr(args, flag)).is_dir():
            p.error(f"--{flag} {getattr(args, flag)!r} is not a folder")
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from bec_jax.artifacts import CorruptArtifact
    from bec_jax.compress.quantization import load_quantized
    from flax import nnx

    from bec_jax.compress.pruning import sparsity_report
    from bec_jax.compress.workflow import load_setup, precise_batch_stats
    from bec_jax.train.evaluate import evaluate_run

    t0 = time.perf_counter()
    try:
        setup = load_setup(args.run, which="latest")
        model, _ = load_quantized(args.model, setup.model_config)
    except (ValueError, CorruptArtifact) as e:
        print(f"bn_recalibration.py: {e}", file=sys.stderr)
        return 2
    score = lambda m: evaluate_run(args.run, which="latest", split="test", batch_size=args.batch_size, model=m,
                                   progress=not args.no_progress)["summary"]
    before = score(model)
    recalibrated = precise_batch_stats(model, setup.train)
    after = score(recalibrated)
    result = dict(run=str(args.run), model=str(args.model), sparsity=sparsity_report(nnx.state(model, nnx.Param))["total"]["sparsity"],
                  train_batches=len(setup.train), test_samples=before["n_samples"],
                  running_statistics={k: before[k] for k, _, _ in METRICS},
                  recomputed_statistics={k: after[k] for k, _, _ in METRICS},
                  seconds=time.perf_counter() - t0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bn_recalibration.json").write_text(json.dumps(result, indent=2))
    lines = [f"BatchNorm statistics of `{args.model}` (sparsity {result['sparsity']:.4f}) recomputed over one "
             f"epoch of the training split ({result['train_batches']} batches), weights untouched; test split "
             f"({result['test_samples']} states), eval mode.", "",
             "| BatchNorm statistics | " + " | ".join(label for _, label, _ in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for name, key in (("training's running averages", "running_statistics"),
                      ("recomputed (precise BN)", "recomputed_statistics")):
        lines.append(f"| {name} | " + " | ".join(fmt.format(result[key][k]) for k, _, fmt in METRICS) + " |")
    lines += ["", "Written by experiments/bn_recalibration.py."]
    (out / "bn_recalibration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
