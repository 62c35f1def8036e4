"""SNES, separable natural evolution strategies: Schaul, Glasmachers and Schmidhuber (2011),
"High dimensions and heavy tails for natural evolution strategies" (Algorithm 2), and Wierstra,
Schaul, Glasmachers, Sun, Peters and Schmidhuber (2014), "Natural Evolution Strategies" (JMLR 15,
Algorithm 6 and Table 1).

The search distribution is N(mu, diag(sigma**2)), one sigma per parameter. Each generation draws
lambda noise slices z_k (SINGLE members x_k = mu + sigma * z_k; with `--mirrored`, antithetic
pairs mu +- sigma * z_k, so that the member's noise is +-z_k), sorts the members by return, gives
them the utilities u_k of `fitness.nes_utilities` and follows the natural gradient:

    grad_mu    = sum_k u_k z_k
    grad_sigma = sum_k u_k (z_k**2 - 1)
    mu        <- mu + eta_mu * sigma * grad_mu
    sigma     <- sigma * exp(eta_sigma / 2 * grad_sigma)

with the paper's settings eta_mu = 1 (`--lr`), eta_sigma = (3 + ln d) / (5 sqrt d) for d
parameters (`--stdev-lr`, 0 for the paper's), lambda = 4 + floor(3 ln d) (`--popsize 0`, rounded
up to even with `--mirrored`); sigma starts at `--sigma` for every parameter. Members with equal
returns share the mean of their utilities (the order of equal returns is the order of their
random offsets, and must not steer the update: when every CartPole member reaches the time
limit, nothing moves); a return that is not finite ranks worst. Both sums come from one pass over
each noise slice (`kernels.weighted_noise_moments`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from esmpi import kernels
from esmpi.config import Config, UsageError
from esmpi.strategies import fitness, portable
from esmpi.strategies.base import MIRRORED, SINGLE, Population, described, population

OPTIONS = ("lr", "stdev_lr", "mirrored", "population_steps", "popsize_max")
# The paper's: lambda from the parameter count, eta_mu = 1 (eta_sigma from the parameter count
# is the Config default stdev_lr 0). sigma stays at the dataclass's 0.1: on CartPole-v1 with the
# (128, 64) MLP these reach an eval return of 500 within 3 generations for seeds 0, 1 and 2.
DEFAULTS: dict = dict(popsize=0, lr=1.0)


@dataclass(frozen=True)
class State:
    theta: np.ndarray  # float32 (n_params,), the centre mu
    sigma: np.ndarray = described("per-parameter standard deviation of the search distribution")
    lr: float = described("learning rate eta_mu of the centre")


def popsize(config: Config, n_params: int) -> int:
    """Members per generation: --popsize, or the paper's (even when mirrored) for 0."""
    if config.popsize:
        return config.popsize
    size = fitness.paper_popsize(n_params)
    return size + size % 2 if config.mirrored else size


def sigma_lr(config: Config, n_params: int) -> float:
    """eta_sigma: --stdev-lr, or the paper's (3 + ln d) / (5 sqrt d) for 0."""
    return config.stdev_lr or (3 + math.log(n_params)) / (5 * math.sqrt(n_params))


def check(config: Config, n_params: int) -> None:
    size = popsize(config, n_params)
    if size < 2:
        raise UsageError(
            f"--popsize must be at least 2 for snes (or 0 for the paper's 4 + 3 ln d); "
            f"got {config.popsize}."
        )
    if config.mirrored and size % 2:
        raise UsageError(
            f"--popsize must be even with --mirrored (members come in antithetic +z/-z pairs); "
            f"got {config.popsize}."
        )


def initial(config: Config, theta: np.ndarray) -> State:
    check(config, theta.size)
    return State(theta=theta, sigma=np.full(theta.size, config.sigma), lr=config.lr)


def ask(state: State, config: Config, generation: int, table_size: int) -> Population:
    n_params = state.theta.size
    size = popsize(config, n_params)
    signs, tasks = (MIRRORED, size // 2) if config.mirrored else (SINGLE, size)
    return population(config, generation, tasks, n_params, table_size, signs, state.sigma)


def step_sizes(state: State, population: Population) -> tuple[float, float]:
    """(eta_mu, the mean of the per-parameter sigmas)."""
    return state.lr, float(state.sigma.mean())


def gradients(
    utilities: np.ndarray, signs, table: np.ndarray, offsets: np.ndarray, n_params: int
) -> tuple[np.ndarray, np.ndarray]:
    """(grad_mu, grad_sigma) from the utilities (tasks, len(signs)) of the members sign * z_k."""
    linear_weights = np.ascontiguousarray(utilities @ np.asarray(signs, dtype=np.float64))
    square_weights = np.ascontiguousarray(utilities.sum(axis=1))
    grad_mu, weighted_squares = np.empty(n_params), np.empty(n_params)
    kernels.weighted_noise_moments(
        table, offsets, linear_weights, square_weights, grad_mu, weighted_squares
    )
    return grad_mu, weighted_squares - utilities.sum()


def tell(
    state: State,
    population: Population,
    returns: np.ndarray,
    table: np.ndarray,
    config: Config,
    behaviours: np.ndarray | None = None,
) -> State:
    """One natural-gradient step from the returns (tasks, len(signs)) of the members."""
    n_params = state.theta.size
    utilities = fitness.ranked_weights(returns, fitness.nes_utilities(returns.size))
    grad_mu, grad_sigma = gradients(
        utilities, population.signs, table, population.offsets, n_params
    )
    theta = (state.theta + state.lr * state.sigma * grad_mu).astype(np.float32)
    sigma = state.sigma * portable.exp(sigma_lr(config, n_params) / 2 * grad_sigma)
    return State(theta=theta, sigma=sigma, lr=state.lr)
