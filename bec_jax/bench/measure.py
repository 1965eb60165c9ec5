"""What the solver benchmarks time, and how: contenders, each in its own process.

A *contender* is one program timed on one *workload* (grid size n, batch,
dtype, steps per call):

  bec_jax            ``bj.imaginary_time`` as a user calls it: the batch split
                     over the local devices that divide it, each device's slice
                     run ``cpu_chunk`` states at a time on a CPU
  bec_jax_one_device the same with ``shard=False``
  bec_jax_whole      split, but the whole slice in every pass (``chunk=None``:
                     what a GPU runs)
  fft                the bare four 1-D FFT passes a step needs, in JAX, split
                     alike, over the whole slice (the step's floor)
  fft_one_device     the same on one device
  fft_chunked        the FFT passes chunked as ``bec_jax`` is (like with like)
  numpy              the same split step in NumPy (``numpy.fft``, one thread)
  scipy              the same in NumPy with ``scipy.fft`` (``workers=-1``: all cores)
  ground_state       ``bj.ground_state`` of a batch of (g, Ω) (``GroundStateWorkload``)

Every contender runs in its own worker process (``python -m
bec_jax.bench.worker``), is warmed up there (compiled, first call untimed),
and is then called one at a time, round by round, in turn with the others
(every contender once a round, in an order shuffled each round: ``round_orders``). Only one contender
runs at any moment, background load hits all of them alike, and no
contender shares another's thread pools, allocator or caches' warm state
(timed in one process, a NumPy baseline ran beside XLA's idle thread pools
and after JAX calls that had evicted its arrays). Ratios are medians of
same-round ratios.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

#: contenders of the split-step workload, and what each is (module doc)
STEP_CONTENDERS = ("bec_jax", "bec_jax_one_device", "bec_jax_whole", "fft", "fft_one_device", "fft_chunked",
                   "numpy", "scipy")
NUMPY_CONTENDERS = ("numpy", "scipy")
DTYPES = ("complex64", "complex128")
#: seconds between two timed calls: lets the previous contender's worker threads stop spinning
PAUSE_S = 0.02
#: prefix of the worker's protocol lines on stdout (anything else a library prints there is ignored)
TAG = "@bench "


@dataclasses.dataclass(frozen=True)
class StepWorkload:
    """Split steps of a batch of states: ``batch`` copies of a Gaussian on an ``n`` x ``n`` grid of side
    ``length`` (trap units), ``steps`` imaginary-time steps of ``dt`` per timed call, interaction ``g``,
    rotation ``omega``, states of ``dtype`` ("complex64" or "complex128")."""

    n: int
    batch: int
    steps: int = 20
    dtype: str = "complex64"
    length: float = 16.0
    g: float = 100.0
    omega: float = 0.8
    dt: float = 0.01

    def __post_init__(self):
        check_workload(self.n, self.batch, self.dtype)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {self.steps!r}")


@dataclasses.dataclass(frozen=True)
class GroundStateWorkload:
    """``batch`` ground states (``bj.ground_state``, ``n_starts`` starts each) of one (g, Ω) on an ``n`` x ``n``
    grid of side ``bj.box_length(g, omega)``, states of ``dtype``; ``coarsen`` > 1 relaxes each start on
    n/coarsen points first (``bj.PCG(coarsen=...)``, as ``bec-jax generate`` does at the paper preset)."""

    n: int
    batch: int
    dtype: str = "complex64"
    g: float = 100.0
    omega: float = 0.6
    n_starts: int | None = None
    seed: int = 0
    coarsen: int = 1

    def __post_init__(self):
        check_workload(self.n, self.batch, self.dtype)
        if self.coarsen != 1:  # imported only then: the NumPy workers stay free of JAX
            from bec_jax.gpe.grid import Grid

            Grid(self.n, 1.0).coarsened(self.coarsen)  # its ValueError names a bad factor
        if self.n_starts is not None and (not isinstance(self.n_starts, int) or self.n_starts < 1):
            raise ValueError(f"n_starts must be None or an int >= 1, got {self.n_starts!r}")
        if not (np.isfinite(self.g) and self.g >= 0):
            raise ValueError(f"g must be finite and >= 0, got {self.g!r}")
        if not abs(self.omega) < 1:
            raise ValueError(f"omega must satisfy |omega| < 1, got {self.omega!r}")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What ``bec-jax bench`` times.

    n: grid points per side (even, >= 16).
    batch: states per batch (>= 1).
    dtype: complex64 or complex128.
    steps: split steps per timed call (>= 1).
    repeats: timed calls per contender (>= 1); figures are medians.
    numpy: also time the NumPy step (numpy.fft, and scipy.fft on all cores).
    g: interaction of the ground states (>= 0, trap units).
    omega: rotation of the ground states, |omega| < 1 (units of the trap frequency).
    starts: starts per ground state (None: the solver's default).
    coarsen: relax each start on n/coarsen points first, then finish on n (1: the fine grid alone).
    step_only: time the split step only, no ground states.
    """

    n: int = 128
    batch: int = 16
    dtype: str = "complex64"
    steps: int = 20
    repeats: int = 5
    numpy: bool = False
    g: float = 100.0
    omega: float = 0.6
    starts: int | None = None
    coarsen: int = 1
    step_only: bool = False

    def __post_init__(self):
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be an int >= 1, got {self.repeats!r}")
        self.step_workload(), self.ground_state_workload()  # their checks name a bad value

    def step_workload(self) -> "StepWorkload":
        return StepWorkload(self.n, self.batch, steps=self.steps, dtype=self.dtype)

    def ground_state_workload(self) -> "GroundStateWorkload":
        return GroundStateWorkload(self.n, self.batch, dtype=self.dtype, g=self.g, omega=self.omega,
                                   n_starts=self.starts, coarsen=self.coarsen)


