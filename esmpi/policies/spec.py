"""What every policy's parameters look like: `PolicySpec` (the architecture, enough to rebuild a
policy from a checkpoint), the views of a flat parameter vector as weight matrices, and the small
pieces the families' actors share.

A policy is a flat float32 vector `theta` plus a PolicySpec that says how to read it. The dense
layers' layout is the one of `kernels.dense_layers`: layer by layer, W (n_in, n_out) row-major,
then the bias (n_out,) when the policy has biases. A CNN puts its convolutions first (HWIO weights,
then a bias per output channel). A recurrent policy's first hidden layer reads the observation and
its own previous output, so its W is (n_in + hidden, hidden). A Hebbian policy's parameters are its
plasticity rule, five numbers per synapse (see policies/hebbian.py). A user class says its own
count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esmpi import kernels

ACTIVATIONS = {"tanh": kernels.ACT_TANH, "relu": kernels.ACT_RELU}
OUTPUT_MAPS = {
    "argmax": kernels.OUT_ARGMAX,
    "clip": kernels.OUT_CLIP,
    "tanh": kernels.OUT_TANH,
    "sigmoid": kernels.OUT_SIGMOID,
}

# The CNN for pixel observations (the published CarRacing baseline's network): conv 6@3x3 stride 1,
# max-pool 2, conv 8@5x5 stride 2, max-pool 2 (each pooled map through the hidden activation),
# then dense layers to the actions. Pools drop an odd last row or column.
CONV_LAYERS = ((6, 3, 1), (8, 5, 2))  # (output channels, kernel size, stride)
POOL = 2

# Hebbian policies: the rule's parameters per weight (Najarro & Risi's), in their layout order.
HEBBIAN_TERM_NAMES = ("eta", "A", "B", "C", "D")
HEBBIAN_TERMS = len(HEBBIAN_TERM_NAMES)


@dataclass(frozen=True)
class PolicySpec:
    """The architecture of a policy, enough to rebuild it from a checkpoint."""

    sizes: tuple[int, ...]  # (n_in, hidden..., n_out)
    activation: str  # hidden activation, a key of ACTIVATIONS
    bias: bool
    # 'argmax' (Discrete actions); for Box actions 'clip', 'tanh' or 'sigmoid', or one of those
    # per action dimension separated by commas ('tanh,sigmoid,sigmoid')
    output: str
    obs_encoding: str  # 'box' (flattened values), 'onehot' (Discrete), 'pixels' (CNN input)
    action_low: tuple[float, ...] = ()  # Box bounds, one per output; empty for argmax
    action_high: tuple[float, ...] = ()
    action_shape: tuple[int, ...] = ()  # the Box action's own shape; the policy outputs it flat
    action_start: int = 0  # Discrete(n, start): the first action's value
    # 'mlp'; 'linear': sizes (n_in, n_out), one layer, zero at the start; 'cnn': convolutions
    # (CONV_LAYERS) before the layers; 'rnn': the first hidden layer recurrent (Elman);
    # 'hebbian': weights that start random in each episode and follow an evolved rule; or a
    # user's 'module:Class' (policies/user.py)
    kind: str = "mlp"
    # cnn, and hebbian on pixels: the observation as (stack, height, width, colours); sizes[0] is
    # the pooled conv output
    obs_shape: tuple[int, ...] = ()
    obs_scale: float = 1.0  # cnn: the input is multiplied by this (1/255: pixels in [0, 1])
    # hebbian: divide each layer's weights by their largest magnitude after every update (the
    # paper's choice outside PyBullet)
    plastic_norm: bool = False
    user_params: int = 0  # module:Class: the parameter count the class gives

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(n_in, n_out) of the dense layers; a recurrent layer reads its input and its state."""
        shapes = list(zip(self.sizes[:-1], self.sizes[1:], strict=True))
        if self.kind == "rnn":
            shapes[0] = (self.sizes[0] + self.sizes[1], self.sizes[1])
        return shapes

    @property
    def conv_shapes(self) -> list[tuple[int, int, int]]:
        """(kernel size, in channels, out channels) of the convolutions; empty but on pixels."""
        if not self.obs_shape:
            return []
        c_in = self.obs_shape[0] * self.obs_shape[3]
        shapes = []
        for out_channels, size, _ in CONV_LAYERS:
            shapes.append((size, c_in, out_channels))
            c_in = out_channels
        return shapes

    @property
    def output_codes(self) -> list[int]:
        """The kernels' OUT_* code of each action dimension (one OUT_ARGMAX for Discrete)."""
        names = self.output.split(",")
        if len(names) == 1:
            names = names * (1 if self.output == "argmax" else self.sizes[-1])
        return [OUTPUT_MAPS[name] for name in names]

    @property
    def dense_weights(self) -> int:
        """Weights of the dense layers, biases aside (a Hebbian policy's plastic synapses)."""
        return sum(n_in * n_out for n_in, n_out in self.layer_shapes)

    @property
    def is_user_class(self) -> bool:
        return ":" in self.kind

    @property
    def n_params(self) -> int:
        if self.is_user_class:
            return self.user_params
        extra = self.bias
        convs = sum(
            s * s * c_in * c_out + (c_out if extra else 0) for s, c_in, c_out in self.conv_shapes
        )
        if self.kind == "hebbian":
            return convs + HEBBIAN_TERMS * self.dense_weights
        dense = sum(n_in * n_out + (n_out if extra else 0) for n_in, n_out in self.layer_shapes)
        return convs + dense


