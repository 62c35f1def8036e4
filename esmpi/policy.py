"""The policies (an MLP, a linear policy, and a CNN for pixel observations): parameter layout,
initialisation, observation encoding and action mapping.

A policy is a flat float32 vector `theta` plus a `PolicySpec` that says how to read it (see the
layouts in `kernels.py`). `Actor` (MLP) and `CnnActor` own the per-rank scratch buffers and turn
one raw observation into one action with a single call of `kernels.policy_step` or
`kernels.cnn_step`; `actor_for` picks the one a spec needs. The linear policy (ARS's, Mania et al.
2018) is the MLP without hidden layers, sizes (n_in, n_out): the action is the output map of
(normalised obs) @ M (+ b), run by the same kernel; only its initial parameters differ (zero).

Box actions are mapped per dimension: 'clip' to the bounds, 'tanh' or 'sigmoid' rescaled into
them (`--action-map tanh,sigmoid,sigmoid` gives each dimension its own; one name maps all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from esmpi import kernels
from esmpi.config import Config, UsageError

_ACTIVATIONS = {"tanh": kernels.ACT_TANH, "relu": kernels.ACT_RELU}
_OUTPUT_MAPS = {
    "argmax": kernels.OUT_ARGMAX,
    "clip": kernels.OUT_CLIP,
    "tanh": kernels.OUT_TANH,
    "sigmoid": kernels.OUT_SIGMOID,
}


@dataclass(frozen=True)
class PolicySpec:
    """The architecture of a policy, enough to rebuild it from a checkpoint."""

    sizes: tuple[int, ...]  # (n_in, hidden..., n_out)
    activation: str  # hidden activation, a key of _ACTIVATIONS
    bias: bool
    # 'argmax' (Discrete actions); for Box actions 'clip', 'tanh' or 'sigmoid', or one of those
    # per action dimension separated by commas ('tanh,sigmoid,sigmoid')
    output: str
    obs_encoding: str  # 'box' (flattened values), 'onehot' (Discrete), 'pixels' (CNN input)
    action_low: tuple[float, ...] = ()  # Box bounds, one per output; empty for argmax
    action_high: tuple[float, ...] = ()
    action_shape: tuple[int, ...] = ()  # the Box action's own shape; the policy outputs it flat
    action_start: int = 0  # Discrete(n, start): the first action's value
    # 'mlp'; 'linear': sizes (n_in, n_out), one layer, zero at the start; or 'cnn':
    # convolutions (kernels.CONV_LAYERS) before the layers
    kind: str = "mlp"
    # cnn: the observation as (stack, height, width, colours); sizes[0] is the pooled conv output
    obs_shape: tuple[int, ...] = ()
    obs_scale: float = 1.0  # cnn: the input is multiplied by this (1/255: pixels in [0, 1])

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(n_in, n_out) of the dense layers."""
        return list(zip(self.sizes[:-1], self.sizes[1:], strict=True))

    @property
    def conv_shapes(self) -> list[tuple[int, int, int]]:
        """(kernel size, in channels, out channels) of the convolutions; empty for an MLP."""
        if self.kind != "cnn":
            return []
        c_in = self.obs_shape[0] * self.obs_shape[3]
        shapes = []
        for out_channels, size, _ in kernels.CONV_LAYERS:
            shapes.append((size, c_in, out_channels))
            c_in = out_channels
        return shapes

    @property
    def output_codes(self) -> list[int]:
        """The kernels' OUT_* code of each action dimension (one OUT_ARGMAX for Discrete)."""
        names = self.output.split(",")
        if len(names) == 1:
            names = names * (1 if self.output == "argmax" else self.sizes[-1])
        return [_OUTPUT_MAPS[name] for name in names]

    @property
    def n_params(self) -> int:
        extra = self.bias
        convs = sum(
            s * s * c_in * c_out + (c_out if extra else 0) for s, c_in, c_out in self.conv_shapes
        )
        dense = sum(n_in * n_out + (n_out if extra else 0) for n_in, n_out in self.layer_shapes)
        return convs + dense


