"""User environment classes for `--env toyenvs:ToyTarget` (tests put this folder on PYTHONPATH)."""

import gymnasium
import numpy as np


class ToyTarget(gymnasium.Env):
    """Move a point on a line towards `target`; reward is minus the distance. No time limit."""

    def __init__(self, target: float = 1.0):
        self.target = float(target)
        self.observation_space = gymnasium.spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float64)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = float(self.np_random.uniform(-1.0, 1.0))
        return self._obs(), {}

    def step(self, action):
        self.position += 0.1 * float(action[0])
        reward = -abs(self.position - self.target)
        return self._obs(), reward, False, False, {}

    def _obs(self):
        return np.array([self.position, self.target])


class DictObservations(ToyTarget):
    """Same, with an observation space esmpi does not support."""

    def __init__(self):
        super().__init__()
        self.observation_space = gymnasium.spaces.Dict({"x": self.observation_space})


class NeedsMissingPackage(ToyTarget):
    """Stands for an environment whose simulator package is not installed."""

    def __init__(self):
        raise gymnasium.error.DependencyNotInstalled(
            'the simulator "toysim" is not installed; run `pip install toysim`'
        )


gymnasium.register("ToyMissing-v0", entry_point=NeedsMissingPackage)


def pendulum_state(env, info):
    """A --behaviour module:function for the tests: the pendulum's final (angle, velocity)."""
    return env.unwrapped.state


def cart_position(env, info):
    """A --behaviour module:function for the tests: the cart's final position and pole angle."""
    state = env.unwrapped.state
    return state[0], state[2]
