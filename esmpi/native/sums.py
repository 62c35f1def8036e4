"""NumPy's sums, in numba: the same additions in the same order, so the same bits.

Gymnasium's rewards sum squared actions and contact forces with `np.sum`, which adds by NumPy's
pairwise summation (numpy/_core/src/umath/loops_utils.h.src, `pairwise_sum`): fewer than 8
numbers one after another from zero; up to 128 in 8 interleaved running sums combined as
((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the remainder; more, split in two
halves (the first a multiple of 8 long) summed the same way. A plain loop rounds differently
from the second element on, and one bit of a reward is enough to change a run. The accumulators
keep the values' type: float32 actions sum in float32, as NumPy does. The numpy twin of each
kernel is `np.sum` itself; tests/test_native.py compares them on many lengths and both types.
"""

import numba
import numpy as np

_BLOCK = 128  # NumPy's PW_BLOCKSIZE
_DEPTH = 128  # segments on the stack: two per halving, enough for any array in memory


@numba.njit(cache=True, error_model="numpy")
def pairwise_sum(values, start, count):
    """np.sum(values[start:start + count]) for a 1-d float array, in NumPy's order.

    NumPy recurses into halves; numba's on-disk cache of a recursive function crashes the
    process that loads it, so the recursion is walked with an explicit stack: segments still to
    sum (left half on top) and the finished sums, each parent adding its two halves' sums when
    both are done."""
    if count <= _BLOCK:
        return _block_sum(values, start, count)
    starts = np.empty(_DEPTH, np.int64)
    counts = np.empty(_DEPTH, np.int64)
    halved = np.zeros(_DEPTH, np.bool_)
    sums = np.empty(_DEPTH, values.dtype)
    top, n_sums = 0, 0
    starts[0], counts[0] = start, count
    while top >= 0:
        segment_start, segment_count = starts[top], counts[top]
        if segment_count <= _BLOCK:
            sums[n_sums] = _block_sum(values, segment_start, segment_count)
            n_sums += 1
            top -= 1
        elif halved[top]:  # both halves summed: left + right, as NumPy's recursion returns
            sums[n_sums - 2] = sums[n_sums - 2] + sums[n_sums - 1]
            n_sums -= 1
            top -= 1
        else:
            halved[top] = True
            half = segment_count // 2
            half -= half % 8
            starts[top + 1], counts[top + 1], halved[top + 1] = (
                segment_start + half,
                segment_count - half,
                False,
            )
            starts[top + 2], counts[top + 2], halved[top + 2] = segment_start, half, False
            top += 2
    return sums[0]


@numba.njit(cache=True, error_model="numpy")
def _block_sum(values, start, count):
    """NumPy's pairwise_sum for count <= 128: no further halving."""
    if count < 8:
        total = values[start] - values[start]  # zero of the values' type
        for i in range(start, start + count):
            total += values[i]
        return total
    r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
    r4, r5, r6, r7 = values[start + 4], values[start + 5], values[start + 6], values[start + 7]
    whole = start + count - count % 8
    for i in range(start + 8, whole, 8):
        r0 += values[i]
        r1 += values[i + 1]
        r2 += values[i + 2]
        r3 += values[i + 3]
        r4 += values[i + 4]
        r5 += values[i + 5]
        r6 += values[i + 6]
        r7 += values[i + 7]
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(whole, start + count):
        total += values[i]
    return total


@numba.njit(cache=True, error_model="numpy")
def sum_of_squares(values):
    """np.sum(np.square(values)) for a 1-d float array (each square rounded to its type first)."""
    squares = values * values
    return pairwise_sum(squares, 0, squares.size)


@numba.njit(cache=True, error_model="numpy")
def clip(value, low, high):
    """np.clip(value, low, high) for one number, NumPy's way: a NaN stays NaN, a value equal to
    a bound stays itself (clip(-0.0, 0.0, 1.0) is -0.0), and low > high gives high."""
    if value < low:
        value = low
    if value > high:
        value = high
    return value
