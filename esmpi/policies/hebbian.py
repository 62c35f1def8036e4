"""The Hebbian policy (`--policy hebbian`): Najarro & Risi 2020, "Meta-Learning through Hebbian
Plasticity in Random Networks" (NeurIPS), their ABCD rule with a per-synapse learning rate. What
evolves is not the weights but a rule per synapse: the weights start random in every episode and,
after every step, each weight w_ij from unit i of one layer to unit j of the next changes by

    dw_ij = eta_ij * (A_ij o_i o_j + B_ij o_i + C_ij o_j + D_ij),

o_i and o_j the two units' outputs of that step (the normalised observation for the inputs, the
activation for hidden units, the raw output for the last layer, as in the paper's code). The
network is the MLP's shape without biases (the paper's 128-64 tanh network by default). With
`plastic_norm` (the paper's choice outside PyBullet) each layer's weights are divided by their
largest magnitude after every update.

The initial weights are drawn uniform in [-0.1, 0.1] (the paper's 'uni') from the episode's seed,
so both members of a mirrored pair, which share their episode seed, start from the same weights,
and an episode's actions depend on nothing but the parameters and the seed (rank invariance).
The evolved parameters start standard normal, as in the paper's evolution strategy.

On pixels (the paper's CarRacing network), the CNN's convolutions (spec.CONV_LAYERS, evolved and
static, no biases) come first and their pooled output is the first plastic layer's input.

Parameter layout: on pixels the convolutions' HWIO weights first; then, layer by layer, eta, A, B,
C, D, each (n_in, n_out) row-major.
"""

from __future__ import annotations

import numba
import numpy as np

from esmpi import kernels
from esmpi.policies import cnn
from esmpi.policies.actor import VectorActor, vector_layout
from esmpi.policies.spec import HEBBIAN_TERMS, PolicySpec, starting_generator

INITIAL_WEIGHT = 0.1  # the initial weights are uniform in [-INITIAL_WEIGHT, INITIAL_WEIGHT]
WEIGHTS_STREAM = 0x4EBB  # SeedSequence([episode seed, WEIGHTS_STREAM]) draws them
# hebbian layout = (plastic_norm, n_sizes, sizes..., bias (0), activation, output codes...); on
# pixels the frames' shape (stack, height, width, colours) comes first
HEBBIAN_HEADER = 2
PIXELS_HEADER = 6

_HEBBIAN_STEP_SIGNATURES = [
    f"int64({obs}, float64[:, ::1], float32[::1], int64[::1], float32[::1])"
    for obs in kernels.VECTOR_OBS_TYPES
]


@numba.njit(inline="always", error_model="numpy")
def _divide_by_largest(values):
    """values /= max |values| (unchanged when all are zero). The largest magnitude is found on the
    float32 bit patterns with the sign bit cleared, whose order as integers is the order of the
    magnitudes: an integer max the compiler vectorises, where a float max it may not reorder
    (NaN) is a loop of one compare at a time (3x slower for the 128-64 network)."""
    bits = values.view(np.int32)
    largest_bits = np.int32(0)
    for k in range(bits.shape[0]):
        largest_bits = max(largest_bits, bits[k] & np.int32(0x7FFFFFFF))
    if largest_bits == 0:
        return
    largest = np.array([largest_bits], dtype=np.int32).view(np.float32)[0]
    for k in range(values.shape[0]):
        values[k] = values[k] / largest


@numba.njit(inline="always", error_model="numpy")
def _apply_rule(theta, at_rule, sizes, outputs, weights, plastic_norm):
    """w += eta * (A pre post + B pre + C post + D) for every synapse (the rule read from
    theta[at_rule:]), then, with plastic_norm, each layer's weights divided by their largest
    magnitude."""
    at_unit, at_weight = 0, 0
    for layer in range(sizes.shape[0] - 1):
        n_in, n_next = sizes[layer], sizes[layer + 1]
        n_weights = n_in * n_next
        pre = outputs[at_unit : at_unit + n_in]
        post = outputs[at_unit + n_in : at_unit + n_in + n_next]
        for i in range(n_in):
            p = pre[i]
            row = i * n_next
            w = weights[at_weight + row : at_weight + row + n_next]
            eta = theta[at_rule + row : at_rule + row + n_next]
            a = theta[at_rule + n_weights + row : at_rule + n_weights + row + n_next]
            b = theta[at_rule + 2 * n_weights + row : at_rule + 2 * n_weights + row + n_next]
            c = theta[at_rule + 3 * n_weights + row : at_rule + 3 * n_weights + row + n_next]
            d = theta[at_rule + 4 * n_weights + row : at_rule + 4 * n_weights + row + n_next]
            for o in range(n_next):
                q = post[o]
                w[o] += eta[o] * (((a[o] * p * q + b[o] * p) + c[o] * q) + d[o])
        if plastic_norm:
            _divide_by_largest(weights[at_weight : at_weight + n_weights])
        at_unit += n_in
        at_weight += n_weights
        at_rule += HEBBIAN_TERMS * n_weights


@numba.njit(inline="always", error_model="numpy")
def _plastic_step(theta, at_rule, sizes, act, codes, plastic_norm, outputs, tail, weights):
    """From the first layer's input in outputs[:sizes[0]]: every layer's outputs with the current
    weights, the action (as kernels.map_outputs returns it), then the rule applied."""
    n_sizes = sizes.shape[0]
    at_unit, at_weight = 0, 0
    for layer in range(n_sizes - 1):
        n_in, n_next = sizes[layer], sizes[layer + 1]
        pre = outputs[at_unit : at_unit + n_in]
        post = outputs[at_unit + n_in : at_unit + n_in + n_next]
        kernels.dense_layers(pre, post, weights, at_weight, sizes[layer : layer + 2], False, act)
        if layer < n_sizes - 2:
            kernels.activate(post, act)
        at_unit += n_in
        at_weight += n_in * n_next
    index = kernels.map_outputs(outputs[at_unit:], codes, tail, sizes[n_sizes - 1])
    _apply_rule(theta, at_rule, sizes, outputs, weights, plastic_norm)
    return index


