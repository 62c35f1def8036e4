"""NSR-ES: novelty search with reward (Conti et al. 2018, "Improving Exploration in Evolution
Strategies for Deep Reinforcement Learning via a Population of Novelty-Seeking Agents"). Each
parent follows the gradient of w * rank(reward) + (1 - w) * rank(novelty), w = --reward-weight
(the paper's 0.5). The family's equations are in `novelty_es`."""

from esmpi.strategies.novelty_es import (
    COMMON_DEFAULTS,
    COMMON_OPTIONS,
    State,
    ask,
    initial,
    select,
    starting_points,
    step_sizes,
    tell,
)

__all__ = ["State", "ask", "initial", "select", "starting_points", "step_sizes", "tell"]
OPTIONS = (*COMMON_OPTIONS, "reward_weight")
DEFAULTS: dict = {**COMMON_DEFAULTS, "reward_weight": 0.5, "weight_step": 0.0}
