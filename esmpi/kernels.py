"""Every numba kernel of esmpi: the MLP and CNN policy steps and the sums over noise-table slices.

Kernels are small, typed and compiled once per machine (`cache=True`; set NUMBA_CACHE_DIR to put
the cache on node-local storage). Each has a plain numpy twin in `esmpi/reference.py` that the
tests compare it with. No kernel uses fastmath: every rank must reach the same bits from the same
inputs, so floating-point sums keep their written order. The policy kernels use numpy's error
model: with Python's, every division checks for zero to raise ZeroDivisionError, and that branch
stops the loop around it from being vectorised (the rational tanh's division measured 4x slower);
their divisors are never zero.

Parameter layout (shared with `policy.py`): layer by layer, the weight matrix W of shape
(n_in, n_out) row-major, then the bias (n_out,) when the policy has biases. A layer computes
y = x @ W + b, which the kernel evaluates as a sum of rows of W scaled by x[i], a loop the compiler
vectorises without reordering any sum. The CNN's layout (convolutions first) is at cnn_step.
"""

import numba
import numba.core.cgutils
import numba.extending
import numpy as np

# Hidden-layer activations and output mappings, as the integer codes the kernel switches on.
ACT_TANH, ACT_RELU = 0, 1
OUT_ARGMAX, OUT_CLIP, OUT_TANH, OUT_SIGMOID = 0, 1, 2, 3

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


@numba.njit("float32(float32)", cache=True, inline="always", error_model="numpy")
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


@numba.njit(inline="always", error_model="numpy")
def _dense_layers(x, y, theta, position, sizes, bias, act):
    """Run the dense layers `sizes` on x (theta read from `position`); return the buffer (x or y)
    that holds the outputs. Hidden layers apply the ACT_* activation `act`, the last none."""
    n_sizes = sizes.shape[0]
    for layer in range(n_sizes - 1):
        n_in = sizes[layer]
        n_next = sizes[layer + 1]
        if bias:
            y[:n_next] = theta[position + n_in * n_next : position + n_in * n_next + n_next]
        else:
            y[:n_next] = 0.0
        # Rows of W four at a time: y[o] is loaded and stored once per four rows instead of once
        # per row, and still gets the rows' products added one by one in order (the same bits).
        # Slices, not theta[row + o]: indices from range() carry no negative-index wraparound
        # check, which would stop the loops from being vectorised.
        blocked = n_in - n_in % 4
        for i in range(0, blocked, 4):
            x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
            row = position + i * n_next
            w0 = theta[row : row + n_next]
            w1 = theta[row + n_next : row + 2 * n_next]
            w2 = theta[row + 2 * n_next : row + 3 * n_next]
            w3 = theta[row + 3 * n_next : row + 4 * n_next]
            for o in range(n_next):
                y[o] = (((y[o] + x0 * w0[o]) + x1 * w1[o]) + x2 * w2[o]) + x3 * w3[o]
        for i in range(blocked, n_in):
            xi = x[i]
            weights_row = theta[position + i * n_next : position + (i + 1) * n_next]
            for o in range(n_next):
                y[o] += xi * weights_row[o]
        position += n_in * n_next + (n_next if bias else 0)
        if layer < n_sizes - 2:
            _activate(y[:n_next], act)
        x, y = y, x
    return x


@numba.njit(inline="always", error_model="numpy")
def _activate(values, act):
    if act == ACT_TANH:
        for o in range(values.shape[0]):
            values[o] = fast_tanh(values[o])
    else:
        for o in range(values.shape[0]):
            values[o] = max(values[o], np.float32(0.0))


@numba.njit(inline="always", error_model="numpy")
def _map_outputs(out, codes, tail, n_out):
    """The argmax index of `out`, or -1 after writing the action into `tail` = (low, high,
    action), n_out each, one mapping code per dimension (see policy_step)."""
    if codes[0] == OUT_ARGMAX:
        return np.argmax(out[:n_out])
    low = tail[:n_out]
    high = tail[n_out : 2 * n_out]
    action = tail[2 * n_out : 3 * n_out]
    half, one = np.float32(0.5), np.float32(1.0)
    for o in range(n_out):
        code = codes[o]
        if code == OUT_TANH:
            action[o] = low[o] + (fast_tanh(out[o]) + one) * half * (high[o] - low[o])
        elif code == OUT_SIGMOID:  # sigmoid(x) = (tanh(x / 2) + 1) / 2, vectorisable like tanh
            action[o] = low[o] + (fast_tanh(out[o] * half) + one) * half * (high[o] - low[o])
        else:
            action[o] = min(max(out[o], low[o]), high[o])
    return -1