def check_workload(n, batch, dtype) -> None:
    """ValueError naming the bad value: n even and >= 16, batch >= 1, dtype complex64 or complex128."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 16 or n % 2:
        raise ValueError(f"n must be an even int >= 16, got {n!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")


def workload_from_dict(d: dict):
    kind = d.pop("kind")
    return {"step": StepWorkload, "ground_state": GroundStateWorkload}[kind](**d)


def workload_to_dict(w) -> dict:
    return {"kind": "step" if isinstance(w, StepWorkload) else "ground_state", **dataclasses.asdict(w)}


# ---------------------------------------------------------------------------------------------- the programs


def initial_states(w: StepWorkload) -> np.ndarray:
    """The workload's states: (batch, n, n) of ``w.dtype``, a Gaussian of width 2, indexed [b, y, x]."""
    x = -0.5 * w.length + (w.length / w.n) * np.arange(w.n)
    r2 = x[None, :] ** 2 + x[:, None] ** 2
    # order "C": astype of a broadcast array would keep its strides and make the batch the fastest axis
    return np.broadcast_to(np.exp(-r2 / 8), (w.batch, w.n, w.n)).astype(w.dtype, order="C")


def numpy_imaginary_time(psi: np.ndarray, w: StepWorkload, steps: int | None = None, fft: str = "scipy"):
    """The split step of ``bj.imaginary_time`` in NumPy, as lean as it honestly gets.

    Per step: one density pass that also gives the norm, one exponential (the nonlinear factor, with the
    normalisation folded in), four 1-D FFT passes (``fft="scipy"``: ``scipy.fft`` with ``workers=-1``, all
    cores; ``"numpy"``: ``numpy.fft``, one thread), each propagator one complex multiply by a precomputed
    exponential, all in place in ``w.dtype``. Consecutive steps alternate the sweep order (A B, B A) as the
    JAX step does, and the nonlinear factor is frozen at the step's start, so the results agree with
    ``bj.imaginary_time`` to round-off.

    psi: (batch, n, n) complex; returns the state after ``steps`` (default ``w.steps``) steps, normalised.
    """
    return numpy_stepper(w, fft)(psi, w.steps if steps is None else steps)


