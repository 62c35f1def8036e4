"""One episode of one parameter vector; nothing else.

Episode rules (burn-in, early stop, the fitness term) come from the config's options of the same
names (presets set them for CarRacing and the PyBullet Ant). An episode without rules runs the
plain loop, with no per-step work beyond acting and stepping; the loop is chosen once per episode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from esmpi import envs
from esmpi.config import UsageError
from esmpi.policies import NonFiniteObservation

# Why an episode failed, by code (0: it did not): a reward or an observation was NaN or inf, or
# the environment's reset or step raised.
FAILURE_KINDS = ("reward", "observation", "raised")


class EpisodeFailed(Exception):
    """An episode that has no score: `kind` is one of FAILURE_KINDS, `steps` the steps it took
    (the one that failed included), `detail` what went wrong in a few words, `seed` the reset
    seed it ran on (what replays it). An environment that raised is the __cause__."""

    def __init__(self, kind: str, steps: int, detail: str):
        super().__init__(f"{detail} (step {steps})")
        self.kind, self.steps, self.detail = kind, steps, detail
        self.seed: int | None = None  # set where the episode ended, run_episode

    @property
    def code(self) -> int:
        return FAILURE_KINDS.index(self.kind) + 1


def _failure(error: Exception, steps: int, seed: int) -> EpisodeFailed:
    """What `error`, raised during step `steps` (0: the reset) of the episode on reset seed
    `seed`, means."""
    if isinstance(error, EpisodeFailed):
        failed = error
    elif isinstance(error, NonFiniteObservation):
        # act() reads the observation of the step before: that step returned it
        where = "reset" if steps <= 1 else f"step {steps - 1}"
        failed = EpisodeFailed("observation", max(steps - 1, 0), f"{error} (from the {where})")
    else:
        where = "reset" if steps == 0 else "step"
        failed = EpisodeFailed("raised", steps, f"{where} raised {type(error).__name__}: {error}")
    failed.seed = int(seed)
    return failed


def _reward_failure(reward, steps: int) -> EpisodeFailed:
    return EpisodeFailed("reward", steps, f"the reward is {float(reward)}")


# pybullet_envs_gymnasium's locomotion envs keep this step's reward terms in env.unwrapped.rewards:
# [alive, progress, electricity cost, joints-at-limit cost, feet collision cost].
PROGRESS_TERM = 1


@dataclass(frozen=True)
class EpisodeRules:
    """burn_in zero-action steps first (rewards not counted); stop after more than early_stop
    consecutive negative scores once more than early_stop_after steps are done (0: never); go on
    after the environment's `terminated` when ignore_terminated; score each step by its reward
    ('return') or by the PyBullet progress term ('progress'), minus reward_shift in the total
    (training episodes only; early stop looks at the unshifted score)."""

    burn_in: int = 0
    early_stop: int = 0
    early_stop_after: int = 0
    fitness: str = "return"
    ignore_terminated: bool = False
    reward_shift: float = 0.0

    @classmethod
    def from_config(cls, config, training: bool = False) -> EpisodeRules:
        """The rules of `config`'s episodes: with its reward shift for `training` episodes (the
        population's), without it for evaluations."""
        return cls(
            config.burn_in,
            config.early_stop,
            config.early_stop_after,
            config.fitness,
            config.ignore_terminated,
            config.reward_shift if training else 0.0,
        )


NO_RULES = EpisodeRules()


def run_episode(
    env, actor, theta: np.ndarray, seed: int, horizon: int, rules: EpisodeRules = NO_RULES
) -> tuple[float, int]:
    """Reset `env` and `actor` with `seed`, act with `theta` until the episode ends or `horizon`
    steps pass.

    Returns (total score, steps taken, burn-in included), or raises EpisodeFailed when a reward
    or an observation is NaN or inf or the environment raises. The actor's observation sums grow
    by this episode's observations as a side effect.
    """
    if rules != NO_RULES:
        return _ruled_episode(env, actor, theta, seed, horizon, rules)
    steps, isfinite = 0, math.isfinite
    try:
        obs, _ = envs.reset(env, int(seed))
        actor.reset(int(seed))
        total = 0.0
        act, step = actor.act, env.step
        for steps in range(1, horizon + 1):
            obs, reward, terminated, truncated, _ = step(act(obs, theta))
            total += float(reward)
            if not isfinite(total):  # NaN or inf once any reward is
                raise _reward_failure(reward, steps)
            if terminated or truncated:
                return total, steps
    except Exception as error:
        raise _failure(error, steps, seed) from error
    return total, horizon


def _ruled_episode(env, actor, theta, seed, horizon, rules: EpisodeRules) -> tuple[float, int]:
    steps, isfinite = 0, math.isfinite
    try:
        obs, _ = envs.reset(env, int(seed))
        actor.reset(int(seed))
        act, step = actor.act, env.step
        idle = zero_action(env.action_space)
        endless = rules.ignore_terminated
        for steps in range(1, min(rules.burn_in, horizon) + 1):
            obs, reward, terminated, truncated, _ = step(idle)
            if not isfinite(float(reward)):
                raise _reward_failure(reward, steps)
            if (terminated and not endless) or truncated:
                return 0.0, steps
        terms = progress_terms(env) if rules.fitness == "progress" else None
        total, negative_run = 0.0, 0
        patience, after = rules.early_stop or horizon + 1, rules.early_stop_after
        shift = rules.reward_shift
        for steps in range(rules.burn_in + 1, horizon + 1):
            obs, reward, terminated, truncated, _ = step(act(obs, theta))
            score = float(reward if terms is None else terms.rewards[PROGRESS_TERM])
            total += score - shift
            if not isfinite(total):
                raise _reward_failure(score, steps)
            negative_run = negative_run + 1 if score < 0 else 0
            ended = (terminated and not endless) or truncated
            if ended or (negative_run > patience and steps > after):
                return total, steps
    except Exception as error:
        raise _failure(error, steps, seed) from error
    return total, horizon


def check_rules(env, rules: EpisodeRules) -> None:
    """UsageError, before any episode, if `env` cannot follow `rules`."""
    if rules.fitness == "progress":
        progress_terms(env)


def zero_action(action_space):
    """All-zero Box action (no torque), or the first Discrete action (NOOP in Atari)."""
    from gymnasium import spaces

    if isinstance(action_space, spaces.Discrete):
        return int(action_space.start)
    return np.zeros(action_space.shape, dtype=action_space.dtype)


def progress_terms(env):
    """The object whose `rewards` list holds this step's reward terms (read after each step)."""
    base = env.unwrapped
    if not hasattr(base, "electricity_cost"):
        raise UsageError(
            f"--fitness progress needs a PyBullet locomotion environment (such as "
            f"AntBulletEnv-v0), whose reward terms include the progress; {base} has none. Use "
            "--fitness return."
        )
    return base
