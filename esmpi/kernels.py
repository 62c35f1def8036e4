"""The numba kernels that several parts of esmpi share: the dense layers, activations, output
maps and observation normalisation of the policy families (each family's own step kernel lives in
its module under `policies/`), the sums over noise-table slices and the node-shared counter.

Kernels are small, typed and compiled once per machine (`cache=True`; set NUMBA_CACHE_DIR to put
the cache on node-local storage). Each has a plain numpy twin in `esmpi/reference.py` that the
tests compare it with. No kernel uses fastmath: every rank must reach the same bits from the same
inputs, so floating-point sums keep their written order. The policy kernels use numpy's error
model: with Python's, every division checks for zero to raise ZeroDivisionError, and that branch
stops the loop around it from being vectorised (the rational tanh's division measured 4x slower);
their divisors are never zero.

Parameter layout of the dense layers (policies/spec.py reads it): layer by layer, the weight
matrix W of shape (n_in, n_out) row-major, then the bias (n_out,) when the policy has biases. A
layer computes y = x @ W + b, which the kernel evaluates as a sum of rows of W scaled by x[i], a
loop the compiler vectorises without reordering any sum.
"""

import math

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
def dense_layers(x, y, theta, position, sizes, bias, act):
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
            activate(y[:n_next], act)
        x, y = y, x
    return x


@numba.njit(inline="always", error_model="numpy")
def activate(values, act):
    if act == ACT_TANH:
        for o in range(values.shape[0]):
            values[o] = fast_tanh(values[o])
    else:
        for o in range(values.shape[0]):
            values[o] = max(values[o], np.float32(0.0))


@numba.njit(inline="always", error_model="numpy")
def map_outputs(out, codes, tail, n_out):
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


# The vector policies' kernels (policies/mlp.py, recurrent.py, hebbian.py) take their arguments
# packed into five arrays: numba's dispatcher spends ~80 ns per argument on every call, which at
# one call per environment step is worth saving. Rows of `obs_state` and the `layout` fields are
# named here; each family's actor builds them.
OBS_MEAN, OBS_INV_STD, OBS_SUM, OBS_SUMSQ, OBS_CLIP = range(5)  # rows of obs_state
# What a policy kernel returns, instead of an action, for an observation holding NaN or inf: the
# episode has failed (rollout.py), and no action is computed from that observation.
NOT_FINITE = -2
# layout = (n_sizes, n_in, hidden..., n_out, bias, activation, output codes...): one OUT_ARGMAX
# code, or one OUT_CLIP/OUT_TANH/OUT_SIGMOID code per action dimension.
LAYOUT_HEADER, LAYOUT_FLAGS = 1, 2

# Observations of either float type, contiguous (as environments return them: the dispatcher
# matches these exactly, ~0.2 us a call faster than converting to the strided type) or strided.
VECTOR_OBS_TYPES = ("float32[::1]", "float64[::1]", "float32[:]", "float64[:]")


@numba.njit(inline="always", error_model="numpy")
def normalise_into(obs, obs_state, x, n_in):
    """x[:n_in] = clip((obs - mean) * inv_std, -clip, clip), adding (obs - mean) and its square
    to the running sums of obs_state; False when obs holds NaN or inf (the sums are added all the
    same; the caller drops the episode's)."""
    obs_clip = obs_state[OBS_CLIP, 0]
    checksum = 0.0  # NaN or inf if any element is: one add per input instead of a test
    for i in range(n_in):
        centred = obs[i] - obs_state[OBS_MEAN, i]
        checksum += centred
        obs_state[OBS_SUM, i] += centred
        obs_state[OBS_SUMSQ, i] += centred * centred
        x[i] = min(max(centred * obs_state[OBS_INV_STD, i], -obs_clip), obs_clip)
    return np.isfinite(checksum)


@numba.njit(inline="always", error_model="numpy")
def unpack_layout(layout, header):
    """(sizes, bias, activation code, output codes) of a layout from position `header` on."""
    n_sizes = layout[header - 1]
    sizes = layout[header : header + n_sizes]
    bias = layout[header + n_sizes] != 0
    act = layout[header + n_sizes + 1]
    codes = layout[header + n_sizes + LAYOUT_FLAGS :]
    return sizes, bias, act, codes


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


@numba.njit("void(float64[::1], float64[::1])", cache=True)
def exp_into(values, out):
    """out[i] = exp(values[i]) by the C library's exp, the function Python's math.exp calls
    (numpy's own float64 exp differs by CPU: strategies/portable.py)."""
    for i in range(values.shape[0]):
        out[i] = math.exp(values[i])


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
