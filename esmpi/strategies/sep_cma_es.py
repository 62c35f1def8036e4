"""sep-CMA-ES: Ros and Hansen (2008), "A simple modification in CMA-ES achieving linear time and
space complexity" (PPSN X): CMA-ES with its covariance matrix restricted to the diagonal, the
update of Hansen and Kern (2004), "Evaluating the CMA evolution strategy on multimodal test
functions" (PPSN VIII, eqs. 2-7), with the covariance learning rate multiplied by (n + 2) / 3.
h_sigma and the default constants follow Hansen (2016), "The CMA Evolution Strategy: A Tutorial"
(arXiv:1604.00772, Appendix A).

Each generation evaluates lambda SINGLE members x_i = m + sigma * sqrt(C) * z_i (z_i a noise
slice; the Population's scale is sigma * sqrt(C)). With the mu = floor(lambda / 2) best first,
weights w_i = ln(mu + 1) - ln(i) normalised to sum 1, mu_eff = 1 / sum w_i**2, z_w = sum w_i z_i
and y_w = sqrt(C) * z_w:

    m        <- m + sigma * y_w
    p_sigma  <- (1 - c_sigma) p_sigma + sqrt(c_sigma (2 - c_sigma) mu_eff) z_w
    h_sigma   = 1 if |p_sigma| / sqrt(1 - (1 - c_sigma)**(2 (g + 1))) < (1.4 + 2 / (n + 1)) chi_n
    p_c      <- (1 - c_c) p_c + h_sigma sqrt(c_c (2 - c_c) mu_eff) y_w
    C        <- (1 - c_cov) C + c_cov / mu_eff (p_c**2 + (1 - h_sigma) c_c (2 - c_c) C)
                + c_cov (1 - 1 / mu_eff) C * sum w_i z_i**2
    sigma    <- sigma exp(c_sigma / d_sigma (|p_sigma| / chi_n - 1))

(C, p_sigma, p_c are vectors, products elementwise; on the right-hand sides C is the old C and
g the number of updates before this one), with c_sigma = (mu_eff + 2) / (n + mu_eff + 3),
d_sigma = 1 + 2 max(0, sqrt((mu_eff - 1) / (n + 1)) - 1) + c_sigma, c_c = 4 / (n + 4),
chi_n = sqrt(n) (1 - 1 / (4 n) + 1 / (21 n**2)) and

    c_cov = (n + 2) / 3 * (2 / (mu_eff (n + sqrt 2)**2)
                           + (1 - 1 / mu_eff) min(1, (2 mu_eff - 1) / ((n + 2)**2 + mu_eff)))

lambda = 4 + floor(3 ln n) for `--popsize 0`; sigma starts at `--sigma`, C at ones. Members with
equal returns share the mean of their weights (as in `snes`), a return that is not finite ranks
worst; z_w and sum w_i z_i**2 come from one pass over the mu best slices
(`kernels.weighted_noise_moments`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from esmpi import kernels
from esmpi.config import Config, UsageError
from esmpi.strategies import fitness, portable
from esmpi.strategies.base import SINGLE, Population, described, population

OPTIONS: tuple[str, ...] = ()
# lambda from the parameter count; sigma stays at the dataclass's 0.1 and the policy at its
# (128, 64) MLP: on CartPole-v1 (8,832 parameters, lambda 31) these reach an eval return of 500
# within 3 generations for seeds 0, 1 and 2, although c_cov ~ 1/n leaves C nearly unadapted.
DEFAULTS: dict = dict(popsize=0)


@dataclass(frozen=True)
class State:
    theta: np.ndarray  # float32 (n_params,), the mean m
    sigma: float = described("global step size sigma")
    diag_c: np.ndarray = described("diagonal of the covariance matrix C")
    p_sigma: np.ndarray = described("evolution path of the step size (conjugate path)")
    p_c: np.ndarray = described("evolution path of the covariance")
    generation: int = described("updates made so far", "generations")


@dataclass(frozen=True)
class Constants:
    """The strategy parameters, derived from lambda and n alone."""

    weights: np.ndarray  # (mu,) best first, sum 1
    mu_eff: float
    c_sigma: float
    d_sigma: float
    c_c: float
    c_cov: float
    chi_n: float

    @classmethod
    def of(cls, popsize: int, n: int) -> Constants:
        mu = popsize // 2
        raw = math.log(mu + 1) - portable.log(np.arange(1, mu + 1))
        weights = raw / raw.sum()
        mu_eff = 1.0 / np.square(weights).sum()
        c_sigma = (mu_eff + 2) / (n + mu_eff + 3)
        d_sigma = 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (n + 1)) - 1) + c_sigma
        c_cov = 2 / (mu_eff * (n + math.sqrt(2)) ** 2) + (1 - 1 / mu_eff) * min(
            1.0, (2 * mu_eff - 1) / ((n + 2) ** 2 + mu_eff)
        )
        chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))
        return cls(weights, mu_eff, c_sigma, d_sigma, 4 / (n + 4), (n + 2) / 3 * c_cov, chi_n)


def popsize(config: Config, n_params: int) -> int:
    """lambda: --popsize, or the paper's 4 + floor(3 ln n) for 0."""
    return config.popsize or fitness.paper_popsize(n_params)


