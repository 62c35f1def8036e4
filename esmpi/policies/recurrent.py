"""The recurrent policy (`--policy rnn`): an Elman network (Elman 1990), whose first hidden layer
reads the normalised observation and its own output of the step before,

    h_t = act([x_t, h_{t-1}] @ W + b),    W of shape (n_in + hidden, hidden),

followed by the other --hidden layers and the output layer as in the MLP. The state h is zero at
the start of every episode (`reset`), so an episode's actions depend only on the parameters and
the episode's own observations, as rank invariance needs. What it buys: a policy that remembers
what the current observation hides (velocities from positions, a cue seen earlier).
"""

from __future__ import annotations

import numba
import numpy as np

from esmpi import kernels
from esmpi.policies.actor import VectorActor, vector_layout
from esmpi.policies.spec import PolicySpec

_RNN_STEP_SIGNATURES = [
    f"int64({obs}, float64[:, ::1], float32[::1], int64[::1], float32[::1])"
    for obs in kernels.VECTOR_OBS_TYPES
]


@numba.njit(_RNN_STEP_SIGNATURES, cache=True, error_model="numpy")
def rnn_step(obs, obs_state, theta, layout, scratch):
    """One step of the Elman policy; arguments and result as mlp_step's, except:

    layout   the widths as the dense layers see them: (n_in + hidden, hidden, ..., n_out)
    scratch  float32: two work rows (each at least n_in + hidden wide), low, high, the action,
             then the state h (hidden), which this call replaces with the new one
    """
    sizes, bias, act, codes = kernels.unpack_layout(layout, kernels.LAYOUT_HEADER)
    n_sizes = sizes.shape[0]
    hidden = sizes[1]
    n_in = sizes[0] - hidden
    n_out = sizes[n_sizes - 1]
    width = (scratch.shape[0] - 3 * n_out - hidden) // 2
    x = scratch[:width]
    y = scratch[width : 2 * width]
    tail = scratch[2 * width : 2 * width + 3 * n_out]
    state = scratch[2 * width + 3 * n_out :]
    if not kernels.normalise_into(obs, obs_state, x, n_in):
        return kernels.NOT_FINITE
    x[n_in : n_in + hidden] = state
    # One layer: its output lands in y, not yet through the activation (it is the call's last).
    kernels.dense_layers(x, y, theta, 0, sizes[:2], bias, act)
    kernels.activate(y[:hidden], act)
    state[:] = y[:hidden]
    position = sizes[0] * hidden + (hidden if bias else 0)
    out = kernels.dense_layers(y, x, theta, position, sizes[1:], bias, act)
    return kernels.map_outputs(out, codes, tail, n_out)


class RnnActor(VectorActor):
    """The actor of a recurrent policy: the state lives in the scratch, zeroed by `reset`."""

    def __init__(self, spec: PolicySpec, obs_clip: float = 5.0):
        dense_sizes = (spec.sizes[0] + spec.sizes[1], *spec.sizes[1:])
        layout = vector_layout(spec, dense_sizes)
        super().__init__(spec, obs_clip, rnn_step, layout, 2 * max(dense_sizes), spec.sizes[1])

    @property
    def state(self) -> np.ndarray:
        """The hidden state h (a view)."""
        return self.kept

    def reset(self, seed: int) -> None:
        """Start an episode with h = 0."""
        self.kept[:] = 0.0
