"""The novelty-seeking ES family of Conti, Madhavan, Petroski Such, Lehman, Stanley and Clune
(2018), "Improving Exploration in Evolution Strategies for Deep Reinforcement Learning via a
Population of Novelty-Seeking Agents" (reference code uber-research/deep-neuroevolution); the
strategies `ns_es`, `nsr_es` and `nsra_es` are this module with their own settings.

A meta-population of M parents, each with its own parameters, Adam state and observation
normalisation. Each generation:
1. the evaluation episodes run the parent updated last (`theta`); the mean of their behaviour
   characterisations (BCs) becomes that parent's BC and joins the archive (`select`);
2. the parent to perturb is drawn with probability proportional to its novelty against the
   archive (`novelty.selection_probabilities`), from (seed, generation) so every rank draws the
   same; each parent is taken once, in order, before the draws start, since a parent's BC is
   only known once it has run;
3. antithetic pairs around it are evaluated, each member's novelty is its BC's mean distance to
   the k nearest archive entries, and the parent moves along the OpenAI-ES gradient estimate of
   w * rank(reward) + (1 - w) * rank(novelty) (centered ranks, each score less weight_decay *
   mean(member**2) as in `openai_es`), through Adam (`tell`).
NS-ES uses w = 0, NSR-ES a fixed w (0.5), NSRA-ES starts at w = 1 and adapts it: up by
weight_step when an evaluation return sets a record, down by weight_step after weight_patience
generations without one (the paper's schedule: 0.05 and 10).

Departures from the reference code: a parent's BC is the mean over --eval-episodes episodes of
one generation (the reference runs one episode), and lr and sigma decay as in openai-es (the
defaults here keep them fixed, as the paper does).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from esmpi import kernels
from esmpi.config import Config, UsageError
from esmpi.obsnorm import ObsNorm
from esmpi.strategies import fitness, novelty, openai_es, optimizers
from esmpi.strategies.base import Population, check_pairs, described
from esmpi.strategies.openai_es import decayed, gradient, penalised_returns

COMMON_OPTIONS = (
    "optimizer",
    "lr",
    "lr_decay",
    "lr_min",
    "sigma_decay",
    "sigma_min",
    "weight_decay",
    "momentum",
    "max_speed",
    "parents",
    "neighbours",
)
# The paper's MuJoCo settings (the OpenAI starter's Humanoid configuration: sigma 0.02, Adam
# lr 0.01, L2 0.005) with fixed step sizes; M = 5 parents and k = 10 neighbours.
COMMON_DEFAULTS: dict = dict(sigma=0.02, lr=0.01, weight_decay=0.005, sigma_decay=1.0)


@dataclass(frozen=True)
class State:
    theta: np.ndarray  # float32 (n_params,): thetas[parent]
    thetas: np.ndarray = described("the parents' parameters (parents, n_params)", "parameters")
    parent: int = described("the parent the next population perturbs (theta is its parameters)")
    steps: np.ndarray = described("each parent's optimizer updates so far", "updates")
    first_moments: np.ndarray = described(
        "each parent's Adam first moment (or momentum velocity)", "parameter units"
    )
    second_moments: np.ndarray = described(
        "each parent's Adam second moment", "parameter units squared"
    )
    archive: np.ndarray = described(
        "the archive: the BC of the updated parent of every generation, oldest first", "BC units"
    )
    parent_behaviours: np.ndarray = described(
        "each parent's last measured BC (NaN: not measured yet)", "BC units"
    )
    norm_counts: np.ndarray = described(
        "each parent's observation count (the current parent's lives in /obs_count)",
        "observations",
    )
    norm_means: np.ndarray = described("each parent's observation mean", "observation units")
    norm_vars: np.ndarray = described(
        "each parent's observation variance", "observation units squared"
    )
    reward_weight: float = described("w: the weight of the reward rank in the next update")
    best_return: float = described("the best evaluation return so far (nsra-es)", "return")
    stagnation: int = described(
        "generations since the evaluation return last set a record (nsra-es)", "generations"
    )
    lr: float = described("learning rate of the next update")
    sigma: float = described("perturbation standard deviation of the next generation")


def starting_points(config: Config) -> int:
    """How many initial parameter vectors `initial` takes: one per parent."""
    return config.parents


def initial(config: Config, theta: np.ndarray) -> State:
    """The state of `config.parents` parents from their starting points `theta` (parents,
    n_params); their BCs, the archive and the normalisations are filled in by the first `select`
    (the BC size and the observation size are not known before)."""
    check_pairs(config, config.strategy)
    if not config.behaviour:
        raise UsageError(
            f"--strategy {config.strategy} needs --behaviour (what novelty is measured on), e.g. "
            "--behaviour position for MuJoCo, PyBullet and maze tasks."
        )
    thetas = np.array(theta, dtype=np.float32, ndmin=2)
    parents, n_params = thetas.shape
    return State(
        theta=thetas[0].copy(),
        thetas=thetas,
        parent=0,
        steps=np.zeros(parents, dtype=np.int64),
        first_moments=np.zeros((parents, n_params)),
        second_moments=np.zeros((parents, n_params)),
        archive=np.zeros((0, 0)),
        parent_behaviours=np.zeros((parents, 0)),
        norm_counts=np.zeros(parents),
        norm_means=np.zeros((parents, 0)),
        norm_vars=np.zeros((parents, 0)),
        reward_weight=config.reward_weight,
        best_return=-np.inf,
        stagnation=0,
        lr=config.lr,
        sigma=config.sigma,
    )


# OpenAI-ES's antithetic pairs from (seed, generation), at this state's sigma; they perturb
# whichever parent `select` chooses. The step sizes are its lr and sigma too.
ask = openai_es.ask
step_sizes = openai_es.step_sizes


def replaced_row(array: np.ndarray, index: int, value) -> np.ndarray:
    """A copy of `array` with row `index` set to `value` (the states are frozen)."""
    copy = array.copy()
    copy[index] = value
    return copy


def adapted_weight(state: State, eval_return: float, config: Config) -> tuple[float, float, int]:
    """(reward weight, best return, stagnation) after an evaluation return: NSRA-ES's schedule
    when weight_step > 0 (a record raises w, weight_patience generations without one lower it),
    else w unchanged."""
    weight, best, stagnation = state.reward_weight, state.best_return, state.stagnation
    if eval_return > best:
        weight, best, stagnation = min(1.0, weight + config.weight_step), eval_return, 0
    else:
        stagnation += 1
        if stagnation >= config.weight_patience:
            weight, stagnation = max(0.0, weight - config.weight_step), 0
    return weight, best, stagnation


def first_measured(state: State, behaviour: np.ndarray, obs_norm: ObsNorm) -> State:
    """`state` with the BC and normalisation arrays sized at the first `select`: no parent
    measured yet, each parent's normalisation the starting one."""
    parents = state.thetas.shape[0]
    return dataclasses.replace(
        state,
        archive=np.zeros((0, behaviour.size)),
        parent_behaviours=np.full((parents, behaviour.size), np.nan),
        norm_counts=np.full(parents, obs_norm.count),
        norm_means=np.tile(obs_norm.mean, (parents, 1)),
        norm_vars=np.tile(obs_norm.var, (parents, 1)),
    )


