"""The three experiments of Schnell & Thuerey (2023), as importable functions.

* ``run_toy``: gradient descent on v(theta) = (cos theta, sin theta) towards
  w = (1, 0) with the standard (S), mean-squared-error (L2) and modified (M)
  gradients (paper Fig. 1).
* ``run_prediction``: a fully connected network learns one Crank–Nicolson step
  of the 1-D Schrödinger equation from state/next-state pairs (Fig. 2a).
* ``run_control``: a network maps an initial state to a control u(t) of the
  potential V = u(t) x; 50 simulator steps are differentiated end to end and the
  final state is compared with one target state (Fig. 2b).

Every method is *trained* with its own loss (S: ``fidelity_loss``, M:
``fidelity_loss(modified=True)``, L2: ``l2_state_loss``) and *scored* with the
quantum loss L = 1 - |<psi, psi_target>|^2. Networks are plain JAX pytrees (a
list of {"w", "b"} dicts), so all seeds of a method train in one ``jax.vmap`` and
each chunk of epochs (network, simulator, loss and Adam) is one jitted call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bec_jax.quantum.fidelity import fidelity_loss, l2_state_loss
from bec_jax.quantum.schrodinger1d import (
    Grid1D,
    dipole_potentials,
    evolve,
    random_states,
)

__all__ = [
    "METHODS",
    "ControlConfig",
    "PredictionConfig",
    "ToyConfig",
    "ToyResult",
    "TrainResult",
    "control_final_states",
    "features_to_states",
    "init_mlp",
    "make_control_data",
    "make_control_train_step",
    "make_prediction_data",
    "method_loss",
    "mlp_apply",
    "mlp_param_count",
    "run_control",
    "run_prediction",
    "run_toy",
    "states_to_features",
    "toy_gradient",
]

#: Gradient types compared throughout: standard, mean-squared-error, modified.
METHODS = ("S", "L2", "M")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_positive_float(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def method_loss(method: str) -> Callable:
    """Training loss for a method: f(psi_pred (B, n), psi_true (B, n) or (n,)) -> scalar.

    S: quantum loss; M: quantum loss with the modified gradient (same value);
    L2: 0.5 ||psi_pred - psi_true||^2 of the normalised states.
    """
    _check_method(method)
    if method == "L2":
        return l2_state_loss
    return lambda p, t: fidelity_loss(p, t, modified=(method == "M"))


# --------------------------------------------------------------------------- toy


@dataclass(frozen=True)
class ToyConfig:
    """Fig. 1 toy problem: start slightly below pi/2 (the orthogonal point).

    theta0: initial angle (rad); lr: gradient-descent step; steps: iterations;
    dtype: "float64" (default; run under a local jax.enable_x64 so the loss curve
    is not cut off at float32 round-off, 1 - cos^2 ~ 1e-7) or "float32".
    """

    theta0: float = math.pi / 2 - 0.01
    lr: float = 0.1
    steps: int = 60
    dtype: str = "float64"

    def __post_init__(self):
        if not math.isfinite(self.theta0):
            raise ValueError(f"theta0 must be finite, got {self.theta0!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        _check_positive_float("lr", self.lr)
        _check_positive_int("steps", self.steps)


class ToyResult(NamedTuple):
    """Per method (dict keyed by METHODS): arrays of shape (steps + 1,).

    loss: quantum loss 1 - <v, w>^2 along the path; theta: angle (rad);
    xy: (steps + 1, 2) points v(theta) on the unit circle.
    """

    loss: dict
    theta: dict
    xy: dict


def _toy_vector(theta):
    return jnp.stack([jnp.cos(theta), jnp.sin(theta)])


def toy_gradient(method: str, theta) -> jax.Array:
    """d/dtheta of the method's loss through the library losses (scalar).

    Closed forms: S = sin(2 theta), L2 = sin(theta), M = 2 sin(theta) sign(cos theta).
    """
    w = jnp.array([1.0, 0.0], dtype=jnp.result_type(theta, jnp.float32))
    loss = method_loss(method)
    return jax.grad(lambda t: loss(_toy_vector(t), w))(theta)


def run_toy(config: ToyConfig = ToyConfig()) -> ToyResult:
    """Gradient descent theta <- theta - lr G for G in (S, L2, M); numpy results."""
    x64 = config.dtype == "float64"
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        w = jnp.array([1.0, 0.0], dtype)
        out = {k: {} for k in ToyResult._fields}
        for method in METHODS:

            def step(theta, _, method=method):
                new = theta - config.lr * toy_gradient(method, theta)
                return new, new

            theta0 = jnp.asarray(config.theta0, dtype)
            _, path = jax.jit(lambda t: jax.lax.scan(step, t, None, length=config.steps))(theta0)
            theta = jnp.concatenate([theta0[None], path])
            xy = jax.vmap(_toy_vector)(theta)
            out["theta"][method] = np.asarray(theta)
            out["xy"][method] = np.asarray(xy)
            out["loss"][method] = np.asarray(fidelity_loss(xy, w, reduction="none"))
    return ToyResult(**out)


# ---------------------------------------------------------------------- networks


def init_mlp(key: jax.Array, sizes: Sequence[int], dtype=jnp.float32) -> list[dict]:
    """Fully connected net: LeCun-normal weights N(0, 1/fan_in), zero biases.

    sizes = (in, hidden_1, ..., out); returns [{"w": (in, out), "b": (out,)}, ...].
    """
    if len(sizes) < 2 or any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
        raise ValueError(f"sizes must be >= 2 positive integers, got {sizes!r}")
    return _init_mlp(key, tuple(int(s) for s in sizes), jnp.dtype(dtype))


@partial(jax.jit, static_argnums=(1, 2))
def _init_mlp(key, sizes: tuple[int, ...], dtype):
    # One normal draw for all weights: a single threefry kernel compiles ~3x faster
    # than one truncated-normal initializer per layer.
    shapes = list(zip(sizes[:-1], sizes[1:]))
    flat = jax.random.normal(key, (sum(a * b for a, b in shapes),), dtype)
    params, start = [], 0
    for a, b in shapes:
        w = flat[start : start + a * b].reshape(a, b) / jnp.sqrt(jnp.asarray(a, dtype))
        params.append({"w": w, "b": jnp.zeros((b,), dtype)})
        start += a * b
    return params


def mlp_apply(params: list[dict], x: jax.Array) -> jax.Array:
    """tanh hidden layers, linear output. x (..., in) -> (..., out)."""
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def mlp_param_count(sizes: Sequence[int]) -> int:
    """Number of weights and biases of ``init_mlp(key, sizes)``."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def states_to_features(psi: jax.Array) -> jax.Array:
    """Complex (..., n) -> real (..., 2n): [Re psi, Im psi]."""
    return jnp.concatenate([psi.real, psi.imag], axis=-1)


