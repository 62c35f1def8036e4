"""The CNN for pixel observations (`--policy cnn`, the published CarRacing baseline's network; the
architecture is spec.CONV_LAYERS): its kernel and actor. Pixels are not normalised but scaled."""

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
    cache_aligned_zeros,
    discrete_actions,
    not_finite,
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


@numba.njit(_CNN_STEP_SIGNATURES, cache=True, error_model="numpy")
def cnn_step(obs, theta, layout, scratch):
    """One CNN policy step on a pixel observation; returns like policy_step.

    obs      (stack, height, width, colours): stacked frames, each channels-last; channel
             s * colours + k of the network's input is obs[s, :, :, k]
    theta    conv1 HWIO weights (3, 3, stack * colours, 6) [bias 6], conv2 (5, 5, 6, 8) [bias 8],
             then the dense layers as in policy_step (the first reads the pooled conv2 map
             flattened as (row, column, channel))
    layout   (stack, height, width, colours, n_sizes, dense sizes..., bias, activation, codes...)
    scratch  float32: the input scale (1/255 to see pixels in [0, 1]), the scaled input, both
             conv outputs and pooled maps, two dense work rows, then low, high and the action
    """
    stack, height, width, colours = layout[0], layout[1], layout[2], layout[3]
    n_sizes = layout[4]
    sizes = layout[CNN_HEADER : CNN_HEADER + n_sizes]
    bias = layout[CNN_HEADER + n_sizes] != 0
    act = layout[CNN_HEADER + n_sizes + 1]
    codes = layout[CNN_HEADER + n_sizes + kernels.LAYOUT_FLAGS :]
    c_in = stack * colours
    n_out = sizes[n_sizes - 1]
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
    position += h2 * w2 * n2
    dense_width = 0
    for i in range(n_sizes):
        dense_width = max(dense_width, sizes[i])
    x = scratch[position : position + dense_width]
    y = scratch[position + dense_width : position + 2 * dense_width]
    tail = scratch[position + 2 * dense_width :]
    at, p1h, p1w = _conv_pool(
        source, height, width, c_in, theta, 0, bias, n1, size1, stride1, conv1, pool1, act
    )
    at, _, _ = _conv_pool(pool1, p1h, p1w, n1, theta, at, bias, n2, size2, stride2, conv2, x, act)
    out = kernels.dense_layers(x, y, theta, at, sizes, bias, act)
    return kernels.map_outputs(out, codes, tail, n_out)


class CnnActor:
    """The Actor of a CNN policy: pixel observations (uint8 or float), no normalisation (the
    input is scaled by spec.obs_scale instead); one call of cnn_step per step."""

    def __init__(self, spec: PolicySpec, obs_clip: float = 5.0):
        self.spec = spec
        _, height, width, _ = spec.obs_shape
        n_out = spec.sizes[-1]
        self.obs_sums = np.zeros((2, 0))  # nothing to normalise; kept for the common interface
        flags = (int(spec.bias), ACTIVATIONS[spec.activation], *spec.output_codes)
        self.layout = np.array(
            [*spec.obs_shape, len(spec.sizes), *spec.sizes, *flags], dtype=np.int64
        )
        maps = 0  # the convolutions' outputs and the first pooled map (the last is dense input)
        for layer, (out_channels, size, stride) in enumerate(CONV_LAYERS):
            height, width = (height - size) // stride + 1, (width - size) // stride + 1
            maps += height * width * out_channels
            height, width = height // POOL, width // POOL
            if layer < len(CONV_LAYERS) - 1:
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
        self.discrete_actions = discrete_actions(spec)

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Pixel inputs are scaled, not normalised: nothing to set."""

    def reset(self, seed: int) -> None:
        """Start an episode: the CNN has no memory."""

    def act(self, obs, theta: np.ndarray):
        """The action for observation `obs` (any of the shapes of _frames_shape)."""
        frames = np.asarray(obs).reshape(self.spec.obs_shape)
        if frames.dtype.kind == "f" and not np.isfinite(frames).all():  # uint8 frames cannot be
            raise NonFiniteObservation(not_finite(frames))
        try:
            index = cnn_step(frames, theta, self.layout, self.scratch)
        except TypeError:  # another dtype, or not contiguous: convert
            frames = np.ascontiguousarray(frames, dtype=np.float32)
            index = cnn_step(frames, theta, self.layout, self.scratch)
        if index >= 0:
            return self.discrete_actions[index]
        return self.action.copy()


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
