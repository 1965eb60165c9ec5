"""Train/validation/test splits by (g, Ω) group: no group in two splits."""

from __future__ import annotations

import numpy as np

__all__ = ["split_by_group"]


def split_by_group(groups, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict[str, np.ndarray]:
    """Split sample indices so that all samples of a group land in one split.

    Args:
      groups: int array (N,), the (g, Ω) group id of each sample.
      fractions: (train, val, test) fractions of the *groups*, summing to 1.
      seed: permutation seed (numpy Generator).

    Returns:
      {"train", "val", "test"}: sorted int64 index arrays into the samples.
    """
    groups = np.asarray(groups)
    fr = np.asarray(fractions, float)
    if fr.shape != (3,) or np.any(fr < 0) or abs(fr.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {tuple(fractions)}")
    uniq = np.unique(groups)
    perm = np.random.default_rng(seed).permutation(uniq)
    n_train = int(round(fr[0] * len(uniq)))
    n_val = int(round(fr[1] * len(uniq)))
    parts = dict(train=perm[:n_train], val=perm[n_train : n_train + n_val], test=perm[n_train + n_val :])
    return {k: np.flatnonzero(np.isin(groups, v)).astype(np.int64) for k, v in parts.items()}