def check(config: Config, n_params: int) -> None:
    if popsize(config, n_params) < 2:
        raise UsageError(
            f"--popsize must be at least 2 for sep-cma-es (the best half, at least one member, "
            f"is selected; 0 gives the paper's 4 + 3 ln n); got {config.popsize}."
        )


def initial(config: Config, theta: np.ndarray) -> State:
    check(config, theta.size)
    zeros = np.zeros(theta.size)
    return State(theta, config.sigma, np.ones(theta.size), zeros, zeros.copy(), 0)


def scale(state: State) -> np.ndarray:
    """sigma * sqrt(C): the per-parameter standard deviation of the members."""
    return state.sigma * np.sqrt(state.diag_c)


def ask(state: State, config: Config, generation: int, table_size: int) -> Population:
    n_params = state.theta.size
    tasks = popsize(config, n_params)
    return population(config, generation, tasks, n_params, table_size, SINGLE, scale(state))


def step_sizes(state: State, population: Population) -> tuple[float, float]:
    """(sigma, the mean of sigma * sqrt(C)): the mean moves by sigma * y_w (c_m = 1), so the
    global step size stands where other strategies show a learning rate."""
    return state.sigma, float(scale(state).mean())


def weighted_moments(
    returns: np.ndarray, weights: np.ndarray, table: np.ndarray, offsets: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """(z_w, sum_i w_i z_i**2) over the mu best members of `returns` (lambda, 1)."""
    ranked = np.zeros(returns.size)
    ranked[: weights.size] = weights
    member_weights = np.ascontiguousarray(fitness.ranked_weights(returns[:, 0], ranked))
    z_w, weighted_squares = np.empty(n), np.empty(n)
    kernels.weighted_noise_moments(
        table, offsets, member_weights, member_weights, z_w, weighted_squares
    )
    return z_w, weighted_squares


def tell(
    state: State,
    population: Population,
    returns: np.ndarray,
    table: np.ndarray,
    config: Config,
    behaviours: np.ndarray | None = None,
) -> State:
    """One update of m, the paths, C and sigma from the returns (lambda, 1) of the members."""
    n = state.theta.size
    k = Constants.of(returns.size, n)
    z_w, weighted_squares = weighted_moments(returns, k.weights, table, population.offsets, n)
    root_c = np.sqrt(state.diag_c)
    y_w = root_c * z_w
    theta = (state.theta + state.sigma * y_w).astype(np.float32)
    p_sigma = (1 - k.c_sigma) * state.p_sigma + math.sqrt(
        k.c_sigma * (2 - k.c_sigma) * k.mu_eff
    ) * z_w
    norm = portable.norm(p_sigma)
    unbiased = norm / math.sqrt(1 - (1 - k.c_sigma) ** (2 * (state.generation + 1)))
    h_sigma = 1.0 if unbiased < (1.4 + 2 / (n + 1)) * k.chi_n else 0.0
    p_c = (1 - k.c_c) * state.p_c + h_sigma * math.sqrt(k.c_c * (2 - k.c_c) * k.mu_eff) * y_w
    stalled = (1 - h_sigma) * k.c_c * (2 - k.c_c)
    diag_c = (
        (1 - k.c_cov) * state.diag_c
        + k.c_cov / k.mu_eff * (np.square(p_c) + stalled * state.diag_c)
        + k.c_cov * (1 - 1 / k.mu_eff) * state.diag_c * weighted_squares
    )
    sigma = state.sigma * math.exp(k.c_sigma / k.d_sigma * (norm / k.chi_n - 1))
    return State(theta, sigma, diag_c, p_sigma, p_c, state.generation + 1)
