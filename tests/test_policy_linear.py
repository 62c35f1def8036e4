"""The linear policy (`--policy linear`, ARS's): its spec, zero start, action = output map of
(normalised obs) @ M (+ b) computed by the MLP kernel, its checkpoint round trip and its export."""

import numpy as np
import pytest
from gymnasium import spaces
from test_results import esmpi_actions, random_observations, readme_runner

from conftest import SMALL_TABLE, checked, esmpi
from esmpi import checkpoint, reference
from esmpi.config import Config
from esmpi.export import exported_arrays
from esmpi.policies import actor_for, initial_theta, layer_views, mlp, spec_for_spaces
from esmpi.train import new_run, to_checkpoint

OBS_SPACE = spaces.Box(-10.0, 10.0, (3, 2))
ACTION_SPACES = {
    "discrete": spaces.Discrete(4, start=-1),
    "box": spaces.Box(-2.0, np.linspace(0.5, 3.0, 3).astype(np.float32)),
}


def linear_spec(action: str, **options):
    config = Config(policy="linear", hidden=[7, 5], **options)  # --hidden is ignored
    return spec_for_spaces(OBS_SPACE, ACTION_SPACES[action], config)


@pytest.mark.parametrize("action", ACTION_SPACES)
@pytest.mark.parametrize("bias", [False, True])
def test_spec_is_one_layer_from_observations_to_actions_starting_at_zero(action, bias):
    spec = linear_spec(action, bias=bias)
    n_out = 4 if action == "discrete" else 3
    assert spec.kind == "linear" and spec.sizes == (6, n_out)
    assert spec.n_params == 6 * n_out + (n_out if bias else 0)
    assert actor_for(spec).kernel is mlp.mlp_step  # the MLP kernel runs it
    theta = initial_theta(spec, seed=3)
    assert theta.dtype == np.float32 and theta.shape == (spec.n_params,) and not theta.any()


@pytest.mark.parametrize("action_map", ["clip", "tanh"])
@pytest.mark.parametrize("action", ACTION_SPACES)
def test_action_is_the_normalised_observation_times_m(action, action_map):
    spec = linear_spec(action, bias=True, action_map=action_map)
    rng = np.random.default_rng(len(action) + len(action_map))
    theta = rng.standard_normal(spec.n_params).astype(np.float32)
    [(weights, bias)] = layer_views(spec, theta)
    mean, std = rng.standard_normal(6), rng.uniform(0.5, 2.0, 6)
    actor = actor_for(spec, obs_clip=3.0)
    actor.set_normalisation(mean, std)
    low, high = np.array(spec.action_low), np.array(spec.action_high)
    for _ in range(50):
        obs = rng.uniform(-8, 8, (3, 2)).astype(np.float32)
        x = np.clip((obs.ravel() - mean) / std, -3.0, 3.0)
        outputs = x @ weights.astype(np.float64) + bias
        twin, _ = reference.policy_step(
            obs.ravel(), mean, 1 / std, 3.0, reference.float64_layers(spec, theta), "tanh",
            spec.output, low, high,
        )  # fmt: skip
        got = actor.act(obs, theta)
        if action == "discrete":
            assert got == np.argmax(outputs) - 1 == twin - 1
        else:
            want = reference.map_outputs(outputs, action_map, low, high)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
            np.testing.assert_allclose(got, twin, rtol=0, atol=1e-5)


def test_checkpoint_keeps_the_linear_spec(tmp_path):
    spec = linear_spec("box", bias=True)
    state = to_checkpoint(new_run(Config(strategy="ars", policy="linear", bias=True), spec), 1)
    path = str(tmp_path / checkpoint.FILENAME)
    checkpoint.save(path, state)
    loaded = checkpoint.load(path)
    assert loaded.policy == spec and loaded.policy.kind == "linear"
    assert np.array_equal(loaded.theta, np.zeros(spec.n_params, np.float32))


def test_the_readme_runner_acts_like_esmpi_on_a_random_linear_checkpoint(tmp_path):
    spec = linear_spec("discrete", bias=True)
    state = to_checkpoint(new_run(Config(strategy="ars", policy="linear", bias=True), spec), 1)
    rng = np.random.default_rng(0)
    state.theta = rng.standard_normal(spec.n_params).astype(np.float32)
    state.obs_mean, state.obs_var = rng.standard_normal(6), rng.uniform(0.0, 4.0, 6)
    path = tmp_path / checkpoint.FILENAME
    checkpoint.save(str(path), state)
    arrays = exported_arrays(str(path))
    assert str(arrays["kind"]) == "linear" and int(arrays["n_layers"]) == 1
    np.savez(tmp_path / "policy.npz", **arrays)
    act = readme_runner()(tmp_path / "policy.npz")
    observations = list(rng.uniform(-8, 8, (100, 3, 2)).astype(np.float32))
    ours = esmpi_actions(path, observations)
    assert [act(obs) for obs in observations] == ours and len(set(ours)) > 1


@pytest.mark.slow
def test_ars_trains_and_exports_a_linear_pendulum_policy(tmp_path):
    folder = tmp_path / "runs"
    options = ["--generations", "3", "--popsize", "8", "--print-every", "1", *SMALL_TABLE]
    checked(
        esmpi("train", "--strategy", "ars", "--env", "Pendulum-v1", "--folder", str(folder),
              "--run-name", "lin", *options)
    )  # fmt: skip
    run = folder / "lin"
    out = tmp_path / "policy.npz"
    checked(esmpi("export", str(run), "-o", str(out)))
    assert checkpoint.load(str(run / checkpoint.FILENAME)).policy.kind == "linear"
    act = readme_runner()(out)
    observations = random_observations(run)
    ours = np.array(esmpi_actions(run, observations))
    np.testing.assert_allclose(np.array([act(obs) for obs in observations]), ours, atol=1e-5)
    assert len({float(a[0]) for a in ours}) > 50