def cnn_features(obs_shape: tuple[int, ...]) -> int:
    """Inputs of the first dense layer of the CNN for (stack, height, width, colours) frames, or
    UsageError when the frames are too small for the convolutions and pools."""
    height, width = obs_shape[1], obs_shape[2]
    channels = obs_shape[0] * obs_shape[3]
    for out_channels, size, stride in kernels.CONV_LAYERS:
        height = ((height - size) // stride + 1) // kernels.POOL
        width = ((width - size) // stride + 1) // kernels.POOL
        channels = out_channels
        if height < 1 or width < 1:
            raise UsageError(
                f"Observations of {obs_shape[1]}x{obs_shape[2]} pixels are too small for the CNN "
                "policy (16x16 at least); use --resize or --policy mlp."
            )
    return height * width * channels


def _frames_shape(shape: tuple[int, ...], frame_stack: int) -> tuple[int, int, int, int]:
    """(stack, height, width, colours) view of a pixel observation: (H, W), (H, W, C), stacked
    (k, H, W) when frame_stack > 1, or (k, H, W, C)."""
    if len(shape) == 2:
        return (1, *shape, 1)
    if len(shape) == 3:
        return (*shape, 1) if frame_stack > 1 else (1, *shape)
    if len(shape) == 4:
        return shape
    raise UsageError(
        f"The CNN policy reads images (height, width[, colours]), possibly stacked; observations "
        f"of shape {shape} are not; use --policy mlp."
    )


def spec_for_spaces(observation_space, action_space, config: Config) -> PolicySpec:
    """The PolicySpec for an environment's spaces, or UsageError if they are unsupported."""
    from gymnasium import spaces

    architecture: dict[str, Any] = dict(kind=config.policy)  # the spec's kind is the --policy
    if config.policy == "cnn":
        if not isinstance(observation_space, spaces.Box):
            raise UsageError(
                f"--policy cnn reads image observations, not {observation_space}; use --policy mlp."
            )
        obs_shape = _frames_shape(tuple(observation_space.shape), config.frame_stack)
        n_in, obs_encoding = cnn_features(obs_shape), "pixels"
        scale = 1.0 / 255.0 if config.scale_obs else 1.0
        architecture.update(obs_shape=obs_shape, obs_scale=scale)
    elif isinstance(observation_space, spaces.Discrete):
        n_in, obs_encoding = int(observation_space.n), "onehot"
    elif isinstance(observation_space, spaces.Box):
        n_in, obs_encoding = int(np.prod(observation_space.shape)), "box"
    else:
        raise UsageError(
            f"Observation space {observation_space} is not supported: esmpi policies read Box "
            "and Discrete observations; --flatten-obs makes one vector of a Dict or Tuple of them."
        )
    common: dict[str, Any] = dict(
        activation=config.activation, bias=config.bias, obs_encoding=obs_encoding, **architecture
    )
    hidden = () if config.policy == "linear" else tuple(config.hidden)
    if isinstance(action_space, spaces.Discrete):
        return PolicySpec(
            sizes=(n_in, *hidden, int(action_space.n)),
            output="argmax",
            action_start=int(action_space.start),
            **common,
        )
    if isinstance(action_space, spaces.Box):
        low = action_space.low.astype(np.float64).ravel()
        high = action_space.high.astype(np.float64).ravel()
        _check_action_map(config.action_map, action_space, low, high)
        return PolicySpec(
            sizes=(n_in, *hidden, low.size),
            output=config.action_map,
            action_low=tuple(low),
            action_high=tuple(high),
            action_shape=tuple(action_space.shape),
            **common,
        )
    raise UsageError(
        f"Action space {action_space} is not supported: esmpi policies act in Discrete and Box "
        "spaces."
    )


def _check_action_map(action_map: str, action_space, low: np.ndarray, high: np.ndarray) -> None:
    names = action_map.split(",")
    if len(names) > 1 and len(names) != low.size:
        raise UsageError(
            f"--action-map {action_map} names {len(names)} mappings but {action_space} has "
            f"{low.size} dimensions; give one mapping, or one per dimension."
        )
    rescaled = np.array([name != "clip" for name in names]) & np.ones(low.size, dtype=bool)
    if not (np.isfinite(low[rescaled]).all() and np.isfinite(high[rescaled]).all()):
        raise UsageError(
            f"--action-map {action_map} needs finite action bounds where it rescales, but "
            f"{action_space} has infinite ones there; use --action-map clip."
        )


def initial_theta(spec: PolicySpec, seed: int, index: int = 0) -> np.ndarray:
    """Parameters drawn like the Salimans et al. starter code: each weight column scaled to unit
    norm (0.01 for the output layer, so that the first actions are near the middle), zero biases.
    A linear policy starts at zero, as ARS's M = 0 (Mania et al. 2018, Algorithm 2). `index`
    numbers the starting points of a meta-population (each its own draw; 0 is the run's)."""
    if spec.kind == "linear":
        return np.zeros(spec.n_params, dtype=np.float32)
    entropy = [seed, 0x1217] if index == 0 else [seed, 0x1217, index]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    parts = []
    for size, c_in, c_out in spec.conv_shapes:  # HWIO, each output channel's filter unit norm
        weights = rng.standard_normal((size * size * c_in, c_out))
        weights /= np.sqrt(np.square(weights).sum(axis=0, keepdims=True))
        parts.append(weights.ravel())
        if spec.bias:
            parts.append(np.zeros(c_out))
    for layer, (n_in, n_out) in enumerate(spec.layer_shapes):
        weights = rng.standard_normal((n_in, n_out))
        scale = 0.01 if layer == len(spec.layer_shapes) - 1 else 1.0
        weights *= scale / np.sqrt(np.square(weights).sum(axis=0, keepdims=True))
        parts.append(weights.ravel())
        if spec.bias:
            parts.append(np.zeros(n_out))
    return np.concatenate(parts).astype(np.float32)


def conv_views(spec: PolicySpec, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(W (size, size, c_in, c_out), b) views into theta per convolution; b is None without
    biases. Empty for an MLP."""
    return _weight_views(theta, 0, _conv_weight_shapes(spec), spec.bias)[0]


def layer_views(spec: PolicySpec, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(W, b) views into theta per dense layer (after the convolutions of a CNN); b is None
    without biases."""
    _, position = _weight_views(theta, 0, _conv_weight_shapes(spec), spec.bias)
    return _weight_views(theta, position, spec.layer_shapes, spec.bias)[0]


def _conv_weight_shapes(spec: PolicySpec) -> list[tuple[int, int, int, int]]:
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


class NonFiniteObservation(FloatingPointError):
    """An observation holding NaN or inf reached the policy: the episode cannot be scored."""


class Actor:
    """Turns raw observations into actions for one policy spec; one per rank, reused.

    The normalisation (mean, 1/std) is frozen during a generation; `obs_sums` accumulates the
    centred sums and squares that the next normalisation update needs (see kernels.policy_step
    for the packed arrays).
    """

    def __init__(self, spec: PolicySpec, obs_clip: float = 5.0):
        self.spec = spec
        n_in, n_out = spec.sizes[0], spec.sizes[-1]
        self.obs_state = np.zeros((5, n_in))
        self.obs_state[kernels.OBS_INV_STD] = 1.0
        self.obs_state[kernels.OBS_CLIP] = obs_clip
        flags = (int(spec.bias), _ACTIVATIONS[spec.activation], *spec.output_codes)
        self.layout = np.array([len(spec.sizes), *spec.sizes, *flags], dtype=np.int64)
        width = max(spec.sizes)
        self.scratch = cache_aligned_zeros(2 * width + 3 * n_out)
        if spec.output != "argmax":
            bounds = self.scratch[2 * width : 2 * width + 2 * n_out].reshape(2, n_out)
            bounds[0] = np.maximum(spec.action_low, np.finfo(np.float32).min)
            bounds[1] = np.minimum(spec.action_high, np.finfo(np.float32).max)
        action = self.scratch[2 * width + 2 * n_out :]
        self.action = action.reshape(spec.action_shape) if spec.action_shape else action
        self.discrete_actions = _discrete_actions(spec)
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

    def act(self, obs, theta: np.ndarray):
        """The action for raw observation `obs` under parameters `theta`."""
        if self.onehot is not None:
            self.onehot[:] = 0.0
            self.onehot[int(obs)] = 1.0
            obs = self.onehot
        try:
            index = kernels.policy_step(obs, self.obs_state, theta, self.layout, self.scratch)
        except TypeError:  # not a flat float32/float64 array: convert once, only when needed
            obs = np.asarray(obs, dtype=np.float32).reshape(-1)
            index = kernels.policy_step(obs, self.obs_state, theta, self.layout, self.scratch)
        if index >= 0:
            return self.discrete_actions[index]
        if index == kernels.NOT_FINITE:
            raise NonFiniteObservation(_not_finite(obs))
        # A copy: an environment may keep the action it was given, and the buffer is reused.
        return self.action.copy()


class CnnActor:
    """The Actor of a CNN policy: pixel observations (uint8 or float), no normalisation (the
    input is scaled by spec.obs_scale instead); one call of kernels.cnn_step per step."""

    def __init__(self, spec: PolicySpec, obs_clip: float = 5.0):
        self.spec = spec
        _, height, width, _ = spec.obs_shape
        n_out = spec.sizes[-1]
        self.obs_sums = np.zeros((2, 0))  # nothing to normalise; kept for the common interface
        flags = (int(spec.bias), _ACTIVATIONS[spec.activation], *spec.output_codes)
        self.layout = np.array(
            [*spec.obs_shape, len(spec.sizes), *spec.sizes, *flags], dtype=np.int64
        )
        maps = 0  # the convolutions' outputs and the first pooled map (the last is dense input)
        for layer, (out_channels, size, stride) in enumerate(kernels.CONV_LAYERS):
            height, width = (height - size) // stride + 1, (width - size) // stride + 1
            maps += height * width * out_channels
            height, width = height // kernels.POOL, width // kernels.POOL
            if layer < len(kernels.CONV_LAYERS) - 1:
                maps += height * width * out_channels
        dense = 2 * max(spec.sizes)
        n_inputs = int(np.prod(spec.obs_shape))
        self.scratch = cache_aligned_zeros(1 + n_inputs + maps + dense + 3 * n_out)
        self.scratch[0] = spec.obs_scale
        tail = self.scratch[len(self.scratch) - 3 * n_out :]
        if spec.output != "argmax":
            tail[:n_out] = np.maximum(spec.action_low, np.finfo(np.float32).min)
            tail[n_out : 2 * n_out] = np.minimum(spec.action_high, np.finfo(np.float32).max)
        action = tail[2 * n_out :]
        self.action = action.reshape(spec.action_shape) if spec.action_shape else action
        self.discrete_actions = _discrete_actions(spec)

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Pixel inputs are scaled, not normalised: nothing to set."""

    def act(self, obs, theta: np.ndarray):
        """The action for observation `obs` (any of the shapes of _frames_shape)."""
        frames = np.asarray(obs).reshape(self.spec.obs_shape)
        if frames.dtype.kind == "f" and not np.isfinite(frames).all():  # uint8 frames cannot be
            raise NonFiniteObservation(_not_finite(frames))
        try:
            index = kernels.cnn_step(frames, theta, self.layout, self.scratch)
        except TypeError:  # another dtype, or not contiguous: convert
            frames = np.ascontiguousarray(frames, dtype=np.float32)
            index = kernels.cnn_step(frames, theta, self.layout, self.scratch)
        if index >= 0:
            return self.discrete_actions[index]
        return self.action.copy()


def _not_finite(obs) -> str:
    """Which elements of `obs` are NaN or inf, in a few words."""
    values = np.asarray(obs, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(values))
    shown = ", ".join(f"[{i}] = {values[i]}" for i in bad[:3])
    more = f" and {bad.size - 3} more" if bad.size > 3 else ""
    return f"the observation holds {shown}{more}"


def _discrete_actions(spec: PolicySpec) -> tuple:
    """The actions of a Discrete space as numpy int64 scalars, made once (immutable, so they are
    safe to hand out again): what `Discrete.sample()` gives, and ~1.5 us a step cheaper than a
    Python int in the `action_space.contains` check of environments such as CartPole."""
    if spec.output != "argmax":
        return ()
    return tuple(np.int64(spec.action_start + index) for index in range(spec.sizes[-1]))


def actor_for(spec: PolicySpec, obs_clip: float = 5.0):
    """The actor that runs `spec`: Actor for an MLP or a linear policy, CnnActor for a CNN."""
    return CnnActor(spec, obs_clip) if spec.kind == "cnn" else Actor(spec, obs_clip)