# Arguments are packed into five arrays: numba's dispatcher spends ~80 ns per argument on every
# call, which at one call per environment step is worth saving. Rows of `obs_state` and the
# `layout` and `scratch` fields are named below; policy.Actor builds them.
OBS_MEAN, OBS_INV_STD, OBS_SUM, OBS_SUMSQ, OBS_CLIP = range(5)  # rows of obs_state
# What policy_step returns, instead of an action, for an observation holding NaN or inf: the
# episode has failed (rollout.py), and no action is computed from that observation.
NOT_FINITE = -2
# layout = (n_sizes, n_in, hidden..., n_out, bias, activation, output codes...): one OUT_ARGMAX
# code, or one OUT_CLIP/OUT_TANH/OUT_SIGMOID code per action dimension.
LAYOUT_HEADER, LAYOUT_FLAGS = 1, 2

# Observations of either float type, contiguous (as environments return them: the dispatcher
# matches these exactly, ~0.2 us a call faster than converting to the strided type) or strided.
_POLICY_STEP_SIGNATURES = [
    f"int64({obs}, float64[:, ::1], float32[::1], int64[::1], float32[::1])"
    for obs in ("float32[::1]", "float64[::1]", "float32[:]", "float64[:]")
]


@numba.njit(_POLICY_STEP_SIGNATURES, cache=True, error_model="numpy")
def policy_step(obs, obs_state, theta, layout, scratch):
    """One MLP policy step: normalise `obs`, run the layers, map the output to an action.

    obs        raw observation (n_in,)
    obs_state  (5, n_in) float64: the mean to subtract and 1/std to multiply by (frozen during a
               generation); running sums of (obs - mean) and (obs - mean)**2 that the next
               normalisation update needs (this call adds to them); the clip bound in [4, 0]
    theta      flat float32 parameters in the layout of the module docstring
    layout     the number of layer widths, the widths (n_in, hidden..., n_out), then bias (0/1),
               the ACT_* code of the hidden activation and the output codes (see LAYOUT_HEADER)
    scratch    float32: two work rows of the widest layer's width, then the action bounds low
               and high, then the action (n_out each)

    OUT_ARGMAX returns the index of the largest output; otherwise each action dimension is
    clipped to, tanh-rescaled into or sigmoid-rescaled into [low, high] by its own code, the
    action is written at the end of scratch and -1 returned. An observation holding NaN or inf
    returns NOT_FINITE (its sums are added all the same; the caller drops the episode's).
    """
    n_sizes = layout[0]
    sizes = layout[LAYOUT_HEADER : LAYOUT_HEADER + n_sizes]
    bias = layout[LAYOUT_HEADER + n_sizes] != 0
    act = layout[LAYOUT_HEADER + n_sizes + 1]
    codes = layout[LAYOUT_HEADER + n_sizes + LAYOUT_FLAGS :]
    n_out = sizes[n_sizes - 1]
    width = (scratch.shape[0] - 3 * n_out) // 2
    x = scratch[:width]
    y = scratch[width : 2 * width]
    obs_clip = obs_state[OBS_CLIP, 0]
    checksum = 0.0  # NaN or inf if any element is: one add per input instead of a test
    for i in range(sizes[0]):
        centred = obs[i] - obs_state[OBS_MEAN, i]
        checksum += centred
        obs_state[OBS_SUM, i] += centred
        obs_state[OBS_SUMSQ, i] += centred * centred
        x[i] = min(max(centred * obs_state[OBS_INV_STD, i], -obs_clip), obs_clip)
    if not np.isfinite(checksum):
        return NOT_FINITE
    out = _dense_layers(x, y, theta, 0, sizes, bias, act)
    return _map_outputs(out, codes, scratch[2 * width :], n_out)


# The CNN policy for pixel observations (the published CarRacing baseline's network): conv 6@3x3
# stride 1, max-pool 2, conv 8@5x5 stride 2, max-pool 2 (each pooled map through the hidden
# activation), then dense layers to the actions. Pools drop an odd last row or column.
CONV_LAYERS = ((6, 3, 1), (8, 5, 2))  # (output channels, kernel size, stride)
POOL = 2
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
    _activate(pooled[: p_height * p_width * out_channels], act)
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
    codes = layout[CNN_HEADER + n_sizes + LAYOUT_FLAGS :]
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
    out = _dense_layers(x, y, theta, at, sizes, bias, act)
    return _map_outputs(out, codes, tail, n_out)


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


