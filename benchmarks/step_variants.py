"""Split-step variants that fuse differently: ms/step at n = 200, batch 16 (interleaved medians of 15 calls).

  current    bj.imaginary_time
  fft        the bare four 1-D FFT passes (solver_throughput.fft_passes)
  base       a re-implementation of the current step (check of the harness)
  re2im2     norm as Σ(re² + im²) instead of Σ|ψ|²
  recompute  the nonlinear factor recomputed at the end of the step instead of stored

    N=200 B=16 python benchmarks/step_variants.py      # -> benchmarks/results/step_variants.json
"""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import bec_jax as bj
from bec_jax.gpe.hamiltonian import density, per_state, rotation_symbols

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_result
from solver_throughput import fft_passes

n, batch, steps = int(os.environ.get("N", 200)), int(os.environ.get("B", 16)), 20
grid = bj.Grid(n, 16.0)
g, om, dt = 100.0, 0.8, 0.01

def make_evolve(variant):
    def ev_fn(psi):
        a, b = rotation_symbols(grid, om)
        V = jnp.asarray(grid.potential())
        ea, eb = jnp.exp(-dt * a), jnp.exp(-dt * b)
        evv = jnp.exp(-0.5 * dt * V)
        area = grid.cell_area
        if variant == "re2im2":
            nrm = lambda p: jnp.sum(density(p), axis=(-2, -1)) * area
        else:
            nrm = lambda p: jnp.sum(jnp.abs(p) ** 2, axis=(-2, -1)) * area
        sa = lambda p: jnp.fft.ifft(jnp.fft.fft(p, axis=-1) * ea, axis=-1)
        sb = lambda p: jnp.fft.ifft(jnp.fft.fft(p, axis=-2) * eb, axis=-2)
        def step(phi, s, rev):
            s = per_state(s)
            if variant == "recompute":
                psi = phi * (evv * jnp.exp((-0.5 * dt * g) * (s * s) * density(phi)) * s)
                psi = sa(sb(psi)) if rev else sb(sa(psi))
                ew2 = evv * jnp.exp((-0.5 * dt * g) * (s * s) * (jnp.abs(phi) ** 2))
                out = psi * ew2
            else:
                ew = evv * jnp.exp((-0.5 * dt * g) * (s * s) * density(phi))
                psi = phi * (ew * s)
                psi = sa(sb(psi)) if rev else sb(sa(psi))
                out = psi * ew
            return out.astype(phi.dtype), jax.lax.rsqrt(nrm(out))
        def pair(c, _):
            p, s = step(*c, False)
            return step(p, s, True), None
        s0 = jax.lax.rsqrt(nrm(psi))
        (p, s), _ = jax.lax.scan(pair, (psi, s0), None, length=steps // 2)
        return p * per_state(s)
    return jax.jit(ev_fn)

X, Y = grid.mesh()
psi = jnp.asarray(np.broadcast_to(np.exp(-(X**2 + Y**2) / 8), (batch, n, n)).astype(np.complex64))
fns = {"current": lambda: bj.imaginary_time(grid, psi, g, om, dt=dt, steps=steps),
       "fft": (lambda f: lambda: f(psi))(fft_passes(steps))}
for v in ("base", "re2im2", "recompute"):
    fns[v] = (lambda f: lambda: f(psi))(make_evolve(v))
ref = np.asarray(fns["current"]())
for k, f in fns.items():
    out = np.asarray(jax.block_until_ready(f()))
    if k != "fft":
        print(k, "max diff vs current", float(np.abs(out - ref).max()))
times = {k: [] for k in fns}
for r in range(15):
    for k, f in fns.items():
        t0 = time.perf_counter(); jax.block_until_ready(f()); times[k].append(time.perf_counter() - t0)
res = {k: 1e3 * float(np.median(v)) / steps for k, v in times.items()}
res["load"] = os.getloadavg()
print(json.dumps(res, indent=1))
write_result(os.environ.get("OUT", "benchmarks/results/step_variants.json"), dict(n=n, batch=batch, ms_per_step=res))
