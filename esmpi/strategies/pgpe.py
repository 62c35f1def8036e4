"""PGPE: Sehnke, Osendorfer, Rueckstiess, Graves, Peters and Schmidhuber (2010),
"Parameter-exploring policy gradients", with ClipUp: Toklu, Liskowski and Srivastava (2020),
"ClipUp: A Simple and Powerful Optimizer for Distribution-based Policy Evolution"; as in their
reference code nnaisense/pgpelib (`pgpe.py: compute_reinforce_update` and `PGPE.tell`).

The search distribution is N(mu, diag(sigma**2)) with one sigma per parameter. Each generation
draws N = popsize / 2 noise slices eps_k and evaluates the symmetric pair mu +- sigma * eps_k on
one episode seed. With F+_k, F-_k the centered ranks (in [-0.5, 0.5]; a non-finite return ranks
worst) of the pair's returns and b the mean of all 2N ranks, the symmetric-sampling gradients of
the paper (section 2.3, with the scaled noise s_k = sigma * eps_k) are

    g_mu    = 1/N sum_k (F+_k - F-_k) / 2 * s_k
    g_sigma = 1/N sum_k ((F+_k + F-_k) / 2 - b) * (s_k**2 - sigma**2) / sigma

(pgpelib's `compute_reinforce_update`; (s**2 - sigma**2) / sigma = sigma * (eps**2 - 1)), both
from one pass over each slice. The centre follows g_mu with `--optimizer` (ClipUp by default:
v = momentum * v + lr * g / |g|, |v| clipped to `--max-speed`, mu += v); sigma takes the plain
step sigma + stdev_lr * g_sigma, each sigma clipped to within stdev_max_change * sigma of its
old value (pgpelib's `stdev_max_change`, 0.2), which also keeps it positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esmpi import kernels
from esmpi.config import Config, UsageError
from esmpi.strategies import fitness, optimizers
from esmpi.strategies.base import MIRRORED, Population, check_pairs, described, population

OPTIONS = (
    "optimizer",
    "lr",
    "momentum",
    "max_speed",
    "stdev_lr",
    "stdev_max_change",
    "population_steps",
    "popsize_max",
)
# ClipUp's recommended setting (Toklu et al., and pgpelib's train_agents scripts): a centre step
# of lr = 0.075 with max speed 2 lr = 0.15, and sigma from the radius 15 * max speed = 2.25 of
# the search distribution, 2.25 / sqrt(d) per parameter: 0.02 for the ~10,000 weights of the
# default MLP. stdev_lr 0.1 is pgpelib's; popsize the dataclass's 64. Measured on 2 ranks:
# CartPole-v1 at 500 in 100 generations for seeds 0, 1, 2; HalfCheetah-v5 from 28 (generation 10)
# to 2,420 in 60 generations (3.9e6 steps, clipped actions).
DEFAULTS: dict = dict(optimizer="clipup", lr=0.075, sigma=0.02, stdev_lr=0.1)


@dataclass(frozen=True)
class State:
    theta: np.ndarray  # float32 (n_params,), the centre mu
    optimizer: optimizers.OptimizerState
    sigma: np.ndarray = described(
        "per-parameter standard deviation of the next generation", "parameter units"
    )
    lr: float = described("centre learning rate (with clipup the length of a step)")


def check(config: Config, n_params: int) -> None:
    check_pairs(config, "pgpe")
    if config.stdev_lr > 0 and config.stdev_max_change >= 1:
        raise UsageError(
            f"--stdev-max-change must be below 1 for pgpe, or a sigma could reach 0 in one "
            f"generation; got {config.stdev_max_change}."
        )


def initial(config: Config, theta: np.ndarray) -> State:
    check(config, theta.size)
    return State(
        theta=theta,
        optimizer=optimizers.OptimizerState.initial(theta.size),
        sigma=np.full(theta.size, config.sigma),
        lr=config.lr,
    )


def ask(state: State, config: Config, generation: int, table_size: int) -> Population:
    pairs = config.popsize // 2
    return population(
        config, generation, pairs, state.theta.size, table_size, MIRRORED, state.sigma
    )


def step_sizes(state: State, population: Population) -> tuple[float, float]:
    return state.lr, float(state.sigma.mean())


def gradients(
    ranks: np.ndarray, table: np.ndarray, offsets: np.ndarray, sigma: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(g_mu, g_sigma) in float64 from the ranks (pairs, 2) of the members (+eps, -eps)."""
    pairs = ranks.shape[0]
    difference = np.ascontiguousarray((ranks[:, 0] - ranks[:, 1]) / (2 * pairs))
    excess = np.ascontiguousarray(((ranks[:, 0] + ranks[:, 1]) / 2 - ranks.mean()) / pairs)
    linear, square = np.empty(sigma.size), np.empty(sigma.size)
    kernels.weighted_noise_moments(table, offsets, difference, excess, linear, square)
    # sum_k w_k (s_k**2 - sigma**2) / sigma = sigma * (sum_k w_k eps_k**2 - sum_k w_k)
    return sigma * linear, sigma * (square - excess.sum())


def updated_sigma(
    sigma: np.ndarray, grad_sigma: np.ndarray, stdev_lr: float, max_change: float
) -> np.ndarray:
    """sigma + stdev_lr * g_sigma, each within max_change * sigma of its old value."""
    allowed = max_change * np.abs(sigma)
    return np.clip(sigma + stdev_lr * grad_sigma, sigma - allowed, sigma + allowed)


def tell(
    state: State,
    population: Population,
    returns: np.ndarray,
    table: np.ndarray,
    config: Config,
    behaviours: np.ndarray | None = None,
) -> State:
    """One update from the returns (pairs, 2) of the members (+eps, -eps)."""
    ranks = fitness.centered_ranks(returns)
    grad_mu, grad_sigma = gradients(ranks, table, population.offsets, state.sigma)
    change, optimizer = optimizers.step(
        config.optimizer, state.optimizer, grad_mu, state.lr, config.momentum, config.max_speed
    )
    theta = (state.theta + change).astype(np.float32)
    sigma = updated_sigma(state.sigma, grad_sigma, config.stdev_lr, config.stdev_max_change)
    return State(theta=theta, optimizer=optimizer, sigma=sigma, lr=state.lr)