def next_parent(state: State, config: Config, generation: int) -> int:
    """The first parent never measured, else one drawn by novelty from (seed, generation)."""
    unmeasured = np.flatnonzero(~np.isfinite(state.parent_behaviours).all(axis=1))
    if unmeasured.size:
        return int(unmeasured[0])
    novelties = novelty.novelty(state.parent_behaviours, state.archive, config.neighbours)
    probabilities = novelty.selection_probabilities(novelties)
    return novelty.drawn_parent(probabilities, config.seed, generation)


def select(
    state: State,
    config: Config,
    generation: int,
    returns: np.ndarray,
    behaviours: np.ndarray,
    obs_norm: ObsNorm,
) -> tuple[State, ObsNorm]:
    """After the evaluation episodes of `theta` (their `returns` (K,) and BCs (K, B)) ran with
    `obs_norm`: record that parent's BC in the archive and its normalisation, adapt the weight,
    and choose the parent this generation perturbs. Returns the new state and the chosen
    parent's normalisation. A generation whose evaluation failed adds nothing to the archive."""
    behaviour = behaviours.mean(axis=0)
    if not state.parent_behaviours.shape[1]:
        state = first_measured(state, behaviour, obs_norm)
    measured, archive, p = state.parent_behaviours, state.archive, state.parent
    if np.isfinite(behaviour).all():
        measured = replaced_row(measured, p, behaviour)
        archive = np.concatenate([archive, behaviour[None, :]])
    weight, best, stagnation = state.reward_weight, state.best_return, state.stagnation
    if config.weight_step:
        weight, best, stagnation = adapted_weight(state, float(returns.mean()), config)
    state = dataclasses.replace(
        state,
        archive=archive,
        parent_behaviours=measured,
        norm_counts=replaced_row(state.norm_counts, p, obs_norm.count),
        norm_means=replaced_row(state.norm_means, p, obs_norm.mean),
        norm_vars=replaced_row(state.norm_vars, p, obs_norm.var),
        reward_weight=weight,
        best_return=best,
        stagnation=stagnation,
    )
    parent = next_parent(state, config, generation)
    chosen = ObsNorm(
        float(state.norm_counts[parent]),
        state.norm_means[parent].copy(),
        state.norm_vars[parent].copy(),
    )
    return dataclasses.replace(state, parent=parent, theta=state.thetas[parent].copy()), chosen


