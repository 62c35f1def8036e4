"""Misbehaving environments for `--env faultyenvs:...` (tests put this folder on PYTHONPATH).

The CartPoles fail on one rank in a way no episode survives: a crash there must end every rank
instead of leaving the others blocked in a collective. Each behaves like CartPole until its
`failing_reset`-th reset on rank `rank` (read from the launcher's PMI_RANK, which mpiexec and
srun --mpi=pmi2 both set).

The Pendulums go wrong the way simulators do, in the episodes whose reset seed is FAULTY_SEED
modulo 10 (about 1 in 10), at step FAULT_STEP: which episodes fail depends on the episode alone,
not on the rank that runs it. They have no time limit (tests give --max-steps).
"""

import math
import os
import signal

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.classic_control.pendulum import PendulumEnv

FAULTY_SEED, FAULT_STEP = 3, 50


def faulty(seed: int) -> bool:
    """Whether the episode with this reset seed goes wrong."""
    return seed % 10 == FAULTY_SEED


class _FailingCartPole(CartPoleEnv):
    def __init__(self, rank: int = 1, failing_reset: int = 20):
        super().__init__()
        self.failing = int(os.environ.get("PMI_RANK", "0")) == rank
        self.resets_left = failing_reset

    def reset(self, *, seed=None, options=None):
        if self.failing:
            self.resets_left -= 1
            if self.resets_left == 0:
                self.fail()
        return super().reset(seed=seed, options=options)

    def fail(self):
        raise NotImplementedError


class CannotRestartCartPole(_FailingCartPole):
    """Raises at the failing reset (a failed episode, which a run survives) and then cannot be
    made again (which it cannot): the rank fails, as on a node whose simulator service died."""

    made = 0  # in this process

    def __init__(self, rank: int = 1, failing_reset: int = 20):
        CannotRestartCartPole.made += 1
        super().__init__(rank, failing_reset)
        if self.failing and CannotRestartCartPole.made > 1:
            raise RuntimeError("the simulator cannot restart (a test failure on purpose)")

    def fail(self):
        raise RuntimeError("the simulator broke down (a test failure on purpose)")


class CrashingCartPole(_FailingCartPole):
    """Dies of SIGSEGV, as a crash in compiled code would."""

    def fail(self):
        os.kill(os.getpid(), signal.SIGSEGV)


class _FaultyPendulum(PendulumEnv):
    def reset(self, *, seed=None, options=None):
        self.faulty, self.steps = seed is not None and faulty(seed), 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        result = super().step(action)
        self.steps += 1
        if self.faulty and self.steps == FAULT_STEP:
            return self.fault(*result)
        return result

    def fault(self, obs, reward, terminated, truncated, info):
        raise NotImplementedError


class NaNRewardPendulum(_FaultyPendulum):
    def fault(self, obs, reward, terminated, truncated, info):
        return obs, math.nan, terminated, truncated, info


class InfObservationPendulum(_FaultyPendulum):
    def fault(self, obs, reward, terminated, truncated, info):
        obs = obs.copy()
        obs[1] = np.inf
        return obs, reward, terminated, truncated, info


class NaNObservationPendulum(_FaultyPendulum):
    def fault(self, obs, reward, terminated, truncated, info):
        obs = obs.copy()
        obs[2] = np.nan
        return obs, reward, terminated, truncated, info


class RaisingStepPendulum(_FaultyPendulum):
    """Raises, and stays broken (every later step raises too) until it is made again: the way a
    simulator left in a bad state behaves."""

    broken = False

    def step(self, action):
        if self.broken:
            raise RuntimeError("still broken since the last failure (a test failure on purpose)")
        return super().step(action)

    def fault(self, obs, reward, terminated, truncated, info):
        self.broken = True
        raise RuntimeError("the simulator went unstable (a test failure on purpose)")


class RaisingResetPendulum(_FaultyPendulum):
    def reset(self, *, seed=None, options=None):
        if seed is not None and faulty(seed):
            raise ValueError("no valid initial state (a test failure on purpose)")
        return super().reset(seed=seed, options=options)


class BrokenPendulum(PendulumEnv):
    """Every step raises: a bug in the environment, not bad luck."""

    def step(self, action):
        raise KeyError("torque")
