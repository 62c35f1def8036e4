"""The CNN for pixel observations (`--policy cnn`, the published CarRacing baseline's network; the
architecture is spec.CONV_LAYERS): its kernel and actor, and the convolutional front end and
pixel actor that the Hebbian policy's pixel form shares. Pixels are not normalised but scaled."""

from __future__ import annotations

import numba
import numpy as np

from esmpi import kernels
from esmpi.config import UsageError
from esmpi.policies.spec import (
    ACTIVATIONS,
    CONV_LAYERS,
    POOL,
    NonFiniteObservation,
    PolicySpec,
    discrete_actions,
    not_finite,
    scratch_with_action,
)

# cnn layout = (stack, height, width, colours, n_sizes, dense sizes..., bias, activation, codes...)
CNN_HEADER = 5

_CNN_STEP_SIGNATURES = [
    f"int64({obs}[:, :, :, ::1], float32[::1], int64[::1], float32[::1])"
    for obs in ("uint8", "float32", "float64")
]


@numba.njit(inline="always", error_model="numpy")
def _conv_pool(
    source,
    s_height,
    s_width,
    c_in,
    theta,
    position,
    bias,
    out_channels,
    size,
    stride,
    conv,
    pooled,
    act,
):
    """Convolve `source` (s_height, s_width, c_in) channels-last with the HWIO weights at
    theta[position:] (size, size, c_in, out_channels), then the bias; write the 2x2 max-pool of the
    result through the activation into `pooled` (channels-last); return the next theta position
    and the pooled height and width."""
    height = (s_height - size) // stride + 1
    width = (s_width - size) // stride + 1
    n_weights = size * size * c_in * out_channels
    weights = theta[position : position + n_weights]
    for r in range(height):
        for c in range(width):
            acc = conv[(r * width + c) * out_channels : (r * width + c + 1) * out_channels]
            if bias:
                acc[:] = theta[position + n_weights : position + n_weights + out_channels]
            else:
                acc[:] = 0.0
            for dy in range(size):
                row = (r * stride + dy) * s_width
                for dx in range(size):
                    pixel = source[
                        (row + c * stride + dx) * c_in : (row + c * stride + dx + 1) * c_in
                    ]
                    for i in range(c_in):
                        value = pixel[i]
                        w = weights[((dy * size + dx) * c_in + i) * out_channels :]
                        for o in range(out_channels):
                            acc[o] += value * w[o]
    p_height, p_width = height // POOL, width // POOL
    for r in range(p_height):
        for c in range(p_width):
            for o in range(out_channels):
                best = conv[((POOL * r) * width + POOL * c) * out_channels + o]
                for dy in range(POOL):
                    for dx in range(POOL):
                        best = max(
                            best, conv[((POOL * r + dy) * width + POOL * c + dx) * out_channels + o]
                        )
                pooled[(r * p_width + c) * out_channels + o] = best
    kernels.activate(pooled[: p_height * p_width * out_channels], act)
    return position + n_weights + (out_channels if bias else 0), p_height, p_width


