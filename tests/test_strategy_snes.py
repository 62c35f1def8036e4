"""SNES against a plain numpy transcription of Schaul et al. (2011), Algorithm 2."""

from __future__ import annotations

import math

import numpy as np
import pytest

from esmpi import noise
from esmpi.config import Config, UsageError
from esmpi.strategies import fitness, snes
from esmpi.strategies.base import MIRRORED, SINGLE, state_from_items, state_items

D = 7
TABLE = noise.build_table(1 << 16, seed=3)
TARGET = np.linspace(-1.0, 2.0, D)


def _config(**values) -> Config:
    return Config(strategy="snes", **{**snes.DEFAULTS, **values})


def _noise(population) -> np.ndarray:
    """Each member's noise z (members, d), in the order of returns.ravel()."""
    rows = [
        sign * TABLE[offset : offset + D].astype(np.float64)
        for offset in population.offsets
        for sign in population.signs
    ]
    return np.array(rows)


def _returns(state, population) -> np.ndarray:
    members = state.theta + population.scale * _noise(population)
    return -np.square(members - TARGET).sum(axis=1).reshape(-1, len(population.signs))


def _paper_update(mu, sigma, z, returns, eta_mu, eta_sigma):
    """Algorithm 2, written out: sort, utilities, natural gradients, the two updates."""
    count = len(returns)
    raw = [max(0.0, math.log(count / 2 + 1) - math.log(k)) for k in range(1, count + 1)]
    utilities_sorted = np.array(raw) / sum(raw) - 1 / count
    utilities = np.empty(count)
    utilities[np.argsort(-returns)] = utilities_sorted  # best first
    grad_mu = sum(u * s for u, s in zip(utilities, z, strict=True))
    grad_sigma = sum(u * (s**2 - 1) for u, s in zip(utilities, z, strict=True))
    return mu + eta_mu * sigma * grad_mu, sigma * np.exp(eta_sigma / 2 * grad_sigma)


@pytest.mark.parametrize("mirrored", [False, True])
def test_each_update_is_the_papers(mirrored):
    config = _config(mirrored=mirrored, sigma=0.3, lr=0.8)
    state = snes.initial(config, np.zeros(D, dtype=np.float32))
    mu, sigma = np.zeros(D), np.full(D, 0.3)
    eta_sigma = (3 + math.log(D)) / (5 * math.sqrt(D))
    for generation in range(5):
        population = snes.ask(state, config, generation, TABLE.size)
        assert population.signs == (MIRRORED if mirrored else SINGLE)
        assert population.size == 4 + math.floor(3 * math.log(D)) + mirrored  # 9, 10
        returns = _returns(state, population)
        mu, sigma = _paper_update(mu, sigma, _noise(population), returns.ravel(), 0.8, eta_sigma)
        state = snes.tell(state, population, returns, TABLE, config)
        np.testing.assert_allclose(state.theta, mu, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.sigma, sigma, rtol=1e-12)
        mu = state.theta.astype(np.float64)  # the centre is float32
    assert state.theta.dtype == np.float32 and population.scale.dtype == np.float32


def test_stdev_lr_replaces_the_papers_sigma_learning_rate():
    assert snes.sigma_lr(_config(), 100) == pytest.approx((3 + math.log(100)) / 50)
    assert snes.sigma_lr(_config(stdev_lr=0.2), 100) == 0.2


def test_the_default_popsize_is_the_papers():
    assert snes.popsize(_config(), 8832) == 4 + 27  # CartPole's MLP
    assert snes.popsize(_config(mirrored=True), 8832) == 32
    assert snes.popsize(_config(), 1) == 4 and snes.popsize(_config(popsize=12), 8832) == 12
    state = snes.initial(_config(mirrored=True), np.zeros(8832, dtype=np.float32))
    assert snes.ask(state, _config(mirrored=True), 0, TABLE.size).offsets.size == 16


def test_invalid_popsizes_are_one_sentence():
    with pytest.raises(UsageError, match="at least 2"):
        snes.initial(_config(popsize=1), np.zeros(D, dtype=np.float32))
    with pytest.raises(UsageError, match="even with --mirrored"):
        snes.initial(_config(popsize=9, mirrored=True), np.zeros(D, dtype=np.float32))


def test_equal_returns_share_their_utility():
    """Every member tied (every CartPole member at the time limit): nothing moves; two tied
    members get the mean of their two utilities."""
    config = _config()
    state = snes.initial(config, np.full(D, 0.5, dtype=np.float32))
    population = snes.ask(state, config, 0, TABLE.size)
    tied = snes.tell(state, population, np.full((population.size, 1), 500.0), TABLE, config)
    assert np.array_equal(tied.theta, state.theta) and np.array_equal(tied.sigma, state.sigma)
    weights = fitness.ranked_weights(np.array([3.0, 1.0, 3.0, 0.0]), np.array([4.0, 2.0, 1.0, 0.0]))
    assert weights.tolist() == [3.0, 1.0, 3.0, 0.0]


@pytest.mark.parametrize("mirrored", [False, True])
def test_a_quadratic_improves_and_sigma_shrinks_near_the_optimum(mirrored):
    config = _config(mirrored=mirrored, sigma=0.5)
    state = snes.initial(config, np.zeros(D, dtype=np.float32))
    for generation in range(150):
        population = snes.ask(state, config, generation, TABLE.size)
        state = snes.tell(state, population, _returns(state, population), TABLE, config)
    assert np.square(state.theta - TARGET).sum() < 1e-3 * np.square(TARGET).sum()
    assert state.sigma.max() < 0.1


def test_the_state_round_trips_through_its_items():
    config = _config()
    state = snes.initial(config, np.zeros(D, dtype=np.float32))
    population = snes.ask(state, config, 0, TABLE.size)
    state = snes.tell(state, population, _returns(state, population), TABLE, config)
    restored = state_from_items(snes.State, state_items(state), state.theta)
    assert np.array_equal(restored.sigma, state.sigma) and restored.lr == state.lr
    assert restored.theta is state.theta
    assert snes.step_sizes(restored, population) == (1.0, state.sigma.mean())
