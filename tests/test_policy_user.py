"""`--policy module:Class`: a user's policy class (tests/userpolicies.py) through the protocol's
checks (each break one sentence, on the command line too), its Box and Discrete actions, an episode
that resets it with the episode's seed, and, on real ranks, training on 1, 2 and 3 ranks bit for
bit, an exact resume, `esmpi eval` (replaying the final episodes; one sentence where the class is
not importable), `inspect` and `export`."""

import re
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

from conftest import (
    SMALL_TABLE,
    assert_final_evaluation_replays,
    checked,
    esmpi,
    train_on_1_2_3_ranks_and_resume,
)
from esmpi import envs
from esmpi.config import Config, UsageError, from_mapping
from esmpi.policies import actor_for, initial_theta, spec_for_spaces
from esmpi.rollout import EpisodeFailed, run_episode

LINEAR = "userpolicies:LinearTanh"
PENDULUM_SPACES = (spaces.Box(-8.0, 8.0, (3,)), spaces.Box(-2.0, 2.0, (1,)))
CARTPOLE_SPACES = (spaces.Box(-5.0, 5.0, (4,)), spaces.Discrete(2))


def test_the_spec_names_the_class_and_takes_its_parameter_count():
    spec = spec_for_spaces(*PENDULUM_SPACES, Config(policy=LINEAR))
    assert spec.kind == LINEAR and spec.is_user_class
    assert spec.n_params == (3 + 1) * 1 and spec.obs_encoding == "raw"
    theta = initial_theta(spec, seed=5)
    assert theta.dtype == np.float32 and np.array_equal(theta, initial_theta(spec, seed=5))
    assert not np.array_equal(theta, initial_theta(spec, seed=5, index=1))  # a meta-population's
    action = actor_for(spec).act(np.array([0.5, -0.5, 1.0]), theta)
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


def test_a_discrete_action_is_one_integer_of_the_space():
    spec = spec_for_spaces(*CARTPOLE_SPACES, Config(policy=LINEAR))
    assert spec.n_params == (4 + 1) * 2 and spec.output == "argmax"
    actor, theta = actor_for(spec), initial_theta(spec, seed=1)
    actions = {actor.act(obs, theta) for obs in np.random.default_rng(0).normal(size=(50, 4))}
    assert actions == {0, 1}


def test_each_episode_resets_the_class_with_its_seed():
    config = Config(env="Pendulum-v1", policy=LINEAR)
    _, stepped, _ = envs.make_for_rollouts(config, quiet=True)
    spec = spec_for_spaces(stepped.observation_space, stepped.action_space, config)
    actor = actor_for(spec)
    theta = initial_theta(spec, seed=0)
    first = run_episode(stepped, actor, theta, 11, 50)
    assert actor.policy.episode_seed == 11
    assert run_episode(stepped, actor, theta, 11, 50) == first
    assert run_episode(stepped, actor, theta, 12, 50) != first


def test_an_action_outside_the_space_fails_the_episode_in_one_sentence():
    config = Config(env="Pendulum-v1", policy="userpolicies:ActsInTheWrongShape")
    _, stepped, _ = envs.make_for_rollouts(config, quiet=True)
    spec = spec_for_spaces(stepped.observation_space, stepped.action_space, config)
    theta = initial_theta(spec, seed=0)
    words = "act gave an action of shape \\(2,\\) where the Box action space takes shape \\(1,\\)"
    with pytest.raises(EpisodeFailed, match=words):  # Pendulum itself reads the first number
        run_episode(stepped, actor_for(spec), theta, 0, 50)
    discrete = actor_for(spec_for_spaces(*CARTPOLE_SPACES, Config(policy=LINEAR)))
    discrete.policy.act = lambda observation, theta: 0.0
    with pytest.raises(ValueError, match="act gave 0.0 where one integer of 0..1 was due"):
        discrete.act(np.zeros(4), np.zeros(10, np.float32))


@pytest.mark.parametrize(
    "name, words",
    [
        ("nosuchmodule:Policy", "Cannot import nosuchmodule"),
        ("userpolicies:NoSuchClass", "has no class NoSuchClass"),
        ("userpolicies:NoAct", "no act method"),
        ("userpolicies:FailsToStart", "failed to start: ValueError: this policy needs"),
    ],
)
def test_a_class_that_breaks_the_protocol_is_one_sentence(name, words):
    with pytest.raises(UsageError, match=words):
        spec_for_spaces(*PENDULUM_SPACES, from_mapping({"policy": name}))


