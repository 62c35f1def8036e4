"""The Hebbian policy (`--policy hebbian`, Najarro & Risi 2020): its spec, the kernel against the
numpy twin over whole episodes of observations, one step of the rule computed by hand (so a wrong
layout of eta, A, B, C, D fails), the weights an episode starts from, and NaN observations.

Tolerance: the kernel runs float32 with a rational tanh (within 4e-7 of np.tanh) and keeps the
weights in float32, the twin float64; each step's rounding feeds the next step's weights, so over
30 steps actions are compared to 1e-4 and weights to 1e-4 absolute or relative (without
--plastic-norm they grow, with relu without bound: the comparison of an episode stops once they
pass 1e6, on their way to float32's overflow); the rule's parameters are drawn at 0.1 times the
standard normal start, so the dynamics do not amplify the rounding much.
"""

import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import example, given, settings
from hypothesis import strategies as st

from esmpi import reference
from esmpi.config import Config, UsageError
from esmpi.policies import NonFiniteObservation, actor_for, hebbian, initial_theta, spec_for_spaces

TOLERANCE = 1e-4
STEPS = 30
GROWN = 1e6  # weights this large grow on to float32's overflow: the comparison stops there


def hebbian_spec(n_in, hidden, n_out, action="box", **options):
    config = Config(policy="hebbian", hidden=hidden, **options)
    observation_space = spaces.Box(-5.0, 5.0, (n_in,))
    if action == "discrete":
        return spec_for_spaces(observation_space, spaces.Discrete(n_out), config)
    box = spaces.Box(-2.0, np.linspace(0.5, 2.0, n_out).astype(np.float32))
    return spec_for_spaces(observation_space, box, config)


def test_the_spec_is_the_network_without_biases_and_five_parameters_per_synapse():
    spec = hebbian_spec(5, [8, 4], 3)
    assert spec.kind == "hebbian" and not spec.bias and spec.plastic_norm
    assert spec.layer_shapes == [(5, 8), (8, 4), (4, 3)]
    assert spec.n_params == 5 * (5 * 8 + 8 * 4 + 4 * 3)
    theta = initial_theta(spec, seed=3)
    assert theta.dtype == np.float32 and theta.shape == (spec.n_params,)
    assert np.array_equal(theta, initial_theta(spec, seed=3))
    assert not np.array_equal(theta, initial_theta(spec, seed=4))
    other = hebbian_spec(5, [8, 4], 3, activation="relu", plastic_norm=False)
    assert np.array_equal(theta, initial_theta(other, seed=3))  # the seed alone, not the options
    assert abs(theta.mean()) < 0.1 and 0.9 < theta.std() < 1.1  # standard normal
    with pytest.raises(UsageError, match="--policy hebbian has no biases"):
        hebbian_spec(5, [8], 3, bias=True)


@settings(max_examples=40, deadline=None)
# relu without --plastic-norm: weights overflowing float32 in the episode (a clean clone found)
@example(8, [5, 12], 2, "relu", "clip", False, np.float32, 1000)
@example(8, [5, 10], 2, "relu", "argmax", False, np.float32, 1000)
@given(
    n_in=st.integers(1, 10),
    hidden=st.lists(st.integers(1, 16), min_size=1, max_size=2),
    n_out=st.integers(1, 4),
    activation=st.sampled_from(["tanh", "relu"]),
    output=st.sampled_from(["argmax", "clip", "tanh"]),
    norm=st.booleans(),
    obs_dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 1000),
)
def test_the_kernel_matches_numpy_over_an_episode(
    n_in, hidden, n_out, activation, output, norm, obs_dtype, seed
):
    action = "discrete" if output == "argmax" else "box"
    options = dict(activation=activation, plastic_norm=norm)
    if output != "argmax":
        options["action_map"] = output
    spec = hebbian_spec(n_in, hidden, n_out, action, **options)
    rng = np.random.default_rng(seed)
    theta = (0.1 * rng.standard_normal(spec.n_params)).astype(np.float32)
    actor = actor_for(spec, obs_clip=3.0)
    mean, std = rng.standard_normal(n_in), rng.uniform(0.5, 2.0, n_in)
    actor.set_normalisation(mean, std)
    actor.reset(seed)
    weights = [w.astype(np.float64) for w in _layers(spec, hebbian.initial_weights(spec, seed))]
    rules = reference.hebbian_rules(spec, theta)
    low, high = np.array(spec.action_low), np.array(spec.action_high)
    for obs in (rng.standard_normal((STEPS, n_in)) * 2).astype(obs_dtype):
        if max(np.abs(w).max() for w in weights) > GROWN:
            break  # relu without --plastic-norm: float32 is on its way to inf, float64 is not
        got = actor.act(obs, theta)
        want, weights = reference.hebbian_step(
            obs, weights, rules, mean, 1.0 / std, 3.0, activation, spec.output, low, high, norm
        )
        if output == "argmax":  # near-ties may break either way after rounding
            assert got == want or np.isclose(*_top_two(actor, theta, obs), atol=TOLERANCE)
        else:
            assert np.allclose(got, want, rtol=0, atol=TOLERANCE)
        flat = np.concatenate([w.ravel() for w in weights])  # unbounded without plastic_norm
        assert np.allclose(actor.weights, flat, rtol=TOLERANCE, atol=TOLERANCE)


def _layers(spec, flat):
    layers, position = [], 0
    for n_in, n_out in spec.layer_shapes:
        layers.append(flat[position : position + n_in * n_out].reshape(n_in, n_out))
        position += n_in * n_out
    return layers


def _top_two(actor, theta, obs):
    """The two largest outputs of the step just taken (a Discrete policy's near-tie)."""
    units = sum(actor.spec.sizes)
    out = np.sort(actor.scratch[units - actor.spec.sizes[-1] : units])
    return out[-1], out[-2] if out.size > 1 else out[-1]


