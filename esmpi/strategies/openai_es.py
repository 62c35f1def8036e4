"""OpenAI-ES: Salimans, Ho, Chen, Sidor and Sutskever (2017), "Evolution Strategies as a Scalable
Alternative to Reinforcement Learning".

Antithetic pairs theta +- sigma * eps, centered-rank fitness shaping (standardised), and the
estimate g = 1/(n sigma) sum_i F_i eps_i over the n members, followed by Adam (the paper's), SGD
with momentum, or ClipUp. The returns are penalised by weight_decay * mean(w**2) of each member's
weights (the program esmpi replaces), and lr and sigma decay geometrically to their floors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esmpi import kernels
from esmpi.config import Config
from esmpi.strategies import fitness, optimizers
from esmpi.strategies.base import MIRRORED, Population, check_pairs, described, population

OPTIONS = (
    "optimizer",
    "lr",
    "lr_decay",
    "lr_min",
    "sigma_decay",
    "sigma_min",
    "weight_decay",
    "momentum",
    "max_speed",
    "population_steps",
    "popsize_max",
)
DEFAULTS: dict = {}  # the Config dataclass defaults are this strategy's


@dataclass(frozen=True)
class State:
    theta: np.ndarray  # float32 (n_params,), the centre
    optimizer: optimizers.OptimizerState
    lr: float = described("learning rate of the next update")
    sigma: float = described("perturbation standard deviation of the next generation")


def check(config: Config, n_params: int) -> None:
    check_pairs(config, "openai-es")


def initial(config: Config, theta: np.ndarray) -> State:
    check(config, theta.size)
    return State(theta, optimizers.OptimizerState.initial(theta.size), config.lr, config.sigma)


def ask(state: State, config: Config, generation: int, table_size: int) -> Population:
    pairs = config.popsize // 2
    return population(
        config, generation, pairs, state.theta.size, table_size, MIRRORED, state.sigma
    )


def step_sizes(state: State, population: Population) -> tuple[float, float]:
    return state.lr, state.sigma


def penalised_returns(returns: np.ndarray, mean_squares: np.ndarray, weight_decay: float):
    """Returns (pairs, 2) minus weight_decay * mean(w**2) of each member's weights."""
    return returns - weight_decay * mean_squares


def gradient(
    shaped: np.ndarray, table: np.ndarray, offsets: np.ndarray, sigma: float, n_params: int
) -> np.ndarray:
    """The ES gradient estimate (float64) from shaped fitness (pairs, 2) of antithetic pairs."""
    pair_weights = np.ascontiguousarray(shaped[:, 0] - shaped[:, 1], dtype=np.float64)
    total = np.empty(n_params)
    kernels.weighted_noise_sum(table, offsets, pair_weights, total)
    return total / (shaped.size * sigma)


def decayed(lr: float, sigma: float, config: Config) -> tuple[float, float]:
    """Each generation lr *= lr_decay while above lr_min, sigma *= sigma_decay while above
    sigma_min."""
    if lr > config.lr_min:
        lr *= config.lr_decay
    if sigma > config.sigma_min:
        sigma *= config.sigma_decay
    return lr, sigma


def tell(
    state: State,
    population: Population,
    returns: np.ndarray,
    table: np.ndarray,
    config: Config,
    behaviours: np.ndarray | None = None,
) -> State:
    """One update from the returns (pairs, 2) of the members (+eps, -eps)."""
    offsets = population.offsets
    mean_squares = np.empty(returns.shape)
    kernels.perturbed_mean_squares(state.theta, table, offsets, state.sigma, mean_squares)
    shaped = fitness.standardised_ranks(
        penalised_returns(returns, mean_squares, config.weight_decay)
    )
    grad = gradient(shaped, table, offsets, state.sigma, state.theta.size)
    change, optimizer = optimizers.step(
        config.optimizer, state.optimizer, grad, state.lr, config.momentum, config.max_speed
    )
    theta = (state.theta + change).astype(np.float32)
    lr, sigma = decayed(state.lr, state.sigma, config)
    return State(theta=theta, optimizer=optimizer, lr=lr, sigma=sigma)
