"""Plain numpy twins of the numba kernels in esmpi/kernels.py, for the tests to compare against."""

import numpy as np


def policy_step(obs, mean, inv_std, obs_clip, theta, sizes, bias, activation, output, low, high):
    """(action or argmax index, centred observation) computed the obvious way in float64."""
    centred = np.asarray(obs, dtype=np.float64) - mean
    x = np.clip(centred * inv_std, -obs_clip, obs_clip)
    position = 0
    n_layers = len(sizes) - 1
    for layer in range(n_layers):
        n_in, n_out = sizes[layer], sizes[layer + 1]
        weights = theta[position : position + n_in * n_out].astype(np.float64).reshape(n_in, n_out)
        position += n_in * n_out
        x = x @ weights
        if bias:
            x = x + theta[position : position + n_out]
            position += n_out
        if layer < n_layers - 1:
            x = np.tanh(x) if activation == "tanh" else np.maximum(x, 0.0)
    if output == "argmax":
        return int(np.argmax(x)), centred
    if output == "tanh":
        return low + (np.tanh(x) + 1.0) * 0.5 * (high - low), centred
    return np.clip(x, low, high), centred


def weighted_noise_sum(table, offsets, weights, dim):
    return sum(
        w * table[o : o + dim].astype(np.float64) for o, w in zip(offsets, weights, strict=True)
    )


def perturbed_mean_squares(theta, table, offsets, sigma):
    theta = theta.astype(np.float64)
    rows = []
    for offset in offsets:
        eps = sigma * table[offset : offset + theta.size].astype(np.float64)
        rows.append([np.mean((theta + eps) ** 2), np.mean((theta - eps) ** 2)])
    return np.array(rows)
