"""Orbax checkpoints of a training run: the best and the latest epoch, with the
model configuration stored beside them and checked on every restore.

Layout of ``directory`` (an orbax ``CheckpointManager`` root):

    _ROOT_METADATA          {"model_config": UNetConfig dict, "run": dict}
    <epoch>/state           train state pytree (params, batch_stats, opt_state)
    <epoch>/meta            JSON: epoch, history (one dict per epoch), best_epoch

Steps are completed epochs (1-based). The preservation policy keeps the latest
step and the step with the lowest ``val_loss``. Each save is waited for
(``wait_until_finished``) before training continues: the next train step
donates the state buffers, and a run killed right after a save must find it
complete. Saving to a step that already exists is an error here (orbax would
return False silently). Each step folder gets a manifest (``bec_jax.artifacts``:
SHA-256 of its files) once orbax has finished it; a restore checks it first, so a
damaged checkpoint is refused with the file named instead of restored as NaNs.
A step without one (saved before manifests existed, or a run stopped between orbax's
commit and the manifest) is read unchecked: every array is read once, synchronously,
before orbax restores it, and any failure is a CorruptArtifact naming the step folder
(orbax's concurrent reads, failing, print hundreds of lines from their threads).
In a multi-process run every process saves and restores (orbax writes each array
once, from the process holding it), and process 0 writes the manifest.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from bec_jax.artifacts import MANIFEST, CorruptArtifact, first_line, has_manifest, verify_manifest, write_manifest
from bec_jax.distributed import barrier
from bec_jax.models.unet import UNetConfig

__all__ = ["CheckpointMismatch", "Checkpoints", "read_run_metadata"]


class CheckpointMismatch(ValueError):
    """The checkpoint directory was written with another model or run configuration."""


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _diff(stored: dict, current: dict) -> str:
    """'key: stored A vs now B' for every differing (nested) key."""
    a, b = _flat(stored), _flat(current)
    return ", ".join(f"{k}: stored {a.get(k)!r} vs now {b.get(k)!r}" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k))


@contextlib.contextmanager
def _quiet_absl():
    """Silence orbax's absl warnings about read-only managers (expected here)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _normalise(d: dict) -> dict:
    """JSON round trip (tuples → lists) so stored and current dicts compare equal."""
    return json.loads(json.dumps(d))


def _options(read_only: bool = False) -> ocp.CheckpointManagerOptions:
    policy = cm.AnyPreservationPolicy([cm.LatestN(n=1), cm.BestN(get_metric_fn=lambda m: -m["val_loss"], n=1)])
    return ocp.CheckpointManagerOptions(preservation_policy=policy, read_only=read_only, create=not read_only)


def _read_every_array(state: Path) -> None:
    """Read every array of the orbax item folder ``state`` (OCDBT, zarr) one at a time: a damaged unchecked
    step fails here, in this thread, and not inside orbax's concurrent reads."""
    import tensorstore as ts

    if not (state / "manifest.ocdbt").is_file():
        if any(state.glob("ocdbt.process_*")):  # written as OCDBT: its root is gone
            raise FileNotFoundError(2, "the OCDBT root of the arrays is missing", str(state / "manifest.ocdbt"))
        return  # another layout: orbax reads it, its errors still one CorruptArtifact
    spec = {"driver": "ocdbt", "base": {"driver": "file", "path": f"{state}/"}}
    for key in ts.KvStore.open(spec).result().list().result():
        name, _, leaf = key.decode().rpartition("/")
        driver = {".zarray": "zarr", "zarr.json": "zarr3"}.get(leaf)  # one metadata key per array
        if driver:
            ts.open({"driver": driver, "kvstore": dict(spec, path=f"{name}/"), "open": True}).result().read().result()


def read_run_metadata(directory) -> dict:
    """The root metadata {"model_config", "run"} of a checkpoint directory.

    Raises FileNotFoundError if ``directory`` holds no checkpoints.
    """
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {str(directory)!r}")
    if has_manifest(directory / "metadata"):
        verify_manifest(directory / "metadata", "checkpoint-metadata")
    try:
        with _quiet_absl():
            mngr = ocp.CheckpointManager(directory, options=_options(read_only=True), item_names=("state", "meta"))
        try:
            if mngr.latest_step() is None:
                raise FileNotFoundError(f"no completed checkpoint in {str(directory)!r}")
            meta = mngr.metadata().custom_metadata or {}
        finally:
            mngr.close()
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise CorruptArtifact(f"the checkpoint metadata in {str(directory)!r} cannot be read "
                              f"({type(e).__name__}: {first_line(e, 200)})") from None
    if "model_config" not in meta:
        raise CheckpointMismatch(f"{str(directory)!r} is not a bec_jax training checkpoint (no model_config)")
    return meta


