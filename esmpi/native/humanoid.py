"""Humanoid-v5 stepped natively: the observation, reward and termination of
gymnasium/envs/mujoco/humanoid_v5.py's `step`, compiled but for the centre of mass.

The reward is forward_reward_weight * x velocity of the centre of mass plus healthy_reward while
min_z < qpos[2] < max_z, minus ctrl_cost_weight * sum(ctrl**2) (float64: Humanoid squares
MjData.ctrl, not the float32 action) and clip(contact_cost_weight * sum(cfrc_ext**2),
contact_cost_range). The observation is qpos (without x, y when excluded), qvel, then, each
unless left out, cinert, cvel and cfrc_ext of every body but the world and qfrc_actuator after
the free joint's 6. The centre of mass is Gymnasium's own `mass_center` (np.einsum, whose
summation order is NumPy's business): twice a step, it costs about a microsecond against
Humanoid's physics of about 100.
"""

from __future__ import annotations

import numba
import numpy as np

from esmpi.native.step import NativeStep
from esmpi.native.sums import clip, sum_of_squares

# settings[]: dt, forward weight, healthy reward, contact cost weight, contact cost range,
# healthy z range, ctrl cost weight.
_DT, _FORWARD, _HEALTHY, _CONTACT, _COST_RANGE, _Z, _CTRL = 0, 1, 2, 3, 4, 6, 8


@numba.njit(cache=True, error_model="numpy")
def _append_rows(observation, at, values, first_row):
    """Copy values[first_row:] (flattened) into observation from `at`; return where it ended."""
    flat = values[first_row:].reshape(values[first_row:].size)
    observation[at : at + flat.size] = flat
    return at + flat.size


@numba.njit(cache=True, error_model="numpy")
def humanoid_outcome(
    qpos, qvel, cinert, cvel, qfrc_actuator, cfrc_ext, ctrl, x_velocity, settings, skipped, included
):
    """(observation, reward, healthy) after a step in which the centre of mass moved at
    x_velocity; included[] says whether cinert, cvel, qfrc_actuator, cfrc_ext are observed."""
    size = qpos.size - skipped + qvel.size
    size += included[0] * (cinert.size - cinert.shape[1]) + included[1] * (
        cvel.size - cvel.shape[1]
    )
    size += included[2] * (qfrc_actuator.size - 6) + included[3] * (
        cfrc_ext.size - cfrc_ext.shape[1]
    )
    observation = np.empty(size)
    at = _append_rows(observation, 0, qpos, skipped)
    at = _append_rows(observation, at, qvel, 0)
    if included[0]:
        at = _append_rows(observation, at, cinert, 1)
    if included[1]:
        at = _append_rows(observation, at, cvel, 1)
    if included[2]:
        at = _append_rows(observation, at, qfrc_actuator, 6)
    if included[3]:
        at = _append_rows(observation, at, cfrc_ext, 1)

    healthy = settings[_Z] < qpos[2] < settings[_Z + 1]
    forward = settings[_FORWARD] * x_velocity
    healthy_reward = settings[_HEALTHY] * (1.0 if healthy else 0.0)
    ctrl_cost = settings[_CTRL] * sum_of_squares(ctrl)
    contact_cost = settings[_CONTACT] * sum_of_squares(cfrc_ext.reshape(cfrc_ext.size))
    contact_cost = clip(contact_cost, settings[_COST_RANGE], settings[_COST_RANGE + 1])
    return observation, (forward + healthy_reward) - (ctrl_cost + contact_cost), healthy


class HumanoidStep(NativeStep):
    needs_contact_forces = True

    def __init__(self, env):
        from gymnasium.envs.mujoco.humanoid_v5 import mass_center

        super().__init__(env)
        base = env.unwrapped
        values = [self.dt, base._forward_reward_weight, base._healthy_reward]
        values += [base._contact_cost_weight, *base._contact_cost_range, *base._healthy_z_range]
        self.settings = np.array([*values, base._ctrl_cost_weight], np.float64)
        self.skipped = 2 if base._exclude_current_positions_from_observation else 0
        self.included = np.array(
            [
                base._include_cinert_in_observation is True,
                base._include_cvel_in_observation is True,
                base._include_qfrc_actuator_in_observation is True,
                base._include_cfrc_ext_in_observation is True,
            ],
            np.int64,
        )
        self.ends_when_unhealthy = bool(base._terminate_when_unhealthy)
        data = base.data
        self.arrays = (data.cinert, data.cvel, data.qfrc_actuator, data.cfrc_ext, data.ctrl)
        self.mass_center = mass_center

    def step(self, action):
        if not self.takes(action):
            return self.env.step(action)
        xy_before = self.mass_center(self.model, self.data)
        self.advance(action)
        xy_velocity = (self.mass_center(self.model, self.data) - xy_before) / self.dt
        observation, reward, healthy = humanoid_outcome(
            self.qpos,
            self.qvel,
            *self.arrays,
            xy_velocity[0],
            self.settings,
            self.skipped,
            self.included,
        )
        return observation, reward, (not healthy) and self.ends_when_unhealthy, False, {}