def features_to_states(f: jax.Array) -> jax.Array:
    """Real (..., 2n) -> complex (..., n); inverse of ``states_to_features``."""
    n = f.shape[-1] // 2
    return jax.lax.complex(f[..., :n], f[..., n:])


# ----------------------------------------------------------------- shared trainer


class TrainResult(NamedTuple):
    """Training history of one method, all seeds.

    eval_loss: (seeds, epochs + 1) quantum loss on the full training set, before
      training and after each epoch. train_loss: (seeds, epochs) mean minibatch
      value of the method's own training loss. test_loss: (seeds, epochs + 1)
      quantum loss on held-out data, or None. seeds: the seeds used.
    """

    eval_loss: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray | None
    seeds: tuple[int, ...]


def _adam_step(loss_fn: Callable, tx: optax.GradientTransformation) -> Callable:
    """step(params, opt_state, batch) -> (params, opt_state, loss) for loss_fn(params, batch)."""

    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def _fit(
    *,
    init_fn: Callable,
    loss_fn: Callable,
    eval_fn: Callable,
    test_fn: Callable | None,
    data,
    batch_size: int,
    epochs: int,
    lr: float,
    seeds: Sequence[int],
    chunk: int,
    desc: str,
    progress: bool,
) -> TrainResult:
    """Adam minibatch training of all seeds at once (vmap), `chunk` epochs per jit call.

    data: pytree of arrays with a common leading sample axis; each epoch is a fresh
    permutation split into len // batch_size minibatches (remainder dropped).
    """
    from tqdm.auto import tqdm

    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must be a non-empty sequence of integers, got ()")
    _check_positive_int("chunk", chunk)
    n = jax.tree.leaves(data)[0].shape[0]
    n_batches = n // batch_size
    if n_batches < 1:
        raise ValueError(f"batch_size={batch_size} exceeds the number of samples {n}")
    tx = optax.adam(lr)
    adam_step = _adam_step(loss_fn, tx)

    def train_step(carry, batch):
        params, opt, loss = adam_step(*carry, batch)
        return (params, opt), loss

    def epoch(carry, _):
        params, opt, key = carry
        key, sub = jax.random.split(key)
        idx = jax.random.permutation(sub, n)[: n_batches * batch_size]
        batches = jax.tree.map(lambda a: a[idx.reshape(n_batches, batch_size)], data)
        (params, opt), losses = jax.lax.scan(train_step, (params, opt), batches)
        test = test_fn(params) if test_fn is not None else jnp.zeros(())
        return (params, opt, key), (jnp.mean(losses), eval_fn(params), test)

    def run(params, opt, key, length):
        return jax.lax.scan(epoch, (params, opt, key), None, length=length)

    run_chunk = jax.jit(jax.vmap(run, in_axes=(0, 0, 0, None)), static_argnums=3)

    def init(seed):
        k_init, k_shuffle = jax.random.split(jax.random.PRNGKey(seed))
        params = init_fn(k_init)
        return params, tx.init(params), k_shuffle

    # jit even one-off calls: eager vmap would compile every primitive separately.
    params, opt, key = jax.jit(jax.vmap(init))(jnp.asarray(seeds))
    evals = [np.asarray(jax.jit(jax.vmap(eval_fn))(params))[:, None]]
    tests = [np.asarray(jax.jit(jax.vmap(test_fn))(params))[:, None]] if test_fn else []
    trains = []
    with tqdm(total=epochs, desc=desc, disable=not progress, leave=False) as bar:
        done = 0
        while done < epochs:
            length = min(chunk, epochs - done)
            (params, opt, key), (tr, ev, te) = run_chunk(params, opt, key, length)
            trains.append(np.asarray(tr))
            evals.append(np.asarray(ev))
            if test_fn:
                tests.append(np.asarray(te))
            done += length
            bar.update(length)
            bar.set_postfix(loss=f"{float(np.mean(evals[-1][:, -1])):.3g}")
    return TrainResult(
        eval_loss=np.concatenate(evals, axis=1),
        train_loss=np.concatenate(trains, axis=1),
        test_loss=np.concatenate(tests, axis=1) if test_fn else None,
        seeds=seeds,
    )


