"""User policy classes for `--policy userpolicies:LinearTanh` (tests put this folder on PYTHONPATH);
the README's "Your own policy" shows LinearTanh."""

import numpy as np


class LinearTanh:
    """action = tanh(obs @ W + b) rescaled into a Box's bounds (argmax for Discrete), with a small
    per-episode bias drawn from the episode's seed, so that episodes differ as the seed says."""

    def __init__(self, observation_space, action_space, config):
        self.n_in = int(np.prod(observation_space.shape))
        self.discrete = not hasattr(action_space, "low")
        self.n_out = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.low = None if self.discrete else action_space.low
        self.high = None if self.discrete else action_space.high
        self.n_params = (self.n_in + 1) * self.n_out
        self.episode_seed, self.jitter = None, np.zeros(self.n_out)

    def initial_theta(self, seed):
        return 0.1 * np.random.default_rng(seed).standard_normal(self.n_params).astype(np.float32)

    def reset(self, seed):
        self.episode_seed = seed
        self.jitter = 0.01 * np.random.default_rng(seed).standard_normal(self.n_out)

    def act(self, observation, theta):
        weights = theta[: self.n_in * self.n_out].reshape(self.n_in, self.n_out)
        out = np.ravel(observation) @ weights + theta[self.n_in * self.n_out :] + self.jitter
        if self.discrete:
            return int(np.argmax(out))
        return self.low + (np.tanh(out) + 1.0) / 2.0 * (self.high - self.low)


class NoAct:
    """Breaks the protocol: no act method."""

    n_params = 3

    def __init__(self, observation_space, action_space, config):
        pass

    def initial_theta(self, seed):
        return np.zeros(3, np.float32)


class WrongShape(LinearTanh):
    """Breaks the protocol: initial_theta of the wrong length."""

    def initial_theta(self, seed):
        return np.zeros(self.n_params + 1, np.float32)


class FailsToStart(LinearTanh):
    """Raises in __init__."""

    def __init__(self, observation_space, action_space, config):
        raise ValueError("this policy needs a Box observation of 3 elements")


class UnseededStart(LinearTanh):
    """Breaks the protocol: initial parameters from fresh entropy, not from the seed."""

    def initial_theta(self, seed):
        return np.random.default_rng().standard_normal(self.n_params).astype(np.float32)


class ActsInTheWrongShape(LinearTanh):
    """Breaks the protocol: a Box action of the wrong shape (Pendulum would read its first
    number and go on)."""

    def act(self, observation, theta):
        return np.repeat(super().act(observation, theta), 2)
