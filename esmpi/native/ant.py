"""Ant-v5 stepped natively: the observation, reward and termination of
gymnasium/envs/mujoco/ant_v5.py's `step`, compiled.

The reward is forward_reward_weight * x velocity of the main body (its xpos, before and after
the step) plus healthy_reward while healthy, minus ctrl_cost_weight * sum(action**2) (float32,
as Gymnasium's) and contact_cost_weight * sum(clip(cfrc_ext)**2) over every body, the world
included. The observation is qpos (without x, y when excluded), qvel, then, unless left out,
the clipped cfrc_ext of every body but the world. Healthy: every qpos and qvel finite and
min_z <= qpos[2] <= max_z (inclusive, unlike the walkers). The contact forces are computed by
mj_rnePostConstraint after the physics, as Gymnasium does.
"""

from __future__ import annotations

import numba
import numpy as np

from esmpi.native.step import NativeStep
from esmpi.native.sums import clip, sum_of_squares

# settings[]: dt, forward weight, healthy reward, contact cost weight, the contact force range,
# the healthy z range.
_DT, _FORWARD, _HEALTHY, _CONTACT, _FORCE, _Z = 0, 1, 2, 3, 4, 6


@numba.njit(cache=True, error_model="numpy")
def ant_outcome(
    qpos, qvel, cfrc_ext, main_xy, x_before, action, settings, ctrl_weight, skipped, with_forces
):
    """(observation, reward, healthy) after a step that started with the main body at
    x = x_before (main_xy: its xpos now)."""
    low, high = settings[_FORCE], settings[_FORCE + 1]
    forces = np.empty(cfrc_ext.size)  # np.clip(cfrc_ext, low, high), flattened
    flat = cfrc_ext.reshape(cfrc_ext.size)
    for i in range(flat.size):
        forces[i] = clip(flat[i], low, high)
    n_pos = qpos.size - skipped
    n_forces = forces.size - cfrc_ext.shape[1] if with_forces else 0  # the world's row left out
    observation = np.empty(n_pos + qvel.size + n_forces)
    observation[:n_pos] = qpos[skipped:]
    observation[n_pos : n_pos + qvel.size] = qvel
    observation[n_pos + qvel.size :] = forces[forces.size - n_forces :]

    healthy = settings[_Z] <= qpos[2] <= settings[_Z + 1]
    for i in range(qpos.size):
        healthy = healthy and np.isfinite(qpos[i])
    for i in range(qvel.size):
        healthy = healthy and np.isfinite(qvel[i])
    forward = ((main_xy[0] - x_before) / settings[_DT]) * settings[_FORWARD]
    healthy_reward = settings[_HEALTHY] * (1.0 if healthy else 0.0)
    ctrl_cost = ctrl_weight * sum_of_squares(action)
    contact_cost = settings[_CONTACT] * sum_of_squares(forces)
    return observation, (forward + healthy_reward) - (ctrl_cost + contact_cost), healthy


class AntStep(NativeStep):
    needs_contact_forces = True

    def __init__(self, env):
        super().__init__(env)
        base = env.unwrapped
        values = [self.dt, base._forward_reward_weight, base._healthy_reward]
        values += [base._contact_cost_weight, *base._contact_force_range, *base._healthy_z_range]
        self.settings = np.array(values, np.float64)
        self.ctrl_weight = np.float32(base._ctrl_cost_weight)  # float32, see planar.py
        self.skipped = 2 if base._exclude_current_positions_from_observation else 0
        self.with_forces = bool(base._include_cfrc_ext_in_observation)
        self.ends_when_unhealthy = bool(base._terminate_when_unhealthy)
        self.cfrc_ext = base.data.cfrc_ext
        self.main_xy = base.data.body(base._main_body).xpos  # a view of this body's xpos row

    def step(self, action):
        if not self.takes(action):
            return self.env.step(action)
        x_before = self.main_xy[0]
        self.advance(action)
        observation, reward, healthy = ant_outcome(
            self.qpos,
            self.qvel,
            self.cfrc_ext,
            self.main_xy,
            x_before,
            action,
            self.settings,
            self.ctrl_weight,
            self.skipped,
            self.with_forces,
        )
        return observation, reward, (not healthy) and self.ends_when_unhealthy, False, {}
