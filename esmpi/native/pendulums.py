"""InvertedPendulum-v5 and InvertedDoublePendulum-v5 stepped natively (their `step` in
gymnasium/envs/mujoco/inverted_*_v5.py).

InvertedPendulum's outcome is compiled: the observation is qpos then qvel, the episode ends when
any of it is not finite or |pole angle| > 0.2, and the reward is 1 until then. The double
pendulum's observation takes np.sin and np.cos of the link angles and its reward squares with
numpy's `**`, whose results need not match libm's (numba's) in the last bit on every CPU
(NumPy has its own SIMD sin and cos, and `x**2` calls pow, which differs from x*x in about one
case in a thousand): that step keeps Gymnasium's own expressions, in Python, and drops only the
rest of Gymnasium's step (the action check, the contact forces, the info dict).
"""

from __future__ import annotations

import numba
import numpy as np

from esmpi.native.step import NativeStep


@numba.njit(cache=True, error_model="numpy")
def pendulum_outcome(qpos, qvel):
    """(observation, reward, terminated) of InvertedPendulum-v5."""
    observation = np.empty(qpos.size + qvel.size)
    observation[: qpos.size] = qpos
    observation[qpos.size :] = qvel
    terminated = not np.isfinite(observation).all() or np.abs(observation[1]) > 0.2
    return observation, 0.0 if terminated else 1.0, terminated


class InvertedPendulumStep(NativeStep):
    def step(self, action):
        if not self.takes(action):
            return self.env.step(action)
        self.advance(action)
        observation, reward, terminated = pendulum_outcome(self.qpos, self.qvel)
        return observation, reward, terminated, False, {}


class InvertedDoublePendulumStep(NativeStep):
    def __init__(self, env):
        super().__init__(env)
        base = env.unwrapped
        self.healthy_reward = base._healthy_reward
        self.tip = base.data.site_xpos[0]  # a view: the pole's tip
        self.qfrc_constraint = base.data.qfrc_constraint

    def step(self, action):
        if not self.takes(action):
            return self.env.step(action)
        self.advance(action)
        x, _, y = self.tip
        qpos, qvel = self.qpos, self.qvel
        observation = np.concatenate(
            [
                qpos[:1],
                np.sin(qpos[1:]),
                np.cos(qpos[1:]),
                np.clip(qvel, -10, 10),
                np.clip(self.qfrc_constraint, -10, 10)[:1],
            ]
        )
        terminated = bool(y <= 1)
        v1, v2 = qvel[1:3]
        dist_penalty = 0.01 * x**2 + (y - 2) ** 2
        vel_penalty = 1e-3 * v1**2 + 5e-3 * v2**2
        alive_bonus = self.healthy_reward * int(not terminated)
        return observation, alive_bonus - dist_penalty - vel_penalty, terminated, False, {}
