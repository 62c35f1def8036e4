"""PGPE's update against a plain numpy transcription of pgpelib's `compute_reinforce_update` and
`PGPE.tell` (Sehnke et al. 2010 with ClipUp), on small inputs."""

import numpy as np
import pytest

from esmpi import noise, presets
from esmpi.config import Config, UsageError
from esmpi.strategies import fitness, pgpe
from esmpi.strategies.base import MIRRORED, perturbed, state_from_items, state_items

TABLE = noise.build_table(1 << 16, seed=11)
DIM = 40


def _config(**values) -> Config:
    config, _ = presets.resolve({"strategy": "pgpe", "popsize": 8, **values})
    return config


def _state(config: Config, sigma=None) -> pgpe.State:
    state = pgpe.initial(config, np.linspace(-0.3, 0.3, DIM).astype(np.float32))
    if sigma is None:
        return state
    return pgpe.State(state.theta, state.optimizer, np.asarray(sigma, dtype=np.float64), state.lr)


def _noises(offsets) -> list[np.ndarray]:
    return [TABLE[o : o + DIM].astype(np.float64) for o in offsets]


def _reference_gradients(ranks, noises, sigma):
    """pgpelib's compute_reinforce_update, written out: ranks (pairs, 2) of (+eps, -eps)."""
    pairs = len(noises)
    baseline = ranks.mean()
    total_mu, total_sigma = 0.0, 0.0
    for k in range(pairs):
        scaled = sigma * noises[k]
        total_mu = total_mu + scaled * (ranks[k, 0] - ranks[k, 1]) * 0.5
        average = (ranks[k, 0] + ranks[k, 1]) / 2.0
        total_sigma = total_sigma + (average - baseline) * (scaled**2 - sigma**2) / sigma
    return total_mu / pairs, total_sigma / pairs


def _reference_clipup(velocity, grad, step, momentum, max_speed):
    velocity = momentum * velocity + step * grad / np.linalg.norm(grad)
    speed = np.linalg.norm(velocity)
    return velocity * (max_speed / speed) if speed > max_speed else velocity


def test_defaults_are_clipup_with_a_learned_sigma():
    config = _config()
    assert (config.optimizer, config.lr, config.sigma, config.stdev_lr) == (
        "clipup",
        0.075,
        0.02,
        0.1,
    )
    assert config.stdev_max_change == 0.2 and config.momentum == 0.9


def test_ask_gives_symmetric_pairs_scaled_by_each_sigma():
    config = _config()
    sigma = np.linspace(0.01, 0.05, DIM)
    state = _state(config, sigma)
    population = pgpe.ask(state, config, 4, TABLE.size)
    assert population.signs == MIRRORED and population.offsets.size == config.popsize // 2
    assert population.scale.dtype == np.float32 and np.array_equal(
        population.scale, sigma.astype(np.float32)
    )
    assert pgpe.step_sizes(state, population) == (0.075, pytest.approx(0.03))


def test_gradients_equal_pgpelibs_formulas():
    offsets = np.array([3, 1000, 20000, 41000], dtype=np.int64)
    ranks = fitness.centered_ranks(np.array([[5.0, -1.0], [2.0, 2.5], [0.0, 7.0], [3.0, 1.0]]))
    sigma = np.linspace(0.02, 0.2, DIM)
    grad_mu, grad_sigma = pgpe.gradients(ranks, TABLE, offsets, sigma)
    expected_mu, expected_sigma = _reference_gradients(ranks, _noises(offsets), sigma)
    assert np.allclose(grad_mu, expected_mu, rtol=1e-12, atol=1e-15)
    assert np.allclose(grad_sigma, expected_sigma, rtol=1e-12, atol=1e-15)


def test_tell_is_clipup_on_the_centre_and_a_clipped_step_on_sigma():
    config = _config(stdev_lr=0.3)
    sigma = np.linspace(0.05, 0.15, DIM)
    state = _state(config, sigma)
    velocity = np.zeros(DIM)
    theta = state.theta.astype(np.float64)
    rng = np.random.default_rng(0)
    for generation in range(3):
        population = pgpe.ask(state, config, generation, TABLE.size)
        returns = rng.normal(size=(population.offsets.size, 2))
        ranks = fitness.centered_ranks(returns)
        grad_mu, grad_sigma = _reference_gradients(ranks, _noises(population.offsets), sigma)
        velocity = _reference_clipup(velocity, grad_mu, 0.075, 0.9, 0.15)
        theta = theta + velocity
        new_sigma = np.clip(sigma + 0.3 * grad_sigma, 0.8 * sigma, 1.2 * sigma)
        state = pgpe.tell(state, population, returns, TABLE, config)
        sigma = new_sigma
        assert np.allclose(state.theta, theta, rtol=1e-6, atol=1e-7)
        assert np.allclose(state.sigma, sigma, rtol=1e-12)
        assert np.allclose(state.optimizer.first_moment, velocity, rtol=1e-9, atol=1e-12)


