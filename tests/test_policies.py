"""The built-in policies that the rest of the suite does not walk (recurrent, Hebbian on vectors
and on pixels, and the CNN on a small pixel environment) through esmpi's whole path, and the
recurrent kernel against its numpy twin.

- rnn_step against reference.rnn_step over whole sequences (the state carried between steps);
  reset zeroes the state; a recurrent policy remembers what the observation hides.
- On real ranks, for each of them: 1, 2 and 3 ranks give the same parameters
  bit for bit, and a run resumed on another number of ranks ends where the uninterrupted one does;
  the final evaluation replays with `esmpi eval`; the export, run by the README's StatefulPolicy,
  acts like esmpi over an episode's worth of observations.

Tolerance of the twin comparisons: the kernels run float32 with a rational tanh (within 4e-7 of
np.tanh), the twins float64; over 30 steps the actions stay within 1e-4 of each other, and the
recurrent state within 1e-4 absolute or relative (with relu it may grow to hundreds).
"""

import json

import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from test_results import readme_runner

from conftest import (
    SMALL_TABLE,
    assert_final_evaluation_replays,
    checked,
    esmpi,
    train_on_1_2_3_ranks_and_resume,
)
from esmpi import checkpoint, reference
from esmpi.config import Config
from esmpi.evaluate import trained_policy
from esmpi.policies import actor_for, initial_theta, layer_views, recurrent, spec_for_spaces

TOLERANCE = 1e-4


def rnn_spec(n_in, hidden, n_out, activation="tanh", bias=True, action="box"):
    config = Config(policy="rnn", hidden=hidden, activation=activation, bias=bias)
    observation_space = spaces.Box(-5.0, 5.0, (n_in,))
    action_space = (
        spaces.Discrete(n_out) if action == "discrete" else spaces.Box(-2.0, 2.0, (n_out,))
    )
    return spec_for_spaces(observation_space, action_space, config)


def test_the_recurrent_layer_reads_the_observation_and_its_state():
    spec = rnn_spec(3, [5, 4], 2)
    assert spec.kind == "rnn" and spec.sizes == (3, 5, 4, 2)
    assert spec.layer_shapes == [(3 + 5, 5), (5, 4), (4, 2)]
    assert spec.n_params == 8 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2
    actor = actor_for(spec)
    assert isinstance(actor, recurrent.RnnActor) and actor.state.shape == (5,)


@settings(max_examples=40, deadline=None)
@given(
    n_in=st.integers(1, 12),
    hidden=st.lists(st.integers(1, 24), min_size=1, max_size=2),
    n_out=st.integers(1, 5),
    activation=st.sampled_from(["tanh", "relu"]),
    bias=st.booleans(),
    obs_dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 1000),
)
def test_rnn_step_matches_numpy_over_a_sequence(
    n_in, hidden, n_out, activation, bias, obs_dtype, seed
):
    spec = rnn_spec(n_in, hidden, n_out, activation, bias)
    rng = np.random.default_rng(seed)
    theta = (rng.standard_normal(spec.n_params) * 0.3).astype(np.float32)
    layers = reference.float64_layers(spec, theta)
    actor = actor_for(spec, obs_clip=3.0)
    mean, std = rng.standard_normal(n_in), rng.uniform(0.5, 2.0, n_in)
    actor.set_normalisation(mean, std)
    low, high = np.array(spec.action_low), np.array(spec.action_high)
    actor.reset(seed)
    state = np.zeros(hidden[0])
    for obs in (rng.standard_normal((30, n_in)) * 3).astype(obs_dtype):
        if np.abs(state).max() > 1e6:
            break  # a relu state growing without bound, on its way to float32's overflow
        got = actor.act(obs, theta)
        want, state = reference.rnn_step(
            obs, state, mean, 1.0 / std, 3.0, layers, activation, spec.output, low, high
        )
        assert np.allclose(got, want, rtol=0, atol=TOLERANCE)
        # a relu state may grow to hundreds: its rounding is relative
        assert np.allclose(actor.state, state, rtol=TOLERANCE, atol=TOLERANCE)


def test_reset_forgets_the_episode_before():
    spec = rnn_spec(2, [6], 1, bias=True)
    theta = initial_theta(spec, seed=1)
    theta[:] += 0.3  # weights that make the state matter
    actor = actor_for(spec)
    obs = np.array([0.5, -1.0], dtype=np.float32)
    actor.reset(0)
    first = [actor.act(obs, theta).copy() for _ in range(5)]
    assert not np.allclose(first[0], first[-1])  # the same observation, other actions: memory
    actor.reset(7)
    assert not actor.state.any()
    assert np.array_equal(actor.act(obs, theta), first[0])


