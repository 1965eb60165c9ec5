"""`bec-jax demo`: a few rotating ground states on a small grid, as a PNG and a JSON summary."""

from __future__ import annotations

import dataclasses
import json
import time

from bec_jax.artifacts import atomic_write_text
from bec_jax.flags import add_dataclass_flags, config_from_flags, out_dir


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Which ground states ``bec-jax demo`` computes (trap units: ħ = m = ω⊥ = 1).

    g: interaction strengths (>= 0), one for every omega or one per omega.
    omega: rotation rates, |omega| < 1 (units of the trap frequency).
    n: grid points per side (even, >= 16).
    length: box side in oscillator lengths (None: the ``box_length`` rule of the largest cloud).
    starts: initial guesses per state (>= 1); each state keeps its lowest energy.
    seed: seed of the initial guesses.
    """

    g: tuple[float, ...] = (100.0,)
    omega: tuple[float, ...] = (0.0, 0.5, 0.65, 0.8)
    n: int = 96
    length: float | None = None
    starts: int = 4
    seed: int = 0

    def __post_init__(self):
        from bec_jax.gpe.splitstep import check_parameters

        object.__setattr__(self, "g", tuple(self.g))
        object.__setattr__(self, "omega", tuple(self.omega))
        if not self.omega or len(self.g) not in (1, len(self.omega)):
            raise ValueError(f"g has {len(self.g)} values and omega {len(self.omega)}: give one g or one per omega")
        check_parameters(self.interactions, self.omega)
        if self.n < 16 or self.n % 2:
            raise ValueError(f"n must be even and >= 16, got {self.n}")
        if self.length is not None and not self.length > 0:
            raise ValueError(f"length must be > 0, got {self.length}")
        if self.starts < 1:
            raise ValueError(f"starts must be >= 1, got {self.starts}")
        if not 0 <= self.seed < 2**31:  # as GenerateConfig's
            raise ValueError(f"seed must be in [0, 2**31), got {self.seed}")

    @property
    def interactions(self) -> tuple[float, ...]:
        """One g per omega."""
        return self.g * len(self.omega) if len(self.g) == 1 else self.g


def cmd_demo(args) -> int:
    import jax
    import numpy as np

    import bec_jax as bj
    from bec_jax.plotting import plot_ground_states

    c = config_from_flags(DemoConfig(), args)
    method = config_from_flags(bj.PCG(), args, prefix="pcg-")
    out = out_dir(args.out)
    gs, omegas = np.asarray(c.interactions), np.asarray(c.omega)
    grid = bj.Grid(c.n, c.length or float(np.max(bj.box_length(gs, omegas))))
    print(f"bec-jax demo: {len(gs)} ground states on a {grid.n}x{grid.n} grid, L={grid.length:.2f}, "
          f"{c.starts} starts each, backend={jax.default_backend()} ({jax.local_device_count()} device(s))", flush=True)
    t0 = time.perf_counter()
    res = bj.ground_state(grid, gs, omegas, key=jax.random.key(c.seed), n_starts=c.starts, method=method)
    jax.block_until_ready(res.psi)
    wall = time.perf_counter() - t0
    rows = []
    for i in range(len(gs)):
        rows.append(dict(
            g=float(gs[i]), omega=float(omegas[i]), energy=float(res.energy[i]), mu=float(res.mu[i]),
            residual=float(res.residual[i]), vortices=int(res.vortices[i]), steps=int(res.steps[i]),
            converged=bool(res.converged[i]), touches_edge=bool(res.touches_edge[i]),
            angular_momentum=float(bj.angular_momentum(grid, res.psi[i])),
        ))
        r = rows[-1]
        print(f"  g={r['g']:6.1f} Ω={r['omega']:.2f}  E={r['energy']:.5f}  μ={r['mu']:.5f}  "
              f"residual={r['residual']:.1e}  {'antivortices' if r['omega'] < 0 else 'vortices'}={r['vortices']}  "
              f"steps={r['steps']}  converged={r['converged']}", flush=True)
    summary = dict(grid=dict(n=grid.n, length=grid.length), wall_seconds=wall, backend=jax.default_backend(),
                   bec_jax_version=bj.__version__, states=rows)
    atomic_write_text(out / "ground_states.json", json.dumps(summary, indent=2))
    png = plot_ground_states(grid, res.psi, gs, omegas, res.energy, out / "ground_states.png",
                             title=f"bec_jax ground states, {grid.n}² grid, box L = {grid.length:.1f} a⊥\n"
                                   "o: vortex, x: antivortex")
    print(f"wrote {out / 'ground_states.json'} and {png} in {wall:.1f} s")
    return 0


def register(sub) -> None:
    from bec_jax.gpe.groundstate import PCG

    d = sub.add_parser("demo", help="compute a few rotating ground states; write a PNG and a JSON summary",
                       description="Ground states of a few (g, Ω) on a small CPU grid. Every DemoConfig field is a "
                                   "flag, every PCG field a flag --pcg-<field>.")
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    add_dataclass_flags(d, DemoConfig, title="states (DemoConfig)")
    add_dataclass_flags(d, PCG, prefix="pcg-", title="ground-state method (PCG)")
    d.set_defaults(func=cmd_demo)