# -------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class PredictionConfig:
    """Fig. 2a: learn psi_k -> psi_{k+1} of the free (V = 0) box.

    Sizes default to the paper's: 20-point grid, dt = 0.2, 100 trajectories of
    100 steps (10 000 pairs), 2 hidden layers of 64 (9 384 parameters), Adam
    lr 0.005, batch 200. ``test_trajectories`` more trajectories (other seed)
    are held out. ``n_modes``: random initial states mix the lowest box modes.
    """

    grid: Grid1D = field(default_factory=Grid1D)
    dt: float = 0.2
    n_trajectories: int = 100
    steps: int = 100
    test_trajectories: int = 20
    n_modes: int = 5
    hidden: int = 64
    lr: float = 0.005
    batch_size: int = 200
    epochs: int = 100
    data_seed: int = 1234

    def __post_init__(self):
        _check_positive_float("dt", self.dt)
        _check_positive_float("lr", self.lr)
        for name in ("n_trajectories", "steps", "hidden", "batch_size", "epochs"):
            _check_positive_int(name, getattr(self, name))
        _check_positive_int("test_trajectories", self.test_trajectories, 0)
        _check_positive_int("n_modes", self.n_modes)
        if self.n_modes > self.grid.n:
            raise ValueError(f"n_modes must be in [1, {self.grid.n}], got {self.n_modes}")

    @property
    def sizes(self) -> tuple[int, ...]:
        n2 = 2 * self.grid.n
        return (n2, self.hidden, self.hidden, n2)


