"""Inverse design through the differentiable ground state: find the Ω whose ground state has a target ⟨L_z⟩.

The target is set as the ⟨L_z⟩ of the ground state at a hidden Ω* (a fresh multi-start solve), and the
search starts at Ω₀ on the same vortex-number branch. Each step solves the ground state at the current Ω,
warm-started from the last state (continuation along the branch), and takes a Gauss–Newton step on the
residual r(Ω) = ⟨L_z⟩(Ω) − target, Ω ← Ω − r / (dr/dΩ), with dr/dΩ = d⟨L_z⟩/dΩ from ``jax.grad``
through ``bj.ground_state`` (implicit adjoint; docs/gradients.md). The loop stops when |r| ≤ tol·target.
Afterwards the state at the found Ω is checked against a fresh multi-start solve there: same vortex number,
same energy (so the branch followed was the ground state, not a metastable one).

⟨L_z⟩(Ω) jumps at each vortex-number transition, where the gradient is undefined: a target between two
plateaus has no solution, and the gradient cannot carry the search across a jump.

    python experiments/inverse_design.py            # g = 100, n = 64, Ω* = 0.75 from Ω₀ = 0.72; ~1-2 min on 2 cores

Writes experiments/results/inverse_design/inverse_design.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import bec_jax as bj


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--g", type=float, default=100.0)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--omega-star", type=float, default=0.75, help="hidden Ω that sets the target <L_z>")
    p.add_argument("--omega0", type=float, default=0.72, help="first guess")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--tol", type=float, default=1e-5, help="stop at |<L_z> - target| <= tol * target")
    p.add_argument("--out", default="experiments/results/inverse_design")
    args = p.parse_args(argv)
    for name in ("omega_star", "omega0"):
        if not abs(getattr(args, name)) < 1:
            p.error(f"--{name.replace('_', '-')} must satisfy |omega| < 1, got {getattr(args, name)}")
    if args.steps < 1 or not args.tol > 0 or not 0 <= args.g < float("inf") or args.n < 8:
        p.error(f"need --steps >= 1, --tol > 0, 0 <= --g < inf and --n >= 8, got {args.steps}, {args.tol}, "
                f"{args.g}, {args.n}")

    t0 = time.perf_counter()
    grid = bj.Grid(args.n, float(bj.box_length(args.g, max(args.omega_star, args.omega0))))
    key = jax.random.key(0)
    star = bj.ground_state(grid, args.g, args.omega_star, key=key)
    target = float(bj.angular_momentum(grid, star.psi))

    def lz(omega, psi0):
        res = bj.ground_state(grid, args.g, omega, key=key, psi0=psi0, warmup_steps=0)
        return bj.angular_momentum(grid, res.psi), res

    lz_and_slope = jax.value_and_grad(lz, has_aux=True)
    first = bj.ground_state(grid, args.g, args.omega0, key=key)
    psi, omega, history = first.psi, args.omega0, []
    for step in range(args.steps):
        (value, res), slope = lz_and_slope(jnp.asarray(omega), psi)
        psi, value, slope = res.psi, float(value), float(slope)
        # None where there is no derivative (NaN: a level crossing), so the JSON stays strict
        history.append(dict(step=step, omega=omega, lz=value, dlz_domega=slope if math.isfinite(slope) else None,
                            vortices=int(res.vortices),
                            converged=bool(res.converged), residual=float(res.residual)))
        print(f"step {step}: omega = {omega:.6f}, <L_z> = {value:.6f} (target {target:.6f}), "
              f"d<L_z>/dOmega = {slope:.3f}, {int(res.vortices)} vortices", flush=True)
        if abs(value - target) <= args.tol * abs(target):
            break
        if not (slope > 0):  # NaN (no derivative here) or a non-increasing branch: Gauss–Newton cannot go on
            print("no usable derivative; stopping")
            break
        omega = float(omega - (value - target) / slope)
    check = bj.ground_state(grid, args.g, omega, key=key)
    result = dict(
        g=args.g, n=args.n, length=grid.length, omega_star=args.omega_star, omega0=args.omega0,
        target_lz=target, target_vortices=int(star.vortices), found_omega=omega,
        found_lz=history[-1]["lz"], abs_omega_error=abs(omega - args.omega_star),
        steps=len(history), history=history,
        fresh_solve_at_found=dict(vortices=int(check.vortices), energy=float(check.energy),
                                  lz=float(bj.angular_momentum(grid, check.psi))),
        energy_followed_minus_fresh=float(bj.energy(grid, psi, args.g, omega) - check.energy),
        wall_s=time.perf_counter() - t0, dtype=str(psi.dtype), backend=jax.default_backend(),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inverse_design.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    print(f"found omega = {omega:.6f} (hidden {args.omega_star}), <L_z> = {result['found_lz']:.6f} vs target "
          f"{target:.6f} in {len(history)} solves; fresh multi-start at the found omega: "
          f"{result['fresh_solve_at_found']['vortices']} vortices, energy difference "
          f"{result['energy_followed_minus_fresh']:.2e}; wrote {out / 'inverse_design.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