@numba.njit(inline="always")
def _units_and_weights(sizes):
    units, count = sizes[0], 0
    for layer in range(1, sizes.shape[0]):
        units += sizes[layer]
        count += sizes[layer - 1] * sizes[layer]
    return units, count


@numba.njit(_HEBBIAN_STEP_SIGNATURES, cache=True, error_model="numpy")
def hebbian_step(obs, obs_state, theta, layout, scratch):
    """One step of the Hebbian policy: act with the current weights, then apply the rule.

    theta    float32 rule parameters (see the module docstring)
    layout   (plastic_norm, n_sizes, sizes..., 0, activation code, output codes...)
    scratch  float32: every layer's outputs o (sum of sizes: the normalised observation first),
             low, high, the action (n_out each), then the weights, layer by layer (n_in, n_out)
             row-major, which this call updates
    Returns like mlp_step.
    """
    sizes, _, act, codes = kernels.unpack_layout(layout, HEBBIAN_HEADER)
    n_out = sizes[sizes.shape[0] - 1]
    units, _ = _units_and_weights(sizes)
    outputs = scratch[:units]
    if not kernels.normalise_into(obs, obs_state, outputs, sizes[0]):
        return kernels.NOT_FINITE
    tail = scratch[units : units + 3 * n_out]
    weights = scratch[units + 3 * n_out :]
    return _plastic_step(theta, 0, sizes, act, codes, layout[0] != 0, outputs, tail, weights)


_PIXELS_STEP_SIGNATURES = [
    f"int64({obs}[:, :, :, ::1], float32[::1], int64[::1], float32[::1])"
    for obs in ("uint8", "float32", "float64")
]


@numba.njit(_PIXELS_STEP_SIGNATURES, cache=True, error_model="numpy")
def hebbian_pixels_step(obs, theta, layout, scratch):
    """One step of the Hebbian policy on pixels (the paper's CarRacing network): the CNN's
    convolutions (evolved, static, no biases) give the first plastic layer's input.

    theta    the convolutions' HWIO weights as in cnn_step, then the rule
    layout   (stack, height, width, colours, plastic_norm, n_sizes, sizes..., 0, activation,
             output codes...)
    scratch  float32: cnn.conv_features' entries, every dense layer's outputs, low, high, the
             action, then the plastic weights
    """
    sizes, _, act, codes = kernels.unpack_layout(layout, PIXELS_HEADER)
    n_out = sizes[sizes.shape[0] - 1]
    units, n_weights = _units_and_weights(sizes)
    at = scratch.shape[0] - n_weights - 3 * n_out - units
    outputs = scratch[at : at + units]
    tail = scratch[at + units : at + units + 3 * n_out]
    weights = scratch[at + units + 3 * n_out :]
    rule_at = cnn.conv_features(obs, theta, layout[:4], False, act, scratch, outputs)
    return _plastic_step(theta, rule_at, sizes, act, codes, layout[4] != 0, outputs, tail, weights)


def initial_weights(spec: PolicySpec, seed: int) -> np.ndarray:
    """The weights an episode reset with `seed` starts from, float32, layer by layer."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, WEIGHTS_STREAM]))
    return rng.uniform(-INITIAL_WEIGHT, INITIAL_WEIGHT, spec.dense_weights).astype(np.float32)


def initial_theta(spec: PolicySpec, seed: int, index: int = 0) -> np.ndarray:
    """The parameters at the start of a run: on pixels the CNN's filters (as `--policy cnn`
    starts them), then the rule, standard normal (the paper's 'normal')."""
    rng = starting_generator(seed, index)
    rule = rng.standard_normal(HEBBIAN_TERMS * spec.dense_weights)
    return np.concatenate([*cnn.initial_filters(spec, rng), rule]).astype(np.float32)


def hebbian_actor(spec: PolicySpec, obs_clip: float = 5.0):
    """The actor of a Hebbian policy, on vectors or on pixels."""
    return HebbianPixelActor(spec) if spec.obs_shape else HebbianActor(spec, obs_clip)


class _DrawnWeights:
    """What both Hebbian actors add to their family's actor: the plastic weights (kept in the
    scratch between steps) and their draw at each episode's start."""

    spec: PolicySpec
    kept: np.ndarray

    @property
    def weights(self) -> np.ndarray:
        """The current weights, layer by layer (a view)."""
        return self.kept

    def reset(self, seed: int) -> None:
        """Start an episode with weights drawn from its seed."""
        self.kept[:] = initial_weights(self.spec, seed)


class HebbianActor(_DrawnWeights, VectorActor):
    """The actor of a Hebbian policy on vector observations."""

    def __init__(self, spec: PolicySpec, obs_clip: float = 5.0):
        layout = np.concatenate([[int(spec.plastic_norm)], vector_layout(spec, spec.sizes)])
        super().__init__(spec, obs_clip, hebbian_step, layout, sum(spec.sizes), spec.dense_weights)


class HebbianPixelActor(_DrawnWeights, cnn.PixelActor):
    """The actor of a Hebbian policy on pixels."""

    def __init__(self, spec: PolicySpec):
        flags = vector_layout(spec, spec.sizes)
        layout = np.array([*spec.obs_shape, int(spec.plastic_norm), *flags], dtype=np.int64)
        super().__init__(spec, hebbian_pixels_step, layout, sum(spec.sizes), spec.dense_weights)