def make_prediction_data(config: PredictionConfig, n_trajectories: int | None = None, key=None):
    """State/next-state pairs from free evolution of random states.

    Returns (inputs, targets), complex64 arrays of shape (n_traj * steps, n).
    """
    nt = config.n_trajectories if n_trajectories is None else n_trajectories
    _check_positive_int("n_trajectories", nt)
    key = jax.random.PRNGKey(config.data_seed) if key is None else key
    return _prediction_data(config.grid, config.dt, config.steps, config.n_modes, nt, key)


@partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _prediction_data(grid: Grid1D, dt, steps: int, n_modes: int, nt: int, key):
    # static on the data-defining fields only, so configs differing in training
    # settings share one compilation
    psi0 = random_states(key, grid, (nt,), n_modes=n_modes)
    potentials = jnp.zeros((steps, grid.n), jnp.float32)
    _, traj = evolve(grid, psi0, potentials, dt=dt, trajectory=True)
    return traj[:-1].reshape(-1, grid.n), traj[1:].reshape(-1, grid.n)


def run_prediction(
    config: PredictionConfig, method: str, seeds: Sequence[int] = (0, 1, 2), *,
    chunk: int = 10, progress: bool = False,
) -> TrainResult:
    """Train the next-state network with one method for all seeds (vmapped)."""
    _check_method(method)
    n_pairs = config.n_trajectories * config.steps
    if config.batch_size > n_pairs:
        raise ValueError(f"batch_size={config.batch_size} exceeds the number of samples {n_pairs}")
    inputs, targets = make_prediction_data(config)
    test = None
    if config.test_trajectories:
        test = make_prediction_data(
            config, config.test_trajectories, jax.random.PRNGKey(config.data_seed + 1)
        )
    loss = method_loss(method)

    def predict(params, psi):
        return features_to_states(mlp_apply(params, states_to_features(psi)))

    def quantum(params, pair):
        return fidelity_loss(predict(params, pair[0]), pair[1])

    return _fit(
        init_fn=lambda k: init_mlp(k, config.sizes),
        loss_fn=lambda p, b: loss(predict(p, b[0]), b[1]),
        eval_fn=lambda p: quantum(p, (inputs, targets)),
        test_fn=(lambda p: quantum(p, test)) if test is not None else None,
        data=(inputs, targets),
        batch_size=config.batch_size,
        epochs=config.epochs,
        lr=config.lr,
        seeds=seeds,
        chunk=chunk,
        desc=f"prediction {method}",
        progress=progress,
    )


# ----------------------------------------------------------------------- control


