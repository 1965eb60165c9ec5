"""Device batches for training: shuffled per epoch, optional 90° rotations, optional camera images."""

from __future__ import annotations

from functools import partial
from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bec_jax.data.targets import TargetConfig, make_example, rotate90
from bec_jax.distributed import process_slice, shard_rows
from bec_jax.gpe.grid import Grid

__all__ = ["Batch", "BatchLoader"]


class Batch(NamedTuple):
    """One training batch, channels-last (a pytree).

    x: float32 (B, n, n, C_in) network input (log-density); y: float32 (B, n, n, 2)
    target; mask: bool (B, n, n), True where the target is data.
    """

    x: jax.Array
    y: jax.Array
    mask: jax.Array


@partial(jax.jit, static_argnames=("grid", "config"))
def _examples(grid: Grid, psi, k, config: TargetConfig):
    psi = jax.vmap(rotate90)(psi, k)
    x, y, m = make_example(grid, psi, config)
    return Batch(x.astype(jnp.float32), y.astype(jnp.float32), m)


@partial(jax.jit, static_argnames=("grid", "config", "imaging"))
def _imaged_examples(grid: Grid, psi, k, config: TargetConfig, imaging, key):
    from bec_jax.imaging.training import imaged_examples

    return Batch(*imaged_examples(grid, jax.vmap(rotate90)(psi, k), key, imaging, config))


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
        (rotated) states mapped back as ``bec-jax predict`` does, targets in the image's frame
        (``imaging.training.imaged_examples``), rendered on device with the key of (seed, epoch,
        batch index), so an epoch is reproducible. None (or disabled): clean inputs.
      mesh: a mesh over the devices of several processes (``distributed.global_mesh``): each
        process computes only its rows of every batch (``process_slice``), and batches are
        global arrays split over the mesh (``distributed.shard_rows``); every process must
        hold the same ``psi``. Each batch must divide evenly over the mesh's devices.
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
                raise ValueError(f"batches of {sorted(sizes)} samples do not split evenly over {mesh.size} devices; "
                                 f"choose a batch size that is a multiple of {mesh.size} (with drop_last, or one that "
                                 f"divides the {len(self.psi)} samples)")

    def __len__(self) -> int:
        n = len(self.psi)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int = 0) -> Iterator[dict]:
        """Batches of one epoch; the order depends only on (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.psi)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        ks = rng.integers(0, 4, n) if self.augment else np.zeros(n, np.int64)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            rows = idx if self.mesh is None else idx[process_slice(len(idx))]  # this process's rows
            psi, k = jnp.asarray(self.psi[rows]), jnp.asarray(ks[rows])
            if self.imaging is None:
                batch = _examples(self.grid, psi, k, self.config)
            else:
                key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), epoch), b)
                batch = _imaged_examples(self.grid, psi, k, self.config, self.imaging, key)
            yield batch if self.mesh is None else shard_rows(batch, self.mesh, len(idx))

    __iter__ = epoch
