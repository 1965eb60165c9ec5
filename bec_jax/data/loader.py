"""Device batches for training: shuffled per epoch, optional 90° rotations, optional camera images,
made inside the compiled training step."""

from __future__ import annotations

from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bec_jax.data.targets import TargetConfig, make_example, rotate90
from bec_jax.distributed import process_slice, replicate, shard_rows
from bec_jax.gpe.grid import Grid

__all__ = ["Batch", "Sources", "BatchLoader", "render_batch"]


class Batch(NamedTuple):
    """One training batch, channels-last (a pytree).

    x: float32 (B, n, n, C_in) network input (log-density); y: float32 (B, n, n, 2)
    target; mask: bool (B, n, n), True where the target is data.
    """

    x: jax.Array
    y: jax.Array
    mask: jax.Array


class Sources(NamedTuple):
    """What one batch is made from, on device (a pytree; ``render_batch`` makes the batch).

    psi: complex (B, n, n) states; k: int (B,) quarter turns of each (augmentation);
    key: uint32 raw PRNG key data (``jax.random.key_data``) of the batch's camera
    images (unused for clean inputs).
    """

    psi: jax.Array
    k: jax.Array
    key: jax.Array


def render_batch(grid: Grid, config: TargetConfig, imaging, src: Sources) -> Batch:
    """The ``Batch`` of ``src``: each state turned by its quarter turns (``rotate90``, which turns
    the vector field with it), then clean inputs and targets (``targets.make_example``) or, with an
    enabled ``imaging.training.ImagingTrainConfig``, camera images of every imaging parameter drawn
    from its range, mapped back as ``bec-jax predict`` does, with the targets in the image's frame
    (``imaging.training.imaged_examples``, one key per sample split from ``src.key``). Pure and
    jit-able: a training step renders its batch in the same compiled program as its update."""
    psi = jax.vmap(rotate90)(src.psi, src.k)
    if imaging is None:
        x, y, m = make_example(grid, psi, config)
        return Batch(x.astype(jnp.float32), y.astype(jnp.float32), m)
    from bec_jax.imaging.training import imaged_examples

    return Batch(*imaged_examples(grid, psi, jax.random.wrap_key_data(src.key), imaging, config))


_render = jax.jit(render_batch, static_argnums=(0, 1, 2))


class BatchLoader:
    """Iterates ``Batch`` (x (B,n,n,1), y (B,n,n,2), mask (B,n,n)) device batches.

    Inputs/targets are computed on device from ψ by ``targets.make_example``
    (so augmentation rotates the vector field correctly, see ``rotate90``).

    Args:
      grid: the dataset's Grid.
      psi: complex (N, n, n) states of this split (numpy or h5py dataset;
        read once into host memory).
      batch_size: samples per batch (> 0).
      config: TargetConfig.
      shuffle: new permutation every epoch (deterministic in (seed, epoch)).
      augment: random k·90° rotation per sample and epoch.
      drop_last: drop the final partial batch (keeps one compiled shape).
      seed: base seed.
      imaging: an enabled ``imaging.training.ImagingTrainConfig``: inputs are camera images of the
        (rotated) states (``render_batch``), drawn with the key of (seed, epoch, batch index), so an
        epoch is reproducible. None (or disabled): clean inputs.
      mesh: a mesh over the devices of several processes (``distributed.global_mesh``): each
        process puts only its rows of every batch's states (``process_slice``) into global arrays
        split over the mesh (``distributed.shard_rows``); every process must hold the same
        ``psi``. Each batch must divide evenly over the mesh's devices.

    ``sources(e)`` yields the ``Sources`` of epoch e's batches and ``render`` makes a batch of
    them inside a compiled step (``train.core.make_train_step(render=...)``: no image ever leaves
    the training program); ``epoch(e)`` yields the rendered batches, for evaluation.
    """

    def __init__(self, grid: Grid, psi, batch_size: int, config: TargetConfig = TargetConfig(), *,
                 shuffle: bool = True, augment: bool = False, drop_last: bool = False, seed: int = 0,
                 imaging=None, mesh=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.grid, self.config = grid, config
        self.psi = np.asarray(psi)  # h5py datasets are read once here
        if self.psi.ndim != 3 or self.psi.shape[1:] != (grid.n, grid.n):
            raise ValueError(f"psi must have shape (N, {grid.n}, {grid.n}), got {self.psi.shape}")
        self.batch_size, self.shuffle, self.augment, self.drop_last, self.seed, self.mesh = (
            batch_size, shuffle, augment, drop_last, seed, mesh)
        self.imaging = imaging if imaging is not None and imaging.enabled else None
        if mesh is not None:
            sizes = {batch_size, *([] if drop_last or not len(self.psi) % batch_size else [len(self.psi) % batch_size])}
            if any(b % mesh.size for b in sizes):
                fits = [b for b in range(mesh.size, len(self.psi) + 1, mesh.size) if not len(self.psi) % b]
                raise ValueError(f"batches of {sorted(sizes)} samples do not split evenly over {mesh.size} devices: "
                                 f"use a batch size that is a multiple of {mesh.size} with drop_last (--drop-last)"
                                 + (f", or one of {fits[:6]}, which divide the {len(self.psi)} samples" if fits else
                                    f" (no such size divides the {len(self.psi)} samples)"))

    def __len__(self) -> int:
        n = len(self.psi)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def sources(self, epoch: int = 0) -> Iterator[Sources]:
        """The ``Sources`` of one epoch's batches; the order and the images depend only on (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.psi)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        ks = rng.integers(0, 4, n) if self.augment else np.zeros(n, np.int64)
        epoch_key = jax.random.fold_in(jax.random.key(self.seed), epoch)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            rows = idx if self.mesh is None else idx[process_slice(len(idx))]  # this process's rows
            key = jax.random.key_data(jax.random.fold_in(epoch_key, b))
            psi, k = jnp.asarray(self.psi[rows]), jnp.asarray(ks[rows], jnp.int32)
            if self.mesh is None:
                yield Sources(psi, k, key)
            else:
                yield Sources(*shard_rows((psi, k), self.mesh, len(idx)), replicate(key, self.mesh))

    def render(self, src: Sources) -> Batch:
        """The batch of ``src`` (``render_batch`` with this loader's grid, targets and imaging); pure."""
        return render_batch(self.grid, self.config, self.imaging, src)

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        """The rendered batches of one epoch (``sources`` through a compiled ``render``)."""
        for src in self.sources(epoch):
            yield _render(self.grid, self.config, self.imaging, src)

    __iter__ = epoch
