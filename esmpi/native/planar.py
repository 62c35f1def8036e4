"""HalfCheetah-v5, Hopper-v5, Walker2d-v5 and Swimmer-v5 stepped natively: the observation,
reward and termination of each environment's `step` (gymnasium/envs/mujoco/*_v5.py), compiled.

All four reward forward progress, forward_reward_weight * (x after - x before) / dt with x =
qpos[0], and charge ctrl_cost_weight * sum(action**2); Hopper and Walker2d add healthy_reward
while healthy and end the episode when not (with terminate_when_unhealthy). Their observations
are qpos (without the first `skipped` coordinates) then qvel, which Hopper and Walker2d clip to
+-10. The arithmetic is Gymnasium's, in its types: the control cost is float32 (NumPy sums a
float32 action's squares in float32, and a Python float weight times a float32 stays float32),
the rest float64, and every sum in NumPy's order (sums.py).
"""

from __future__ import annotations

import numba
import numpy as np

from esmpi.native.step import NativeStep
from esmpi.native.sums import clip, sum_of_squares

# Health rules, as the integer the kernel switches on.
NO_HEALTH, WALKER_HEALTH, HOPPER_HEALTH = 0, 1, 2
# settings[]: dt, forward weight, healthy reward, then the (low, high) ranges of z, angle, state.
_DT, _FORWARD, _HEALTHY, _Z, _ANGLE, _STATE = 0, 1, 2, 3, 5, 7


@numba.njit(cache=True, error_model="numpy")
def planar_outcome(qpos, qvel, action, x_before, settings, ctrl_weight, skipped, clip_qvel, health):
    """(observation, reward, terminated) after a step that started at x = x_before."""
    n_pos = qpos.size - skipped
    observation = np.empty(n_pos + qvel.size)
    for i in range(n_pos):
        observation[i] = qpos[skipped + i]
    for i in range(qvel.size):
        observation[n_pos + i] = clip(qvel[i], -10.0, 10.0) if clip_qvel else qvel[i]
    ctrl_cost = ctrl_weight * sum_of_squares(action)  # float32, as Gymnasium's
    forward = settings[_FORWARD] * ((qpos[0] - x_before) / settings[_DT])
    if health == NO_HEALTH:
        return observation, forward - ctrl_cost, False
    healthy = _healthy(qpos, qvel, settings, health)
    healthy_reward = settings[_HEALTHY] * (1.0 if healthy else 0.0)
    return observation, (forward + healthy_reward) - ctrl_cost, not healthy


@numba.njit(cache=True, error_model="numpy")
def _healthy(qpos, qvel, settings, health):
    """Hopper's and Walker2d's is_healthy: z = qpos[1] and angle = qpos[2] strictly inside their
    ranges, and for Hopper every element of (qpos, qvel) after the first two too."""
    z, angle = qpos[1], qpos[2]
    healthy = (
        settings[_Z] < z < settings[_Z + 1] and settings[_ANGLE] < angle < settings[_ANGLE + 1]
    )
    if health == HOPPER_HEALTH:
        low, high = settings[_STATE], settings[_STATE + 1]
        for i in range(2, qpos.size):
            healthy = healthy and low < qpos[i] < high
        for i in range(qvel.size):
            healthy = healthy and low < qvel[i] < high
    return healthy


class PlanarStep(NativeStep):
    """The native step of one of this module's environments (`health` says which rules)."""

    health = NO_HEALTH
    clip_qvel = False
    skipped_when_excluded = 1  # qpos coordinates left out with exclude_current_positions...

    def __init__(self, env):
        super().__init__(env)
        base = env.unwrapped
        ranges = [(0.0, 0.0)] * 3
        if self.health != NO_HEALTH:
            ranges[0], ranges[1] = base._healthy_z_range, base._healthy_angle_range
        if self.health == HOPPER_HEALTH:
            ranges[2] = base._healthy_state_range
        healthy_reward = getattr(base, "_healthy_reward", 0.0)
        values = [self.dt, base._forward_reward_weight, healthy_reward]
        self.settings = np.array(values + [bound for pair in ranges for bound in pair], np.float64)
        # Gymnasium multiplies the float32 sum by the Python float weight: NumPy 2 keeps float32
        self.ctrl_weight = np.float32(base._ctrl_cost_weight)
        excluded = base._exclude_current_positions_from_observation
        self.skipped = self.skipped_when_excluded if excluded else 0
        self.ends_when_unhealthy = self.health != NO_HEALTH and base._terminate_when_unhealthy

    def step(self, action):
        if not self.takes(action):
            return self.env.step(action)
        x_before = self.qpos[0]
        self.advance(action)
        observation, reward, unhealthy = planar_outcome(
            self.qpos,
            self.qvel,
            action,
            x_before,
            self.settings,
            self.ctrl_weight,
            self.skipped,
            self.clip_qvel,
            self.health,
        )
        return observation, reward, unhealthy and self.ends_when_unhealthy, False, {}


class HalfCheetahStep(PlanarStep):
    pass


class SwimmerStep(PlanarStep):
    skipped_when_excluded = 2


class HopperStep(PlanarStep):
    health, clip_qvel = HOPPER_HEALTH, True


class Walker2dStep(PlanarStep):
    health, clip_qvel = WALKER_HEALTH, True
