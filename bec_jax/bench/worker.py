"""A benchmark contender's process: ``python -m bec_jax.bench.worker [--cpu-devices D] [--x64]``.

Reads JSON lines on stdin, answers one line each on stdout (prefixed ``measure.TAG``):
  {"op": "setup", "contender": NAME, "workload": {...}, "chunk": "auto" | int | None}
      build NAME's call on the workload and run it once (compile, untimed) -> {"info": {...}}
  {"op": "time"}   one call, timed -> {"s": seconds}
  {"op": "quit"}
A failure answers {"error": "..."}; the parent raises it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bec_jax.bench.measure import TAG, make_call, workload_from_dict


def _reply(msg: dict) -> None:
    sys.stdout.write(TAG + json.dumps(msg) + "\n")
    sys.stdout.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-devices", type=int, default=None)
    p.add_argument("--x64", action="store_true")
    args = p.parse_args(argv)
    import jax

    from bec_jax.gpe.sharding import use_cpu_cores

    use_cpu_cores(args.cpu_devices)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    call = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["op"] == "quit":
                return 0
            if msg["op"] == "setup":
                call, info = make_call(msg["contender"], workload_from_dict(dict(msg["workload"])), msg["chunk"])
                _reply({"info": info})
            elif msg["op"] == "time":
                if call is None:
                    raise RuntimeError("time before setup")
                t0 = time.perf_counter()
                call()
                _reply({"s": time.perf_counter() - t0})
            else:
                raise ValueError(f"unknown op {msg['op']!r}")
        except Exception as e:  # noqa: BLE001 - every failure goes back to the parent as one line
            _reply({"error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