@dataclass(frozen=True)
class ControlConfig:
    """Fig. 2b: steer 100 random initial states to one target with V = u(t) x.

    Paper sizes: 20-point grid on [0, 2], dt = 0.2, 50 simulator steps, 100
    initial states, 1 target, Adam lr 0.005, batch 10; network 40 -> 64 -> 64 ->
    50 (10 034 parameters) outputs u_k, k = 0..49 (energy / length units).
    ``u_scale`` multiplies the network output; 1 (no rescaling) trains stably,
    10 made Adam at lr 0.005 spiky. ``checkpoint`` is passed to ``evolve``.
    """

    grid: Grid1D = field(default_factory=Grid1D)
    dt: float = 0.2
    sim_steps: int = 50
    n_initial: int = 100
    n_modes: int = 5
    hidden: int = 64
    u_scale: float = 1.0
    lr: float = 0.005
    batch_size: int = 10
    epochs: int = 300
    data_seed: int = 4321
    checkpoint: bool | int = False

    def __post_init__(self):
        _check_positive_float("dt", self.dt)
        _check_positive_float("lr", self.lr)
        _check_positive_float("u_scale", self.u_scale)
        for name in ("sim_steps", "n_initial", "hidden", "batch_size", "epochs", "n_modes"):
            _check_positive_int(name, getattr(self, name))
        if self.n_modes > self.grid.n:
            raise ValueError(f"n_modes must be in [1, {self.grid.n}], got {self.n_modes}")

    @property
    def sizes(self) -> tuple[int, ...]:
        return (2 * self.grid.n, self.hidden, self.hidden, self.sim_steps)


def make_control_data(config: ControlConfig):
    """(initial states (n_initial, n), target state (n,)), complex64, norm 1."""
    return _control_data(config.grid, config.n_initial, config.n_modes, config.data_seed)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _control_data(grid: Grid1D, n_initial: int, n_modes: int, seed: int):
    k0, k1 = jax.random.split(jax.random.PRNGKey(seed))
    psi0 = random_states(k0, grid, (n_initial,), n_modes=n_modes)
    target = random_states(k1, grid, (), n_modes=n_modes)
    return psi0, target


@partial(jax.jit, static_argnums=0)
def control_final_states(config: ControlConfig, params, psi0: jax.Array) -> jax.Array:
    """Network -> u(t) -> simulator. psi0 (B, n) -> psi_T (B, n)."""
    u = config.u_scale * mlp_apply(params, states_to_features(psi0))  # (B, sim_steps)
    v = dipole_potentials(config.grid, u)  # (sim_steps, B, n)
    return evolve(config.grid, psi0, v, dt=config.dt, checkpoint=config.checkpoint)


def make_control_train_step(config: ControlConfig, method: str, target: jax.Array):
    """Pure Adam training step of the control task; jit it whole.

    Returns (init, step): init(key) -> (params, opt_state);
    step(params, opt_state, psi0_batch (B, n)) -> (params, opt_state, loss).
    Network, 50 Crank–Nicolson steps, loss and optimiser update trace into one
    function, so ``jax.jit(step)`` compiles the full graph.
    """
    _check_method(method)
    loss = method_loss(method)
    tx = optax.adam(config.lr)

    def init(key):
        params = init_mlp(key, config.sizes)
        return params, tx.init(params)

    step = _adam_step(lambda p, psi0: loss(control_final_states(config, p, psi0), target), tx)
    return init, step


def run_control(
    config: ControlConfig, method: str, seeds: Sequence[int] = (0, 1, 2), *,
    chunk: int = 10, progress: bool = False,
) -> TrainResult:
    """Train the control network with one method for all seeds (vmapped)."""
    _check_method(method)
    if config.batch_size > config.n_initial:
        raise ValueError(
            f"batch_size={config.batch_size} exceeds the number of samples {config.n_initial}"
        )
    psi0, target = make_control_data(config)
    loss = method_loss(method)

    def final(params, states):
        return control_final_states(config, params, states)

    # loss_fn is exactly the loss of make_control_train_step (the benchmarked step)
    return _fit(
        init_fn=lambda k: init_mlp(k, config.sizes),
        loss_fn=lambda p, b: loss(final(p, b), target),
        eval_fn=lambda p: fidelity_loss(final(p, psi0), target),
        test_fn=None,
        data=psi0,
        batch_size=config.batch_size,
        epochs=config.epochs,
        lr=config.lr,
        seeds=seeds,
        chunk=chunk,
        desc=f"control {method}",
        progress=progress,
    )