class Checkpoints:
    """Save/restore train states of one run, refusing foreign configurations.

    Args:
      directory: checkpoint root (created if missing).
      model_config: the UNetConfig of the model being trained/evaluated.
      run: JSON-able dict of everything else a resume must agree on (optimizer,
        learning rate, batch size, seeds, dataset identity, …); ``None`` skips
        that check (evaluation).
      read_only: open for restoring only.

    Raises CheckpointMismatch (a ValueError) if the directory already holds
    checkpoints of another model configuration or run.
    """

    def __init__(self, directory, model_config: UNetConfig, run: dict | None = None, *, read_only: bool = False):
        self.directory = Path(directory).resolve()
        self.model_config = model_config
        current = dict(model_config=model_config.to_dict(), run=_normalise(run or {}))
        exists = self.directory.is_dir() and any(self.directory.iterdir())
        if exists:
            stored = read_run_metadata(self.directory) if self._has_steps() else None
            if stored is not None:
                self._check(stored, current, check_run=run is not None)
        elif read_only:
            raise FileNotFoundError(f"no checkpoint directory at {str(self.directory)!r}")
        with _quiet_absl():
            self._mngr = ocp.CheckpointManager(self.directory, options=_options(read_only),
                                               item_names=("state", "meta"), metadata=None if read_only else current)


    def _has_steps(self) -> bool:
        return any(p.is_dir() and p.name.isdigit() for p in self.directory.iterdir())

    def _check(self, stored: dict, current: dict, check_run: bool):
        try:  # fields added since (with their defaults) do not make an older run another model
            stored = dict(stored, model_config=UNetConfig.from_dict(stored["model_config"]).to_dict())
        except (ValueError, TypeError):
            pass  # compared as stored: the difference is named below
        if stored["model_config"] != current["model_config"]:
            raise CheckpointMismatch(
                f"checkpoint {str(self.directory)!r} holds a different model configuration "
                f"({_diff(stored['model_config'], current['model_config'])}); "
                "use another output folder or the same model settings")
        if check_run and stored.get("run", {}) != current["run"]:
            raise CheckpointMismatch(
                f"checkpoint {str(self.directory)!r} was written by a run with other settings "
                f"({_diff(stored.get('run', {}), current['run'])}); "
                "rerun with the same settings to resume, or use another output folder")

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, state, meta: dict, val_loss: float) -> None:
        """Save ``state`` (a pytree of arrays) and ``meta`` (JSON) as ``step`` and wait for it."""
        if step in self._mngr.all_steps():
            raise ValueError(f"checkpoint step {step} already exists in {str(self.directory)!r}")
        with _quiet_absl():  # orbax warns about the wait below; it is intended
            saved = self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                  meta=ocp.args.JsonSave(_normalise(meta))),
                                    metrics=dict(val_loss=float(val_loss)))
            self._mngr.wait_until_finished()
        if not saved:
            raise RuntimeError(f"orbax refused to save step {step} in {str(self.directory)!r}")
        if jax.process_index() == 0:  # several processes: orbax has joined their writes; one writes the manifest
            write_manifest(self.directory / str(step), "checkpoint", step=step)
            root_meta = self.directory / "metadata"  # orbax writes it with the first save
            if root_meta.is_dir() and not has_manifest(root_meta):
                write_manifest(root_meta, "checkpoint-metadata")
        barrier(f"checkpoint-manifest:{self.directory}:{step}")

    def verify(self, step: int) -> bool:
        """Check step ``step`` against its manifest (CorruptArtifact naming the damaged file); False if it
        has none (module doc: read unchecked)."""
        folder = self.directory / str(step)
        if not has_manifest(folder):
            return False
        verify_manifest(folder, "checkpoint")
        return True

    def restore(self, step: int, like) -> tuple[object, dict]:
        """(state, meta) of ``step``; ``like`` is a pytree of arrays or
        ShapeDtypeStructs with the structure of the saved state."""
        if step not in self._mngr.all_steps():
            raise ValueError(f"no checkpoint step {step} in {str(self.directory)!r}; "
                             f"available: {self._mngr.all_steps()}")
        checked = self.verify(step)
        # leaves without a sharding land on this process's first device: a checkpoint saved by several
        # processes restores in one (evaluation, compression), and the other way round
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)
                                                               or local), like)
        with self._readable(step, checked):
            if not checked:
                _read_every_array(self.directory / str(step) / "state")
            out = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                   meta=ocp.args.JsonRestore()))
        return out["state"], dict(out["meta"])

    def read_meta(self, step: int) -> dict:
        """The JSON ``meta`` item of ``step`` (no arrays are read)."""
        checked = self.verify(step)
        with self._readable(step, checked):
            return dict(self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    @contextlib.contextmanager
    def _readable(self, step: int, checked: bool):
        """orbax/tensorstore errors of a damaged step as one CorruptArtifact naming it: of an unchecked step
        any error (orbax raises a bare Exception for a failed array read)."""
        errors = (ValueError, OSError, KeyError, TypeError, RuntimeError) if checked else Exception
        try:
            yield
        except errors as e:
            unchecked = "" if checked else f"; it has no {MANIFEST} to be checked against"
            raise CorruptArtifact(f"checkpoint {str(self.directory / str(step))!r} cannot be read "
                                  f"({type(e).__name__}: {first_line(e, 200)}){unchecked}") from None

    def close(self) -> None:
        self._mngr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
