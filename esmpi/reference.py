"""Plain numpy twins of the numba kernels (kernels.py and each policy family's step in policies/):
what the tests compare the kernels with, and the numpy baseline `esmpi bench` times the policy
kernel against."""

import math

import numpy as np

from esmpi.kernels import NOT_FINITE


def policy_step(obs, mean, inv_std, obs_clip, layers, activation, output, low, high):
    """(action or argmax index, centred observation), computed the obvious way; NOT_FINITE
    instead of an action when the observation holds NaN or inf.

    layers: [(W (n_in, n_out), b or None)] as policy.layer_views gives them; pass float64 copies
    for an exact reference."""
    centred = np.asarray(obs, dtype=np.float64) - mean
    if not np.isfinite(centred).all():
        return NOT_FINITE, centred
    x = np.clip(centred * inv_std, -obs_clip, obs_clip)
    for layer, (weights, bias) in enumerate(layers):
        x = x @ weights
        if bias is not None:
            x = x + bias
        if layer < len(layers) - 1:
            x = np.tanh(x) if activation == "tanh" else np.maximum(x, 0.0)
    if output == "argmax":
        return int(np.argmax(x)), centred
    if output == "tanh":
        return low + (np.tanh(x) + 1.0) * 0.5 * (high - low), centred
    return np.clip(x, low, high), centred


def rnn_step(obs, state, mean, inv_std, obs_clip, layers, activation, output, low, high):
    """(action or argmax index, new state) of the Elman policy (policies/recurrent.py) the
    obvious way: h = act([x, state] @ W0 + b0), then the other layers from h as the MLP's.
    NOT_FINITE and the state unchanged when the observation holds NaN or inf."""
    centred = np.asarray(obs, dtype=np.float64) - mean
    if not np.isfinite(centred).all():
        return NOT_FINITE, state
    x = np.clip(centred * inv_std, -obs_clip, obs_clip)
    weights, bias = layers[0]
    h = np.concatenate([x, state]) @ weights + (0.0 if bias is None else bias)
    h = np.tanh(h) if activation == "tanh" else np.maximum(h, 0.0)
    out = h
    for layer, (weights, bias) in enumerate(layers[1:], start=1):
        out = out @ weights + (0.0 if bias is None else bias)
        if layer < len(layers) - 1:
            out = np.tanh(out) if activation == "tanh" else np.maximum(out, 0.0)
    return map_outputs(out, output, low, high), h


def hebbian_step(obs, weights, rules, mean, inv_std, obs_clip, activation, output, low, high, norm):
    """(action or argmax index, new weights) of the Hebbian policy (policies/hebbian.py) the
    obvious way: act with `weights` [(n_in, n_out) per layer], then W += eta * (A pre post + B pre
    + C post + D) per layer (`rules`: [(eta, A, B, C, D)] per layer), then with `norm` each layer
    divided by its largest magnitude. NOT_FINITE and the weights unchanged for NaN or inf."""
    centred = np.asarray(obs, dtype=np.float64) - mean
    if not np.isfinite(centred).all():
        return NOT_FINITE, weights
    outputs = [np.clip(centred * inv_std, -obs_clip, obs_clip)]
    for layer, w in enumerate(weights):
        x = outputs[-1] @ w
        if layer < len(weights) - 1:
            x = np.tanh(x) if activation == "tanh" else np.maximum(x, 0.0)
        outputs.append(x)
    action = map_outputs(outputs[-1], output, low, high)
    updated = []
    for layer, (w, (eta, a, b, c, d)) in enumerate(zip(weights, rules, strict=True)):
        pre, post = outputs[layer][:, None], outputs[layer + 1][None, :]
        w = w + eta * (a * pre * post + b * pre + c * post + d)
        updated.append(w / np.abs(w).max() if norm and np.abs(w).max() > 0 else w)
    return action, updated


def hebbian_rules(spec, theta):
    """[(eta, A, B, C, D)] per layer, float64 (n_in, n_out) each, from a Hebbian theta (after
    the convolutions on pixels)."""
    from esmpi.policies.spec import conv_views

    rules, position = [], sum(weights.size for weights, _ in conv_views(spec, theta))
    for n_in, n_out in spec.layer_shapes:
        terms = theta[position : position + 5 * n_in * n_out].astype(np.float64)
        rules.append(tuple(terms.reshape(5, n_in, n_out)))
        position += 5 * n_in * n_out
    return rules


