"""Every numba kernel of esmpi: the MLP policy step and the sums over noise-table slices.

Kernels are small, typed and compiled once per machine (`cache=True`; set NUMBA_CACHE_DIR to put
the cache on node-local storage). Each has a plain numpy twin in `tests/reference.py` that the
tests compare it with. No kernel uses fastmath: every rank must reach the same bits from the same
inputs, so floating-point sums keep their written order.

Parameter layout (shared with `policy.py`): layer by layer, the weight matrix W of shape
(n_in, n_out) row-major, then the bias (n_out,) when the policy has biases. A layer computes
y = x @ W + b, which the kernel evaluates as a sum of rows of W scaled by x[i], a loop the compiler
vectorises without reordering any sum.
"""

import numba
import numpy as np

# Hidden-layer activations and output mappings, as the integer codes the kernel switches on.
ACT_TANH, ACT_RELU = 0, 1
OUT_ARGMAX, OUT_CLIP, OUT_TANH = 0, 1, 2

# Coefficients of the rational tanh approximation used by Eigen for float32 (a [13/6] minimax fit
# on [-7.9, 7.9], where tanh rounds to +-1 in float32). Unlike a call to libm's tanh, it is plain
# multiply-add and one division, so numba vectorises it; it stays within 4e-7 of np.tanh.
_TANH_CLAMP = np.float32(7.90531110763549805)
_TANH_ALPHA = tuple(
    np.float32(c)
    for c in (
        -2.76076847742355e-16,
        2.00018790482477e-13,
        -8.60467152213735e-11,
        5.12229709037114e-08,
        1.48572235717979e-05,
        6.37261928875436e-04,
        4.89352455891786e-03,
    )
)
_TANH_BETA = tuple(
    np.float32(c)
    for c in (
        1.19825839466702e-06,
        1.18534705686654e-04,
        2.26843463243900e-03,
        4.89352518554385e-03,
    )
)


@numba.njit("float32(float32)", cache=True, inline="always")
def fast_tanh(x):
    """tanh(x) in float32 as a vectorisable rational function (see _TANH_ALPHA)."""
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = _TANH_ALPHA[0]
    p = p * x2 + _TANH_ALPHA[1]
    p = p * x2 + _TANH_ALPHA[2]
    p = p * x2 + _TANH_ALPHA[3]
    p = p * x2 + _TANH_ALPHA[4]
    p = p * x2 + _TANH_ALPHA[5]
    p = p * x2 + _TANH_ALPHA[6]
    q = _TANH_BETA[0]
    q = q * x2 + _TANH_BETA[1]
    q = q * x2 + _TANH_BETA[2]
    q = q * x2 + _TANH_BETA[3]
    return x * p / q


_POLICY_STEP_SIGNATURES = [
    f"int64({obs}[:], float64[:, ::1], float64, float64[:, ::1], float32[::1], int64[::1], "
    "boolean, int64, int64, float32[:, ::1], float32[:, ::1], float32[::1])"
    for obs in ("float32", "float64")
]


@numba.njit(_POLICY_STEP_SIGNATURES, cache=True)
def policy_step(
    obs, norm, obs_clip, obs_stats, theta, sizes, bias, act, out_map, bounds, work, action
):
    """One MLP policy step: normalise `obs`, run the layers, map the output to an action.

    obs        raw observation (n_in,)
    norm       (2, n_in): mean to subtract and 1/std to multiply by; the result is clipped to
               +-obs_clip
    obs_stats  (2, n_in) float64, accumulates sum(obs - mean) and sum((obs - mean)**2) so that the
               running normalisation can be updated after the generation
    theta      flat float32 parameters in the layout of the module docstring
    sizes      layer widths (n_in, hidden..., n_out)
    act        ACT_* code of the hidden activation
    out_map    OUT_* code; OUT_ARGMAX returns the index of the largest output, the others write
               `action` (clipped to, or tanh-rescaled into, bounds[0]..bounds[1]) and return -1
    work       (2, max width) float32 scratch
    """
    x = work[0]
    y = work[1]
    for i in range(sizes[0]):
        centred = obs[i] - norm[0, i]
        obs_stats[0, i] += centred
        obs_stats[1, i] += centred * centred
        x[i] = min(max(centred * norm[1, i], -obs_clip), obs_clip)

    position = 0
    n_layers = sizes.shape[0] - 1
    for layer in range(n_layers):
        n_in = sizes[layer]
        n_out = sizes[layer + 1]
        if bias:
            y[:n_out] = theta[position + n_in * n_out : position + n_in * n_out + n_out]
        else:
            y[:n_out] = 0.0
        for i in range(n_in):
            xi = x[i]
            # A slice, not theta[row + o]: indices from range() carry no negative-index wraparound
            # check, which would stop the loop from being vectorised.
            weights_row = theta[position + i * n_out : position + (i + 1) * n_out]
            for o in range(n_out):
                y[o] += xi * weights_row[o]
        position += n_in * n_out + (n_out if bias else 0)
        if layer < n_layers - 1:
            if act == ACT_TANH:
                for o in range(n_out):
                    y[o] = fast_tanh(y[o])
            else:
                for o in range(n_out):
                    y[o] = max(y[o], np.float32(0.0))
        x, y = y, x

    n_out = sizes[n_layers]
    if out_map == OUT_ARGMAX:
        return np.argmax(x[:n_out])
    for o in range(n_out):
        low = bounds[0, o]
        high = bounds[1, o]
        if out_map == OUT_TANH:
            action[o] = low + (fast_tanh(x[o]) + np.float32(1.0)) * np.float32(0.5) * (high - low)
        else:
            action[o] = min(max(x[o], low), high)
    return -1


@numba.njit("void(float32[::1], int64[::1], float64[::1], float64[::1])", cache=True)
def weighted_noise_sum(table, offsets, weights, out):
    """out = sum_k weights[k] * table[offsets[k] : offsets[k] + len(out)]; each slice read once."""
    dim = out.shape[0]
    out[:] = 0.0
    for k in range(offsets.shape[0]):
        weight = weights[k]
        noise = table[offsets[k] : offsets[k] + dim]
        for j in range(dim):
            out[j] += weight * noise[j]


@numba.njit("void(float32[::1], float32[::1], int64[::1], float64, float64[:, ::1])", cache=True)
def perturbed_mean_squares(theta, table, offsets, sigma, out):
    """out[k] = (mean((theta + sigma*eps_k)**2), mean((theta - sigma*eps_k)**2)) for each pair k."""
    dim = theta.shape[0]
    for k in range(offsets.shape[0]):
        noise = table[offsets[k] : offsets[k] + dim]
        plus = 0.0
        minus = 0.0
        for j in range(dim):
            t = np.float64(theta[j])
            e = sigma * noise[j]
            plus += (t + e) * (t + e)
            minus += (t - e) * (t - e)
        out[k, 0] = plus / dim
        out[k, 1] = minus / dim
