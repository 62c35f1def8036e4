"""The shared Gaussian noise table and what a noise offset means (Salimans et al. 2017, sec. 2.1).

Every rank holds (or shares, per node) the same table of standard-normal float32 numbers, built
from the run seed. A population member is the slice table[offset : offset + n_params]; its offset
and its episode seed are functions of (seed, generation, pair) (and the round of a
growing population), so every rank knows them without
being told, and results do not depend on which rank ran which member.
"""

import numpy as np

BLOCK = 1 << 20  # entries filled from one seed; blocks are what the ranks of a node share out
_TABLE_TAG, _OFFSET_TAG, _EPISODE_TAG, _FINAL_TAG = 0x7AB1E, 0x0FF5E7, 0xE950DE, 0xF1A1
_PARENT_TAG, _RECHECK_TAG, _MEMBER_TAG = 0x4E53, 0x2EC4EC, 0x3E3B


def block_count(table_size: int) -> int:
    return -(-table_size // BLOCK)


def fill_blocks(table: np.ndarray, seed: int, blocks) -> None:
    """Fill the given blocks of `table`; block b depends only on (seed, b), not on who fills it."""
    for block in blocks:
        _fill_block(table[block * BLOCK : (block + 1) * BLOCK], seed, block)


def _fill_block(part: np.ndarray, seed: int, block: int) -> None:
    """Block `block` of the table, or its first part.size numbers (the table's last block)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TABLE_TAG, block]))
    rng.standard_normal(part.size, dtype=np.float32, out=part)


def build_table(table_size: int, seed: int) -> np.ndarray:
    """A private table, the same as the node-shared one `parallel.shared_noise_table` makes."""
    table = np.empty(table_size, dtype=np.float32)
    fill_blocks(table, seed, range(block_count(table_size)))
    return table


def table_slice(table_size: int, seed: int, offset: int, length: int) -> np.ndarray:
    """table[offset : offset + length] of build_table(table_size, seed), filling only the blocks
    it spans (to replay one member without building the whole table)."""
    first, last = offset // BLOCK, (offset + length - 1) // BLOCK
    blocks = np.empty((last - first + 1) * BLOCK, dtype=np.float32)
    for block in range(first, last + 1):
        _fill_block(blocks[(block - first) * BLOCK : (block - first + 1) * BLOCK], seed, block)
    start = offset - first * BLOCK
    return blocks[start : start + length]


def noise_offsets(
    seed: int, generation: int, pairs: int, n_params: int, table_size: int, round_: int = 0
):
    """Start of each pair's noise slice in generation `generation` (int64, one per pair); round
    r > 0 holds the members a growing population adds (--population-steps)."""
    if n_params > table_size:
        raise ValueError(f"the policy has {n_params} parameters, more than the noise table holds")
    rng = np.random.default_rng(np.random.SeedSequence(_key(seed, _OFFSET_TAG, generation, round_)))
    return rng.integers(0, table_size - n_params + 1, size=pairs, dtype=np.int64)


def episode_seeds(seed: int, generation: int, count: int, round_: int = 0) -> np.ndarray:
    """Environment reset seeds for generation `generation`: one per pair (both members of a pair
    see the same episode: common random numbers), then those of the evaluation episodes; round
    r > 0 holds those of the pairs a growing population adds."""
    key = _key(seed, _EPISODE_TAG, generation, round_)
    state = np.random.SeedSequence(key).generate_state(count)
    return state.astype(np.int64) & 0x7FFFFFFF


def member_episode_seeds(seed: int, count: int) -> np.ndarray:
    """Reset seeds of the `count` episodes a member plays (--member-episodes): its task's episode
    seed `seed` first, so that a member playing one episode plays what it always did, then
    `count - 1` drawn from it (below 2**31, like every training seed)."""
    if count == 1:  # no draw: it would cost a tenth of a short CartPole episode, every task
        return np.array([seed], dtype=np.int64)
    more = np.random.SeedSequence([seed, _MEMBER_TAG]).generate_state(count - 1)
    return np.concatenate([[seed], more.astype(np.int64) & 0x7FFFFFFF])


def _key(seed: int, tag: int, generation: int, round_: int) -> list[int]:
    """The entropy of a generation's draws; round 0 keeps the key of a population that never
    grows, so that --population-steps leaves the first round's members as they were."""
    return [seed, tag, generation] + ([round_] if round_ else [])


def recheck_seeds(seed: int, generation: int, count: int) -> np.ndarray:
    """Reset seeds of generation `generation`'s second round, in which a strategy evaluates
    chosen parameters again (the GA's elite candidates)."""
    state = np.random.SeedSequence([seed, _RECHECK_TAG, generation]).generate_state(count)
    return state.astype(np.int64) & 0x7FFFFFFF


def parent_generator(seed: int, generation: int) -> np.random.Generator:
    """The generator of generation `generation`'s parent draw (novelty search's meta-population,
    the GA's children's parents);
    its entropy puts the tag last, unlike `_key`'s, as the first runs drew with it."""
    return np.random.default_rng(np.random.SeedSequence([seed, generation, _PARENT_TAG]))


def final_seeds(seed: int, count: int) -> np.ndarray:
    """Reset seeds of the final evaluation: in [2**31, 2**32), so no training episode (whose
    seeds are below 2**31) ever used one."""
    state = np.random.SeedSequence([seed, _FINAL_TAG]).generate_state(count)
    return (state.astype(np.int64) & 0x7FFFFFFF) | (1 << 31)