def test_a_policy_name_that_is_neither_built_in_nor_a_class_is_one_sentence():
    with pytest.raises(UsageError, match="one of mlp, linear, cnn, rnn, hebbian or 'module:Class'"):
        from_mapping({"policy": "userpolicies"})


def test_initial_parameters_of_the_wrong_shape_are_one_sentence():
    spec = spec_for_spaces(*PENDULUM_SPACES, Config(policy="userpolicies:WrongShape"))
    words = "initial_theta gave an array of shape \\(5,\\) where n_params = 4 numbers were due"
    with pytest.raises(UsageError, match=words):
        initial_theta(spec, seed=0)


def test_initial_parameters_not_finite_or_not_from_the_seed_alone_are_one_sentence():
    spec = spec_for_spaces(*PENDULUM_SPACES, Config(policy="userpolicies:UnseededStart"))
    with pytest.raises(UsageError, match="gave other parameters when called again; draw them"):
        initial_theta(spec, seed=0)  # each rank would start from its own parameters
    spec = spec_for_spaces(*PENDULUM_SPACES, Config(policy=LINEAR))
    actor_for(spec).policy.initial_theta = lambda seed: np.array([0.0, np.nan, 0.0, 0.0])
    with pytest.raises(UsageError, match="initial_theta gave float64 parameters that are not all"):
        initial_theta(spec, seed=0)


def test_the_command_line_names_a_missing_class_without_a_traceback(runs):
    result = esmpi("train", "--policy", "nosuchmodule:Policy", "--folder", str(runs), ranks=2)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("esmpi: error:")]
    assert errors == [
        "esmpi: error: Cannot import nosuchmodule for --policy nosuchmodule:Policy: No module "
        "named 'nosuchmodule' (is it on PYTHONPATH?)."
    ]
    assert not runs.exists()


TRAIN = ["train", "--env", "Pendulum-v1", "--policy", LINEAR, "--popsize", "10", *SMALL_TABLE]


@pytest.mark.mpi
def test_a_user_class_trains_on_any_ranks_resumes_exactly_replays_and_exports(runs, tmp_path):
    state = train_on_1_2_3_ranks_and_resume([*TRAIN, "--final-episodes", "3"], runs)
    assert state.policy.kind == LINEAR and state.policy.user_params == 4
    assert_final_evaluation_replays(runs / "ranks2", state.final)
    shown = checked(esmpi("eval", str(runs / "ranks2"), "--episodes", "3"))
    assert "3 episode(s): return mean" in shown.stdout + shown.stderr
    assert LINEAR in checked(esmpi("inspect", str(runs / "ranks2"))).stdout
    out = tmp_path / "policy.npz"
    printed = checked(esmpi("export", str(runs / "ranks2"), "-o", str(out))).stdout
    assert "4 parameters (its class runs them)" in printed
    exported = dict(np.load(out))
    assert sorted(exported) == ["env_id", "generation", "kind", "theta"]
    assert str(exported["kind"]) == LINEAR and str(exported["env_id"]) == "Pendulum-v1"
    assert int(exported["generation"]) == 4 and exported["theta"].dtype == np.float32
    assert np.array_equal(exported["theta"], state.theta)
    # Without the class's module on the path, eval says so in one sentence; inspect and export
    # read the checkpoint alone.
    unfound = {"PYTHONPATH": ""}
    blind = esmpi("eval", str(runs / "ranks2"), "--episodes", "1", cwd=tmp_path, variables=unfound)
    assert blind.returncode == 2 and "Traceback" not in blind.stderr
    assert "Cannot import userpolicies for --policy userpolicies:LinearTanh" in blind.stderr
    assert "(is it on PYTHONPATH?)" in blind.stderr
    checked(esmpi("inspect", str(runs / "ranks2"), cwd=tmp_path, variables=unfound))
    again = str(tmp_path / "again.npz")
    checked(esmpi("export", str(runs / "ranks2"), "-o", again, cwd=tmp_path, variables=unfound))


def test_the_readmes_example_is_the_class_these_tests_train():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = re.search(r"```python\n(class LinearTanh:.*?)```", readme, re.S)
    assert (
        example
        and example.group(1).strip() in (Path(__file__).parent / "userpolicies.py").read_text()
    )
