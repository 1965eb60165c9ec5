"""Online training: the GPE solver makes fresh ground states inside the jitted train step.

One compiled program per (grid, settings, model) does, every step:

    key ──► B new (g, Ω) ──► seeded vortex-lattice guesses (``initial_guess``, ``n_starts``
    per state) ──► ``ground_state``'s ``PCG`` method (imaginary-time warm-up, then
    preconditioned CG on the unit sphere, at most ``max_iter`` iterations) ──► lowest-energy
    start ──► (log-density, phase-difference target, mask) ──► U-Net update

so no dataset is stored and every sample is new. The solver is the one
``ground_state`` uses (same guesses, warm-up and minimiser) with a fixed
per-step iteration budget and without its polish stage; states that miss the
tolerance in ``max_iter`` are used as they are (the target is computed from
the state itself, so the (input, target) pair stays consistent; only the
distribution shifts towards less relaxed states). ``converged_fraction`` in the
step metrics says how often that happens.

``sample_states`` is the same generator outside the train step, used to make a
fixed data set of identical distribution for comparisons
(``experiments/online_training.py``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bec_jax.data.loader import Batch
from bec_jax.data.targets import TargetConfig, make_example
from bec_jax.gpe.grid import Grid, real_dtype
from bec_jax.gpe.groundstate import PCG, initial_guess, start_vortex_numbers
from bec_jax.gpe.sharding import loop_chunk, map_batch
from bec_jax.train.core import TrainState, make_update

__all__ = ["OnlineConfig", "sample_parameters", "sample_states", "make_online_step", "init_online_state"]


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """What the in-step solver generates (hashable: a static jit argument).

    batch_size: states per step, ≥ 1.
    g_range: (g_min, g_max), 0 ≤ g_min ≤ g_max; omega_range: (Ω_min, Ω_max) in (−1, 1), uniform.
    n_starts: seeded guesses per state (lowest final energy wins), ≥ 1.
    solver: the in-step relaxation, ``ground_state``'s ``PCG`` (its fields are the per-step solver
      budget: warm-up steps, CG iterations, tolerances). The default is cheap: 100 warm-up steps,
      ≤ 300 CG iterations, residual 1e-4.
    target, mask_threshold: how ψ becomes (x, y, mask) (``TargetConfig``).
    """

    batch_size: int = 8
    g_range: tuple[float, float] = (50.0, 150.0)
    omega_range: tuple[float, float] = (0.45, 0.75)
    n_starts: int = 2
    solver: PCG = PCG(warmup_steps=100, max_iter=300, tol_residual=1e-4, tol_energy=1e-7)
    target: str = "phase_diff"
    mask_threshold: float = 1e-3

    def __post_init__(self):
        object.__setattr__(self, "g_range", tuple(float(v) for v in self.g_range))
        object.__setattr__(self, "omega_range", tuple(float(v) for v in self.omega_range))
        for name in ("batch_size", "n_starts"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if len(self.g_range) != 2 or not (0 <= self.g_range[0] <= self.g_range[1] < math.inf):
            raise ValueError(f"g_range must be (g_min, g_max) with 0 <= g_min <= g_max < inf, got {self.g_range}")
        if len(self.omega_range) != 2 or not (-1 < self.omega_range[0] <= self.omega_range[1] < 1):
            raise ValueError(f"omega_range must be (lo, hi) with -1 < lo <= hi < 1, got {self.omega_range}")
        if not isinstance(self.solver, PCG):
            raise ValueError(f"solver must be a PCG (the in-step relaxation), got {self.solver!r}")
        self.target_config  # validates target and mask_threshold

    @property
    def target_config(self) -> TargetConfig:
        return TargetConfig(target=self.target, mask_threshold=self.mask_threshold)


def sample_parameters(key, config: OnlineConfig):
    """(g, Ω), each float (batch_size,), uniform in the configured box."""
    kg, ko = jax.random.split(key)
    rdt = real_dtype()
    g = jax.random.uniform(kg, (config.batch_size,), rdt, *config.g_range)
    omega = jax.random.uniform(ko, (config.batch_size,), rdt, *config.omega_range)
    return g, omega


def _relax_one(grid: Grid, g, omega, key, config: OnlineConfig):
    """ONE state: every start relaxed, lowest energy kept -> (ψ (n, n), residual, converged, energy)."""

    def start(k, nv):
        p, e, res, _, conv = config.solver.relax(grid, initial_guess(grid, g, omega, k, nv), g, omega)
        return p, res, conv, e

    keys = jax.random.split(key, config.n_starts)
    chunk = loop_chunk() if config.batch_size > 1 else None  # as ground_state: one state's starts at once
    psi, res, conv, e = map_batch(start, chunk)(keys, start_vortex_numbers(g, omega, config.n_starts))
    best = jnp.argmin(jnp.where(jnp.isfinite(e) & jnp.isfinite(res), e, jnp.inf))
    return psi[best], res[best], conv[best], e[best]


def sample_states(grid: Grid, key, config: OnlineConfig = OnlineConfig()):
    """A batch of fresh (approximate) ground states; pure and jit-able (grid, config static).

    Returns (psi complex (B, n, n) normalised, info) with info = dict(g, omega,
    residual, energy: float (B,), converged: bool (B,)).
    """
    kp, ks = jax.random.split(key)
    g, omega = sample_parameters(kp, config)
    keys = jax.random.split(ks, config.batch_size)
    # on a CPU one state at a time: every start stops at its own convergence (sharding.loop_chunk)
    psi, res, conv, e = map_batch(lambda gi, oi, k: _relax_one(grid, gi, oi, k, config),
                                  loop_chunk() if config.batch_size > 1 else None)(g, omega, keys)
    return psi, dict(g=g, omega=omega, residual=res, energy=e, converged=conv)


def init_online_state(state: TrainState, key) -> tuple:
    """The online train state: (a ``TrainState`` of ``init_state``, the PRNG ``key`` of the solver)."""
    return state, key


def make_online_step(grid: Grid, gd_train, tx: optax.GradientTransformation, loss: Callable,
                     config: OnlineConfig = OnlineConfig()):
    """A jitted ``step(state) -> (state, metrics)``: solve B fresh states, then one update.

    state: ``init_online_state(init_state(...)[2], key)`` (buffers donated).
    The update is ``core.make_update`` (the same code as ``make_train_step``,
    so ``loss`` may be any training loss ``loss(pred, batch)``, physics-informed included). Solver and
    update are one XLA program; it is compiled once per (grid, config, model,
    optimizer, loss). metrics: dict(loss, converged_fraction, residual_max)
    float32 scalars (loss before the update).
    """
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be a bec_jax Grid, got {type(grid).__name__}")
    if not isinstance(config, OnlineConfig):
        raise ValueError(f"config must be an OnlineConfig, got {type(config).__name__}")
    update = make_update(gd_train, tx, loss)
    tcfg = config.target_config

    def step(state):
        train, key = state
        key, sub = jax.random.split(key)
        psi, info = sample_states(grid, sub, config)
        # no gradient flows into the solver: the states are data for this step
        x, y, mask = make_example(grid, jax.lax.stop_gradient(psi), tcfg)
        train, value = update(train, Batch(x.astype(jnp.float32), y.astype(jnp.float32), mask))
        metrics = dict(loss=value, converged_fraction=jnp.mean(info["converged"].astype(jnp.float32)),
                       residual_max=jnp.max(info["residual"]))
        return (train, key), metrics

    return jax.jit(step, donate_argnums=(0,))