def conv_views(spec: PolicySpec, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(W (size, size, c_in, c_out), b) views into theta per convolution; b is None without
    biases. Empty for an MLP."""
    return _weight_views(theta, 0, conv_weight_shapes(spec), spec.bias)[0]


def layer_views(spec: PolicySpec, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(W, b) views into theta per dense layer (after the convolutions of a CNN); b is None
    without biases."""
    _, position = _weight_views(theta, 0, conv_weight_shapes(spec), spec.bias)
    return _weight_views(theta, position, spec.layer_shapes, spec.bias)[0]


def conv_weight_shapes(spec: PolicySpec) -> list[tuple[int, int, int, int]]:
    return [(size, size, c_in, c_out) for size, c_in, c_out in spec.conv_shapes]


def _weight_views(theta, position: int, shapes, bias: bool):
    """(W, b) views for weight shapes laid out one after another from `position` (each W then,
    with biases, its last dimension's bias), and the position after them."""
    views = []
    for shape in shapes:
        n_weights = int(np.prod(shape))
        weights = theta[position : position + n_weights].reshape(shape)
        position += n_weights
        bias_view = None
        if bias:
            bias_view = theta[position : position + shape[-1]]
            position += shape[-1]
        views.append((weights, bias_view))
    return views, position


def cache_aligned_zeros(size: int) -> np.ndarray:
    """float32 zeros whose data starts on a 64-byte cache line (numpy only promises 16 bytes), so
    that the policy kernel's vector loads of weight and work rows do not straddle two lines: an
    aligned parameter vector made the 17->128->64->6 step ~8% faster. For the work buffers and the
    perturbed parameters of each member."""
    buffer = np.zeros(size + 16, dtype=np.float32)
    start = (-buffer.ctypes.data % 64) // buffer.itemsize
    return buffer[start : start + size]


def starting_generator(seed: int, index: int = 0) -> np.random.Generator:
    """The generator a family draws a run's starting parameters from: (seed, index) alone, `index`
    numbering the starting points of a meta-population (0 is the run's)."""
    entropy = [seed, 0x1217] if index == 0 else [seed, 0x1217, index]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def scratch_with_action(spec: PolicySpec, work_size: int, kept: int):
    """An actor's float32 scratch: `work_size` entries for its kernel's work, then the action
    bounds low and high and the action (n_out each), then `kept` entries the family keeps between
    steps. Returns (scratch, the action view in the Box's shape, the kept view)."""
    n_out = spec.sizes[-1]
    scratch = cache_aligned_zeros(work_size + 3 * n_out + kept)
    tail = scratch[work_size : work_size + 3 * n_out]
    if spec.output != "argmax":
        tail[:n_out] = np.maximum(spec.action_low, np.finfo(np.float32).min)
        tail[n_out : 2 * n_out] = np.minimum(spec.action_high, np.finfo(np.float32).max)
    action = tail[2 * n_out :]
    action = action.reshape(spec.action_shape) if spec.action_shape else action
    return scratch, action, scratch[work_size + 3 * n_out :]


class NonFiniteObservation(FloatingPointError):
    """An observation holding NaN or inf reached the policy: the episode cannot be scored."""


def not_finite(obs) -> str:
    """Which elements of `obs` are NaN or inf, in a few words."""
    values = np.asarray(obs, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(values))
    shown = ", ".join(f"[{i}] = {values[i]}" for i in bad[:3])
    more = f" and {bad.size - 3} more" if bad.size > 3 else ""
    return f"the observation holds {shown}{more}"


def discrete_actions(spec: PolicySpec) -> tuple:
    """The actions of a Discrete space as numpy int64 scalars, made once (immutable, so they are
    safe to hand out again): what `Discrete.sample()` gives, and ~1.5 us a step cheaper than a
    Python int in the `action_space.contains` check of environments such as CartPole."""
    if spec.output != "argmax":
        return ()
    return tuple(np.int64(spec.action_start + index) for index in range(spec.sizes[-1]))
