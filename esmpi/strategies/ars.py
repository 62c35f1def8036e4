"""ARS, Augmented Random Search: Mania, Guy and Recht (2018), "Simple random search of static
linear policies is competitive for reinforcement learning" (Algorithm 2; reference code
modestyachts/ARS, `code/ars.py`).

Each generation draws N directions delta_k (noise-table slices) and evaluates the antithetic pair
theta +- nu * delta_k on one episode seed, returns r+_k and r-_k. The directions are ranked by
max(r+_k, r-_k) and the best b kept (V1-t/V2-t; b = N is V1/V2); sigma_R is the standard deviation
of the 2b returns kept, and the step is

    theta += alpha / (b * sigma_R) * sum_{k in top b} (r+_k - r-_k) delta_k

with alpha = `--lr`, nu = `--sigma`, N = `--popsize` / 2, b = `--top-directions` (0: all N). When
sigma_R is 0 (every kept return equal, such as every CartPole member at the time limit) the
returns say nothing about any direction and the equation divides 0 by 0: no step is taken, and
`skipped` counts those generations. The reference code would fill theta with NaN there.

V1 and V2 are `--obs-norm false` and `--obs-norm true`. The paper's V2 normalises the observation
by the mean and standard deviation of every state seen in the perturbed episodes so far, frozen
during an iteration and merged from all workers after it; esmpi's normalisation (`obsnorm.py`)
does the same over ranks, and differs in three details: the standard deviation is floored at
1e-2 (the reference code zeroes a feature whose std is below 1e-7), the variance is the
population's (the reference's divides by n - 1), and the normalised observation is clipped to
+-`--obs-clip` (the reference does not clip). Ranking keeps exactly b directions, ties in index
order (the reference's percentile threshold keeps every direction tied with the b-th). The
reference's `shift` (a constant subtracted from every reward, for Hopper, Walker2d, Ant) is not
part of this module. The linear policy of the paper is `--policy linear`, this strategy's default.

A return that is not finite ranks its member worst (a pair ranks by its other member, last when
both failed) and counts as the lowest finite return of the generation in the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esmpi import kernels
from esmpi.config import Config, UsageError
from esmpi.strategies import fitness
from esmpi.strategies.base import MIRRORED, Population, check_pairs, described, population

OPTIONS = ("lr", "top_directions", "population_steps", "popsize_max")
# The paper's linear policy and its step sizes for locomotion (HalfCheetah: alpha 0.02, nu 0.03),
# with N = 16 directions, all used (top_directions 0, so that any --popsize stays valid). On
# CartPole-v1 the policy evaluates at 500 (the limit) within 5 generations, seeds 0, 1 and 2.
DEFAULTS: dict = dict(policy="linear", popsize=32, lr=0.02, sigma=0.03)


@dataclass(frozen=True)
class State:
    theta: np.ndarray  # float32 (n_params,), the centre
    lr: float = described("step size alpha of the update")
    skipped: int = described(
        "generations without a step: the returns used had standard deviation 0", "generations"
    )


def directions_used(config: Config, directions: int) -> int:
    """b: the number of the generation's `directions` that the update uses (all of them when
    --top-directions is 0; a growing population has more than popsize / 2)."""
    return config.top_directions or directions


def check(config: Config, n_params: int) -> None:
    check_pairs(config, "ars")
    if config.top_directions > config.popsize // 2:
        raise UsageError(
            f"--top-directions {config.top_directions} is more than the {config.popsize // 2} "
            f"directions of --popsize {config.popsize}; give at most popsize / 2, or 0 for all."
        )


def initial(config: Config, theta: np.ndarray) -> State:
    check(config, theta.size)
    return State(theta=theta, lr=config.lr, skipped=0)


def ask(state: State, config: Config, generation: int, table_size: int) -> Population:
    pairs, n_params = config.popsize // 2, state.theta.size
    return population(config, generation, pairs, n_params, table_size, MIRRORED, config.sigma)


def step_sizes(state: State, population: Population) -> tuple[float, float]:
    return state.lr, float(population.scale)


def top_directions(returns: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` directions with the largest max(r+, r-) of `returns` (pairs, 2),
    best first, ties in index order; a non-finite return counts as below every finite one."""
    best_of_pair = fitness.worst_if_not_finite(returns).max(axis=1)
    return fitness.descending_order(best_of_pair)[:count]


def tell(
    state: State,
    population: Population,
    returns: np.ndarray,
    table: np.ndarray,
    config: Config,
    behaviours: np.ndarray | None = None,
) -> State:
    """One step from the returns (pairs, 2) of the members (+delta, -delta)."""
    kept = top_directions(returns, directions_used(config, returns.shape[0]))
    used = fitness.finite_or_lowest(returns)[kept]
    reward_std = used.std()
    if not (reward_std > 0 and np.isfinite(reward_std)):
        return State(theta=state.theta, lr=state.lr, skipped=state.skipped + 1)
    weights = np.ascontiguousarray(
        (used[:, 0] - used[:, 1]) * (state.lr / (kept.size * reward_std)), dtype=np.float64
    )
    step = np.empty(state.theta.size)
    kernels.weighted_noise_sum(table, population.offsets[kept], weights, step)
    theta = (state.theta + step).astype(np.float32)
    return State(theta=theta, lr=state.lr, skipped=state.skipped)
