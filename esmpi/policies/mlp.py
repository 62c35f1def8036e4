"""The MLP (`--policy mlp`, Salimans et al. 2017's network) and the linear policy (`--policy
linear`, ARS's, Mania et al. 2018): the linear policy is the MLP without hidden layers, sizes
(n_in, n_out), action = output map of (normalised obs) @ M (+ b), run by the same kernel; only its
initial parameters differ (zero, ARS's M = 0)."""

from __future__ import annotations

import numba
import numpy as np

from esmpi import kernels
from esmpi.policies import cnn
from esmpi.policies.actor import VectorActor, vector_layout
from esmpi.policies.spec import PolicySpec, starting_generator

_MLP_STEP_SIGNATURES = [
    f"int64({obs}, float64[:, ::1], float32[::1], int64[::1], float32[::1])"
    for obs in kernels.VECTOR_OBS_TYPES
]


@numba.njit(_MLP_STEP_SIGNATURES, cache=True, error_model="numpy")
def mlp_step(obs, obs_state, theta, layout, scratch):
    """One MLP policy step: normalise `obs`, run the layers, map the output to an action.

    obs        raw observation (n_in,)
    obs_state  (5, n_in) float64: the mean to subtract and 1/std to multiply by (frozen during a
               generation); running sums of (obs - mean) and (obs - mean)**2 that the next
               normalisation update needs (this call adds to them); the clip bound in [4, 0]
    theta      flat float32 parameters in the layout of kernels.dense_layers
    layout     the number of layer widths, the widths (n_in, hidden..., n_out), then bias (0/1),
               the ACT_* code of the hidden activation and the output codes (see LAYOUT_HEADER)
    scratch    float32: two work rows of the widest layer's width, then the action bounds low
               and high, then the action (n_out each)

    OUT_ARGMAX returns the index of the largest output; otherwise each action dimension is
    clipped to, tanh-rescaled into or sigmoid-rescaled into [low, high] by its own code, the
    action is written at the end of scratch and -1 returned. An observation holding NaN or inf
    returns NOT_FINITE.
    """
    sizes, bias, act, codes = kernels.unpack_layout(layout, kernels.LAYOUT_HEADER)
    n_out = sizes[sizes.shape[0] - 1]
    width = (scratch.shape[0] - 3 * n_out) // 2
    x = scratch[:width]
    y = scratch[width : 2 * width]
    if not kernels.normalise_into(obs, obs_state, x, sizes[0]):
        return kernels.NOT_FINITE
    out = kernels.dense_layers(x, y, theta, 0, sizes, bias, act)
    return kernels.map_outputs(out, codes, scratch[2 * width :], n_out)


def mlp_actor(spec: PolicySpec, obs_clip: float = 5.0) -> VectorActor:
    """The actor of an MLP or a linear policy."""
    return VectorActor(
        spec, obs_clip, mlp_step, vector_layout(spec, spec.sizes), 2 * max(spec.sizes)
    )


def initial_theta(spec: PolicySpec, seed: int, index: int = 0) -> np.ndarray:
    """Parameters drawn like the Salimans et al. starter code: each weight column scaled to unit
    norm (0.01 for the output layer, so that the first actions are near the middle), zero biases;
    convolutions first for a CNN, each output channel's filter of unit norm. A linear policy
    starts at zero, as ARS's M = 0 (Mania et al. 2018, Algorithm 2). `index` numbers the starting
    points of a meta-population (each its own draw; 0 is the run's)."""
    if spec.kind == "linear":
        return np.zeros(spec.n_params, dtype=np.float32)
    rng = starting_generator(seed, index)
    parts = cnn.initial_filters(spec, rng)
    for layer, (n_in, n_out) in enumerate(spec.layer_shapes):
        weights = rng.standard_normal((n_in, n_out))
        scale = 0.01 if layer == len(spec.layer_shapes) - 1 else 1.0
        weights *= scale / np.sqrt(np.square(weights).sum(axis=0, keepdims=True))
        parts.append(weights.ravel())
        if spec.bias:
            parts.append(np.zeros(n_out))
    return np.concatenate(parts).astype(np.float32)