@numba.njit(
    "void(float32[::1], int64[::1], float64[::1], float64[::1], float64[::1], float64[::1])",
    cache=True,
)
def weighted_noise_moments(table, offsets, linear_weights, square_weights, linear, square):
    """linear = sum_k linear_weights[k] * eps_k and square = sum_k square_weights[k] * eps_k**2,
    eps_k = table[offsets[k] : offsets[k] + len(linear)], in one pass over each slice (slices with
    both weights zero are not read): what PGPE, SNES and sep-CMA-ES need for the centre and the
    per-parameter sigmas."""
    dim = linear.shape[0]
    linear[:] = 0.0
    square[:] = 0.0
    for k in range(offsets.shape[0]):
        a = linear_weights[k]
        b = square_weights[k]
        if a == 0.0 and b == 0.0:
            continue
        noise = table[offsets[k] : offsets[k] + dim]
        for j in range(dim):
            e = np.float64(noise[j])
            linear[j] += a * e
            square[j] += b * (e * e)


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


@numba.extending.intrinsic
def _atomic_add(typing_context, array, value):
    """array[0] += value as one atomic instruction (lock xadd); returns the value before."""
    signature = numba.types.int64(array, numba.types.int64)

    def codegen(context, builder, sig, args):
        array_value, increment = args
        array_struct = context.make_array(sig.args[0])(context, builder, array_value)
        zero = context.get_constant(numba.types.intp, 0)
        pointer = numba.core.cgutils.get_item_pointer(
            context, builder, sig.args[0], array_struct, [zero]
        )
        return builder.atomic_rmw("add", pointer, increment, "seq_cst")

    return signature, codegen


@numba.njit("int64(int64[::1])", cache=True)
def fetch_and_increment(counter):
    """Atomically add 1 to counter[0] and return its old value: safe between processes that share
    the memory (the node-shared task counter), with no MPI call and no waiting on another rank."""
    return _atomic_add(counter, 1)


# numpy's SeedSequence constants (numpy/random/bit_generator.pyx), stable across numpy releases.
_SS_INIT_A, _SS_MULT_A = np.uint64(0x43B0D7E5), np.uint64(0x931E8875)
_SS_INIT_B, _SS_MULT_B = np.uint64(0x8B51F9DD), np.uint64(0x58F38DED)
_SS_MIX_LEFT, _SS_MIX_RIGHT = np.uint64(0xCA01F9DD), np.uint64(0x4973F715)
_SS_POOL = 4
_LOW32, _SHIFT16 = np.uint64(0xFFFFFFFF), np.uint64(16)


@numba.njit(inline="always")
def _hash_mix(value, hash_const, multiplier):
    """numpy's hashmix (and generate_state's step, with its own multiplier) on 32-bit words held
    in uint64: (mixed value, next hash constant)."""
    value ^= hash_const
    hash_const = (hash_const * multiplier) & _LOW32
    value = (value * hash_const) & _LOW32
    return value ^ (value >> _SHIFT16), hash_const


@numba.njit("uint64[::1](uint32)", cache=True)
def seed_sequence_words(seed):
    """np.random.SeedSequence(seed).generate_state(4, np.uint64) for a seed below 2**32, without
    numpy's Python-level object: the four words PCG64(seed) is initialised from."""
    pool = np.zeros(_SS_POOL, np.uint64)
    hash_const = _SS_INIT_A
    for i in range(_SS_POOL):  # the seed is one 32-bit word; the rest of the pool hashes zeros
        entropy = np.uint64(seed) if i == 0 else np.uint64(0)
        pool[i], hash_const = _hash_mix(entropy, hash_const, _SS_MULT_A)
    for source in range(_SS_POOL):
        for target in range(_SS_POOL):
            if source != target:
                hashed, hash_const = _hash_mix(pool[source], hash_const, _SS_MULT_A)
                mixed = (_SS_MIX_LEFT * pool[target] - _SS_MIX_RIGHT * hashed) & _LOW32
                pool[target] = mixed ^ (mixed >> _SHIFT16)
    words = np.zeros(_SS_POOL, np.uint64)
    hash_const = _SS_INIT_B
    for i in range(2 * _SS_POOL):  # eight 32-bit words, little-endian pairs of each uint64
        value, hash_const = _hash_mix(pool[i % _SS_POOL], hash_const, _SS_MULT_B)
        words[i // 2] |= value << np.uint64(32 * (i % 2))
    return words
