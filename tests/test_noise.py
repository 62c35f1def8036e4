"""The noise table and the meaning of offsets and episode seeds."""

import numpy as np

from esmpi import noise


def test_table_is_standard_normal_and_reproducible():
    table = noise.build_table(3 * noise.BLOCK + 1000, seed=5)
    assert table.dtype == np.float32
    assert abs(table.mean()) < 0.01 and abs(table.std() - 1) < 0.01
    assert np.array_equal(table, noise.build_table(table.size, seed=5))
    assert not np.array_equal(table[:100], noise.build_table(table.size, seed=6)[:100])


def test_blocks_do_not_depend_on_who_fills_them():
    whole = noise.build_table(3 * noise.BLOCK, seed=1)
    shared = np.empty_like(whole)
    noise.fill_blocks(shared, 1, [2, 0])
    noise.fill_blocks(shared, 1, [1])
    assert np.array_equal(whole, shared)


def test_offsets_fit_in_the_table_and_depend_on_generation():
    a = noise.noise_offsets(0, 0, 1000, 500, 10_000)
    assert a.min() >= 0 and a.max() <= 10_000 - 500
    assert np.array_equal(a, noise.noise_offsets(0, 0, 1000, 500, 10_000))
    assert not np.array_equal(a, noise.noise_offsets(0, 1, 1000, 500, 10_000))


def test_a_growing_populations_rounds_draw_new_offsets_and_seeds_and_round_0_is_unchanged():
    """Round 0 keeps the key of a population that never grows, so --population-steps leaves the
    first round (and every run made before it existed) as it was."""
    key = np.random.SeedSequence([0, noise._OFFSET_TAG, 2])
    before = np.random.default_rng(key).integers(0, 10_000 - 500 + 1, size=50, dtype=np.int64)
    assert np.array_equal(noise.noise_offsets(0, 2, 50, 500, 10_000, 0), before)
    rounds = [noise.noise_offsets(0, 2, 50, 500, 10_000, r) for r in range(3)]
    seeds = [noise.episode_seeds(0, 2, 50, r) for r in range(3)]
    for drawn in (rounds, seeds):
        assert len({tuple(values.tolist()) for values in drawn}) == 3


def test_episode_seeds_are_deterministic_and_distinct():
    seeds = noise.episode_seeds(3, 4, 65)
    assert np.array_equal(seeds, noise.episode_seeds(3, 4, 65))
    assert len(set(seeds.tolist())) == 65 and seeds.min() >= 0
    rechecks = noise.recheck_seeds(3, 4, 65)  # the GA's second round: seeds of its own
    assert np.array_equal(rechecks, noise.recheck_seeds(3, 4, 65)) and rechecks.max() < 2**31
    assert not set(rechecks.tolist()) & set(seeds.tolist())


def test_a_slice_of_the_table_is_built_from_its_blocks_alone():
    table = noise.build_table(3 * noise.BLOCK + 1000, seed=7)
    for offset, length in ((0, 10), (noise.BLOCK - 5, 20), (2 * noise.BLOCK + 3, noise.BLOCK)):
        got = noise.table_slice(table.size, 7, offset, length)
        assert np.array_equal(got, table[offset : offset + length])
