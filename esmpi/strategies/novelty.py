"""Novelty against an archive of behaviour characterisations, and the choice of a parent by it
(Lehman and Stanley 2011; as used by Conti et al. 2018 for NS-ES and its variants).

The novelty of a behaviour b is the mean Euclidean distance from b to its k nearest entries in
the archive (fewer when the archive holds fewer than k); a behaviour that is not finite (a failed
episode's) has novelty NaN, which the strategies' ranking puts last. Pure numpy: every rank
computes the same bits from the same archive.
"""

from __future__ import annotations

import numpy as np

from esmpi import noise


def novelty(points: np.ndarray, archive: np.ndarray, neighbours: int) -> np.ndarray:
    """Mean distance from each row of `points` (P, B) to its `neighbours` nearest rows of
    `archive` (A, B), in float64 (P,); NaN where a point is not finite or the archive is empty."""
    points = np.asarray(points, dtype=np.float64)
    if not len(archive):
        return np.full(len(points), np.nan)
    distances = np.sqrt(np.square(points[:, None, :] - archive[None, :, :]).sum(axis=2))
    k = min(neighbours, len(archive))
    nearest = np.sort(np.partition(distances, k - 1, axis=1)[:, :k], axis=1)
    values = nearest.mean(axis=1)
    return np.where(np.isfinite(points).all(axis=1), values, np.nan)


def selection_probabilities(novelties: np.ndarray) -> np.ndarray:
    """P(m) = N_m / sum_j N_j over the parents' novelties; uniform when every novelty is zero
    (parents that all behave alike). A novelty that is not finite counts as zero."""
    weights = np.where(np.isfinite(novelties), np.maximum(novelties, 0.0), 0.0)
    total = weights.sum()
    if total <= 0:
        return np.full(len(weights), 1.0 / len(weights))
    return weights / total


def drawn_parent(probabilities: np.ndarray, seed: int, generation: int) -> int:
    """The parent of `generation`, drawn with `probabilities` from (seed, generation) alone, so
    that every rank draws the same one without communication."""
    rng = noise.parent_generator(seed, generation)
    return int(rng.choice(len(probabilities), p=probabilities))
