"""Running a trained policy from a checkpoint: `esmpi eval`."""

from __future__ import annotations

import numpy as np

from esmpi import checkpoint, envs
from esmpi.config import UsageError, from_toml
from esmpi.obsnorm import ObsNorm
from esmpi.policy import Actor, spec_for_spaces
from esmpi.rollout import run_episode


def evaluate(
    path: str,
    episodes: int,
    seed: int = 0,
    env_id: str | None = None,
    best: bool = False,
    render: bool = False,
) -> np.ndarray:
    """Returns of `episodes` episodes of the checkpoint's policy (theta, or best/theta)."""
    state = checkpoint.load(path)
    config = from_toml(state.config_toml)
    env = envs.make_env(env_id or config.env, config.env_kwargs, "human" if render else None)
    if spec_for_spaces(env.observation_space, env.action_space, config) != state.policy:
        raise UsageError(
            f"{env_id or config.env} has other observation or action spaces than the policy in "
            f"{path} was trained on."
        )
    actor = Actor(state.policy, config.obs_clip)
    theta = state.best_theta if best else state.theta
    obs_norm = ObsNorm(state.obs_count, state.obs_mean, state.obs_var)
    if best:
        obs_norm = ObsNorm(state.obs_count, state.best_obs_mean, state.best_obs_var)
    if config.obs_norm and state.policy.obs_encoding == "box":
        actor.set_normalisation(obs_norm.mean, obs_norm.std)
    episode_seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=episodes)
    envs.first_reset(env, int(episode_seeds[0]))
    stepped, time_limit = envs.unwrapped_for_rollouts(env)
    horizon = envs.horizon_for(time_limit, config.max_steps)
    returns = [run_episode(stepped, actor, theta, s, horizon)[0] for s in episode_seeds]
    env.close()
    return np.array(returns)