def test_each_sigma_changes_by_at_most_stdev_max_change_of_itself():
    config = _config(stdev_lr=1000.0, stdev_max_change=0.2)
    state = _state(config)
    population = pgpe.ask(state, config, 0, TABLE.size)
    returns = np.arange(population.size, dtype=float).reshape(-1, 2) ** 2
    sigma = pgpe.tell(state, population, returns, TABLE, config).sigma
    ratio = sigma / state.sigma
    assert np.all(ratio >= 0.8 - 1e-12) and np.all(ratio <= 1.2 + 1e-12)
    assert np.isclose(ratio, 0.8).any() and np.isclose(ratio, 1.2).any()


def test_sigma_stays_fixed_with_stdev_lr_zero():
    config = _config(stdev_lr=0.0)
    state = _state(config)
    population = pgpe.ask(state, config, 0, TABLE.size)
    returns = np.arange(population.size, dtype=float).reshape(-1, 2)
    assert np.array_equal(pgpe.tell(state, population, returns, TABLE, config).sigma, state.sigma)


def test_clipup_velocity_never_exceeds_max_speed():
    config = _config()
    state = _state(config)
    rng = np.random.default_rng(1)
    speeds = []
    for generation in range(12):
        population = pgpe.ask(state, config, generation, TABLE.size)
        # The same objective every generation: the velocity builds up against the limit.
        returns = np.array([[TABLE[o], -TABLE[o]] for o in population.offsets]) + rng.normal(
            0, 1e-3, (population.offsets.size, 2)
        )
        before = state.theta.astype(np.float64)
        state = pgpe.tell(state, population, returns, TABLE, config)
        speeds.append(np.linalg.norm(state.theta.astype(np.float64) - before))
    assert np.isclose(speeds[0], config.lr, rtol=1e-5)  # the first step: lr * g / |g|
    assert max(speeds) <= 2 * config.lr * (1 + 1e-5)
    assert np.isclose(np.linalg.norm(state.optimizer.first_moment), 2 * config.lr)


def test_a_non_finite_return_ranks_worst():
    config = _config()
    state = _state(config)
    population = pgpe.ask(state, config, 0, TABLE.size)
    returns = np.arange(population.size, dtype=float).reshape(-1, 2)
    for bad in (np.nan, np.inf, -np.inf):
        failed, lowest = returns.copy(), returns.copy()
        failed[2, 1], lowest[2, 1] = bad, -1e9
        got = pgpe.tell(state, population, failed, TABLE, config)
        expected = pgpe.tell(state, population, lowest, TABLE, config)
        assert np.array_equal(got.theta, expected.theta)
        assert np.array_equal(got.sigma, expected.sigma)


def test_a_linear_return_moves_theta_up_its_slope():
    config = _config(popsize=16)
    state = _state(config)
    slope = np.linspace(1.0, -2.0, DIM)
    start = state.theta.astype(np.float64)
    member = np.empty(DIM, dtype=np.float32)
    for generation in range(20):
        population = pgpe.ask(state, config, generation, TABLE.size)
        scales = population.signed_scales()
        returns = np.empty((population.offsets.size, 2))
        for k, offset in enumerate(population.offsets):
            for j, sign in enumerate(population.signs):
                perturbed(state.theta, TABLE[offset : offset + DIM], scales[sign], member)
                returns[k, j] = slope @ member
        state = pgpe.tell(state, population, returns, TABLE, config)
    moved = state.theta.astype(np.float64) - start
    cosine = moved @ slope / (np.linalg.norm(moved) * np.linalg.norm(slope))
    assert cosine > 0.7


def test_state_round_trip_through_its_items():
    config = _config(stdev_lr=0.3)
    state = _state(config)
    population = pgpe.ask(state, config, 0, TABLE.size)
    returns = np.arange(population.size, dtype=float).reshape(-1, 2)
    state = pgpe.tell(state, population, returns, TABLE, config)
    items = state_items(state)
    assert set(items) == {"optimizer", "sigma", "lr"}
    again = state_from_items(pgpe.State, items, state.theta)
    assert np.array_equal(again.sigma, state.sigma) and again.sigma.dtype == np.float64
    assert again.lr == state.lr and again.optimizer.step == state.optimizer.step
    assert np.array_equal(again.optimizer.first_moment, state.optimizer.first_moment)
    follow = pgpe.ask(state, config, 1, TABLE.size)
    one = pgpe.tell(state, follow, returns, TABLE, config)
    two = pgpe.tell(again, follow, returns, TABLE, config)
    assert np.array_equal(one.theta, two.theta) and np.array_equal(one.sigma, two.sigma)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (dict(popsize=7), "--popsize must be an even number"),
        (dict(stdev_max_change=1.0), "--stdev-max-change must be below 1"),
    ],
)
def test_invalid_settings_are_one_sentence(values, words):
    config = _config().replace(**values)
    with pytest.raises(UsageError, match=words):
        pgpe.initial(config, np.zeros(DIM, dtype=np.float32))
