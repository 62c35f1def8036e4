"""sep-CMA-ES against a plain numpy transcription of Ros and Hansen (2008) with Hansen and
Kern's (2004) update and the tutorial's h_sigma."""

from __future__ import annotations

import math

import numpy as np
import pytest

from esmpi import noise
from esmpi.config import Config, UsageError
from esmpi.strategies import sep_cma_es
from esmpi.strategies.base import SINGLE, state_from_items, state_items

N = 6
TABLE = noise.build_table(1 << 16, seed=4)


def _config(**values) -> Config:
    return Config(strategy="sep-cma-es", **{**sep_cma_es.DEFAULTS, **values})


def _noise(population) -> np.ndarray:
    return np.array(
        [TABLE[offset : offset + N].astype(np.float64) for offset in population.offsets]
    )


def _members(state, population) -> np.ndarray:
    return state.theta + population.scale * _noise(population)


def _linear(state, population) -> np.ndarray:
    """A linear objective: its paths grow long, so that h_sigma stalls the rank-one update."""
    return (_members(state, population) @ np.arange(1.0, N + 1))[:, None]


def _sphere(state, population) -> np.ndarray:
    return -np.square(_members(state, population) - 1.0).sum(axis=1)[:, None]


class PaperCMA:
    """The update written out in float64 from the equations of the papers, one line each."""

    def __init__(self, m, sigma, popsize):
        n, self.lam = m.size, popsize
        self.mu = popsize // 2
        w = np.array([math.log(self.mu + 1) - math.log(i) for i in range(1, self.mu + 1)])
        self.w = w / w.sum()
        self.mu_eff = 1 / np.sum(self.w**2)
        self.c_sigma = (self.mu_eff + 2) / (n + self.mu_eff + 3)
        self.d_sigma = 1 + 2 * max(0, math.sqrt((self.mu_eff - 1) / (n + 1)) - 1) + self.c_sigma
        self.c_c = 4 / (n + 4)
        mu_cov = self.mu_eff
        c_cov = (1 / mu_cov) * 2 / (n + math.sqrt(2)) ** 2 + (1 - 1 / mu_cov) * min(
            1, (2 * self.mu_eff - 1) / ((n + 2) ** 2 + self.mu_eff)
        )
        self.c_cov = (n + 2) / 3 * c_cov  # Ros and Hansen's sep-CMA learning rate
        self.chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))
        self.n, self.m, self.sigma = n, m.astype(np.float64), sigma
        self.C, self.p_sigma, self.p_c, self.g = np.ones(n), np.zeros(n), np.zeros(n), 0
        self.h_sigmas: list[float] = []

    def tell(self, z, returns):
        n, D = self.n, np.sqrt(self.C)
        x = self.m + self.sigma * D * z
        best = np.argsort(-returns)[: self.mu]
        y = (x[best] - self.m) / self.sigma
        y_w = self.w @ y
        self.m = self.m + self.sigma * y_w
        c_s, c_c = self.c_sigma, self.c_c
        self.p_sigma = (1 - c_s) * self.p_sigma + math.sqrt(c_s * (2 - c_s) * self.mu_eff) * (
            y_w / D
        )
        norm = np.linalg.norm(self.p_sigma)
        left = norm / math.sqrt(1 - (1 - c_s) ** (2 * (self.g + 1)))
        h_sigma = float(left < (1.4 + 2 / (n + 1)) * self.chi_n)
        self.p_c = (1 - c_c) * self.p_c + h_sigma * math.sqrt(c_c * (2 - c_c) * self.mu_eff) * y_w
        delta = (1 - h_sigma) * c_c * (2 - c_c)
        rank_mu = sum(w_i * y_i**2 for w_i, y_i in zip(self.w, y, strict=True))
        self.C = (
            (1 - self.c_cov) * self.C
            + self.c_cov / self.mu_eff * (self.p_c**2 + delta * self.C)
            + self.c_cov * (1 - 1 / self.mu_eff) * rank_mu
        )
        self.sigma *= math.exp(c_s / self.d_sigma * (norm / self.chi_n - 1))
        self.g += 1
        self.h_sigmas.append(h_sigma)