@numba.njit(inline="always", error_model="numpy")
def conv_features(obs, theta, frames_shape, bias, act, scratch, features):
    """The convolutions' output for `obs`: the pooled conv2 map through the activation, flattened
    as (row, column, channel), written into `features`; returns theta's position after the
    convolutions. scratch from its start: the input scale, the scaled input, both conv outputs
    and the first pooled map (conv_scratch_size entries)."""
    stack, height, width, colours = (
        frames_shape[0],
        frames_shape[1],
        frames_shape[2],
        frames_shape[3],
    )
    c_in = stack * colours
    scale = scratch[0]
    position = 1
    source = scratch[position : position + height * width * c_in]
    position += height * width * c_in
    for r in range(height):
        for c in range(width):
            for s in range(stack):
                for k in range(colours):
                    source[(r * width + c) * c_in + s * colours + k] = obs[s, r, c, k] * scale
    n1, size1, stride1 = CONV_LAYERS[0]
    h1, w1 = (height - size1) // stride1 + 1, (width - size1) // stride1 + 1
    conv1 = scratch[position : position + h1 * w1 * n1]
    position += h1 * w1 * n1
    pool1 = scratch[position : position + (h1 // POOL) * (w1 // POOL) * n1]
    position += (h1 // POOL) * (w1 // POOL) * n1
    n2, size2, stride2 = CONV_LAYERS[1]
    p1h, p1w = h1 // POOL, w1 // POOL
    h2, w2 = (p1h - size2) // stride2 + 1, (p1w - size2) // stride2 + 1
    conv2 = scratch[position : position + h2 * w2 * n2]
    at, p1h, p1w = _conv_pool(
        source, height, width, c_in, theta, 0, bias, n1, size1, stride1, conv1, pool1, act
    )
    at, _, _ = _conv_pool(
        pool1, p1h, p1w, n1, theta, at, bias, n2, size2, stride2, conv2, features, act
    )
    return at


@numba.njit(_CNN_STEP_SIGNATURES, cache=True, error_model="numpy")
def cnn_step(obs, theta, layout, scratch):
    """One CNN policy step on a pixel observation; returns like mlp_step.

    obs      (stack, height, width, colours): stacked frames, each channels-last; channel
             s * colours + k of the network's input is obs[s, :, :, k]
    theta    conv1 HWIO weights (3, 3, stack * colours, 6) [bias 6], conv2 (5, 5, 6, 8) [bias 8],
             then the dense layers as in mlp_step (the first reads the pooled conv2 map
             flattened as (row, column, channel))
    layout   (stack, height, width, colours, n_sizes, dense sizes..., bias, activation, codes...)
    scratch  float32: conv_features' entries, two dense work rows, then low, high and the action
    """
    sizes, bias, act, codes = kernels.unpack_layout(layout, CNN_HEADER)
    n_out = sizes[sizes.shape[0] - 1]
    dense_width = 0
    for i in range(sizes.shape[0]):
        dense_width = max(dense_width, sizes[i])
    position = scratch.shape[0] - 3 * n_out - 2 * dense_width
    x = scratch[position : position + dense_width]
    y = scratch[position + dense_width : position + 2 * dense_width]
    at = conv_features(obs, theta, layout[:4], bias, act, scratch, x)
    out = kernels.dense_layers(x, y, theta, at, sizes, bias, act)
    return kernels.map_outputs(out, codes, scratch[position + 2 * dense_width :], n_out)


def conv_scratch_size(spec: PolicySpec) -> int:
    """Entries of scratch conv_features uses: the scale, the input, the convolutions' outputs and
    the first pooled map (the last pooled map is the dense part's input)."""
    _, height, width, _ = spec.obs_shape
    maps = 0
    for layer, (out_channels, size, stride) in enumerate(CONV_LAYERS):
        height, width = (height - size) // stride + 1, (width - size) // stride + 1
        maps += height * width * out_channels
        height, width = height // POOL, width // POOL
        if layer < len(CONV_LAYERS) - 1:
            maps += height * width * out_channels
    return 1 + int(np.prod(spec.obs_shape)) + maps


class PixelActor:
    """The actor of a policy on pixel observations (uint8 or float): no normalisation (the input
    is scaled by spec.obs_scale instead); one call of `kernel(frames, theta, layout, scratch)` per
    step. scratch: conv_features' entries, `dense_size` for the dense part, low, high and the
    action (n_out each), then `kept` entries the family keeps between steps (`self.kept`)."""

    def __init__(self, spec: PolicySpec, kernel, layout: np.ndarray, dense_size: int, kept: int):
        self.spec, self.kernel, self.layout = spec, kernel, layout
        self.obs_sums = np.zeros((2, 0))  # nothing to normalise; kept for the common interface
        work_size = conv_scratch_size(spec) + dense_size
        self.scratch, self.action, self.kept = scratch_with_action(spec, work_size, kept)
        self.scratch[0] = spec.obs_scale
        self.discrete_actions = discrete_actions(spec)

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Pixel inputs are scaled, not normalised: nothing to set."""

    def reset(self, seed: int) -> None:
        """Start an episode: nothing to do for a network without memory."""

    def act(self, obs, theta: np.ndarray):
        """The action for observation `obs` (any of the shapes of frames_shape)."""
        frames = np.asarray(obs).reshape(self.spec.obs_shape)
        if frames.dtype.kind == "f" and not np.isfinite(frames).all():  # uint8 frames cannot be
            raise NonFiniteObservation(not_finite(frames))
        try:
            index = self.kernel(frames, theta, self.layout, self.scratch)
        except TypeError:  # another dtype, or not contiguous: convert
            frames = np.ascontiguousarray(frames, dtype=np.float32)
            index = self.kernel(frames, theta, self.layout, self.scratch)
        if index >= 0:
            return self.discrete_actions[index]
        return self.action.copy()


def cnn_actor(spec: PolicySpec, obs_clip: float = 5.0) -> PixelActor:
    """The actor of a CNN policy."""
    flags = (int(spec.bias), ACTIVATIONS[spec.activation], *spec.output_codes)
    layout = np.array([*spec.obs_shape, len(spec.sizes), *spec.sizes, *flags], dtype=np.int64)
    return PixelActor(spec, cnn_step, layout, 2 * max(spec.sizes), 0)


def initial_filters(spec: PolicySpec, rng: np.random.Generator) -> list[np.ndarray]:
    """The convolutions' starting parameters (HWIO weights, each output channel's filter of unit
    norm; zero biases), flat, in layout order."""
    parts = []
    for size, c_in, c_out in spec.conv_shapes:
        weights = rng.standard_normal((size * size * c_in, c_out))
        weights /= np.sqrt(np.square(weights).sum(axis=0, keepdims=True))
        parts.append(weights.ravel())
        if spec.bias:
            parts.append(np.zeros(c_out))
    return parts


def cnn_features(obs_shape: tuple[int, ...]) -> int:
    """Inputs of the first dense layer of the CNN for (stack, height, width, colours) frames, or
    UsageError when the frames are too small for the convolutions and pools."""
    height, width = obs_shape[1], obs_shape[2]
    channels = obs_shape[0] * obs_shape[3]
    for out_channels, size, stride in CONV_LAYERS:
        height = ((height - size) // stride + 1) // POOL
        width = ((width - size) // stride + 1) // POOL
        channels = out_channels
        if height < 1 or width < 1:
            raise UsageError(
                f"Observations of {obs_shape[1]}x{obs_shape[2]} pixels are too small for the CNN "
                "policy (16x16 at least); use --resize or --policy mlp."
            )
    return height * width * channels


def frames_shape(shape: tuple[int, ...], frame_stack: int) -> tuple[int, int, int, int]:
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