def float64_layers(spec, theta):
    """policy.layer_views(spec, theta) in float64."""
    from esmpi.policies import layer_views

    return [
        (w.astype(np.float64), None if b is None else b.astype(np.float64))
        for w, b in layer_views(spec, theta)
    ]


def weighted_noise_sum(table, offsets, weights, dim):
    return sum(
        w * table[o : o + dim].astype(np.float64) for o, w in zip(offsets, weights, strict=True)
    )


def exp(values):
    return np.array([math.exp(value) for value in values])


def weighted_noise_moments(table, offsets, linear_weights, square_weights, dim):
    """(sum_k a_k eps_k, sum_k b_k eps_k**2) in float64."""
    noise = np.stack([table[o : o + dim].astype(np.float64) for o in offsets])
    return linear_weights @ noise, square_weights @ (noise * noise)


def perturbed_mean_squares(theta, table, offsets, sigma):
    theta = theta.astype(np.float64)
    rows = []
    for offset in offsets:
        eps = sigma * table[offset : offset + theta.size].astype(np.float64)
        rows.append([np.mean((theta + eps) ** 2), np.mean((theta - eps) ** 2)])
    return np.array(rows)


def map_outputs(x, output, low, high):
    """The action for outputs x under the mapping `output` ('argmax', or one or per-dimension
    'clip'/'tanh'/'sigmoid' names joined by commas), in float64."""
    if output == "argmax":
        return int(np.argmax(x))
    names = output.split(",")
    names = names * len(x) if len(names) == 1 else names
    action = np.empty(len(x))
    for o, name in enumerate(names):
        if name == "tanh":
            action[o] = low[o] + (np.tanh(x[o]) + 1.0) * 0.5 * (high[o] - low[o])
        elif name == "sigmoid":
            action[o] = low[o] + (high[o] - low[o]) / (1.0 + np.exp(-x[o]))
        else:
            action[o] = np.clip(x[o], low[o], high[o])
    return action


def conv_features(obs, spec, theta):
    """The CNN's convolutions on `obs` the obvious way (float64; see policies/cnn.py
    conv_features): the pooled conv2 map through the activation, flattened."""
    from esmpi.policies.spec import CONV_LAYERS, POOL, conv_views

    activation = np.tanh if spec.activation == "tanh" else (lambda v: np.maximum(v, 0.0))
    frames = np.asarray(obs, dtype=np.float64).reshape(spec.obs_shape) * spec.obs_scale
    x = np.concatenate(list(frames), axis=-1)  # (height, width, stack * colours)
    convs = conv_views(spec, theta.astype(np.float64))
    for (weights, bias), (_, size, stride) in zip(convs, CONV_LAYERS, strict=True):
        height = (x.shape[0] - size) // stride + 1
        width = (x.shape[1] - size) // stride + 1
        windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(0, 1))
        windows = windows[: (height - 1) * stride + 1 : stride, : (width - 1) * stride + 1 : stride]
        x = np.einsum("hwcyx,yxco->hwo", windows, weights)  # HWIO weights
        if bias is not None:
            x = x + bias
        pooled_h, pooled_w = height // POOL, width // POOL
        x = x[: pooled_h * POOL, : pooled_w * POOL]
        x = x.reshape(pooled_h, POOL, pooled_w, POOL, -1).max(axis=(1, 3))
        x = activation(x)
    return x.ravel()


def cnn_step(obs, spec, theta):
    """The CNN policy's action for `obs` the obvious way (float64; see policies/cnn.py cnn_step)."""
    activation = np.tanh if spec.activation == "tanh" else (lambda v: np.maximum(v, 0.0))
    x = conv_features(obs, spec, theta)
    layers = float64_layers(spec, theta)
    for layer, (weights, bias) in enumerate(layers):
        x = x @ weights + (0.0 if bias is None else bias)
        if layer < len(layers) - 1:
            x = activation(x)
    low, high = np.array(spec.action_low), np.array(spec.action_high)
    return map_outputs(x, spec.output, low, high)


def seed_sequence_words(seed):
    """The four words numpy's PCG64(seed) starts from, as numpy computes them."""
    return np.random.SeedSequence(seed).generate_state(4, np.uint64)
