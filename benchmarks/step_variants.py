"""Split-step formulations against two FFT floors, at n = 200, batch 16, on one device.

  current    bj.imaginary_time (shard=False, chunk=None): every FFT along the last axis,
             layouts alternating [y, x] / [x, y] (one transpose a step), real
             propagators kept real, |ψ| shared by the norm and the next step
  axis2      the formulation before 2026-12-02: B-sweep FFTs along axis -2
             (XLA: transpose, FFT, transpose), real propagators promoted to
             complex, |ψ|² recomputed for the nonlinear factor
  fft        the bare four 1-D FFT passes along x and y as JAX runs them
             (bec_jax.bench.measure.fft_passes: two transposes a step)
  fft_last   four 1-D FFT passes along the last axis and one transpose: the
             least a step whose two sweeps are diagonal in (y, k_x) and
             (k_y, x) can cost

Calls are interleaved; each round gives ratios to both floors in the same
moment, and the JSON keeps the medians of those paired ratios (this machine's
memory bandwidth drifts within minutes, which moves every ratio by ±10 %).

    python benchmarks/step_variants.py      # -> benchmarks/results/step_variants.json
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import bec_jax as bj
from bec_jax.gpe.hamiltonian import norm, per_state, rotation_symbols

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_result  # noqa: E402
from bec_jax.bench.measure import fft_passes, interleaved_times  # noqa: E402


def axis2_evolve(grid, steps):
    """The previous step (git 03cfdc0, bec_jax/gpe/splitstep.py), for the same-run comparison."""

    def run(psi, g, omega, dt):
        a, b = rotation_symbols(grid, omega)
        ea, eb = jnp.exp(-dt * a), jnp.exp(-dt * b)
        ev = jnp.exp(-0.5 * dt * jnp.asarray(grid.potential()))
        sweep_a = lambda p: jnp.fft.ifft(jnp.fft.fft(p, axis=-1) * ea, axis=-1).astype(p.dtype)
        sweep_b = lambda p: jnp.fft.ifft(jnp.fft.fft(p, axis=-2) * eb, axis=-2).astype(p.dtype)

        def step(phi, scale, reverse):
            s = per_state(scale)
            ew = ev * jnp.exp((-0.5 * dt) * per_state(g) * (s * s * (phi.real**2 + phi.imag**2)))
            p = (phi * (ew * s)).astype(phi.dtype)
            p = sweep_a(sweep_b(p)) if reverse else sweep_b(sweep_a(p))
            phi = (p * ew).astype(phi.dtype)
            return phi, jax.lax.rsqrt(norm(grid, phi))

        def pair(c, _):
            return step(*step(*c, False), True), None

        (p, s), _ = jax.lax.scan(pair, (psi, jax.lax.rsqrt(norm(grid, psi))), None, length=steps // 2)
        return p * per_state(s)

    return jax.jit(run)


def fft_last_passes(steps):
    """Four 1-D FFT passes along the last axis and one transpose per step."""

    def run(psi):
        def body(p, _):
            p = jnp.fft.ifft(jnp.fft.fft(p, axis=-1), axis=-1)
            return jnp.swapaxes(jnp.fft.ifft(jnp.fft.fft(p, axis=-1), axis=-1), -1, -2), None

        return jax.lax.scan(body, psi, None, length=steps)[0]

    return jax.jit(run)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="steps per timed call (even)")
    p.add_argument("--rounds", type=int, default=41)
    p.add_argument("--out", default="benchmarks/results/step_variants.json")
    args = p.parse_args()
    if args.steps < 2 or args.steps % 2 or args.rounds < 1 or args.batch < 1:
        p.error(f"--steps must be even and >= 2, --rounds and --batch >= 1; got {args.steps}, {args.rounds}, "
                f"{args.batch}")
    n, batch, steps = args.n, args.batch, args.steps
    grid = bj.Grid(n, 16.0)
    X, Y = grid.mesh()
    psi = jnp.asarray(np.broadcast_to(np.exp(-(X**2 + Y**2) / 8), (batch, n, n)).astype(np.complex64))
    # per-state g and Ω, as bj.imaginary_time passes them to each device when it splits a batch
    g, om, dt = jnp.full((batch,), 100.0), jnp.full((batch,), 0.8), jnp.float32(0.01)
    axis2, floor, floor_last = axis2_evolve(grid, steps), fft_passes(steps), fft_last_passes(steps)
    fns = {
        # chunk=None: the whole batch in every pass, as axis2 and the floors run (formulations, not chunking)
        "current": lambda: bj.imaginary_time(grid, psi, g, om, dt=dt, steps=steps, shard=False, chunk=None),
        "axis2": lambda: axis2(psi, g, om, dt),
        "fft": lambda: floor(psi),
        "fft_last": lambda: floor_last(psi),
    }
    diff = float(np.max(np.abs(np.asarray(fns["current"]()) - np.asarray(fns["axis2"]()))))
    if not diff < 1e-5:
        raise RuntimeError(f"current and axis2 steps disagree by {diff:.3g}: not the same scheme")
    t = interleaved_times({k: (lambda f: lambda: jax.block_until_ready(f()))(f) for k, f in fns.items()}, args.rounds)
    ms = {k: 1e3 * float(np.median(v)) / steps for k, v in t.items()}
    paired = {f"{a}_over_{b}": float(np.median(t[a] / t[b]))
              for a in ("current", "axis2") for b in ("fft", "fft_last")}
    paired["axis2_over_current"] = float(np.median(t["axis2"] / t["current"]))
    print("ms/step (medians):", {k: round(v, 3) for k, v in ms.items()})
    print("paired ratios (medians):", {k: round(v, 3) for k, v in paired.items()})
    write_result(args.out, dict(benchmark="step_variants", n=n, batch=batch, steps_per_call=steps, rounds=args.rounds,
                                devices=1, ms_per_step=ms, paired_ratio_medians=paired,
                                max_abs_diff_current_vs_axis2=diff, loadavg_1_5_15=os.getloadavg()))


if __name__ == "__main__":
    main()