def numpy_stepper(w: StepWorkload, fft: str = "scipy"):
    """Factory behind ``numpy_imaginary_time``: the propagators are computed here, once."""
    if fft not in NUMPY_CONTENDERS:
        raise ValueError(f"fft must be one of {NUMPY_CONTENDERS}, got {fft!r}")
    cdt = np.dtype(w.dtype)
    rdt = np.finfo(cdt).dtype
    dx = w.length / w.n
    x = -0.5 * w.length + dx * np.arange(w.n)
    k = 2 * np.pi * np.fft.fftfreq(w.n, d=dx)
    # A(y, k_x) and B(k_y, x) of hamiltonian.rotation_symbols, as complex: one complex multiply per sweep
    ea = np.exp(-w.dt * (0.5 * k[None, :] ** 2 + w.omega * x[:, None] * k[None, :])).astype(cdt)
    eb = np.exp(-w.dt * (0.5 * k[:, None] ** 2 - w.omega * k[:, None] * x[None, :])).astype(cdt)
    log_ev = (-0.25 * w.dt * (x[None, :] ** 2 + x[:, None] ** 2)).astype(rdt)  # log e^{-dt V/2}
    c = -0.5 * w.dt * w.g
    area = dx * dx
    if fft == "scipy":
        import scipy.fft as sfft

        fwd = lambda p, ax: sfft.fft(p, axis=ax, overwrite_x=True, workers=-1)
        inv = lambda p, ax: sfft.ifft(p, axis=ax, overwrite_x=True, workers=-1)
    else:
        fwd = lambda p, ax: np.fft.fft(p, axis=ax, out=p)
        inv = lambda p, ax: np.fft.ifft(p, axis=ax, out=p)

    def sweep(p, e, ax):
        p = fwd(p, ax)
        np.multiply(p, e, out=p)
        return inv(p, ax)

    def run(psi, steps):
        phi = np.array(psi, dtype=cdt, order="C")  # a copy: the caller's array is not overwritten
        d, t = np.empty(phi.shape, rdt), np.empty(phi.shape, rdt)
        for s in range(steps):
            np.multiply(phi.real, phi.real, out=d)
            np.multiply(phi.imag, phi.imag, out=t)
            d += t  # |phi|²: the density and, summed, the norm
            s2 = 1.0 / (d.sum(axis=(-2, -1), keepdims=True) * area)  # phi / sqrt(norm) is the state
            # d = e^{-dt (V + g|ψ|²)/2} / sqrt(norm): a nonlinear half-step and the normalisation in one exp.
            # Both half-steps multiply by d, so phi ends the step scaled by 1/sqrt(norm) once too many: that
            # only moves the next norm to about 1/norm (bounded, no drift), which the next d corrects.
            d *= (c * s2).astype(rdt)
            d += log_ev
            d += (0.5 * np.log(s2)).astype(rdt)
            np.exp(d, out=d)
            phi *= d
            if s % 2 == 0:
                phi = sweep(sweep(phi, ea, -1), eb, -2)
            else:
                phi = sweep(sweep(phi, eb, -2), ea, -1)
            phi *= d
        d = np.sum(phi.real**2 + phi.imag**2, axis=(-2, -1), keepdims=True) * area
        return (phi / np.sqrt(d)).astype(cdt)

    return run


def fft_passes(steps: int, mesh=None, chunk=None):
    """The bare four 1-D FFT passes of ``steps`` split steps (along x, then along y, as JAX runs them), as one
    jitted program of a (batch, n, n) array, split over ``mesh`` as ``bj.imaginary_time`` splits; with
    ``chunk``, run over chunks of that many states as the solver runs on a CPU (``map_batch``)."""
    import jax
    import jax.numpy as jnp

    from bec_jax.gpe.sharding import map_batch, shard_batch

    def run(psi):
        def body(p, _):
            p = jnp.fft.ifft(jnp.fft.fft(p, axis=-1), axis=-1)
            return jnp.fft.ifft(jnp.fft.fft(p, axis=-2), axis=-2), None

        return jax.lax.scan(body, psi, None, length=steps)[0]

    return jax.jit(shard_batch(run if chunk is None else map_batch(run, chunk), mesh))