def test_on_pixels_the_cnns_convolutions_feed_the_plastic_layers():
    """Frames (uint8, three dimensions or more) go through the CNN's evolved convolutions (no
    biases); the kernel matches the numpy twin (convolutions, then the plastic layers) over an
    episode of random frames."""
    frames = spaces.Box(0, 255, (2, 24, 24), dtype=np.uint8)  # two stacked grayscale frames
    config = Config(policy="hebbian", hidden=[6], frame_stack=2, scale_obs=True)
    spec = spec_for_spaces(frames, spaces.Box(-1.0, 1.0, (2,)), config)
    assert spec.obs_encoding == "pixels" and spec.obs_shape == (2, 24, 24, 1)
    assert spec.conv_shapes == [(3, 2, 6), (5, 6, 8)] and spec.sizes == (32, 6, 2)
    convs = 3 * 3 * 2 * 6 + 5 * 5 * 6 * 8
    assert spec.n_params == convs + 5 * (32 * 6 + 6 * 2)
    theta = initial_theta(spec, seed=1)
    theta[convs:] *= 0.1  # a small rule, as in the vector comparison
    rng = np.random.default_rng(1)
    actor = actor_for(spec)
    actor.reset(9)
    weights = [w.astype(np.float64) for w in _layers(spec, hebbian.initial_weights(spec, 9))]
    rules = reference.hebbian_rules(spec, theta)
    low, high = np.array(spec.action_low), np.array(spec.action_high)
    n_in = spec.sizes[0]
    for frame in rng.integers(0, 256, (STEPS, 2, 24, 24), dtype=np.uint8):
        got = actor.act(frame, theta)
        features = reference.conv_features(frame, spec, theta)
        want, weights = reference.hebbian_step(
            features,
            weights,
            rules,
            np.zeros(n_in),
            np.ones(n_in),
            np.inf,
            "tanh",
            "clip",
            low,
            high,
            True,
        )
        assert np.allclose(got, want, rtol=0, atol=TOLERANCE)
    flat = np.concatenate([w.ravel() for w in weights])
    assert np.allclose(actor.weights, flat, rtol=TOLERANCE, atol=TOLERANCE)


def test_one_step_of_the_rule_by_hand():
    """A 2-2-1 tanh network, no normalisation: every synapse's five numbers distinct, so that a
    layout with two terms swapped, or rows and columns exchanged, gives other weights. The weights
    are set by hand so that the output (-1.14) is far from its tanh: the action comes from the
    weights before the update, and the rule reads the raw output."""
    spec = hebbian_spec(2, [2], 1, action_map="clip", plastic_norm=False, obs_norm=False)
    theta = np.arange(1, spec.n_params + 1, dtype=np.float32) / 100.0  # 0.01, 0.02, ...
    actor = actor_for(spec)
    actor.reset(0)
    w1 = np.array([[0.9, -0.4], [0.3, 0.8]])
    w2 = np.array([[-1.5], [1.2]])
    actor.weights[:] = np.concatenate([w1.ravel(), w2.ravel()])
    x = np.array([0.5, -1.0])
    action = actor.act(x.astype(np.float32), theta)
    hidden = np.tanh(x @ w1)
    out = hidden @ w2
    assert -2.0 < out[0] < -1.0 and np.allclose(action, out, atol=1e-6)  # within the bounds
    eta, a, b, c, d = (
        theta[k * 4 : (k + 1) * 4].astype(np.float64).reshape(2, 2) for k in range(5)
    )
    want1 = w1 + eta * (a * x[:, None] * hidden[None, :] + b * x[:, None] + c * hidden + d)
    second = theta[20:].astype(np.float64).reshape(5, 2, 1)
    want2 = w2 + second[0] * (
        second[1] * hidden[:, None] * out
        + second[2] * hidden[:, None]
        + second[3] * out
        + second[4]
    )
    assert np.allclose(actor.weights[:4], want1.ravel(), atol=1e-6)
    assert np.allclose(actor.weights[4:], want2.ravel(), atol=1e-6)


def test_an_episode_starts_from_weights_its_seed_draws():
    spec = hebbian_spec(3, [6], 2)
    first = hebbian.initial_weights(spec, 41)
    assert first.dtype == np.float32 and first.size == 3 * 6 + 6 * 2
    assert np.abs(first).max() <= 0.1 and np.unique(first).size == first.size  # the paper's 'uni'
    assert first.min() < -0.05 and first.max() > 0.05  # spread over [-0.1, 0.1]
    assert np.array_equal(first, hebbian.initial_weights(spec, 41))
    assert not np.array_equal(first, hebbian.initial_weights(spec, 42))
    theta = initial_theta(spec, seed=0)
    observations = np.random.default_rng(1).standard_normal((20, 3)).astype(np.float32)
    actors = [actor_for(spec), actor_for(spec)]
    actions = []
    for actor in actors:  # both members of a mirrored pair: the same episode seed
        actor.reset(41)
        assert np.array_equal(actor.weights, first)
        actions.append(np.array([actor.act(obs, theta) for obs in observations]))
    assert np.array_equal(actions[0], actions[1])
    assert not np.array_equal(actors[0].weights, first)  # the rule changed them
    actors[0].reset(41)
    assert np.array_equal(actors[0].weights, first)


def test_an_observation_holding_nan_is_a_failed_episode():
    spec = hebbian_spec(3, [4], 2)
    actor = actor_for(spec)
    actor.reset(0)
    with pytest.raises(NonFiniteObservation, match=r"\[1\] = nan"):
        actor.act(np.array([0.0, np.nan, 1.0]), initial_theta(spec, seed=0))