def test_the_first_hidden_layer_alone_is_recurrent_in_the_views():
    spec = rnn_spec(3, [4, 2], 1, bias=False)
    views = layer_views(spec, np.arange(spec.n_params, dtype=np.float32))
    assert [w.shape for w, _ in views] == [(7, 4), (4, 2), (2, 1)]
    assert all(b is None for _, b in views)


# --- on real ranks ------------------------------------------------------------------------------

PENDULUM = ["--env", "Pendulum-v1"]
PIXELS = ["--env", "toyenvs:ToyPixels", "--max-steps", "30", "--scale-obs"]
POLICIES = {
    "rnn": [*PENDULUM, "--policy", "rnn", "--hidden", "6"],
    "hebbian": [*PENDULUM, "--policy", "hebbian", "--hidden", "6,4"],
    "hebbian-pixels": [*PIXELS, "--policy", "hebbian", "--hidden", "6"],
    "cnn": [*PIXELS, "--policy", "cnn", "--hidden", "6"],
}
TRAIN = ["train", "--popsize", "10", *SMALL_TABLE]


@pytest.mark.mpi
@pytest.mark.parametrize("kind", POLICIES)
def test_a_policy_is_rank_invariant_resumes_exactly_and_replays(kind, runs):
    """4 generations on 1, 2 and 3 ranks and 2 then a resume to 4 on 3 ranks end with the same
    parameters; `esmpi eval` replays the final evaluation's episodes, with and without a video."""
    state = train_on_1_2_3_ranks_and_resume(
        [*TRAIN, *POLICIES[kind], "--final-episodes", "3"], runs
    )
    assert state.policy.kind == kind.split("-")[0]
    assert bool(state.policy.conv_shapes) == (kind.endswith("pixels") or kind == "cnn")
    final = state.final
    assert_final_evaluation_replays(runs / "ranks2", final)
    if state.policy.obs_shape:
        return  # the toy pixel environment draws no frames
    video = runs / "episode.mp4"  # recording resets the policy with the episode as well
    recorded = esmpi(
        *("eval", str(runs / "ranks2"), "--episode-seed", str(final.seeds[0])),
        *("--video", str(video), "--json"),
    )
    record = json.loads(checked(recorded).stdout)
    assert record["returns"] == [final.returns[0][0]] and record["video_frames"] == 201


class Stateless:
    """The README's load_policy function behind StatefulPolicy's interface."""

    def __init__(self, act):
        self.act = act

    def reset(self, seed):
        pass


@pytest.mark.mpi
@pytest.mark.parametrize("kind", POLICIES)
def test_the_readme_runner_acts_like_esmpi_over_an_episode(kind, runs, tmp_path):
    folder = runs / kind
    args = [*TRAIN, *POLICIES[kind], "--generations", "2", "--folder", str(runs)]
    checked(esmpi(*args, "--run-name", kind, "--final-episodes", "0", ranks=2))
    out = tmp_path / "policy.npz"
    checked(esmpi("export", str(folder), "-o", str(out)))
    state = checkpoint.load(str(folder / "checkpoint.h5"))
    config = Config(obs_clip=5.0)
    theta, obs_mean, obs_std = trained_policy(state, config, best=False)
    actor = actor_for(state.policy, config.obs_clip)
    actor.set_normalisation(obs_mean, obs_std)
    if kind == "cnn":  # no memory: the README's load_policy runs it
        policy = Stateless(readme_runner()(out))
    else:
        policy = readme_runner("StatefulPolicy")(out)
    rng = np.random.default_rng(0)
    if state.policy.obs_shape:  # frames of the toy pixel environment's shape
        observations = rng.integers(0, 256, (100, 24, 24), dtype=np.uint8)
    else:
        noise = rng.standard_normal((100, obs_mean.size))
        observations = (obs_mean + 2 * obs_std * noise).astype(np.float32)
    for episode_seed in (3, 4):
        actor.reset(episode_seed)
        policy.reset(episode_seed)
        ours = np.array([actor.act(obs, theta) for obs in observations])
        theirs = np.array([policy.act(obs) for obs in observations])
        assert np.allclose(theirs, ours, rtol=0, atol=TOLERANCE)
        assert len(np.unique(np.round(ours, 3))) > 20  # varied actions, not one clipped value