def make_call(contender: str, w, chunk="auto"):
    """(call, info): ``call()`` runs ``contender`` once on workload ``w`` and blocks until done; ``info`` says
    how it runs (devices, chunk, FFT library). ``chunk`` overrides the states per chunk of the chunked JAX
    contenders (default: what ``bj.imaginary_time`` picks)."""
    if contender in NUMPY_CONTENDERS:
        psi, run = initial_states(w), numpy_stepper(w, contender)
        fft = "scipy.fft (workers=-1)" if contender == "scipy" else "numpy.fft"
        return (lambda: run(psi, w.steps)), dict(devices=1, fft=fft, threads=os.cpu_count() if contender == "scipy"
                                                 else 1)
    import jax
    import jax.numpy as jnp

    import bec_jax as bj
    from bec_jax.gpe.sharding import batch_mesh, cpu_chunk, resolve_chunk

    if contender == "ground_state":
        grid = bj.Grid(w.n, float(bj.box_length(w.g, w.omega)))
        g, om = np.full(w.batch, w.g), np.full(w.batch, w.omega)
        key = jax.random.key(w.seed)
        result = {}

        def call():
            result["r"] = jax.block_until_ready(bj.ground_state(grid, g, om, key=key, n_starts=w.n_starts,
                                                                  coarsen=w.coarsen))

        call()
        r = result["r"]
        return call, dict(devices=len(r.psi.sharding.device_set), length=grid.length,
                          energy=float(np.min(r.energy)), converged=int(np.sum(np.asarray(r.converged))),
                          max_residual=float(np.max(np.asarray(r.residual))), vortices=np.asarray(r.vortices).tolist(),
                          n_starts=int(r.start_energies.shape[-1]))
    if contender not in STEP_CONTENDERS:
        raise ValueError(f"unknown contender {contender!r}; choose one of {STEP_CONTENDERS + ('ground_state',)}")
    grid = bj.Grid(w.n, w.length)
    psi = jax.device_put(jnp.asarray(initial_states(w)))
    split = not contender.endswith("_one_device")
    mesh = batch_mesh(w.batch) if split else None
    auto = cpu_chunk(w.n, np.dtype(w.dtype))
    c = resolve_chunk(chunk, auto)
    info = dict(devices=1 if mesh is None else mesh.size, backend=jax.default_backend())
    if contender.startswith("bec_jax"):
        c = None if contender == "bec_jax_whole" else c
        info["chunk"] = c
        call = lambda: bj.imaginary_time(grid, psi, w.g, w.omega, dt=w.dt, steps=w.steps, shard=split,
                                         chunk=c).block_until_ready()
    else:
        c = c if contender == "fft_chunked" else None
        info["chunk"] = c
        run = fft_passes(w.steps, mesh, c)
        call = lambda: run(psi).block_until_ready()
    call()  # compile
    return call, info


def check_numpy_matches(w: StepWorkload, steps: int = 4) -> float:
    """Max |ψ_numpy − ψ_bec_jax| after ``steps`` steps of one state of ``w`` (both FFT libraries); raises
    RuntimeError when it exceeds round-off (1e-4 in complex64, 1e-10 in complex128; the peak |ψ| is ~0.3)."""
    import jax.numpy as jnp

    import bec_jax as bj

    w1 = dataclasses.replace(w, batch=1)
    psi = initial_states(w1)
    ref = np.asarray(bj.imaginary_time(bj.Grid(w.n, w.length), jnp.asarray(psi), w.g, w.omega, dt=w.dt,
                                       steps=steps))
    err = max(float(np.max(np.abs(numpy_imaginary_time(psi, w1, steps, fft) - ref))) for fft in NUMPY_CONTENDERS)
    tol = 1e-4 if w.dtype == "complex64" else 1e-10
    if not err < tol:
        raise RuntimeError(f"the NumPy step differs from bj.imaginary_time by {err:.3g} (> {tol:g}) at n={w.n}: "
                           "a different scheme, not round-off")
    return err


# ------------------------------------------------------------------------------------------------- timing


def round_orders(names, repeats: int, seed: int = 0) -> list[list]:
    """The order of each of ``repeats`` timing rounds: every name once a round, shuffled anew each round (seeded,
    so a rerun repeats it). Shuffled, not rotated: a call can be slowed by the one before it (another
    framework's spinning threads, caches it evicted), and a rotation gives every contender the same
    predecessor in every round."""
    if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    names, rng = list(names), np.random.default_rng(seed)
    return [[names[i] for i in rng.permutation(len(names))] for _ in range(repeats)]


