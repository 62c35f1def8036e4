"""OpenAI-ES as pure functions: fitness shaping, the gradient estimate, optimizers and schedules.

Follows Salimans, Ho, Chen, Sidor and Sutskever (2017), "Evolution Strategies as a Scalable
Alternative to Reinforcement Learning": antithetic pairs theta +- sigma*eps, centered-rank fitness
shaping, and the estimate g = 1/(n*sigma) * sum_i F_i eps_i over the n members. Every rank calls
these with the same inputs and gets the same bits. No MPI, HDF5 or Gymnasium here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from esmpi import kernels
from esmpi.config import Config

ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8


def centered_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of `values` (any shape) scaled to [-0.5, 0.5]; tied values share the mean of their
    ranks. Breaking ties by position instead would turn a population of equal returns (every
    CartPole member at the time limit, every Pong member losing 21-0) into a gradient along the
    noise of whichever members came first."""
    flat = values.ravel()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ends = np.append(starts[1:], flat.size)
    ranks = np.empty(flat.size)
    ranks[order] = np.repeat((starts + ends - 1) / 2, ends - starts)
    return (ranks / (flat.size - 1) - 0.5).reshape(values.shape)


def shaped_fitness(fitness: np.ndarray) -> np.ndarray:
    """Centered ranks, then standardised to zero mean and unit standard deviation."""
    ranks = centered_ranks(fitness)
    std = ranks.std()
    return (ranks - ranks.mean()) / std if std > 0 else np.zeros_like(ranks)


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


@dataclass(frozen=True)
class OptimizerState:
    """Adam's moment estimates and step count (SGD leaves them unused)."""

    step: int
    first_moment: np.ndarray
    second_moment: np.ndarray

    @classmethod
    def initial(cls, n_params: int) -> OptimizerState:
        return cls(step=0, first_moment=np.zeros(n_params), second_moment=np.zeros(n_params))


def optimizer_step(
    name: str, state: OptimizerState, grad: np.ndarray, lr: float
) -> tuple[np.ndarray, OptimizerState]:
    """The change to add to theta for gradient `grad` (ascent), and the new optimizer state."""
    if name == "sgd":
        return lr * grad, replace(state, step=state.step + 1)
    step = state.step + 1
    first = ADAM_BETA1 * state.first_moment + (1 - ADAM_BETA1) * grad
    second = ADAM_BETA2 * state.second_moment + (1 - ADAM_BETA2) * grad * grad
    rate = lr * np.sqrt(1 - ADAM_BETA2**step) / (1 - ADAM_BETA1**step)
    change = rate * first / (np.sqrt(second) + ADAM_EPSILON)
    return change, OptimizerState(step=step, first_moment=first, second_moment=second)


def decayed(lr: float, sigma: float, config: Config) -> tuple[float, float]:
    """The schedule of the program esmpi replaces: each generation lr *= lr_decay while above
    lr_min, sigma *= sigma_decay while above sigma_min."""
    if lr > config.lr_min:
        lr *= config.lr_decay
    if sigma > config.sigma_min:
        sigma *= config.sigma_decay
    return lr, sigma


@dataclass(frozen=True)
class SearchState:
    """What the ES itself carries from one generation to the next."""

    theta: np.ndarray  # float32 (n_params,)
    optimizer: OptimizerState
    lr: float
    sigma: float


def update(
    state: SearchState,
    returns: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    config: Config,
) -> SearchState:
    """One ES generation's update from the returns (pairs, 2) of members (+eps, -eps)."""
    mean_squares = np.empty(returns.shape)
    kernels.perturbed_mean_squares(state.theta, table, offsets, state.sigma, mean_squares)
    fitness = penalised_returns(returns, mean_squares, config.weight_decay)
    grad = gradient(shaped_fitness(fitness), table, offsets, state.sigma, state.theta.size)
    change, optimizer = optimizer_step(config.optimizer, state.optimizer, grad, state.lr)
    theta = (state.theta + change).astype(np.float32)
    lr, sigma = decayed(state.lr, state.sigma, config)
    return SearchState(theta=theta, optimizer=optimizer, lr=lr, sigma=sigma)


def perturbed(theta: np.ndarray, noise: np.ndarray, sigma: float, sign: int, out: np.ndarray):
    """out = theta + sign * sigma * noise, in float32, the same bits on every rank."""
    np.multiply(noise, np.float32(sign * sigma), out=out)
    out += theta
    return out
