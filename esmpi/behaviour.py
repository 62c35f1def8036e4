"""Behaviour characterisations (BCs): a few numbers per episode saying what the agent did, not
how well, for novelty search (Conti et al. 2018) and the history.

`--behaviour` names one:
  position        the final (x, y) of the agent's main body: MuJoCo's first body after the world
                  (the torso of Gymnasium's locomotion robots, the ball or the ant of
                  Gymnasium-Robotics' mazes), PyBullet's robot body. This is
                  deep-neuroevolution's choice for Humanoid and the mazes.
  info:KEY        the last step's info[KEY] (a number or a short vector).
  module:function function(env, info) -> a few numbers, with `env` the environment the rollouts
                  step (`env.unwrapped` the raw one) and `info` its last step's (or reset's) info.

A BC is read once, when an episode ends, from the environment as the episode left it; an episode
that failed has a BC of NaN. Every BC of a run has the same size, found by reading one after the
first reset (`size`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from esmpi.config import UsageError

Describe = Callable[[Any], np.ndarray]  # the stepped environment -> float64 (size,)


def wrapped(env, name: str):
    """`env` as rollouts step it with the behaviour `name`: with the last info kept where the BC
    reads it, else `env` itself (no per-step cost)."""
    if ":" in name:  # info:KEY or module:function
        return last_info_class()(env)
    return env


def describer(name: str) -> Describe:
    """The function that reads the BC `name` from the environment rollouts step."""
    if name == "position":
        return final_position
    if name.startswith("info:"):
        key = name[len("info:") :]
        return lambda env: _numbers(env.last_info[key], name)
    module_name, _, attribute = name.partition(":")
    if not (module_name and attribute):
        raise UsageError(
            f"--behaviour takes 'position', 'info:KEY' or 'module:function'; got {name!r}."
        )
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"Cannot load --behaviour {name}: {error}.") from None
    return lambda env: _numbers(function(env, env.last_info), name)


def size(env, describe: Describe, name: str, seed: int) -> int:
    """How many numbers the BC has, read from `env` after a reset with `seed` and, where the
    reset's info lacks the key, one step of zero action; UsageError with one sentence when it
    cannot be read. (Every episode starts with its own seeded reset, so this one changes none.)"""
    from esmpi.rollout import zero_action

    env.reset(seed=seed)
    try:
        return describe(env).size
    except KeyError:
        env.step(zero_action(env.action_space))
    try:
        return describe(env).size
    except KeyError as error:
        raise UsageError(
            f"--behaviour {name}: the info of {env.unwrapped} after a reset and after a step "
            f"has no key {error}."
        ) from None


def final_position(env) -> np.ndarray:
    """(x, y) of the agent's main body: MuJoCo's first body (index 1, after the world), or the
    PyBullet robot's body."""
    base = env.unwrapped
    # Gymnasium-Robotics' mazes keep the robot in an inner MuJoCo environment.
    simulated = getattr(base, "point_env", None) or getattr(base, "ant_env", None) or base
    data = getattr(simulated, "data", None)
    if data is not None and hasattr(data, "xpos"):
        import mujoco

        # mj_step leaves xpos at the pose before its integration; recomputing the body poses
        # from qpos gives where the last step put the body (qpos and qvel are untouched).
        mujoco.mj_kinematics(simulated.model, data)
        return np.array(data.xpos[1, :2], dtype=np.float64)
    robot = getattr(base, "robot", None)
    if robot is not None and hasattr(robot, "body_xyz"):
        return np.array(robot.body_xyz[:2], dtype=np.float64)
    raise UsageError(
        f"--behaviour position needs a MuJoCo or PyBullet environment with a body to locate; "
        f"{base} has none. Give --behaviour info:KEY or module:function."
    )


def _numbers(value, name: str) -> np.ndarray:
    numbers = np.asarray(value, dtype=np.float64).ravel()
    if not numbers.size:
        raise UsageError(f"--behaviour {name} gave no numbers.")
    return numbers


def last_info_class():
    """gymnasium.Wrapper keeping the info of the last reset or step as `last_info` (made on first
    use, so that importing this module does not import Gymnasium)."""
    global _LAST_INFO
    if _LAST_INFO is None:
        import gymnasium

        class LastInfo(gymnasium.Wrapper):
            def reset(self, **kwargs):
                obs, self.last_info = self.env.reset(**kwargs)
                return obs, self.last_info

            def step(self, action):
                obs, reward, terminated, truncated, self.last_info = self.env.step(action)
                return obs, reward, terminated, truncated, self.last_info

        _LAST_INFO = LastInfo
    return _LAST_INFO


_LAST_INFO: type | None = None
