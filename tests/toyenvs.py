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


class ToyPixels(gymnasium.Env):
    """A bright dot on a dark 24x24 grayscale frame; the action moves it sideways and the reward
    is minus its distance from the middle column. Pixel observations small enough for quick
    multi-rank tests of the pixel policies. No time limit."""

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(0, 255, (24, 24), dtype=np.uint8)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.column = float(self.np_random.uniform(2.0, 21.0))
        return self._frame(), {}

    def step(self, action):
        self.column = float(np.clip(self.column + 2.0 * float(action[0]), 0.0, 23.0))
        return self._frame(), -abs(self.column - 11.5), False, False, {}

    def _frame(self):
        frame = np.zeros((24, 24), dtype=np.uint8)
        frame[10:14, int(round(self.column))] = 255
        return frame