@pytest.mark.parametrize("objective", [_linear, _sphere])
def test_updates_over_generations_are_the_papers(objective):
    config = _config(sigma=0.5)
    state = sep_cma_es.initial(config, np.zeros(N, dtype=np.float32))
    paper = PaperCMA(np.zeros(N), 0.5, 4 + math.floor(3 * math.log(N)))
    for generation in range(30):
        population = sep_cma_es.ask(state, config, generation, TABLE.size)
        assert population.signs == SINGLE and population.size == paper.lam == 9
        np.testing.assert_allclose(population.scale, paper.sigma * np.sqrt(paper.C), rtol=1e-6)
        returns = objective(state, population)
        paper.tell(_noise(population), returns[:, 0])
        state = sep_cma_es.tell(state, population, returns, TABLE, config)
        np.testing.assert_allclose(state.theta, paper.m, rtol=1e-5, atol=1e-5)
        for name, expected in (("p_sigma", paper.p_sigma), ("p_c", paper.p_c)):
            np.testing.assert_allclose(getattr(state, name), expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(state.diag_c, paper.C, rtol=1e-9)
        assert state.sigma == pytest.approx(paper.sigma, rel=1e-9)
        assert state.generation == paper.g
        paper.m = state.theta.astype(np.float64)  # the mean is float32
    if objective is _linear:
        assert set(paper.h_sigmas) == {0.0, 1.0}  # both branches of h_sigma were checked
        assert state.sigma > 0.5  # a linear objective lengthens the step


def test_the_constants_are_the_papers():
    k = sep_cma_es.Constants.of(9, N)
    assert k.weights.sum() == pytest.approx(1) and k.weights.size == 4
    assert np.all(np.diff(k.weights) < 0)
    assert k.mu_eff == pytest.approx(1 / np.square(k.weights).sum())
    assert k.c_c == pytest.approx(0.4) and k.c_cov < 1 and k.c_sigma < 1
    for n in (1, 2, 10, 8832, 10**6):
        assert 0 < sep_cma_es.Constants.of(4 + math.floor(3 * math.log(n)), n).c_cov < 1


def test_the_default_popsize_is_the_papers():
    assert sep_cma_es.popsize(_config(), 8832) == 31
    assert sep_cma_es.popsize(_config(), 1) == 4
    assert sep_cma_es.popsize(_config(popsize=10), 8832) == 10
    with pytest.raises(UsageError, match="at least 2"):
        sep_cma_es.initial(_config(popsize=1), np.zeros(N, dtype=np.float32))


def test_only_the_best_half_is_read_and_ties_share_their_weight():
    config = _config()
    state = sep_cma_es.initial(config, np.zeros(N, dtype=np.float32))
    population = sep_cma_es.ask(state, config, 0, TABLE.size)
    returns = _sphere(state, population)
    z_w, squares = sep_cma_es.weighted_moments(
        returns, sep_cma_es.Constants.of(9, N).weights, TABLE, population.offsets, N
    )
    best = np.argsort(-returns[:, 0])[:4]
    weights = sep_cma_es.Constants.of(9, N).weights
    np.testing.assert_allclose(z_w, weights @ _noise(population)[best], rtol=1e-12)
    np.testing.assert_allclose(squares, weights @ _noise(population)[best] ** 2, rtol=1e-12)
    tied = sep_cma_es.tell(state, population, np.zeros((9, 1)), TABLE, config)
    np.testing.assert_allclose(tied.theta, 0.1 * _noise(population).mean(axis=0), atol=1e-7)


def test_a_quadratic_improves():
    config = _config(sigma=0.3)
    state = sep_cma_es.initial(config, np.zeros(N, dtype=np.float32))
    for generation in range(200):
        population = sep_cma_es.ask(state, config, generation, TABLE.size)
        state = sep_cma_es.tell(state, population, _sphere(state, population), TABLE, config)
    assert np.square(state.theta - 1.0).sum() < 1e-4 and state.sigma < 0.05


def test_the_state_round_trips_through_its_items():
    config = _config()
    state = sep_cma_es.initial(config, np.zeros(N, dtype=np.float32))
    for generation in range(3):
        population = sep_cma_es.ask(state, config, generation, TABLE.size)
        state = sep_cma_es.tell(state, population, _sphere(state, population), TABLE, config)
    restored = state_from_items(sep_cma_es.State, state_items(state), state.theta)
    assert restored.generation == 3 and restored.sigma == state.sigma
    for name in ("diag_c", "p_sigma", "p_c"):
        assert np.array_equal(getattr(restored, name), getattr(state, name))
    population = sep_cma_es.ask(restored, config, 3, TABLE.size)
    sigma, mean_scale = sep_cma_es.step_sizes(restored, population)
    assert sigma == state.sigma and mean_scale == pytest.approx(population.scale.mean(), rel=1e-6)
