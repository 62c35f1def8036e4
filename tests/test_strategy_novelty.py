"""The novelty-seeking family (NS-ES, NSR-ES, NSRA-ES; Conti et al. 2018): the archive's
k-nearest novelty and the parent draw against plain numpy, and the meta-population's bookkeeping
(`select`: the archive, the parents' BCs and normalisations, the adaptive weight; `tell`: one
parent moves). Rank invariance and exact resume are in test_strategies.py, with every strategy."""

import dataclasses

import numpy as np
import pytest

from esmpi import noise, presets
from esmpi.config import UsageError
from esmpi.obsnorm import ObsNorm
from esmpi.strategies import novelty, novelty_es, ns_es, nsr_es, nsra_es

TABLE = noise.build_table(1 << 16, seed=3)
N_PARAMS = 12


def _config(name: str, **values):
    config, _ = presets.resolve(
        {"strategy": name, "env": "Pendulum-v1", "behaviour": "position", "popsize": 8, **values}
    )
    return config


def _naive_novelty(point, archive, k):
    distances = sorted(
        float(np.sqrt(sum((p - a) ** 2 for p, a in zip(point, row, strict=True))))
        for row in archive
    )
    nearest = distances[: min(k, len(distances))]
    return sum(nearest) / len(nearest)


def test_novelty_is_the_mean_distance_to_the_k_nearest_archive_entries():
    rng = np.random.default_rng(0)
    archive, points = rng.normal(size=(40, 3)), rng.normal(size=(9, 3))
    for k in (1, 10, 40, 100):
        expected = [_naive_novelty(point, archive, k) for point in points]
        assert novelty.novelty(points, archive, k) == pytest.approx(expected, rel=1e-12)
    # a point in the archive is at distance 0 from itself: with k = 1 its novelty is 0
    assert novelty.novelty(archive[:2], archive, 1).tolist() == [0.0, 0.0]


def test_a_behaviour_that_is_not_finite_has_no_novelty_and_an_empty_archive_gives_none():
    archive = np.array([[0.0, 0.0], [1.0, 0.0]])
    values = novelty.novelty(np.array([[np.nan, 0.0], [0.0, 2.0]]), archive, 1)
    assert np.isnan(values[0]) and values[1] == 2.0
    assert np.isnan(novelty.novelty(np.zeros((2, 2)), np.zeros((0, 2)), 5)).all()


def test_selection_probabilities_are_proportional_to_novelty_and_uniform_when_all_are_zero():
    assert novelty.selection_probabilities(np.array([1.0, 3.0, 0.0])).tolist() == [
        0.25,
        0.75,
        0.0,
    ]
    assert novelty.selection_probabilities(np.zeros(4)).tolist() == [0.25] * 4
    assert novelty.selection_probabilities(np.array([np.nan, 2.0])).tolist() == [0.0, 1.0]


def test_the_parent_draw_depends_on_seed_and_generation_alone_and_follows_the_probabilities():
    probabilities = np.array([0.1, 0.6, 0.3])
    draws = [novelty.drawn_parent(probabilities, 7, generation) for generation in range(6000)]
    assert draws == [novelty.drawn_parent(probabilities, 7, g) for g in range(6000)]
    assert draws != [novelty.drawn_parent(probabilities, 8, g) for g in range(6000)]
    shares = np.bincount(draws, minlength=3) / len(draws)
    assert shares == pytest.approx(probabilities, abs=0.02)  # 5 sigma of a binomial at 6000


def _starts(parents: int) -> np.ndarray:
    return np.stack([np.full(N_PARAMS, 0.1 * (i + 1), dtype=np.float32) for i in range(parents)])


def _measured(state, config, generation, behaviour, eval_return=0.0, norm=None):
    behaviours = np.array([behaviour, behaviour], dtype=np.float64)
    norm = norm or ObsNorm.initial(2)
    return ns_es.select(state, config, generation, np.full(2, eval_return), behaviours, norm)


def test_select_takes_each_parent_once_then_draws_by_novelty_and_grows_the_archive():
    config = _config("ns-es", parents=3, neighbours=2)
    state = ns_es.initial(config, _starts(3))
    assert state.parent == 0 and state.archive.shape == (0, 0)
    chosen = []
    for generation, position in enumerate([(0.0, 0.0), (1.0, 0.0), (5.0, 5.0)]):
        state, _ = _measured(state, config, generation, position)
        chosen.append(state.parent)
        assert np.array_equal(state.theta, state.thetas[state.parent])
    # generation 0 measured parent 0, which is the centre, then parents 1 and 2 in turn; after
    # generation 2 every parent has a BC and the draw starts
    assert chosen[:2] == [1, 2] and state.archive.shape == (3, 2)
    assert np.array_equal(state.parent_behaviours, [[0, 0], [1, 0], [5, 5]])
    novelties = novelty.novelty(state.parent_behaviours, state.archive, 2)
    probabilities = novelty.selection_probabilities(novelties)
    assert chosen[2] == novelty.drawn_parent(probabilities, config.seed, 2)
    # the far parent (5, 5) is the most novel, so the most likely
    assert probabilities.argmax() == 2


