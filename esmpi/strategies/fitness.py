"""Fitness shaping shared by the strategies: ranks, utilities, and what a failed return is worth.

A return that is not finite (a simulator that blew up, a NaN reward) must rank worst: `np.argsort`
would put NaN last, i.e. make it the best member.
"""

from __future__ import annotations

import math

import numpy as np

from esmpi.strategies import portable


def worst_if_not_finite(returns: np.ndarray) -> np.ndarray:
    """`returns` with NaN and +-inf replaced by -inf, below every finite return (for ranking)."""
    return np.where(np.isfinite(returns), returns, -np.inf)


def finite_or_lowest(returns: np.ndarray) -> np.ndarray:
    """`returns` with NaN and +-inf replaced by the lowest finite return (0 if none is finite),
    for strategies that use the returns' values and not only their order (ARS)."""
    finite = np.isfinite(returns)
    lowest = returns[finite].min() if finite.any() else 0.0
    return np.where(finite, returns, lowest)


def centered_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of `values` (any shape) scaled to [-0.5, 0.5]; tied values share the mean of their
    ranks. Breaking ties by position instead would turn a population of equal returns (every
    CartPole member at the time limit, every Pong member losing 21-0) into a gradient along the
    noise of whichever members came first. Non-finite values rank worst."""
    flat = worst_if_not_finite(values).ravel()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ends = np.append(starts[1:], flat.size)
    ranks = np.empty(flat.size)
    ranks[order] = np.repeat((starts + ends - 1) / 2, ends - starts)
    return (ranks / (flat.size - 1) - 0.5).reshape(values.shape)


def standardised_ranks(fitness: np.ndarray) -> np.ndarray:
    """Centered ranks, then standardised to zero mean and unit standard deviation (OpenAI-ES)."""
    ranks = centered_ranks(fitness)
    std = ranks.std()
    return (ranks - ranks.mean()) / std if std > 0 else np.zeros_like(ranks)


def descending_order(values: np.ndarray) -> np.ndarray:
    """Indices of `values` (1-d) from best to worst, non-finite last, ties in index order."""
    return np.argsort(-worst_if_not_finite(values), kind="stable")


def nes_utilities(count: int) -> np.ndarray:
    """Wierstra et al.'s (2014) utilities for `count` members sorted best first:
    max(0, ln(count/2 + 1) - ln(k)) normalised to sum 1, minus 1/count; they sum to zero."""
    raw = np.maximum(0.0, math.log(count / 2 + 1) - portable.log(np.arange(1, count + 1)))
    return raw / raw.sum() - 1.0 / count


def ranked_weights(returns: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """weights[r] (1-d, best first) for the member of rank r in `returns` (any shape), members
    with equal returns sharing the mean of their weights; non-finite returns rank worst."""
    flat = worst_if_not_finite(returns).ravel()
    order = descending_order(flat)
    ordered = flat[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    sums = np.add.reduceat(weights, starts)
    counts = np.diff(np.append(starts, flat.size))
    shared = np.empty(flat.size)
    shared[order] = np.repeat(sums / counts, counts)
    return shared.reshape(returns.shape)


def paper_popsize(n_params: int) -> int:
    """lambda = 4 + floor(3 ln d) (Wierstra et al. 2014, Table 1)."""
    return 4 + math.floor(3 * math.log(n_params))
