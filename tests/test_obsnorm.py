"""Running observation statistics merged from partial sums equal the statistics of all data."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from esmpi.obsnorm import ObsNorm


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 10_000))
def test_merging_batches_gives_the_mean_and_variance_of_everything(batch_sizes, seed):
    rng = np.random.default_rng(seed)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) for n in batch_sizes]
    norm = ObsNorm.initial(4)
    for batch in batches:
        centred = batch - norm.mean  # what the kernel accumulates: relative to the frozen mean
        norm = norm.merged(len(batch), centred.sum(axis=0), (centred**2).sum(axis=0))
    everything = np.concatenate(batches)
    assert norm.count == len(everything)
    assert np.allclose(norm.mean, everything.mean(axis=0))
    assert np.allclose(norm.var, everything.var(axis=0))


def test_std_has_a_floor_for_constant_features():
    norm = ObsNorm.initial(2).merged(3, np.zeros(2), np.zeros(2))
    assert np.all(norm.std == 1e-2)
