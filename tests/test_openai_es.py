"""OpenAI-ES, its fitness shaping and the optimizers as pure functions: exact values where the
papers fix them."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from esmpi import noise, reference
from esmpi.config import Config
from esmpi.strategies import fitness, openai_es, optimizers
from esmpi.strategies.base import MIRRORED, Population, perturbed


def test_centered_ranks_exact_values():
    values = np.array([[10.0, -3.0], [7.0, 0.5]])
    assert np.allclose(fitness.centered_ranks(values), [[0.5, -0.5], [1 / 6, -1 / 6]], rtol=1e-15)


def test_tied_returns_share_their_mean_rank_and_give_no_gradient():
    values = np.array([[3.0, 1.0], [3.0, 3.0]])
    assert np.allclose(fitness.centered_ranks(values), [[1 / 6, -0.5], [1 / 6, 1 / 6]], rtol=1e-15)
    assert not fitness.standardised_ranks(np.full((4, 2), -21.0)).any()


@given(arrays(np.float64, st.integers(2, 60), elements=st.floats(-1e6, 1e6), unique=True))
def test_centered_ranks_span_minus_half_to_half(values):
    ranks = fitness.centered_ranks(values)
    assert ranks.min() == -0.5 and ranks.max() == 0.5
    assert np.isclose(ranks.sum(), 0.0)
    assert np.allclose(np.sort(ranks), np.linspace(-0.5, 0.5, values.size), rtol=1e-15)


def test_shaped_fitness_is_standardised_ranks():
    shaped = fitness.standardised_ranks(np.array([[1.0, 5.0], [3.0, 2.0]]))
    ranks = np.array([[-0.5, 0.5], [1 / 6, -1 / 6]])
    assert np.allclose(shaped, ranks / ranks.std())
    assert np.isclose(shaped.mean(), 0.0) and np.isclose(shaped.std(), 1.0)


def test_penalty_subtracts_weight_decay_times_mean_square():
    returns = np.array([[1.0, 2.0]])
    squares = np.array([[4.0, 9.0]])
    assert openai_es.penalised_returns(returns, squares, 0.01).tolist() == [[0.96, 1.91]]


def test_gradient_equals_the_paper_formula():
    table = noise.build_table(1 << 16, seed=3)
    offsets = np.array([5, 900, 40000], dtype=np.int64)
    shaped = np.array([[1.0, -0.5], [0.2, 0.3], [-1.0, 0.0]])
    dim, sigma = 50, 0.05
    expected = sum(
        (shaped[k, 0] - shaped[k, 1]) * table[o : o + dim].astype(np.float64)
        for k, o in enumerate(offsets)
    ) / (shaped.size * sigma)
    assert np.allclose(openai_es.gradient(shaped, table, offsets, sigma, dim), expected, rtol=1e-12)


def test_adam_matches_its_definition_over_three_steps():
    state = optimizers.OptimizerState.initial(2)
    m, v = np.zeros(2), np.zeros(2)
    for step, grad in enumerate(
        [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])], 1
    ):
        change, state = optimizers.step("adam", state, grad, lr=0.01)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        m_hat, v_hat = m / (1 - 0.9**step), v / (1 - 0.999**step)
        assert np.allclose(change, 0.01 * m_hat / (np.sqrt(v_hat) + 1e-8), rtol=1e-6)
    assert state.step == 3


def test_sgd_is_lr_times_gradient():
    change, state = optimizers.step(
        "sgd", optimizers.OptimizerState.initial(2), np.array([2.0, -1.0]), 0.1
    )
    assert change.tolist() == [0.2, -0.1] and state.step == 1


def test_schedule_decays_until_the_floors():
    config = Config(lr=0.0011, lr_decay=0.5, sigma=0.0101, sigma_decay=0.5)
    lr, sigma = openai_es.decayed(config.lr, config.sigma, config)
    assert (lr, sigma) == (0.00055, 0.00505)
    assert openai_es.decayed(lr, sigma, config) == (lr, sigma)  # below lr_min and sigma_min: frozen


def test_update_moves_theta_towards_the_better_direction():
    """A linear 'return' of the parameters: the update must increase it."""
    table = noise.build_table(1 << 16, seed=1)
    direction = np.linspace(-1, 1, 40)
    theta = np.zeros(40, dtype=np.float32)
    config = Config(popsize=32, lr=0.05, weight_decay=0.0)
    state = openai_es.initial(config, theta)
    population = openai_es.ask(state, config, 0, table.size)
    eps = np.stack([table[o : o + 40] for o in population.offsets])
    returns = np.stack([eps @ direction, -(eps @ direction)], axis=1)
    new = openai_es.tell(state, population, returns, table, config)
    assert new.theta @ direction > 0.5 * 0.05 * np.abs(direction).sum() * 0.5
    assert new.theta.dtype == np.float32


def test_update_penalty_uses_the_members_weights():
    table = noise.build_table(1 << 16, seed=2)
    theta = np.full(30, 0.5, dtype=np.float32)
    offsets = np.array([7, 1234], dtype=np.int64)
    out = np.empty((2, 2))
    from esmpi import kernels

    kernels.perturbed_mean_squares(theta, table, offsets, 0.1, out)
    assert np.allclose(
        out, reference.perturbed_mean_squares(theta, table, offsets, 0.1), rtol=1e-12
    )


@pytest.mark.parametrize("sign", [1, -1])
def test_perturbed_member(sign):
    theta = np.arange(4, dtype=np.float32)
    eps = np.array([1.0, -1.0, 0.5, 0.0], dtype=np.float32)
    out = np.empty(4, dtype=np.float32)
    population = Population(np.zeros(1, dtype=np.int64), MIRRORED, np.float32(0.1))
    perturbed(theta, eps, population.signed_scales()[sign], out)
    assert np.array_equal(out, theta + np.float32(sign * 0.1) * eps)
    assert np.array_equal(
        out - theta, -(perturbed(theta, eps, np.float32(-sign * 0.1), out) - theta)
    )


def test_per_parameter_scales_perturb_each_parameter_by_its_own_sigma():
    theta = np.zeros(3, dtype=np.float32)
    eps = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    population = Population(np.zeros(1, dtype=np.int64), MIRRORED, np.float32([0.1, 1.0, 2.0]))
    scales = population.signed_scales()
    out = np.empty(3, dtype=np.float32)
    assert np.allclose(perturbed(theta, eps, scales[-1], out), [-0.1, 2.0, -1.0], rtol=1e-7)


def test_a_non_finite_return_ranks_worst():
    ranks = fitness.centered_ranks(np.array([[np.nan, 1.0], [np.inf, -5.0], [-np.inf, 3.0]]))
    assert ranks[0, 0] == ranks[1, 0] == ranks[2, 0] < ranks[1, 1]  # below the worst finite -5
    assert np.argmax(ranks) == 5


def test_sgd_with_momentum_accumulates_a_velocity():
    state = optimizers.OptimizerState.initial(1)
    change, state = optimizers.step("sgd", state, np.array([1.0]), 0.1, momentum=0.9)
    change, state = optimizers.step("sgd", state, np.array([1.0]), 0.1, momentum=0.9)
    assert np.allclose(change, [0.1 * 1.9]) and state.step == 2


def test_clipup_steps_lr_along_the_normalised_gradient_and_caps_the_speed():
    state = optimizers.OptimizerState.initial(2)
    change, state = optimizers.step("clipup", state, np.array([3.0, 4.0]), 0.1, momentum=0.9)
    assert np.allclose(change, [0.06, 0.08])  # length lr, whatever the gradient's scale
    for _ in range(50):
        change, state = optimizers.step("clipup", state, np.array([300.0, 400.0]), 0.1, 0.9)
    assert np.isclose(np.linalg.norm(change), 0.2)  # max_speed 0 -> twice lr
    change, _ = optimizers.step("clipup", state, np.array([0.0, 1.0]), 0.1, 0.9, max_speed=0.05)
    assert np.isclose(np.linalg.norm(change), 0.05)
