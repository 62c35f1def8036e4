"""NS-ES: novelty search with a meta-population of ES parents (Conti et al. 2018, "Improving
Exploration in Evolution Strategies for Deep Reinforcement Learning via a Population of
Novelty-Seeking Agents"). Each parent follows the gradient of novelty alone (w = 0); the reward
only chooses the kept best parameters. The family's equations are in `novelty_es`."""

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
OPTIONS = COMMON_OPTIONS
DEFAULTS: dict = {**COMMON_DEFAULTS, "reward_weight": 0.0, "weight_step": 0.0}
