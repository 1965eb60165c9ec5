"""Generation and training with 1 and 2 processes (jax.distributed on localhost, gloo).

Each configuration runs as its own set of processes (``bec_jax.distributed.launch_local``),
each process with one CPU device unless stated:
  1 process            the baseline
  2 processes          one shard / half of every global batch each
  1 process, 2 devices the in-process alternative (``--cpu-devices 2``): generation shards
                       the batch over the devices; training stays on one device
Generation: ``generate_sharded`` of the same dataset ``--repeats`` times after one warm-up
(every state solved again; the timer starts at a barrier and stops when the manifest is
written): median seconds and states/s. Training: ``fit`` for 1 + ``--repeats`` epochs at
the same global batch; median of the warm epochs' seconds (each includes validation,
which every process runs on the whole split).

    python benchmarks/distributed.py --out benchmarks/results/distributed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    from bec_jax import distributed as dist

    dist.initialize(dist.DistributedConfig(heartbeat_timeout_s=60, init_timeout_s=120))
    from bec_jax.data.generate import GenerateConfig, generate_sharded
    from bec_jax.data.storage import shards_dir
    from bec_jax.models import UNetConfig
    from bec_jax.train import TrainConfig, fit

    config = GenerateConfig(n=args.n, n_groups=args.groups, states_per_group=2, g_range=(50.0, 150.0),
                            omega_range=(0.3, 0.6), batch_size=args.gen_batch, n_starts=1, max_iter=600)
    work = Path(args.work)
    times = []
    for rep in range(args.repeats + 1):
        dist.barrier(f"gen-{rep}")
        t0 = time.perf_counter()
        summary = generate_sharded(config, work / f"rep{rep}.h5", progress=False)
        times.append(time.perf_counter() - t0)
        assert summary["status"] == "complete", summary
    data = shards_dir(work / "rep0.h5") if dist.process_count() > 1 else work / "rep0.h5"
    result = fit(data, work / "train", UNetConfig(base_width=args.width, depth=3, input_size=args.n),
                 TrainConfig(epochs=args.repeats + 1, batch_size=args.train_batch, optimizer="sgd",
                             learning_rate=0.02, momentum=0.9), checkpoint_every=10**6, progress=False, log=None)
    epochs = [r["seconds"] for r in result.history[1:]]
    if dist.process_index() == 0:
        print("RESULT " + json.dumps(dict(
            generate_s=statistics.median(times[1:]), generate_all_s=times, n_samples=summary["n_samples"],
            epoch_s=statistics.median(epochs), epoch_all_s=epochs,
            train_samples=round(result.history[-1]["samples_per_s"] * result.history[-1]["seconds"]))), flush=True)


def run(args, processes: int, devices: int) -> dict:
    from bec_jax.distributed import launch_local

    with tempfile.TemporaryDirectory() as work:
        argv = [sys.executable, __file__, "--worker", "--work", work, *sys.argv[1:]]
        env = dict(PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu")
        procs = launch_local(argv, processes, timeout_s=args.timeout, env=env, cwd=ROOT)
    lines = [l for l in procs[0].stdout.splitlines() if l.startswith("RESULT ")]
    if any(p.returncode != 0 for p in procs) or not lines:
        raise SystemExit(f"{processes} process(es) x {devices} device(s) failed: "
                         + " | ".join(f"exit {p.returncode}: {p.stderr[-1500:]}" for p in procs))
    res = json.loads(lines[-1][len("RESULT "):])
    res.update(processes=processes, devices_per_process=devices,
               states_per_s=res["n_samples"] / res["generate_s"], train_samples_per_s=res["train_samples"] / res["epoch_s"])
    print(json.dumps(res), flush=True)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=32, help="grid points per side")
    p.add_argument("--groups", type=int, default=8, help="(g, Ω) groups (2 states each)")
    p.add_argument("--gen-batch", type=int, default=4, help="states per generation batch")
    p.add_argument("--width", type=int, default=4, help="U-Net base width")
    p.add_argument("--train-batch", type=int, default=4, help="global training batch")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (after one warm-up)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    p.add_argument("--out", default="benchmarks/results/distributed.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    rows = [run(args, 1, 1), run(args, 2, 1), run(args, 1, 2)]
    base = rows[0]
    for r in rows:
        r["generate_speedup"] = base["generate_s"] / r["generate_s"]
        r["train_speedup"] = base["epoch_s"] / r["epoch_s"]
    sys.path.insert(0, str(Path(__file__).parent))
    from common import write_result

    write_result(args.out, dict(n=args.n, n_samples=base["n_samples"], generation_batch=args.gen_batch,
                                unet_width=args.width, unet_depth=3, global_train_batch=args.train_batch,
                                repeats=args.repeats, load_average=os.getloadavg(), runs=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
