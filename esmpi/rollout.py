"""One episode of one parameter vector; nothing else."""

from __future__ import annotations

import numpy as np

from esmpi.policy import Actor


def run_episode(env, actor: Actor, theta: np.ndarray, seed: int, horizon: int) -> tuple[float, int]:
    """Reset `env` with `seed`, act with `theta` until the episode ends or `horizon` steps pass.

    Returns (total reward, steps taken). The actor's observation sums grow by this episode's
    observations as a side effect.
    """
    obs, _ = env.reset(seed=int(seed))
    total = 0.0
    act, step = actor.act, env.step
    for steps in range(1, horizon + 1):
        obs, reward, terminated, truncated, _ = step(act(obs, theta))
        total += float(reward)
        if terminated or truncated:
            return total, steps
    return total, horizon
