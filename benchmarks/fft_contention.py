"""How much a busy second core slows JAX's single-threaded FFTs on this machine.

Times the four 1-D FFT passes of a split step (along the last axis, one
transpose: ``step_variants.fft_last_passes``; n = 200, batch 16, one device)
in rounds that alternate between a quiet machine and one where a subprocess
busy-loops (pure Python, no memory traffic) on the other core. On the 2-vCPU
development VMs the two vCPUs behave like SMT siblings of one physical core,
which is why splitting a batch over two XLA devices gains less than 2× and why
timings there drift with whatever else runs.

    python benchmarks/fft_contention.py      # -> benchmarks/results/fft_contention.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_result  # noqa: E402
from step_variants import fft_last_passes  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=7, help="rounds of each kind (quiet, busy), alternating")
    p.add_argument("--calls", type=int, default=5, help="timed calls per round")
    p.add_argument("--out", default="benchmarks/results/fft_contention.json")
    args = p.parse_args()
    if min(args.n, args.batch, args.steps, args.rounds, args.calls) < 1:
        p.error("--n, --batch, --steps, --rounds and --calls must be >= 1")
    rng = np.random.default_rng(0)
    shape = (args.batch, args.n, args.n)
    x = jnp.asarray((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64))
    f = fft_last_passes(args.steps)
    jax.block_until_ready(f(x))

    def timed():
        ts = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            jax.block_until_ready(f(x))
            ts.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(ts)) / args.steps

    ms = {"quiet": [], "busy": []}
    for _ in range(args.rounds):
        ms["quiet"].append(timed())
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)  # let it start spinning
            ms["busy"].append(timed())
        finally:
            spinner.kill()
            spinner.wait()
    med = {k: float(np.median(v)) for k, v in ms.items()}
    ratio = float(np.median(np.asarray(ms["busy"]) / np.asarray(ms["quiet"])))
    print(f"4 FFT passes + 1 transpose, n={args.n} batch={args.batch}: quiet {med['quiet']:.2f} ms/step, "
          f"other core busy {med['busy']:.2f} ms/step ({ratio:.2f}x slower, median of paired rounds)")
    write_result(args.out, dict(benchmark="fft_contention", n=args.n, batch=args.batch, steps_per_call=args.steps,
                                rounds=args.rounds, calls_per_round=args.calls, ms_per_step=ms,
                                median_ms_per_step=med, busy_over_quiet=ratio, loadavg_1_5_15=os.getloadavg()))


if __name__ == "__main__":
    main()
