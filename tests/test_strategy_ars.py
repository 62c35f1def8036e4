"""ARS (Mania, Guy and Recht 2018) as pure functions: the step against a plain numpy transcription
of Algorithm 2 (V1-t/V2-t), top-b selection, the sigma_R = 0 guard and the state round trip."""

import numpy as np
import pytest

from esmpi import noise
from esmpi.config import Config, UsageError
from esmpi.presets import resolve
from esmpi.strategies import ars
from esmpi.strategies.base import MIRRORED, Population, state_from_items, state_items

TABLE = noise.build_table(1 << 16, seed=5)
DIM = 12


def population_of(offsets, sigma=0.03) -> Population:
    return Population(np.asarray(offsets, dtype=np.int64), MIRRORED, np.float32(sigma))


def paper_step(theta, returns, offsets, alpha, b):
    """Algorithm 2, steps 6-7, written out: sort the directions by max(r+, r-), keep the top b,
    theta + alpha / (b sigma_R) sum_k (r+_k - r-_k) delta_k over them."""
    order = sorted(range(len(returns)), key=lambda k: -max(returns[k]))[:b]
    used = np.array([returns[k] for k in order], dtype=np.float64)
    sigma_r = np.std(used)
    total = np.zeros(DIM)
    for k in order:
        delta = TABLE[offsets[k] : offsets[k] + DIM].astype(np.float64)
        total += (returns[k][0] - returns[k][1]) * delta
    return theta.astype(np.float64) + alpha / (b * sigma_r) * total


@pytest.mark.parametrize("top", [0, 1, 3, 5])
def test_step_is_the_papers_equation(top):
    rng = np.random.default_rng(top)
    offsets = rng.integers(0, TABLE.size - DIM, 5)
    returns = rng.normal(100.0, 30.0, (5, 2))
    config = Config(strategy="ars", popsize=10, lr=0.02, sigma=0.03, top_directions=top)
    theta = rng.standard_normal(DIM).astype(np.float32)
    state = ars.initial(config, theta)
    new = ars.tell(state, population_of(offsets), returns, TABLE, config)
    want = paper_step(theta, returns.tolist(), offsets, 0.02, top or 5)
    assert new.theta.dtype == np.float32 and new.skipped == 0
    np.testing.assert_allclose(new.theta, want, rtol=1e-6, atol=1e-7)


def test_the_same_inputs_give_the_same_bits():
    config = Config(strategy="ars", popsize=8, top_directions=2)
    returns = np.arange(8.0).reshape(4, 2) ** 1.5
    offsets = [3, 70, 900, 5000]
    steps = [
        ars.tell(
            ars.initial(config, np.zeros(DIM, np.float32)),
            population_of(offsets),
            returns,
            TABLE,
            config,
        ).theta
        for _ in range(2)
    ]
    assert steps[0].tobytes() == steps[1].tobytes()


def test_top_directions_rank_by_the_better_member_ties_in_index_order():
    returns = np.array([[1.0, 9.0], [5.0, 2.0], [9.0, 0.0], [4.0, 5.0], [3.0, 3.0]])
    assert ars.top_directions(returns, 5).tolist() == [0, 2, 1, 3, 4]
    assert ars.top_directions(returns, 1).tolist() == [0]  # 9 twice: the first index
    assert ars.top_directions(returns, 3).tolist() == [0, 2, 1]  # 5 twice: direction 1 first


def test_a_failed_member_ranks_its_pair_by_the_other_and_a_failed_pair_last():
    returns = np.array([[np.nan, 7.0], [-np.inf, np.nan], [2.0, 1.0], [np.inf, 3.0], [1.0, 1.0]])
    # +inf is not finite: it ranks worst too (a simulator that blew up did not score infinitely)
    assert ars.top_directions(returns, 5).tolist() == [0, 3, 2, 4, 1]


def test_failed_returns_count_as_the_lowest_finite_return_in_the_step():
    offsets = [10, 2000, 30000]
    config = Config(strategy="ars", popsize=6, lr=0.05)
    theta = np.zeros(DIM, np.float32)
    failed = np.array([[np.nan, 4.0], [1.0, 3.0], [2.0, np.inf]])
    new = ars.tell(ars.initial(config, theta), population_of(offsets), failed, TABLE, config)
    want = paper_step(theta, [[1.0, 4.0], [1.0, 3.0], [2.0, 1.0]], offsets, 0.05, 3)
    np.testing.assert_allclose(new.theta, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "returns, top",
    [
        (np.full((4, 2), 500.0), 0),  # every member at CartPole's time limit
        (np.full((4, 2), np.nan), 0),  # every episode failed
        (np.array([[5.0, 5.0], [5.0, 5.0], [1.0, 2.0], [0.0, 3.0]]), 2),  # the top 2 are equal
    ],
)
def test_no_step_when_the_returns_used_have_no_spread(returns, top):
    """sigma_R = 0 makes the equation 0 / 0: theta stays, and the state counts the skip."""
    config = Config(strategy="ars", popsize=8, top_directions=top)
    theta = np.full(DIM, 0.5, np.float32)
    new = ars.tell(ars.initial(config, theta), population_of([1, 2, 3, 4]), returns, TABLE, config)
    assert np.array_equal(new.theta, theta) and new.skipped == 1


def test_ask_draws_mirrored_pairs_of_sigma():
    config = Config(strategy="ars", popsize=10, sigma=0.03, seed=4)
    state = ars.initial(config, np.zeros(DIM, np.float32))
    population = ars.ask(state, config, generation=7, table_size=TABLE.size)
    assert population.signs == MIRRORED and population.offsets.size == 5
    assert population.scale == np.float32(0.03)
    again = ars.ask(state, config, generation=7, table_size=TABLE.size)
    assert np.array_equal(population.offsets, again.offsets)
    assert ars.step_sizes(state, population) == (config.lr, float(np.float32(0.03)))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(popsize=7), "even number"),
        (dict(popsize=0), "even number"),
        (dict(popsize=8, top_directions=5), "more than the 4 directions"),
    ],
)
def test_bad_population_settings_are_one_sentence(options, message):
    with pytest.raises(UsageError, match=message):
        ars.initial(Config(strategy="ars", **options), np.zeros(DIM, np.float32))


def test_state_round_trips_through_its_items():
    config = Config(strategy="ars", popsize=4)
    state = ars.tell(
        ars.initial(config, np.zeros(DIM, np.float32)),
        population_of([0, 100]),
        np.full((2, 2), 1.0),
        TABLE,
        config,
    )
    items = state_items(state)
    assert set(items) == {"lr", "skipped"}
    back = state_from_items(ars.State, items, state.theta)
    assert back.lr == state.lr and back.skipped == 1 and back.theta is state.theta


def test_defaults_train_the_papers_linear_policy_with_its_own_step_sizes():
    config, _ = resolve({"strategy": "ars", "env": "HalfCheetah-v5"})
    assert config.policy == "linear" and config.obs_norm  # V2
    assert (config.popsize, config.lr, config.sigma) == (32, 0.02, 0.03)
    given, _ = resolve({"strategy": "ars", "lr": 0.1, "policy": "mlp"})
    assert given.lr == 0.1 and given.policy == "mlp"
