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

from bec_jax.optim import make_gradient_step
from bec_jax.quantum.fidelity import DEFAULT_EPS, fidelity_loss, l2_state_loss
from bec_jax.quantum.schrodinger1d import (
    Grid1D,
    box_eigenstate,
    dipole_potentials,
    evolve,
    random_states,
)

__all__ = [
    "DTYPES",
    "METHODS",
    "OPTIMIZERS",
    "REDUCTIONS",
    "TIME_LOSSES",
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
    "make_optimizer",
    "make_prediction_data",
    "method_loss",
    "mlp_apply",
    "mlp_param_count",
    "per_sample_quantum_loss",
    "run_control",
    "run_prediction",
    "run_toy",
    "states_to_features",
    "toy_gradient",
]

#: Gradient types compared throughout: standard, mean-squared-error, modified.
METHODS = ("S", "L2", "M")
#: "adam" (the paper's), plain "sgd", and "momentum" (SGD with momentum 0.9).
OPTIMIZERS = ("adam", "sgd", "momentum")
#: How M's factor 1/sqrt(1 - L) enters a minibatch: "sample" (per sample, the paper's
#: definition) or "batch" (one factor from the batch-mean loss: a global rescale).
REDUCTIONS = ("sample", "batch")
#: Control loss on the final state only ("final", the paper's) or on every
#: simulator state, summed ("sum") or averaged ("mean") over the time steps.
TIME_LOSSES = ("final", "sum", "mean")
#: Network, state and simulator precision.
DTYPES = ("float32", "float64")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_positive_float(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def method_loss(method: str, reduction: str = "sample") -> Callable:
    """Training loss for a method: f(psi_pred (B, n), psi_true (B, n) or (n,)) -> scalar.

    S: quantum loss; M: quantum loss with the modified gradient (same value);
    L2: 0.5 ||psi_pred - psi_true||^2 of the normalised states. All are means
    over the batch axes.

    reduction (only changes M): "sample" divides each sample's gradient by its own
    sqrt(1 - L_i) (the paper's G_M); "batch" divides the gradient of the batch-mean
    loss Lb by sqrt(1 - Lb), one factor per batch, i.e. S's gradient rescaled
    globally. The value is the batch-mean quantum loss either way.
    """
    _check_method(method)
    _check_choice("reduction", reduction, REDUCTIONS)
    if method == "L2":
        return l2_state_loss
    if method == "M" and reduction == "batch":
        return _batch_modified_loss
    return lambda p, t: fidelity_loss(p, t, modified=(method == "M"))


def _batch_modified_loss(psi_pred, psi_true):
    """Value: mean L; gradient: grad(mean L) / sqrt(1 - mean L), clamped like fidelity_loss."""
    value = fidelity_loss(psi_pred, psi_true)
    # clamp before the root: round-off can put the mean a few ulp above 1
    scale = jax.lax.stop_gradient(1.0 / jnp.sqrt(jnp.maximum(1.0 - value, DEFAULT_EPS**2)))
    return value * scale + jax.lax.stop_gradient(value - value * scale)


def make_optimizer(name: str, lr, momentum: float = 0.9) -> optax.GradientTransformation:
    """Adam, SGD or SGD with (heavy-ball) momentum at learning rate ``lr``.

    ``lr`` lives in the optimiser state (optax.inject_hyperparams), so runs with
    different rates share one compiled step and vmap together.
    """
    _check_choice("optimizer", name, OPTIMIZERS)
    if name == "adam":
        return optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    if name == "sgd":
        return optax.inject_hyperparams(optax.sgd)(learning_rate=lr)
    return optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=momentum)


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
      quantum loss on held-out data, or None. seeds: the seeds used (one per
      run). lrs: (runs,) learning rate of each run. params: the trained networks,
      numpy leaves with a leading runs axis (``init_mlp`` layout per run).
    """

    eval_loss: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray | None
    seeds: tuple[int, ...]
    lrs: np.ndarray | None = None
    params: list | None = None


def _fit(
    *,
    init_fn: Callable,
    loss_fn: Callable,
    eval_fn: Callable,
    test_fn: Callable | None,
    data,
    batch_size: int,
    epochs: int,
    lr: float | Sequence[float],
    seeds: Sequence[int],
    chunk: int,
    desc: str,
    progress: bool,
    optimizer: str = "adam",
) -> TrainResult:
    """Minibatch training of all runs at once (vmap), `chunk` epochs per jit call.

    One run per entry of ``seeds``; ``lr`` is one learning rate for all runs or
    one per run (same length as seeds). data: pytree of arrays with a common
    leading sample axis; each epoch is a fresh permutation split into
    len // batch_size minibatches (remainder dropped).
    """
    from tqdm.auto import tqdm

    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must be a non-empty sequence of integers, got ()")
    lrs = np.broadcast_to(np.asarray(lr, np.float64), (len(seeds),)) if np.ndim(lr) == 0 \
        else np.asarray(lr, np.float64)
    if lrs.shape != (len(seeds),) or not np.all(np.isfinite(lrs) & (lrs > 0)):
        raise ValueError(f"lr must be > 0, one value or one per seed ({len(seeds)}), got {lr!r}")
    _check_positive_int("chunk", chunk)
    n = jax.tree.leaves(data)[0].shape[0]
    n_batches = n // batch_size
    if n_batches < 1:
        raise ValueError(f"batch_size={batch_size} exceeds the number of samples {n}")
    # the rate passed here is a placeholder: each run's own rate is in its state
    tx = make_optimizer(optimizer, float(lrs[0]))
    adam_step = make_gradient_step(loss_fn, tx)

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

    def init(seed, rate):
        k_init, k_shuffle = jax.random.split(jax.random.PRNGKey(seed))
        params = init_fn(k_init)
        return params, make_optimizer(optimizer, rate).init(params), k_shuffle

    # jit even one-off calls: eager vmap would compile every primitive separately.
    dtype = jax.tree.leaves(jax.eval_shape(init_fn, jax.random.PRNGKey(0)))[0].dtype
    params, opt, key = jax.jit(jax.vmap(init))(jnp.asarray(seeds), jnp.asarray(lrs, dtype))
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
        lrs=lrs.copy(),
        params=jax.tree.map(np.asarray, params),
    )


def _check_training_options(config) -> None:
    _check_choice("optimizer", config.optimizer, OPTIMIZERS)
    _check_choice("reduction", config.reduction, REDUCTIONS)
    _check_choice("dtype", config.dtype, DTYPES)


def _complex(config):
    return jnp.complex128 if config.dtype == "float64" else jnp.complex64


def _run_lrs(config, seeds, lrs):
    """Per-run rates: config.lr for every seed, or ``lrs`` (one per seed)."""
    if lrs is None:
        return config.lr
    lrs = tuple(float(r) for r in lrs)
    if len(lrs) != len(tuple(seeds)):
        raise ValueError(f"lrs must have one rate per seed ({len(tuple(seeds))}), got {len(lrs)}")
    return lrs


def per_sample_quantum_loss(psi_pred, psi_true) -> jax.Array:
    """Quantum loss per sample, (B, n) x (B, n) or (n,) -> (B,)."""
    return fidelity_loss(psi_pred, psi_true, reduction="none")


# -------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class PredictionConfig:
    """Fig. 2a: learn psi_k -> psi_{k+1} of the free (V = 0) box.

    Sizes default to the paper's: 20-point grid, dt = 0.2, 100 trajectories of
    100 steps (10 000 pairs), 2 hidden layers of 64 (9 384 parameters), Adam
    lr 0.005, batch 200. ``test_trajectories`` more trajectories (other seed)
    are held out. ``n_modes``: random initial states mix the lowest box modes.
    Ablation options (defaults are the paper's): ``optimizer`` in OPTIMIZERS,
    ``reduction`` in REDUCTIONS (see ``method_loss``), ``dtype`` in DTYPES
    (float64 runs under a local ``jax.enable_x64``).
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
    optimizer: str = "adam"
    reduction: str = "sample"
    dtype: str = "float32"

    def __post_init__(self):
        _check_positive_float("dt", self.dt)
        _check_positive_float("lr", self.lr)
        _check_training_options(self)
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

    Returns (inputs, targets), arrays of shape (n_traj * steps, n): complex64, or
    complex128 for ``config.dtype == "float64"`` (call it under jax.enable_x64).
    """
    nt = config.n_trajectories if n_trajectories is None else n_trajectories
    _check_positive_int("n_trajectories", nt)
    key = jax.random.PRNGKey(config.data_seed) if key is None else key
    return _prediction_data(config.grid, config.dt, config.steps, config.n_modes, nt, key,
                            jnp.dtype(_complex(config)))


@partial(jax.jit, static_argnums=(0, 2, 3, 4, 6))
def _prediction_data(grid: Grid1D, dt, steps: int, n_modes: int, nt: int, key, dtype):
    # static on the data-defining fields only, so configs differing in training
    # settings share one compilation
    psi0 = random_states(key, grid, (nt,), n_modes=n_modes, dtype=dtype)
    potentials = jnp.zeros((steps, grid.n), jnp.finfo(dtype).dtype)
    _, traj = evolve(grid, psi0, potentials, dt=dt, trajectory=True)
    return traj[:-1].reshape(-1, grid.n), traj[1:].reshape(-1, grid.n)


def run_prediction(
    config: PredictionConfig, method: str, seeds: Sequence[int] = (0, 1, 2), *,
    chunk: int = 10, progress: bool = False, lrs: Sequence[float] | None = None,
) -> TrainResult:
    """Train the next-state network with one method for all seeds (vmapped).

    lrs: optional learning rate per run (same length as seeds, seeds may repeat),
    so a learning-rate sweep is one compiled program; default config.lr.
    """
    _check_method(method)
    n_pairs = config.n_trajectories * config.steps
    if config.batch_size > n_pairs:
        raise ValueError(f"batch_size={config.batch_size} exceeds the number of samples {n_pairs}")
    lr = _run_lrs(config, seeds, lrs)
    with jax.enable_x64(config.dtype == "float64"):
        return _run_prediction(config, method, seeds, chunk, progress, lr)


def _run_prediction(config, method, seeds, chunk, progress, lr) -> TrainResult:
    inputs, targets = make_prediction_data(config)
    test = None
    if config.test_trajectories:
        test = make_prediction_data(
            config, config.test_trajectories, jax.random.PRNGKey(config.data_seed + 1)
        )
    loss = method_loss(method, config.reduction)

    def predict(params, psi):
        return features_to_states(mlp_apply(params, states_to_features(psi)))

    def quantum(params, pair):
        return fidelity_loss(predict(params, pair[0]), pair[1])

    return _fit(
        init_fn=lambda k: init_mlp(k, config.sizes, config.dtype),
        loss_fn=lambda p, b: loss(predict(p, b[0]), b[1]),
        eval_fn=lambda p: quantum(p, (inputs, targets)),
        test_fn=(lambda p: quantum(p, test)) if test is not None else None,
        data=(inputs, targets),
        batch_size=config.batch_size,
        epochs=config.epochs,
        lr=lr,
        seeds=seeds,
        chunk=chunk,
        desc=f"prediction {method}",
        progress=progress,
        optimizer=config.optimizer,
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
    Ablation options (defaults are the paper's): ``optimizer``, ``reduction`` and
    ``dtype`` as in ``PredictionConfig``; ``time_loss`` in TIME_LOSSES (the loss of
    the final state, or of every simulator state summed / averaged over time);
    ``target_mode`` 0 draws a random target like the initial states, k >= 1 makes
    the target box eigenstate k (a harder target for high k).
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
    optimizer: str = "adam"
    reduction: str = "sample"
    dtype: str = "float32"
    time_loss: str = "final"
    target_mode: int = 0

    def __post_init__(self):
        _check_positive_float("dt", self.dt)
        _check_positive_float("lr", self.lr)
        _check_positive_float("u_scale", self.u_scale)
        _check_training_options(self)
        _check_choice("time_loss", self.time_loss, TIME_LOSSES)
        if not isinstance(self.target_mode, (int, np.integer)) or isinstance(self.target_mode, bool) \
                or not 0 <= self.target_mode <= self.grid.n:
            raise ValueError(f"target_mode must be an integer in [0, {self.grid.n}], "
                             f"got {self.target_mode!r}")
        for name in ("sim_steps", "n_initial", "hidden", "batch_size", "epochs", "n_modes"):
            _check_positive_int(name, getattr(self, name))
        if self.n_modes > self.grid.n:
            raise ValueError(f"n_modes must be in [1, {self.grid.n}], got {self.n_modes}")

    @property
    def sizes(self) -> tuple[int, ...]:
        return (2 * self.grid.n, self.hidden, self.hidden, self.sim_steps)


def make_control_data(config: ControlConfig):
    """(initial states (n_initial, n), target state (n,)), norm 1; complex64, or
    complex128 for ``config.dtype == "float64"`` (call it under jax.enable_x64)."""
    return _control_data(config.grid, config.n_initial, config.n_modes, config.data_seed,
                         config.target_mode, jnp.dtype(_complex(config)))


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _control_data(grid: Grid1D, n_initial: int, n_modes: int, seed: int, target_mode: int,
                  dtype):
    k0, k1 = jax.random.split(jax.random.PRNGKey(seed))
    psi0 = random_states(k0, grid, (n_initial,), n_modes=n_modes, dtype=dtype)
    if target_mode:
        target = box_eigenstate(grid, target_mode, dtype)
    else:
        target = random_states(k1, grid, (), n_modes=n_modes, dtype=dtype)
    return psi0, target


@partial(jax.jit, static_argnums=0)
def control_final_states(config: ControlConfig, params, psi0: jax.Array) -> jax.Array:
    """Network -> u(t) -> simulator. psi0 (B, n) -> psi_T (B, n)."""
    u = config.u_scale * mlp_apply(params, states_to_features(psi0))  # (B, sim_steps)
    v = dipole_potentials(config.grid, u)  # (sim_steps, B, n)
    return evolve(config.grid, psi0, v, dt=config.dt, checkpoint=config.checkpoint)


def _control_loss(config: ControlConfig, method: str, target: jax.Array) -> Callable:
    """loss(params, psi0 batch) of the control task for config.time_loss."""
    loss = method_loss(method, config.reduction)
    if config.time_loss == "final":
        return lambda p, psi0: loss(control_final_states(config, p, psi0), target)

    def over_time(p, psi0):
        u = config.u_scale * mlp_apply(p, states_to_features(psi0))
        v = dipole_potentials(config.grid, u)
        _, states = evolve(config.grid, psi0, v, dt=config.dt, checkpoint=config.checkpoint,
                           trajectory=True)
        # states[1:]: (sim_steps, B, n); the method's batch reduction runs over (time, sample)
        mean = loss(states[1:], target)
        return mean * config.sim_steps if config.time_loss == "sum" else mean

    return over_time


def make_control_train_step(config: ControlConfig, method: str, target: jax.Array):
    """Pure Adam training step of the control task; jit it whole.

    Returns (init, step): init(key) -> (params, opt_state);
    step(params, opt_state, psi0_batch (B, n)) -> (params, opt_state, loss).
    Network, 50 Crank–Nicolson steps, loss and optimiser update trace into one
    function, so ``jax.jit(step)`` compiles the full graph.
    """
    _check_method(method)
    tx = optax.adam(config.lr) if config.optimizer == "adam" else make_optimizer(
        config.optimizer, config.lr)

    def init(key):
        params = init_mlp(key, config.sizes, config.dtype)
        return params, tx.init(params)

    step = make_gradient_step(_control_loss(config, method, target), tx)
    return init, step


def run_control(
    config: ControlConfig, method: str, seeds: Sequence[int] = (0, 1, 2), *,
    chunk: int = 10, progress: bool = False, lrs: Sequence[float] | None = None,
) -> TrainResult:
    """Train the control network with one method for all seeds (vmapped).

    lrs: optional learning rate per run, as in ``run_prediction``.
    """
    _check_method(method)
    if config.batch_size > config.n_initial:
        raise ValueError(
            f"batch_size={config.batch_size} exceeds the number of samples {config.n_initial}"
        )
    lr = _run_lrs(config, seeds, lrs)
    with jax.enable_x64(config.dtype == "float64"):
        return _run_control(config, method, seeds, chunk, progress, lr)


def _run_control(config, method, seeds, chunk, progress, lr) -> TrainResult:
    psi0, target = make_control_data(config)

    # loss_fn is exactly the loss of make_control_train_step (the benchmarked step)
    return _fit(
        init_fn=lambda k: init_mlp(k, config.sizes, config.dtype),
        loss_fn=_control_loss(config, method, target),
        eval_fn=lambda p: fidelity_loss(control_final_states(config, p, psi0), target),
        test_fn=None,
        data=psi0,
        batch_size=config.batch_size,
        epochs=config.epochs,
        lr=lr,
        seeds=seeds,
        chunk=chunk,
        desc=f"control {method}",
        progress=progress,
        optimizer=config.optimizer,
    )