def scores(
    state: State,
    returns: np.ndarray,
    behaviours: np.ndarray,
    mean_squares: np.ndarray,
    config: Config,
) -> np.ndarray:
    """w * centered_rank(reward) + (1 - w) * centered_rank(novelty) of the members (pairs, 2),
    each less the weight-decay penalty before ranking."""
    points = behaviours.reshape(-1, behaviours.shape[-1])
    novelties = novelty.novelty(points, state.archive, config.neighbours).reshape(returns.shape)
    by_novelty = fitness.centered_ranks(
        penalised_returns(novelties, mean_squares, config.weight_decay)
    )
    by_reward = fitness.centered_ranks(
        penalised_returns(returns, mean_squares, config.weight_decay)
    )
    return state.reward_weight * by_reward + (1 - state.reward_weight) * by_novelty


def tell(
    state: State,
    population: Population,
    returns: np.ndarray,
    table: np.ndarray,
    config: Config,
    behaviours: np.ndarray | None = None,
) -> State:
    """One update of the chosen parent from the returns (pairs, 2) and BCs (pairs, 2, B) of its
    members (+eps, -eps)."""
    if behaviours is None:
        raise ValueError(f"{config.strategy} needs the members' behaviours")
    offsets, p = population.offsets, state.parent
    mean_squares = np.empty(returns.shape)
    kernels.perturbed_mean_squares(state.theta, table, offsets, state.sigma, mean_squares)
    shaped = scores(state, returns, behaviours, mean_squares, config)
    grad = gradient(shaped, table, offsets, state.sigma, state.theta.size)
    own = optimizers.OptimizerState(
        int(state.steps[p]), state.first_moments[p], state.second_moments[p]
    )
    change, moved = optimizers.step(
        config.optimizer, own, grad, state.lr, config.momentum, config.max_speed
    )
    theta = (state.theta + change).astype(np.float32)
    lr, sigma = decayed(state.lr, state.sigma, config)
    return dataclasses.replace(
        state,
        theta=theta,
        thetas=replaced_row(state.thetas, p, theta),
        steps=replaced_row(state.steps, p, moved.step),
        first_moments=replaced_row(state.first_moments, p, moved.first_moment),
        second_moments=replaced_row(state.second_moments, p, moved.second_moment),
        lr=lr,
        sigma=sigma,
    )
