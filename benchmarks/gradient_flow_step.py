"""Control-task training step throughput (network + 50 CN steps + loss + Adam), steps/s.

Times, in one process, the training step of the gradient-flow control task
(``bec_jax.quantum.gradient_flow.make_control_train_step``: 40->64->64->50 MLP,
u(t) -> V = u(t) x, 50 Crank–Nicolson steps on 20 points, quantum loss with the
modified gradient, Adam; batch 10) in three variants:

  jit             jax.jit of the whole step (one compiled graph)        <- bec_jax
  jit_checkpoint  the same with jax.checkpoint'ed simulator segments (recompute in backward)
  no_outer_jit    the same step called without the outer jax.jit: the library's own
                  jitted pieces (simulator forward, loss) run as separate compiled
                  calls, while grad bookkeeping, network and Adam run op by op
  eager           the same step under jax.disable_jit(): everything op by op, the
                  50-step lax.scan as a Python loop (plain define-by-run execution)

and reports steps/s (median over --repeats timed blocks of --block steps, after a
warm-up block that includes compilation; one block of each variant a round, the
rounds' orders shuffled, so the host's load falls on all alike) and the ratios of
jit to each baseline (medians of same-round ratios).

    python benchmarks/gradient_flow_step.py --out benchmarks/results/gradient_flow_step.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
from pathlib import Path

import jax
import numpy as np

from bec_jax.bench.measure import interleaved_times, load_average
from bec_jax.flags import positive_int
from bec_jax.quantum.gradient_flow import ControlConfig, make_control_data, make_control_train_step


def block_runner(step, state, batches, block: int, context=contextlib.nullcontext):
    """A function running ``block`` chained training steps from the state the previous call left (blocking
    until done); called once here, untimed (compilation and first dispatch)."""
    carry = [state]

    def run_block():
        params, opt = carry[0]
        with context():
            for i in range(block):
                params, opt, loss = step(params, opt, batches[i % len(batches)])
        jax.block_until_ready((params, opt, loss))
        carry[0] = (params, opt)

    run_block()
    return run_block


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gradient_flow_step.json"),
                   help="write JSON here (also printed; default benchmarks/results/gradient_flow_step.json)")
    p.add_argument("--method", choices=("S", "L2", "M"), default="M")
    p.add_argument("--repeats", type=positive_int, default=7)
    p.add_argument("--block", type=positive_int, default=100,
                   help="steps per timed block for the jitted variants (default: 100)")
    p.add_argument("--no-jit-block", type=positive_int, default=10,
                   help="steps per timed block for no_outer_jit (default: 10)")
    p.add_argument("--eager-block", type=positive_int, default=2,
                   help="steps per timed block for eager (default: 2)")
    p.add_argument("--quick", action="store_true", help="3 repeats, smaller blocks")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.block, args.no_jit_block, args.eager_block = 3, 20, 3, 1

    cfg = ControlConfig()
    cfg_ck = ControlConfig(checkpoint=True)
    psi0, target = make_control_data(cfg)
    batches = [psi0[i : i + cfg.batch_size] for i in range(0, cfg.n_initial, cfg.batch_size)]

    load_before = load_average()
    runners, blocks = {}, {}
    for name, config, jit, block, context in (
        ("jit", cfg, True, args.block, contextlib.nullcontext),
        ("jit_checkpoint", cfg_ck, True, args.block, contextlib.nullcontext),
        ("no_outer_jit", cfg, False, args.no_jit_block, contextlib.nullcontext),
        ("eager", cfg, False, args.eager_block, jax.disable_jit),
    ):
        init, step = make_control_train_step(config, args.method, target)
        fn = jax.jit(step) if jit else step
        runners[name] = block_runner(fn, init(jax.random.PRNGKey(0)), batches, block, context)
        blocks[name] = block
    rates = {k: blocks[k] / t for k, t in interleaved_times(runners, args.repeats, warmup=False).items()}
    results = {k: {"steps_per_s": float(np.median(r)), "all_steps_per_s": r.tolist(), "block": blocks[k]}
               for k, r in rates.items()}
    for k, r in results.items():
        print(f"{k:15s} {r['steps_per_s']:10.1f} steps/s", flush=True)

    report = {
        "benchmark": "gradient_flow_step",
        "what": "one Adam step of the control task: MLP -> u(t) -> 50 CN steps (20 points) "
                "-> quantum loss (custom_vjp) -> grad -> Adam, batch 10",
        "method": args.method,
        "config": {"grid_n": cfg.grid.n, "sim_steps": cfg.sim_steps, "batch_size": cfg.batch_size,
                   "hidden": cfg.hidden, "dt": cfg.dt},
        "repeats": args.repeats,
        "results": results,
        "ratios": {f"jit_over_{k}": float(np.median(rates["jit"] / rates[k]))
                   for k in ("no_outer_jit", "eager", "jit_checkpoint")},
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv[1:] if argv is None else argv,
    }
    print(", ".join(f"{k} = {v:.2f}" for k, v in report["ratios"].items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
