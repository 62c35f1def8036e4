"""NSRA-ES: novelty search with reward and an adaptive weight (Conti et al. 2018, "Improving
Exploration in Evolution Strategies for Deep Reinforcement Learning via a Population of
Novelty-Seeking Agents"). As NSR-ES, with w starting at --reward-weight (1.0: reward alone) and
moved by --weight-step: up when the evaluation return sets a record, down after --weight-patience
generations without one (the paper's 0.05 and 10). The family's equations are in `novelty_es`."""

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
OPTIONS = (*COMMON_OPTIONS, "reward_weight", "weight_step", "weight_patience")
DEFAULTS: dict = {**COMMON_DEFAULTS, "reward_weight": 1.0, "weight_step": 0.05}
