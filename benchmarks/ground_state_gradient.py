"""Cost of gradients through `bj.ground_state`: backward (one implicit adjoint solve) against forward
(multi-start PCG), and memory against the iteration count.

Case: n = 128, a batch of 16 states, g ∈ [50, 200], Ω ∈ [0.2, 0.7] (0 to ~5 vortices), default settings
(4 starts, pcg), float32. The loss is the sum over the batch of the density observable ∫r²|ψ|², so the
backward pass solves a full adjoint system per state (an energy loss would not: its cotangent is ~0 on
the tangent space).

* Time: forward = ``jax.vjp`` of the loss (the solve plus the saved residuals), backward = the returned
  VJP function applied to 1.0 (the adjoint CG, batched); medians of ``--repeats`` warm calls each, one of
  each a round in a shuffled order (``interleaved_times``), the ratio a median of same-round ratios.
* Memory: XLA's buffer assignment (``compiled.memory_analysis()``: temporaries + outputs) of
  jit(grad(loss)) at two iteration caps, max_iter = 500 and 4000. The solver's loops are while loops
  whose state is overwritten, and the adjoint needs only the converged ψ, so the two must agree. Baseline
  measured the same way: grad through ``bj.imaginary_time`` (``lax.scan``, which stores every step for
  reverse mode) at 100 and 800 steps.

    python benchmarks/ground_state_gradient.py --out benchmarks/results/ground_state_gradient.json
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

import bec_jax as bj
from bec_jax.bench.measure import interleaved_times, load_average


def _r2(grid, psi):
    X, Y = (jnp.asarray(a) for a in grid.mesh())
    return jnp.sum((X**2 + Y**2) * bj.density(psi)) * grid.cell_area


def timing(n: int, batch: int, repeats: int) -> dict:
    g = jnp.linspace(50.0, 200.0, batch)
    om = jnp.linspace(0.2, 0.7, batch)
    grid = bj.Grid(n, float(bj.box_length(200.0, 0.7)))
    loss = lambda g, om: _r2(grid, bj.ground_state(grid, g, om, key=jax.random.key(0)).psi)

    def forward():
        out, vjp = jax.vjp(loss, g, om)
        jax.block_until_ready(out)
        return vjp

    vjp = forward()  # compiles the forward pass
    backward = lambda: jax.block_until_ready(vjp(jnp.ones(())))
    dg, dom = backward()  # compiles the adjoint solve
    t = interleaved_times({"forward": forward, "backward": backward}, repeats, warmup=False)
    res = bj.ground_state(grid, g, om, key=jax.random.key(0))
    return dict(n=n, batch=batch, repeats=repeats, forward_s=float(np.median(t["forward"])),
                backward_s=float(np.median(t["backward"])),
                backward_over_forward=float(np.median(t["backward"] / t["forward"])),
                forward_all_s=t["forward"].tolist(), backward_all_s=t["backward"].tolist(),
                converged=int(jnp.sum(res.converged)), vortices=res.vortices.tolist(),
                finite_gradients=int(jnp.sum(jnp.isfinite(dg) & jnp.isfinite(dom))),
                forward_iterations_max=int(jnp.max(res.start_steps)))


def _bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.output_size_in_bytes)


def memory(n: int, batch: int) -> dict:
    g = jnp.linspace(50.0, 200.0, batch)
    om = jnp.linspace(0.2, 0.7, batch)
    grid = bj.Grid(n, float(bj.box_length(200.0, 0.7)))
    out = {}
    for cap in (500, 4000):
        f = lambda g, om, cap=cap: _r2(grid, bj.ground_state(grid, g, om, key=jax.random.key(0), max_iter=cap).psi)
        out[f"ground_state_max_iter_{cap}_bytes"] = _bytes(jax.jit(jax.grad(f, argnums=(0, 1))).lower(g, om).compile())
    psi0 = bj.normalize(grid, jnp.exp(-jnp.asarray(grid.mesh()[0]) ** 2 / 8 - jnp.asarray(grid.mesh()[1]) ** 2 / 8)
                        .astype(jnp.complex64))
    psi0 = jnp.broadcast_to(psi0, (batch, n, n))
    for steps in (100, 800):
        # psi0 an argument, not a constant: imaginary_time checks a concrete psi, which jit cannot trace
        f = lambda g, om, p, steps=steps: _r2(grid, bj.imaginary_time(grid, p, g, om, dt=0.01, steps=steps,
                                                                        shard=False, chunk=None))
        compiled = jax.jit(jax.grad(f, argnums=(0, 1))).lower(g, om, psi0).compile()
        out[f"imaginary_time_steps_{steps}_bytes"] = _bytes(compiled)
    out["ground_state_ratio_4000_over_500"] = (out["ground_state_max_iter_4000_bytes"]
                                               / out["ground_state_max_iter_500_bytes"])
    out["imaginary_time_ratio_800_over_100"] = (out["imaginary_time_steps_800_bytes"]
                                                / out["imaginary_time_steps_100_bytes"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/ground_state_gradient.json")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    load_before = load_average()
    t = timing(args.n, args.batch, args.repeats)
    print(f"n={args.n} batch={args.batch}: forward {t['forward_s']:.2f} s, backward {t['backward_s']:.2f} s "
          f"(ratio {t['backward_over_forward']:.3f}); {t['converged']}/{args.batch} converged, "
          f"{t['finite_gradients']} finite gradients", flush=True)
    m = memory(args.n, args.batch)
    print(f"memory of jit(grad): ground_state {m['ground_state_max_iter_500_bytes'] / 2**20:.1f} MiB at max_iter 500, "
          f"{m['ground_state_max_iter_4000_bytes'] / 2**20:.1f} MiB at 4000; imaginary_time "
          f"{m['imaginary_time_steps_100_bytes'] / 2**20:.1f} MiB at 100 steps, "
          f"{m['imaginary_time_steps_800_bytes'] / 2**20:.1f} MiB at 800", flush=True)
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from common import write_result
    write_result(args.out, dict(benchmark="ground_state_gradient", timing=t, memory=m,
                                load_average_before=load_before, load_average_after=load_average()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
