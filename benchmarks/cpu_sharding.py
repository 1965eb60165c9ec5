"""Splitting the batch over host CPU devices: shard_map vs a plain jit of sharded inputs.

XLA:CPU runs each FFT on one thread; splitting the host into D devices
(``bj.use_cpu_cores``) runs D FFTs at once if each device works on its own
slice. Times, in one process with D devices:
  one_device   bj.imaginary_time(..., shard=False): the batch on device 0
  shard_map    bj.imaginary_time(...) (default): one program per device, each on its slice
  one_device_slice  one device's slice (batch / D states) alone on device 0: the time the split would take
               if its D programs ran as fast side by side as one does alone
  spmd_jit     jit(evolve) of NamedSharding inputs: XLA's SPMD partitioner, which
               all-gathers the batch before every FFT (counted in its HLO); with the split step's
               alternating layouts XLA:CPU fails to run it (recorded as spmd_jit_error)
(The NumPy baseline is timed fairly, in its own process, by ``solver_throughput``.)

    python benchmarks/cpu_sharding.py --devices 2 --out benchmarks/results/cpu_sharding.json
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/cpu_sharding.json")
    args = p.parse_args()
    if args.devices < 1 or args.batch % args.devices:
        p.error(f"--devices must be >= 1 and divide --batch {args.batch}, got {args.devices}")
    os.environ.pop("XLA_FLAGS", None)
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import bec_jax as bj
    from bec_jax.bench.measure import interleaved_times
    from bec_jax.gpe.splitstep import evolve
    from common import write_result

    bj.use_cpu_cores(args.devices)
    grid = bj.Grid(args.n, 16.0)
    psi = np.random.default_rng(0).standard_normal((args.batch, args.n, args.n, 2)).astype(np.float32)
    psi = (psi[..., 0] + 1j * psi[..., 1]).astype(np.complex64)
    g, om, dt = 100.0, 0.8, 1e-3
    run = lambda x, shard: bj.imaginary_time(grid, x, g, om, dt=dt, steps=args.steps, shard=shard).block_until_ready()
    one = jax.device_put(jnp.asarray(psi), jax.devices()[0])
    ref = np.asarray(run(one, False))
    res = dict(n=args.n, batch=args.batch, steps=args.steps, devices=args.devices)
    contenders = {"one_device": lambda: run(one, False)}
    if args.devices > 1:
        res["shard_map_max_abs_diff"] = float(np.max(np.abs(np.asarray(run(one, True)) - ref)))
        contenders["shard_map"] = lambda: run(one, True)
        piece = one[: args.batch // args.devices]  # what each device of the split runs: its bound
        contenders["one_device_slice"] = lambda: run(piece, False)
        sharded = jax.device_put(jnp.asarray(psi), NamedSharding(Mesh(np.array(jax.devices()), ("b",)),
                                                                 PartitionSpec("b")))
        spmd = jax.jit(lambda x: evolve(grid, x, g, om, dt, args.steps, True))
        res["spmd_jit_all_gathers"] = spmd.lower(sharded).compile().as_text().count("all-gather(")
        try:
            res["spmd_jit_max_abs_diff"] = float(np.max(np.abs(np.asarray(spmd(sharded)) - ref)))
            contenders["spmd_jit"] = lambda: spmd(sharded).block_until_ready()
        except jax.errors.JaxRuntimeError as e:
            # XLA:CPU folds the step's transposes into the all-gathers' layouts and its FFT then refuses a
            # non-default layout (RET_CHECK in fft_thunk); shard_map never all-gathers
            res["spmd_jit_error"] = str(e).splitlines()[0][:300]
    # the contenders that run, interleaved call by call, so that a change in the machine's load hits them alike
    for k, t in interleaved_times(contenders, args.repeats).items():
        res[f"{k}_s"] = float(np.median(t))
    for k in ("shard_map", "spmd_jit"):
        if f"{k}_s" in res:
            res[f"speedup_{k}"] = res["one_device_s"] / res[f"{k}_s"]
    res["load_average_end"] = os.getloadavg()
    for k, v in res.items():
        print(f"{k}: {v}")
    write_result(args.out, res)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
