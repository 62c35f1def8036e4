"""Reacher-v5 stepped natively (its `step` in gymnasium/envs/mujoco/reacher_v5.py).

The observation is cos and sin of the two joint angles, the target's position (qpos[2:]), the
joint velocities and the fingertip-to-target vector's x, y; the reward is -|vector| *
reward_dist_weight - sum(action**2) * reward_control_weight (float32, as Gymnasium's), and the
episode never ends by itself. np.cos, np.sin and np.linalg.norm stay numpy's (NumPy's SIMD
functions and BLAS's dot need not match libm in the last bit), so this step keeps Gymnasium's
expressions in Python and drops only the rest of its step (the action check, the contact
forces, the body lookups by name, the info dict).
"""

from __future__ import annotations

import numpy as np

from esmpi.native.step import NativeStep


class ReacherStep(NativeStep):
    def __init__(self, env):
        super().__init__(env)
        base = env.unwrapped
        self.fingertip = base.data.body("fingertip").xpos  # views of the two bodies' xpos
        self.target = base.data.body("target").xpos
        self.dist_weight = base._reward_dist_weight
        self.control_weight = base._reward_control_weight

    def step(self, action):
        if not self.takes(action):
            return self.env.step(action)
        self.advance(action)
        vec = self.fingertip - self.target
        reward_dist = -np.linalg.norm(vec) * self.dist_weight
        reward_ctrl = -np.square(action).sum() * self.control_weight
        theta = self.qpos[:2]
        observation = np.concatenate(
            [np.cos(theta), np.sin(theta), self.qpos[2:], self.qvel[:2], vec[:2]]
        )
        return observation, reward_dist + reward_ctrl, False, False, {}