def test_a_failed_evaluation_adds_nothing_to_the_archive():
    config = _config("ns-es", parents=2)
    state, _ = _measured(ns_es.initial(config, _starts(2)), config, 0, (1.0, 2.0))
    after, _ = _measured(state, config, 1, (np.nan, np.nan))
    assert after.archive.shape == (1, 2) and np.isnan(after.parent_behaviours[1]).all()


def test_each_parent_keeps_its_own_observation_normalisation():
    config = _config("ns-es", parents=2)
    state = ns_es.initial(config, _starts(2))
    first = ObsNorm(10.0, np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    state, chosen = _measured(state, config, 0, (0.0, 0.0), norm=first)
    assert state.parent == 1 and chosen.count == 10.0  # parent 1 starts from the same statistics
    second = ObsNorm(25.0, np.array([-1.0, 0.5]), np.array([2.0, 2.0]))
    state, chosen = _measured(state, config, 1, (3.0, 0.0), norm=second)
    assert state.norm_counts.tolist() == [10.0, 25.0]
    expected = {0: first, 1: second}[state.parent]
    assert chosen.count == expected.count and np.array_equal(chosen.mean, expected.mean)
    assert np.array_equal(chosen.var, expected.var)


def test_tell_moves_the_chosen_parent_alone_with_its_own_optimizer_state():
    config = _config("nsr-es", parents=3)
    state = nsr_es.initial(config, _starts(3))
    state, _ = _measured(state, config, 0, (0.0, 0.0))
    population = nsr_es.ask(state, config, 0, TABLE.size)
    rng = np.random.default_rng(1)
    returns, behaviours = rng.normal(size=(4, 2)), rng.normal(size=(4, 2, 2))
    after = nsr_es.tell(state, population, returns, TABLE, config, behaviours)
    moved = state.parent
    assert not np.array_equal(after.thetas[moved], state.thetas[moved])
    others = [i for i in range(3) if i != moved]
    assert np.array_equal(after.thetas[others], state.thetas[others])
    assert after.steps.tolist() == [1 if i == moved else 0 for i in range(3)]
    assert np.array_equal(after.theta, after.thetas[moved])
    assert not after.first_moments[others].any()


def test_the_scores_weigh_reward_and_novelty_ranks():
    from esmpi.strategies import fitness

    config = _config("nsr-es", parents=2, weight_decay=0.0)
    state, _ = _measured(nsr_es.initial(config, _starts(2)), config, 0, (0.0, 0.0))
    returns = np.array([[1.0, 4.0], [2.0, 3.0]])
    behaviours = np.array([[[3.0, 0.0], [1.0, 0.0]], [[0.0, 4.0], [0.0, 2.0]]])
    novelties = np.array([[3.0, 1.0], [4.0, 2.0]])  # distances to the archive's one BC (0, 0)
    zero = np.zeros((2, 2))
    mixed = novelty_es.scores(state, returns, behaviours, zero, config)
    expected = 0.5 * fitness.centered_ranks(returns) + 0.5 * fitness.centered_ranks(novelties)
    assert np.array_equal(mixed, expected)
    alone = novelty_es.scores(
        dataclasses.replace(state, reward_weight=0.0), returns, behaviours, zero, config
    )
    assert np.array_equal(alone, fitness.centered_ranks(novelties))


def test_nsra_raises_the_reward_weight_on_a_record_and_lowers_it_after_patience_runs_out():
    config = _config("nsra-es", parents=1, weight_patience=3)
    assert config.reward_weight == 1.0 and config.weight_step == 0.05
    state = nsra_es.initial(config, _starts(1))
    weights = []
    for generation, eval_return in enumerate([5.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 6.0]):
        state, _ = _measured(state, config, generation, (0.0, float(generation)), eval_return)
        weights.append(round(state.reward_weight, 10))
    # a record at 1.0 stays at 1.0; three generations without one take 0.05 off, twice; the
    # record of generation 7 gives 0.05 back
    assert weights == [1.0, 1.0, 1.0, 0.95, 0.95, 0.95, 0.9, 0.95]
    assert state.best_return == 6.0 and state.stagnation == 0


def test_ns_and_nsr_keep_their_weights_and_every_variant_needs_a_behaviour():
    for name, weight in (("ns-es", 0.0), ("nsr-es", 0.5)):
        config = _config(name, parents=1)
        state = novelty_es.initial(config, _starts(1))
        for generation in range(12):
            state, _ = _measured(state, config, generation, (0.0, 0.0), -float(generation))
        assert state.reward_weight == weight
    with pytest.raises(UsageError, match="needs --behaviour"):
        ns_es.initial(_config("ns-es", behaviour=""), _starts(5))
    with pytest.raises(UsageError, match="no effect with --strategy ns-es"):
        _config("ns-es", reward_weight=0.3)
