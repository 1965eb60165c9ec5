"""Does sharding the batch over several XLA:CPU devices speed up `bj.imaginary_time`?

XLA:CPU runs each FFT on one thread; splitting the host into D devices
(``--xla_force_host_platform_device_count``) and sharding the batch would run
D FFTs at once if the devices executed concurrently. Times, in one process with
D devices: the batch on device 0, the batch sharded over all D (NamedSharding),
and the NumPy/SciPy baseline of ``solver_throughput`` (all cores). Compare with
a run at --devices 1 (one device, no split).

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
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/cpu_sharding.json")
    args = p.parse_args()
    if args.devices < 1 or args.batch % args.devices:
        p.error(f"--devices must be >= 1 and divide --batch {args.batch}, got {args.devices}")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}")
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import bec_jax as bj
    from common import write_result
    from solver_throughput import median_time as median_s
    from solver_throughput import numpy_imaginary_time

    grid = bj.Grid(args.n, 16.0)
    psi = np.random.default_rng(0).standard_normal((args.batch, args.n, args.n, 2)).astype(np.float32)
    psi = (psi[..., 0] + 1j * psi[..., 1]).astype(np.complex64)
    run = lambda x: bj.imaginary_time(grid, x, 100.0, 0.8, dt=1e-3, steps=args.steps).block_until_ready()
    one = jax.device_put(jnp.asarray(psi), jax.devices()[0])
    res = dict(n=args.n, batch=args.batch, steps=args.steps, devices=args.devices,
               one_device_s=median_s(lambda: run(one), args.repeats))
    if args.devices > 1:
        sharded = jax.device_put(jnp.asarray(psi), NamedSharding(Mesh(np.array(jax.devices()), ("b",)),
                                                                 PartitionSpec("b")))
        res["sharded_s"] = median_s(lambda: run(sharded), args.repeats)
        res["sharded_max_abs_diff"] = float(np.max(np.abs(np.asarray(run(sharded)) - np.asarray(run(one)))))
        res["speedup_sharded_over_one_device"] = res["one_device_s"] / res["sharded_s"]
    res["numpy_s"] = median_s(lambda: numpy_imaginary_time(grid, psi, 100.0, 0.8, 1e-3, args.steps),
                              max(1, args.repeats // 2))
    res["load_average_end"] = os.getloadavg()
    for k, v in res.items():
        print(f"{k}: {v}")
    write_result(args.out, res)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
