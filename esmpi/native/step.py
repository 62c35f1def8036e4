"""What every native step shares: a Gymnasium wrapper around the MuJoCo environment whose `step`
writes the action into MjData.ctrl, advances the physics with mujoco.mj_step and has a family's
kernel compute the observation, reward and termination that the environment's own step would.

Only `step` is replaced: reset, rendering, spaces and seeding stay the environment's own (a
wrapper's reset passes the seed on, so envs.reset's in-place reseeding still applies). The
returned info is empty: Gymnasium's info terms are what the native step exists to skip, and
nothing in esmpi's rollouts reads them (an --behaviour that reads info wraps the environment, and
wrapped environments step through Gymnasium). An action that is not a float32 array of the
actuators' shape (what esmpi's policies give) goes to Gymnasium's step, which owns its dtype
arithmetic and its error for a wrong shape.
"""

from __future__ import annotations

import gymnasium
import mujoco
import numpy as np

_FLOAT32 = np.dtype(np.float32)


class NativeStep(gymnasium.Wrapper):
    """The environment `env` (a Gymnasium MujocoEnv, unwrapped) with a compiled step. Subclasses
    read the settings they need from the environment's attributes in `__init__` and define
    `step`; `mj_step` below is the physics they all share."""

    #: mj_rnePostConstraint after the physics: the families whose observation or reward read
    #: contact forces (cfrc_ext), which MuJoCo computes only there.
    needs_contact_forces = False

    def __init__(self, env):
        super().__init__(env)
        base = env.unwrapped
        self.model, self.data = base.model, base.data
        self.frames = int(base.frame_skip)
        self.dt = float(base.dt)
        self.ctrl = base.data.ctrl  # views of MjData's arrays: MuJoCo never moves them
        self.qpos, self.qvel = base.data.qpos, base.data.qvel
        self.action_shape = (base.model.nu,)

    def takes(self, action) -> bool:
        """Whether `action` is what the compiled step handles (see the module docstring)."""
        return (
            type(action) is np.ndarray
            and action.dtype == _FLOAT32
            and action.shape == self.action_shape
        )

    def advance(self, action) -> None:
        """MujocoEnv._step_mujoco_simulation: the action into ctrl (as float64), frame_skip
        physics steps, then the contact forces where the family reads them."""
        self.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.frames)
        if self.needs_contact_forces:
            mujoco.mj_rnePostConstraint(self.model, self.data)
