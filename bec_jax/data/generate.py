"""Resumable, batched generation of ground-state datasets.

Samples: ``n_groups`` (g, Ω) groups drawn uniformly from the configured box,
``states_per_group`` samples per group, each solved from its own seeded
initial guesses (so samples of a group differ, e.g. by the orientation of the
vortex lattice). Sample i has seed ``seed * 2**32 + i`` (its key is
``fold_in(key(seed), i)``), so its result does not depend on batching or on
resuming.

Crash safety: each batch is written to ``<out>.partial/batch_<first>_<end>.h5``
(its sample positions, [first, end)) under a temporary name and renamed when
complete; a rerun skips the samples of the complete batches and solves the
rest, so interrupting (Ctrl-C, SIGKILL) loses at most the batch in flight and
never leaves half-written samples. When every sample is saved the batches are
merged into ``<out>`` (again via a temporary name) and the partial folder is
removed. The config is stored with the batches: a rerun with a different config
is refused rather than mixed in. The batch size is not part of that check
(states do not depend on it): a run may resume with another, on another machine.

Several processes (``generate_sharded``): each solves its contiguous part of the
(g, Ω) groups into its own shard file (resumable as above, on its own); process 0
writes the shard folder's manifest once every shard is complete. Per-sample seeds
make the union of the shards the single-process dataset's states.

Box length rule: one box for the whole dataset,
L = ``box_length(g_max, Ω_max)`` = 2 (R_TF(g_max, Ω_max) + 3.5), the largest
cloud of the sampling box plus 3.5 trap units of margin; every state's edge
density is checked (``touches_edge``) and such states are not stored.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import bec_jax
from bec_jax.artifacts import (CorruptArtifact, atomic_write_text, first_line, has_manifest, read_manifest,
                               sha256_file, write_manifest)
from bec_jax.data.storage import (FIELDS, SHARDS_KIND, atomic_write_h5, config_differences, content_sha256,
                                  read_h5, same_states, shard_name, shards_dir)
from bec_jax.distributed import process_slice
from bec_jax.gpe.groundstate import (BoxTooSmallWarning, GridTooCoarseWarning, box_length, coarse_resolves,
                                     ground_state, solver_method, warn_if_unresolved)
from bec_jax.gpe.grid import Grid
from bec_jax.gpe.splitstep import check_parameters

__all__ = ["GenerateConfig", "PRESETS", "sample_parameters", "sample_keys", "generate", "generate_sharded",
           "write_shard_manifest", "content_sha256", "DatasetConflict"]


class DatasetConflict(ValueError):
    """An existing dataset or partial run was made with a different config."""


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    """Everything that determines a dataset (stored in the file as JSON).

    n: grid points per side (even, >= 16).
    n_groups: number of (g, Ω) groups; a group's states share (g, Ω) and a split.
    states_per_group: samples per group, each from its own initial guess.
    g_range: (lo, hi) of the uniform interaction strength g >= 0 (trap units, ħ = m = ω⊥ = 1).
    omega_range: (lo, hi) of the uniform rotation rate Ω in units of ω⊥, |Ω| < 1.
    length: box side in oscillator lengths (None: the box_length rule of the module doc).
    batch_size: states per compiled batch (the unit of resumption).
    n_starts: seeded initial guesses per state; the lowest energy wins.
    max_iter: conjugate-gradient iteration cap per start ("pcg"; "imaginary_time" stops at its own
      ``ImaginaryTime.max_steps``).
    method: ground-state method, "pcg" or "imaginary_time".
    coarsen: pcg only: relax each start on a grid with n/coarsen points first, then finish it on
      the grid itself (``PCG.coarsen``); the coarse spacing must resolve the healing length at
      every (g, Ω) of the ranges (``coarse_resolves``). None (default): 2 where that holds and
      n/2 is an even int >= 16 (the paper preset's 200²), else 1 (the quick preset's 64²).
    seed: base seed in [0, 2**31).
    keep_unconverged: also store states that did not converge or touch the box edge
      (flags are stored either way).
    """

    n: int = 64
    n_groups: int = 60
    states_per_group: int = 4
    g_range: tuple[float, float] = (50.0, 500.0)
    omega_range: tuple[float, float] = (0.45, 0.85)
    length: float | None = None
    batch_size: int = 32
    n_starts: int = 4
    max_iter: int = 2000
    method: str = "pcg"
    coarsen: int | None = None
    seed: int = 0
    keep_unconverged: bool = False

    def __post_init__(self):
        object.__setattr__(self, "g_range", tuple(float(v) for v in self.g_range))
        object.__setattr__(self, "omega_range", tuple(float(v) for v in self.omega_range))
        (g0, g1), (o0, o1) = self.g_range, self.omega_range
        if not (len(self.g_range) == 2 and 0 <= g0 <= g1):
            raise ValueError(f"g_range must be (lo, hi) with 0 <= lo <= hi, got {self.g_range}")
        if not (len(self.omega_range) == 2 and o0 <= o1):
            raise ValueError(f"omega_range must be (lo, hi) with lo <= hi, got {self.omega_range}")
        check_parameters(np.array([g0, g1]), np.array([o0, o1]))
        for name in ("n_groups", "states_per_group", "batch_size", "n_starts", "max_iter"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**31:  # the per-sample keys fold the seed into 32 bits
            raise ValueError(f"seed must be in [0, 2**31), got {self.seed}")
        grid = Grid(self.n, self.resolved_length)  # validates n and length
        self.solver  # validates method, max_iter and coarsen
        if self.coarsen is not None and self.coarsen > 1:
            if self.method != "pcg":
                raise ValueError(f"coarsen > 1 needs method 'pcg', got method {self.method!r}")
            grid.coarsened(self.coarsen)
            if not self._coarse_resolves(self.coarsen):
                raise ValueError(f"coarsen={self.coarsen} gives a coarse spacing {self.coarsen * grid.dx:.3g} wider than "
                                 f"the healing length at g={g1}; use a smaller coarsen or more points (n={self.n})")

    def _coarse_resolves(self, factor: int) -> bool:
        # the densest corner of the ranges (largest g, smallest |Ω|) has the thinnest cores
        (_, g1), (o0, o1) = self.g_range, self.omega_range
        return bool(coarse_resolves(self.grid, factor, g1, min(abs(o0), abs(o1)) if o0 * o1 > 0 else 0.0))

    @property
    def resolved_coarsen(self) -> int:
        """``coarsen``, or for None: 2 where the coarse grid exists and resolves the ranges (pcg), else 1."""
        if self.coarsen is not None:
            return self.coarsen
        half = self.n // 2
        ok = self.method == "pcg" and half >= 16 and half % 2 == 0 and self._coarse_resolves(2)
        return 2 if ok else 1

    @property
    def solver(self):
        """The ground-state method object of these settings (``gpe.solver_method``)."""
        # max_iter, coarsen: PCG's (imaginary time has neither)
        return solver_method(self.method, max_iter=self.max_iter, coarsen=self.resolved_coarsen)

    @property
    def resolved_length(self) -> float:
        if self.length is not None:
            return float(self.length)
        om = max(abs(self.omega_range[0]), abs(self.omega_range[1]))
        return float(np.round(box_length(self.g_range[1], om), 3))

    @property
    def grid(self) -> Grid:
        return Grid(self.n, self.resolved_length)

    @property
    def n_samples(self) -> int:
        return self.n_groups * self.states_per_group

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["length"] = self.resolved_length
        d["coarsen"] = self.resolved_coarsen
        if d["coarsen"] == 1:  # absent from files written before the field, which still resume
            del d["coarsen"]
        return json.dumps(d, sort_keys=True)


PRESETS = {
    # CPU, a few minutes: 64², moderate (g, Ω) so that 64 points resolve the cores.
    "quick": GenerateConfig(n=64, n_groups=60, states_per_group=4, g_range=(50.0, 250.0),
                            omega_range=(0.45, 0.75), batch_size=48, n_starts=3, max_iter=1000),
    # The reference sizes (n = 200, 420 groups x 4 = 1,680 states). Starts relax on 100² first (coarsen
    # None -> 2: spacing 0.21 ≤ the healing length 0.21 at g = 500, Ω = 0.45): benchmarks/dataset_time.py.
    "paper": GenerateConfig(n=200, n_groups=420, states_per_group=4, batch_size=240, n_starts=4),
}


def sample_parameters(config: GenerateConfig):
    """(g, omega, group, seed) per sample, each (N,), deterministic in config.seed."""
    rng = np.random.default_rng(config.seed)
    g_grp = rng.uniform(*config.g_range, config.n_groups)
    om_grp = rng.uniform(*config.omega_range, config.n_groups)
    group = np.repeat(np.arange(config.n_groups), config.states_per_group)
    sample = np.arange(config.n_samples, dtype=np.int64)
    return g_grp[group], om_grp[group], group, config.seed * 2**32 + sample


#: state-sized arrays a ground-state start holds at its peak on a CPU (XLA buffers of the solver, its
#: warm-up and the coarse grid): 137-183 measured by benchmarks/ground_state_memory.py
ARRAYS_PER_START = 150


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_batch_memory(config: GenerateConfig, available: int | None = None) -> None:
    """ValueError when one batch of ``config`` would need more host memory than is available (CPU backend
    only: the kernel kills a process that asks for more, with no message). The estimate is
    batch_size × n_starts × ``ARRAYS_PER_START`` arrays of n² complex numbers. available: bytes (default:
    the machine's MemAvailable; None there: no check)."""
    if jax.default_backend() != "cpu":
        return
    available = _available_memory() if available is None else available
    if available is None:
        return
    per_state = config.n_starts * ARRAYS_PER_START * config.n**2 * jnp.dtype(jnp.complex64 if not jax.config.x64_enabled
                                                                              else jnp.complex128).itemsize
    need = config.batch_size * per_state
    if need > 0.9 * available:
        fit = max(1, int(0.9 * available // per_state))
        raise ValueError(f"a batch of {config.batch_size} states ({config.n_starts} starts each, {config.n}² grid) needs "
                         f"about {need / 2**30:.1f} GiB of memory and {available / 2**30:.1f} GiB is available; use a "
                         f"batch size of at most {fit} (--batch-size; the states do not depend on it)")


def sample_keys(seed: int, index):
    """The solver keys (B,) of the samples at positions ``index`` (B,) (0-based, in [0, n_samples)) of a
    dataset generated with ``seed``: ``fold_in(key(seed), i)``, one per sample, so a state does not
    depend on its batch."""
    index = np.asarray(index)
    if index.size and (index.min() < 0 or index.max() >= 2**32):
        raise ValueError(f"sample indices must be in [0, 2**32), got {index.min()}..{index.max()}")
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(index, jnp.uint32))


def _solve_batch(config: GenerateConfig, g, omega, index):
    try:  # the fetch too: an asynchronous run reports its failure there
        with warnings.catch_warnings():  # such states are dropped, and counted in the summary (n_touch_edge);
            warnings.simplefilter("ignore", BoxTooSmallWarning)  # the resolution is warned of once, by generate
            warnings.simplefilter("ignore", GridTooCoarseWarning)
            return jax.device_get(ground_state(config.grid, g, omega, key=sample_keys(config.seed, index),
                                               n_starts=config.n_starts, method=config.solver))
    except (jax.errors.JaxRuntimeError, ValueError) as e:  # an accelerator's out-of-memory (a CPU's: checked before)
        if "RESOURCE_EXHAUSTED" not in str(e):  # a ValueError where jit's dispatch raised it
            raise
        raise ValueError(f"a batch of {config.batch_size} states ({config.n_starts} starts each, {config.n}² grid) "
                         f"does not fit in the memory of {jax.devices()[0].device_kind}; use a smaller batch size "
                         f"(--batch-size; the states do not depend on it): {first_line(e, 200)}") from None


def _solver_attrs(config: GenerateConfig) -> str:
    # every setting of the method that shaped the states, defaults included (provenance)
    return json.dumps(dict(method=config.method, n_starts=config.n_starts, **dataclasses.asdict(config.solver)))


def partial_dir(out) -> Path:
    """The folder of ``out``'s unfinished run: one file per finished batch (module doc)."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def process_file(out, index: int, count: int) -> Path:
    """The file process ``index`` of ``count`` writes for the dataset ``out``: ``out`` itself, or its shard."""
    return Path(out) if count == 1 else shards_dir(out) / shard_name(index, count)


def generate(config: GenerateConfig, out, *, progress: bool = True, max_batches: int | None = None,
             shard: tuple[int, int] | None = None, on_start: Callable[[str], None] | None = None) -> dict:
    """Generate (or resume) the dataset ``out`` (.h5). Returns a summary dict.

    max_batches: stop after computing this many new batches (for tests and
    time-boxed runs; rerun to continue).
    shard: (index, count): only the (g, Ω) groups of part ``index`` of ``count``
      (``distributed.process_slice`` of the groups) into ``out``, a shard file with a
      ``shard`` attribute (``generate_sharded`` names and collects them). Its samples keep
      their global indices and seeds, so the union of the shards is the unsharded dataset.
    on_start: called once the output and memory checks have passed (so a refusal is the only thing a
      command prints), with what this call does: "" (a new dataset), "already complete" or
      "resuming, K of N states saved" ("of this shard" with ``shard``).
    Raises DatasetConflict if ``out`` or its partial folder holds another config (or shard).
    """
    from tqdm.auto import tqdm

    on_start = on_start or (lambda note: None)

    out = Path(out)
    cfg_json = config.to_json()
    g, omega, group, seeds = sample_parameters(config)
    samples = np.arange(config.n_samples)
    shard_json = None
    if shard is not None:
        index, count = shard
        groups = np.arange(config.n_groups)[process_slice(config.n_groups, index, count)]
        if not len(groups):
            raise ValueError(f"shard {index} of {count} gets none of the {config.n_groups} groups: use at most "
                             f"{config.n_groups} shards")
        samples = samples[np.isin(group, groups)]
        shard_json = json.dumps(dict(index=index, count=count, groups=[int(groups[0]), int(groups[-1]) + 1]))
    if out.exists():
        _, attrs = read_h5(out, fields=[], psi=False)
        if not same_states(attrs.get("config"), cfg_json) or attrs.get("shard") != shard_json:
            raise DatasetConflict(f"{out} exists with a different config "
                                  f"({config_differences(attrs.get('config'), cfg_json) or 'another shard'}); choose "
                                  "another --out or delete it")
        stored = json.loads(attrs.get("summary", "{}"))
        _check_complete(out, stored)
        on_start("already complete")
        # nothing computed by this call: not the summary's figures of the run that made it
        return dict(status="complete", path=str(out), **stored) | dict(seconds_this_run=0.0, batches_this_run=0)
    part = partial_dir(out)
    cfg_file = part / "config.json"
    stored = cfg_json if shard_json is None else cfg_json + "\n" + shard_json
    N, B = len(samples), config.batch_size
    if cfg_file.exists():
        before, _, before_shard = cfg_file.read_text().partition("\n")
        if not same_states(before, cfg_json) or (before_shard or None) != shard_json:
            raise DatasetConflict(f"{part} holds an unfinished run with a different config "
                                  f"({config_differences(before, cfg_json) or 'another shard'}); "
                                  "rerun with the same settings to resume, or delete it")
        _name_legacy_batches(part, N, json.loads(before).get("batch_size", B))
        if before != cfg_json:  # another batch size: the batches saved so far keep their samples
            atomic_write_text(cfg_file, stored)
    saved = [r for f, r in _batch_files(part) if _intact(f)]
    todo = _chunks(_unsaved(N, saved), B)
    if todo:
        check_batch_memory(config)  # before anything is written (a smaller batch resumes the same run)
    done = sum(hi - lo for lo, hi in saved)
    on_start(f"resuming, {done} of {N} states{'' if shard is None else ' of this shard'} saved" if done else "")
    if todo:
        warn_if_unresolved(config.grid, g[samples], omega[samples], stacklevel=2)  # once, not per batch

    bar = tqdm(total=N, initial=done, unit="state", desc="generate",
               disable=not progress, dynamic_ncols=True)
    computed, t0 = 0, time.perf_counter()
    for lo, hi in todo:
        if max_batches is not None and computed >= max_batches:
            break
        pad = B - (hi - lo)  # pad a short batch: one compiled shape for all batches
        sel = samples[np.concatenate([np.arange(lo, hi), np.full(pad, hi - 1)])]
        res = _solve_batch(config, g[sel], omega[sel], sel)
        arrays = dict(psi=np.asarray(res.psi), g=g[sel], omega=omega[sel], energy=res.energy, mu=res.mu,
                      residual=res.residual, vortices=res.vortices, steps=res.steps, group=group[sel], seed=seeds[sel],
                      converged=res.converged, touches_edge=res.touches_edge)
        arrays = {k: np.asarray(v)[: hi - lo] for k, v in arrays.items()}
        if not cfg_file.exists():  # with the first batch: a batch that never fitted leaves nothing behind
            part.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cfg_file, stored)
        atomic_write_h5(part / _batch_name(lo, hi), arrays, dict(batch=[lo, hi]))  # its positions
        computed += 1
        bar.update(hi - lo)
    bar.close()
    left = _unsaved(N, [r for _, r in _batch_files(part)])
    if left:
        return dict(status="partial", path=str(part), samples_done=N - sum(hi - lo for lo, hi in left), samples=N)
    extra = {} if shard_json is None else dict(shard=shard_json)
    return _merge(config, part, out, time.perf_counter() - t0, computed, extra)


def generate_sharded(config: GenerateConfig, out, *, progress: bool = True, max_batches: int | None = None,
                     index: int | None = None, count: int | None = None,
                     on_start: Callable[[str], None] | None = None) -> dict:
    """Generate (or resume) ``out`` as shards, one per process of a multi-process run.

    Process ``index`` of ``count`` (default: ``jax.process_index()`` / ``process_count()``)
    writes ``<out stem>.shards/shard-IIIII-of-NNNNN.h5`` (``generate`` with ``shard``; it
    resumes on its own). When every shard is complete, process 0 writes the manifest
    (``write_shard_manifest``), after which the shard folder reads as one dataset
    (``storage.read_h5``). With a single process (count 1) this is ``generate(out)``.
    Every process of the run must call it (it synchronises them). ``on_start``: as ``generate``'s, for
    this process's shard. Without jax.distributed,
    separate jobs may each pass their own ``index`` and ``count``; the one that finds every
    shard complete writes the manifest. Returns this process's summary; "path" is the shard
    folder once the dataset is complete.
    """
    from bec_jax import distributed as dist

    index = dist.process_index() if index is None else index
    count = dist.process_count() if count is None else count
    if count == 1:
        return generate(config, out, progress=progress, max_batches=max_batches, on_start=on_start)
    if config.n_groups < count:
        raise ValueError(f"n_groups must be >= the number of processes ({count}) to give each a shard, "
                         f"got {config.n_groups}")
    folder = shards_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    summary = generate(config, process_file(out, index, count), progress=progress and index == 0,
                       max_batches=max_batches, shard=(index, count), on_start=on_start)
    joint = dist.process_count() > 1
    done = summary["status"] == "complete"
    if joint:  # every process's verdict; process 0 writes the manifest
        done, writer = dist.all_true(done), index == 0
    else:  # independent jobs (e.g. an array job): the one that finds every shard complete writes it
        done = writer = done and all((folder / shard_name(i, count)).is_file() for i in range(count))
    if not done:
        return dict(summary, status="partial", shard=index)
    if writer:  # the dataset's figures, but this call's time (0 on a rerun of a complete one)
        summary = dict(write_shard_manifest(config, out, count)["summary"], status="complete",
                       seconds_this_run=summary.get("seconds_this_run", 0.0))
    if joint:
        dist.barrier(f"generate-manifest:{folder}")
    return dict(summary, path=str(folder), shard=index)


def write_shard_manifest(config: GenerateConfig, out, count: int) -> dict:
    """Check the ``count`` complete shards of ``out`` and write their manifest (module doc of
    ``storage``); returns it. Raises DatasetConflict for a missing shard or one of another config."""
    folder = shards_dir(out)
    try:  # the previous manifest's checksums, if the dataset was complete before
        before = read_manifest(folder)["files"] if has_manifest(folder) else {}
    except CorruptArtifact:
        before = {}
    shards, n_failed, summaries, digests = [], 0, [], {}
    for i in range(count):
        f = folder / shard_name(i, count)
        if not f.is_file():
            raise DatasetConflict(f"{f} is missing: every shard must be complete before the manifest is written")
        arrays, attrs = read_h5(f, fields=["g"], psi=False)
        if not same_states(attrs.get("config"), config.to_json()):
            raise DatasetConflict(f"{f} holds another config than this run")
        shards.append(dict(file=f.name, n_samples=len(arrays["g"]), bytes=f.stat().st_size))
        n_failed += int(attrs.get("n_failed", 0))
        summaries.append(json.loads(attrs.get("summary", "{}")))
        digests[f.name] = sha256_file(f)
        if f.name in before and digests[f.name] != before[f.name]:  # changed since: recorded anew only if intact
            _check_complete(f, summaries[-1])
            held = "its content matches the digest saved with it" if summaries[-1].get("content_sha256") \
                else "no content digest was saved with it"
            warnings.warn(f"{str(f)!r} differs from the dataset's previous manifest (generated again, or bytes "
                          f"changed outside its data); it reads back whole and {held}, so the manifest now "
                          "records it as it is", stacklevel=3)
    total = sum(s["n_samples"] for s in shards)
    summary = dict(n_samples=total, n_failed=n_failed,
                   **{k: sum(s.get(k, 0) for s in summaries) for k in ("n_not_converged", "n_touch_edge")},
                   seconds_this_run=max((s.get("seconds_this_run", 0.0) for s in summaries), default=0.0))
    return write_manifest(folder, SHARDS_KIND, files=digests, config=config.to_json(),
                          shards=shards, n_samples=total, n_failed=n_failed, summary=summary)


def _check_complete(out: Path, summary: dict) -> None:
    """Read a finished dataset whole (its checksums) and match its content digest: "complete" is said of a
    file that reads back as it was written. CorruptArtifact naming it otherwise."""
    arrays, _ = read_h5(out)
    if summary.get("content_sha256") not in (None, content_sha256(arrays)):
        raise CorruptArtifact(f"{str(out)!r} is corrupt: its content does not match the digest saved with it "
                              "(delete it and rerun to generate it again)")


def _intact(batch: Path) -> bool:
    """Whether a finished batch file reads back whole; a damaged one is set aside (``.damaged``) and
    computed again."""
    if not batch.exists():
        return False
    try:
        read_h5(batch)
        return True
    except CorruptArtifact as e:
        batch.replace(batch.with_name(batch.name + ".damaged"))
        warnings.warn(f"{e}: the batch is computed again", stacklevel=2)
        return False


def _batch_name(lo: int, hi: int) -> str:
    return f"batch_{lo:09d}_{hi:09d}.h5"


def _batch_files(part: Path) -> list[tuple[Path, tuple[int, int]]]:
    """The saved batches of a partial folder, (file, (first, end) sample positions), in order."""
    found = []
    for f in part.glob("batch_*_*.h5"):
        lo, _, hi = f.stem[len("batch_"):].partition("_")
        if lo.isdigit() and hi.isdigit():
            found.append((f, (int(lo), int(hi))))
    return sorted(found, key=lambda x: x[1])


def _name_legacy_batches(part: Path, n: int, batch_size: int) -> None:
    """Rename the batches of a partial folder written when files were named by batch number
    (``batch_XXXXXX.h5``, batch b = positions [b·batch_size, (b+1)·batch_size)) to their positions."""
    for f in part.glob("batch_*.h5"):
        b = f.stem[len("batch_"):]
        if b.isdigit():
            lo = int(b) * batch_size
            f.replace(part / _batch_name(lo, min(n, lo + batch_size)))


def _unsaved(n: int, saved) -> list[tuple[int, int]]:
    """The runs [first, end) of positions in [0, n) that no (first, end) of ``saved`` covers."""
    covered = np.ones(n + 2, np.int8)  # positions 0..n-1 at 1..n, saved on both sides
    covered[1:-1] = 0
    for lo, hi in saved:
        covered[lo + 1:hi + 1] = 1
    step = np.diff(covered)
    return [(int(a), int(b)) for a, b in zip(np.flatnonzero(step == -1), np.flatnonzero(step == 1))]


def _chunks(runs, size: int) -> list[tuple[int, int]]:
    """The runs cut into batches of at most ``size`` positions."""
    return [(lo, min(b, lo + size)) for a, b in runs for lo in range(a, b, size)]


def _merge(config: GenerateConfig, part: Path, out: Path, seconds: float, computed: int, extra: dict) -> dict:
    files = _batch_files(part)
    if [lo for _, (lo, _) in files[1:]] != [hi for _, (_, hi) in files[:-1]]:  # overlapping: never written so
        raise CorruptArtifact(f"{str(part)!r} holds overlapping batches ({[f.name for f, _ in files]}); delete it "
                              "and rerun")
    chunks = [read_h5(p)[0] for p, _ in files]
    arrays = {k: np.concatenate([c[k] for c in chunks]) for k in ["psi", *FIELDS]}
    ok = arrays["converged"] & ~arrays["touches_edge"]
    keep = np.ones_like(ok) if config.keep_unconverged else ok
    n_failed = int((~ok).sum())
    summary = dict(n_samples=int(keep.sum()), n_failed=n_failed, n_not_converged=int((~arrays["converged"]).sum()),
                   n_touch_edge=int(arrays["touches_edge"].sum()), seconds_this_run=seconds, batches_this_run=computed)
    arrays = {k: v[keep] for k, v in arrays.items()}
    summary["content_sha256"] = content_sha256(arrays)
    attrs = dict(grid_n=config.n, grid_length=config.resolved_length, config=config.to_json(),
                 solver=_solver_attrs(config), bec_jax_version=bec_jax.__version__, backend=jax.default_backend(),
                 created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 n_failed=n_failed, summary=json.dumps(summary), **extra)
    atomic_write_h5(out, arrays, attrs)
    shutil.rmtree(part)
    return dict(status="complete", path=str(out), **summary)

