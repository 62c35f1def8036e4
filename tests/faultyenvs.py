"""Environments that fail on one rank, for `--env faultyenvs:...` (tests put this folder on
PYTHONPATH): they show that a failure on one rank ends every rank instead of leaving the others
blocked in a collective. Each behaves like CartPole until its `failing_reset`-th reset on rank
`rank` (read from the launcher's PMI_RANK, which mpiexec and srun --mpi=pmi2 both set)."""

import os
import signal

import numba
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


@numba.njit(cache=False)
def _divide(numerator, denominator):
    return numerator // denominator  # raises ZeroDivisionError from compiled code when 0


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


class RaisingCartPole(_FailingCartPole):
    """Raises a Python exception, as a buggy environment would."""

    def fail(self):
        raise RuntimeError("the simulator broke down (a test failure on purpose)")


class NumbaErrorCartPole(_FailingCartPole):
    """Raises from inside a numba-compiled function."""

    def fail(self):
        _divide(1, 0)


class CrashingCartPole(_FailingCartPole):
    """Dies of SIGSEGV, as a crash in compiled code would."""

    def fail(self):
        os.kill(os.getpid(), signal.SIGSEGV)