def interleaved_times(fns: dict, repeats: int, warmup: bool = True, seed: int = 0) -> dict:
    """Per-call wall times (s) of each function in ``fns`` ({name: fn() that returns when its work is done}),
    in this process, one call of each a round in ``round_orders`` (after one warm-up call each unless
    ``warmup=False``). Returns {name: np.ndarray of ``repeats`` seconds}, entry r from round r. For
    contenders of one kind (JAX programs against each other); a NumPy baseline against JAX goes through
    ``WorkerPool``."""
    for f in fns.values() if warmup else ():
        f()
    times = {k: [] for k in fns}
    for order in round_orders(fns, repeats, seed):
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: np.asarray(v) for k, v in times.items()}


class WorkerError(RuntimeError):
    """A benchmark worker process failed or stopped answering."""


class Worker:
    """One contender's process (``python -m bec_jax.bench.worker``), driven by JSON lines."""

    def __init__(self, cpu_devices: int | None = None, x64: bool = False):
        self.log = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, "-m", "bec_jax.bench.worker"]
        if cpu_devices is not None:
            cmd += ["--cpu-devices", str(cpu_devices)]
        if x64:
            cmd.append("--x64")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_package_root(),
                                                                        os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     bufsize=1, env=env)

    def send(self, msg: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._why("stopped")) from None

    def receive(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                reply = json.loads(line[len(TAG):])
                if "error" in reply:
                    raise WorkerError(f"benchmark worker: {reply['error']}")
                return reply
        raise WorkerError(self._why("exited"))

    def ask(self, msg: dict) -> dict:
        self.send(msg)
        return self.receive()

    def _why(self, what: str) -> str:
        self.log.seek(0)
        tail = [ln for ln in self.log.read().splitlines() if ln.strip()][-3:]
        return f"benchmark worker {what} (exit code {self.proc.poll()}): {' | '.join(tail) or 'no output'}"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"op": "quit"})
                self.proc.wait(timeout=30)
            except (WorkerError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _package_root() -> str:
    """The folder holding this ``bec_jax``, so that a worker imports the same code as its parent."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkerPool:
    """One worker process per contender name, kept across workloads (a context manager).

    ``measure(workload, contenders, repeats)`` sets every contender up on the workload (in parallel:
    imports and compilation, untimed), then times one call of each in turn, ``repeats`` rounds in
    ``round_orders`` (seeded by the number of earlier ``measure`` calls of this pool, so that repeated rows
    do not share one sequence of orders), with ``pause`` s between calls. Returns (times, infos, orders):
    per-call seconds (``np.ndarray`` of ``repeats``), the setup info of each contender, and the order of
    each round."""

    def __init__(self, cpu_devices: int | None = None, x64: bool = False, pause: float = PAUSE_S):
        self.cpu_devices, self.x64, self.pause = cpu_devices, x64, pause
        self.workers: dict[str, Worker] = {}
        self.measured = 0  # measure() calls so far: the seed of the next one's round orders

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for wk in self.workers.values():
            wk.close()
        self.workers.clear()

    def measure(self, workload, contenders, repeats: int, chunk="auto"):
        orders = round_orders(contenders, repeats, seed=self.measured)  # first: its ValueError names a bad repeats
        self.measured += 1
        for name in contenders:
            if name not in self.workers:
                self.workers[name] = Worker(self.cpu_devices, self.x64)
        spec = workload_to_dict(workload)
        for name in contenders:
            self.workers[name].send({"op": "setup", "contender": name, "workload": spec, "chunk": chunk})
        infos = {name: self.workers[name].receive() for name in contenders}
        times = {name: [] for name in contenders}
        for order in orders:
            for name in order:
                time.sleep(self.pause)
                times[name].append(self.workers[name].ask({"op": "time"})["s"])
        return {k: np.asarray(v) for k, v in times.items()}, infos, orders


def median_ratio(times: dict, a, b) -> float:
    """Median over rounds of time[a] / time[b] (calls of one round ran within seconds of each other)."""
    return float(np.median(np.asarray(times[a]) / np.asarray(times[b])))


def load_average() -> list[float]:
    """The host's 1-, 5- and 15-minute load averages (``os.getloadavg``)."""
    return [round(v, 2) for v in os.getloadavg()]


# ------------------------------------------------------------------------------------------------ results

#: (key, numerator, denominator) of the per-round ratios a split-step row reports, where both were timed
STEP_RATIOS = (
    ("bec_jax_over_fft", "bec_jax", "fft"),
    ("bec_jax_over_fft_one_device", "bec_jax_one_device", "fft_one_device"),
    # like with like: the step's cost beyond its FFT passes when both run chunked
    ("bec_jax_over_fft_chunked", "bec_jax", "fft_chunked"),
    ("whole_over_fft", "bec_jax_whole", "fft"),
    ("chunking_speedup", "bec_jax_whole", "bec_jax"),
    ("split_speedup", "bec_jax_one_device", "bec_jax"),
    ("numpy_fft_over_scipy_fft", "numpy", "scipy"),
)


def step_row(pool: WorkerPool, w: StepWorkload, contenders=STEP_CONTENDERS, repeats: int = 7, chunk="auto") -> dict:
    """Time the split-step contenders on ``w`` (``pool.measure``) and summarise: ms per step and state-steps/s
    (medians), the ``STEP_RATIOS``, and against the faster of the NumPy baselines (``numpy_baseline``, by
    median): ``speedup_vs_numpy`` (its time over bec_jax's, median of same-round ratios) and
    ``numpy_over_fft`` (the most a step could gain over NumPy if it cost nothing beyond its FFT passes).
    The host's load average is recorded before and after, and the order of every round (``round_orders``)."""
    contenders = tuple(contenders)
    unknown = set(contenders) - set(STEP_CONTENDERS)
    if unknown:
        raise ValueError(f"unknown split-step contenders {sorted(unknown)}; choose from {STEP_CONTENDERS}")
    load_before = load_average()
    numpy_err = check_numpy_matches(w) if set(contenders) & set(NUMPY_CONTENDERS) else None
    times, infos, orders = pool.measure(w, contenders, repeats, chunk)
    per_step = {k: v / w.steps for k, v in times.items()}
    row = dict(n=w.n, batch=w.batch, dtype=w.dtype, steps_per_call=w.steps, repeats=repeats, round_orders=orders,
               load_average_before=load_before, load_average_after=load_average(),
               info={k: v["info"] for k, v in infos.items()},
               ms_per_step={k: 1e3 * float(np.median(v)) for k, v in per_step.items()},
               state_steps_per_s={k: w.batch / float(np.median(v)) for k, v in per_step.items()})
    for key, a, b in STEP_RATIOS:
        if a in times and b in times:
            row[key] = median_ratio(times, a, b)
    present = [k for k in NUMPY_CONTENDERS if k in times]
    if present:
        base = min(present, key=lambda k: row["ms_per_step"][k])
        row.update(numpy_baseline=base, numpy_fft=infos[base]["info"]["fft"], numpy_max_abs_diff=numpy_err)
        for k, name in (("bec_jax", "speedup_vs_numpy"), ("bec_jax_one_device", "speedup_vs_numpy_one_device"),
                        ("fft", "numpy_over_fft")):
            if k in times:
                row[name] = median_ratio(times, base, k)
    return row


def ground_state_row(pool: WorkerPool, w: GroundStateWorkload, repeats: int = 5) -> dict:
    """Time ``bj.ground_state`` on ``w`` in its own process: median wall s of ``repeats`` compiled calls and
    ground states per second (``w.batch`` / median), with what the solver returned (energy, convergence)."""
    load_before = load_average()
    times, infos, _ = pool.measure(w, ("ground_state",), repeats)
    wall = float(np.median(times["ground_state"]))
    # the solver's info last: n_starts None (its default) becomes the number it ran
    return {**dataclasses.asdict(w), "repeats": repeats, "wall_s": wall, "wall_s_all": times["ground_state"].tolist(),
            "ground_states_per_s": w.batch / wall, "load_average_before": load_before,
            "load_average_after": load_average(), **infos["ground_state"]["info"]}
