"""The actor of the vector-observation families (MLP, linear, recurrent, Hebbian): one per rank,
reused, turning one raw observation into one action with a single call of the family's numba
kernel. It owns the observation normalisation (mean and 1/std frozen during a generation, the
centred sums and squares that the next update needs), the one-hot encoding of Discrete
observations and the action buffer; a family gives its kernel, its layout and the extra scratch
it keeps between steps (a recurrent state, plastic weights), and what `reset` does at the start of
an episode.

Every kernel has the signature kernel(obs, obs_state, theta, layout, scratch) -> int: the index of
the Discrete action, -1 after writing a Box action at `action_at` in scratch (low, high, then the
action, n_out each), or kernels.NOT_FINITE for an observation holding NaN or inf.
"""

from __future__ import annotations

import numpy as np

from esmpi import kernels
from esmpi.policies.spec import (
    ACTIVATIONS,
    NonFiniteObservation,
    PolicySpec,
    discrete_actions,
    not_finite,
    scratch_with_action,
)


def vector_layout(spec: PolicySpec, sizes: tuple[int, ...]) -> np.ndarray:
    """(n_sizes, sizes..., bias, activation, output codes...): see kernels.LAYOUT_HEADER."""
    flags = (int(spec.bias), ACTIVATIONS[spec.activation], *spec.output_codes)
    return np.array([len(sizes), *sizes, *flags], dtype=np.int64)


class VectorActor:
    """Runs `kernel` on `layout`; scratch = work (work_size), then low, high and the action (n_out
    each), then `kept` entries the family keeps between steps (`self.kept`)."""

    def __init__(
        self,
        spec: PolicySpec,
        obs_clip: float,
        kernel,
        layout: np.ndarray,
        work_size: int,
        kept: int = 0,
    ):
        self.spec, self.kernel, self.layout = spec, kernel, layout
        n_in = spec.sizes[0]
        self.obs_state = np.zeros((5, n_in))
        self.obs_state[kernels.OBS_INV_STD] = 1.0
        self.obs_state[kernels.OBS_CLIP] = obs_clip
        self.scratch, self.action, self.kept = scratch_with_action(spec, work_size, kept)
        self.discrete_actions = discrete_actions(spec)
        self.onehot = np.zeros(n_in, dtype=np.float32) if spec.obs_encoding == "onehot" else None

    @property
    def obs_sums(self) -> np.ndarray:
        """(2, n_in) view: sums of (obs - mean) and (obs - mean)**2 since the last reset."""
        return self.obs_state[kernels.OBS_SUM : kernels.OBS_SUMSQ + 1]

    @property
    def norm(self) -> np.ndarray:
        """(2, n_in) view: the mean subtracted and the 1/std multiplied by."""
        return self.obs_state[kernels.OBS_MEAN : kernels.OBS_INV_STD + 1]

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.obs_state[kernels.OBS_MEAN] = mean
        self.obs_state[kernels.OBS_INV_STD] = 1.0 / std

    def reset(self, seed: int) -> None:
        """Start an episode reset with `seed`: nothing to do for a network without memory."""

    def act(self, obs, theta: np.ndarray):
        """The action for raw observation `obs` under parameters `theta`."""
        if self.onehot is not None:
            self.onehot[:] = 0.0
            self.onehot[int(obs)] = 1.0
            obs = self.onehot
        try:
            index = self.kernel(obs, self.obs_state, theta, self.layout, self.scratch)
        except TypeError:  # not a flat float32/float64 array: convert once, only when needed
            obs = np.asarray(obs, dtype=np.float32).reshape(-1)
            index = self.kernel(obs, self.obs_state, theta, self.layout, self.scratch)
        if index >= 0:
            return self.discrete_actions[index]
        if index == kernels.NOT_FINITE:
            raise NonFiniteObservation(not_finite(obs))
        # A copy: an environment may keep the action it was given, and the buffer is reused.
        return self.action.copy()
