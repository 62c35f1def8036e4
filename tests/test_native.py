"""The native MuJoCo step (esmpi/native): bit for bit Gymnasium's step, and Gymnasium's step
wherever that is not known to hold.

Each covered environment runs full episodes side by side with gymnasium.make's own environment:
with random actions (inside and far outside the actuators' range), with the actions of a policy
esmpi trained (tests/data/native: linear policies, `tests/data/native/README.md` says how they
were made), and with every constructor keyword the kernels read set away from its default.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from conftest import SMALL_TABLE, checked, esmpi, read_theta
from esmpi import checkpoint, envs, native
from esmpi.config import Config, from_toml
from esmpi.evaluate import trained_policy
from esmpi.native.step import NativeStep
from esmpi.native.sums import clip, pairwise_sum, sum_of_squares
from esmpi.policies import actor_for

TRAINED = Path(__file__).parent / "data" / "native"

# Every covered environment with each keyword its native step reads set away from the default.
NON_DEFAULT_KWARGS = {
    "HalfCheetah-v5": {
        "forward_reward_weight": 2.5,
        "ctrl_cost_weight": 0.3,
        "exclude_current_positions_from_observation": False,
        "frame_skip": 4,
        "reset_noise_scale": 0.3,
    },
    "Hopper-v5": {
        "healthy_reward": 2.0,
        "ctrl_cost_weight": 0.01,
        "terminate_when_unhealthy": False,
        "healthy_state_range": (-50.0, 50.0),
        "healthy_z_range": (0.9, 2.5),
        "healthy_angle_range": (-0.4, 0.4),
        "exclude_current_positions_from_observation": False,
    },
    "Walker2d-v5": {
        "forward_reward_weight": 0.5,
        "healthy_reward": 0.5,
        "healthy_z_range": (1.0, 1.8),
        "healthy_angle_range": (-0.5, 0.5),
        "exclude_current_positions_from_observation": False,
    },
    "Swimmer-v5": {
        "ctrl_cost_weight": 0.01,
        "forward_reward_weight": 3.0,
        "exclude_current_positions_from_observation": False,
    },
    "Ant-v5": {
        "main_body": "torso",
        "contact_cost_weight": 0.05,
        "contact_force_range": (-0.5, 0.5),
        "healthy_z_range": (0.3, 0.9),
        "terminate_when_unhealthy": False,
        "include_cfrc_ext_in_observation": False,
        "exclude_current_positions_from_observation": False,
        "ctrl_cost_weight": 0.2,
    },
    "Humanoid-v5": {
        "contact_cost_weight": 1e-5,
        "contact_cost_range": (0.0, 0.5),
        "ctrl_cost_weight": 0.2,
        "healthy_z_range": (0.8, 2.5),
        "include_cinert_in_observation": False,
        "include_qfrc_actuator_in_observation": False,
        "exclude_current_positions_from_observation": False,
    },
    "InvertedPendulum-v5": {"reset_noise_scale": 0.1, "frame_skip": 3},
    "InvertedDoublePendulum-v5": {"healthy_reward": 4.0, "reset_noise_scale": 0.3},
    "Reacher-v5": {
        "reward_dist_weight": 2.0,
        "reward_control_weight": 0.5,
        "frame_skip": 3,
        "max_episode_steps": 80,  # gymnasium.make's: the time limit rollouts apply themselves
    },
}
COVERED_IDS = list(NON_DEFAULT_KWARGS)


def _bits(value) -> bytes:
    return np.asarray(value, dtype=np.float64).tobytes()


def random_actions(space, seed: int):
    """Normal actions at three scales, the largest far outside the actuators' range (MuJoCo
    clamps ctrl; the control cost sees the raw action)."""
    rng = np.random.default_rng(seed)
    scales = itertools.cycle((0.3, 1.0, 4.0))

    def act(observation):
        return (rng.standard_normal(space.shape) * next(scales)).astype(np.float32)

    return act


def trained_actions(env_id: str):
    """The actions of the linear policy esmpi trained on env_id (tests/data/native)."""
    state = checkpoint.load(str(TRAINED / f"{env_id}.h5"))
    config = from_toml(state.config_toml)
    actor = actor_for(state.policy, config.obs_clip)
    theta, obs_mean, obs_std = trained_policy(state, config, best=False)
    actor.set_normalisation(obs_mean, obs_std)
    return lambda observation: actor.act(observation, theta)


def assert_episodes_match(env_id: str, kwargs: dict, policy, episodes: int = 3) -> int:
    """Play `episodes` full episodes of `policy` on esmpi's (native) stepping of env_id and on
    gymnasium.make's, asserting every observation, reward and episode end identical; returns
    the steps compared."""
    made, ours, horizon = envs.make_for_rollouts(Config(env=env_id, env_kwargs=kwargs), quiet=True)
    assert isinstance(ours, NativeStep), native.path(ours, Config(env=env_id, env_kwargs=kwargs))
    theirs = gymnasium.make(env_id, **kwargs)
    compared = 0
    for episode in range(episodes):
        observation, _ = envs.reset(ours, 100 + episode)
        reference, _ = theirs.reset(seed=100 + episode)
        assert _bits(observation) == _bits(reference)
        for step in range(1, horizon + 1):
            action = policy(observation)
            observation, reward, terminated, _, _ = ours.step(action)
            reference, want, want_terminated, want_truncated, _ = theirs.step(action.copy())
            where = f"{env_id} episode {episode} step {step}"
            assert _bits(observation) == _bits(reference), where
            assert _bits(reward) == _bits(want), f"{where}: reward {reward} != {want}"
            assert terminated == want_terminated, where
            assert (step == horizon and not terminated) == want_truncated, where
            compared += 1
            if terminated:
                break
    made.close()
    theirs.close()
    return compared


@pytest.mark.parametrize("env_id", COVERED_IDS)
def test_random_actions_step_as_gymnasium_does(env_id):
    space = gymnasium.spec(env_id).make().action_space
    assert assert_episodes_match(env_id, {}, random_actions(space, seed=1)) > 0


@pytest.mark.parametrize("env_id", COVERED_IDS)
def test_trained_policy_steps_as_gymnasium_does(env_id):
    assert assert_episodes_match(env_id, {}, trained_actions(env_id)) > 0


@pytest.mark.parametrize("env_id", COVERED_IDS)
def test_non_default_keywords_step_as_gymnasium_does(env_id):
    kwargs = NON_DEFAULT_KWARGS[env_id]
    space = gymnasium.make(env_id, **kwargs).action_space
    assert assert_episodes_match(env_id, kwargs, random_actions(space, seed=2)) > 0


def test_long_episodes_are_compared():
    """The trained policies keep the walkers up, so the comparison reaches states random
    actions never do (a Hopper with random actions falls within about 20 steps)."""
    assert assert_episodes_match("Hopper-v5", {}, trained_actions("Hopper-v5"), episodes=1) > 100


def test_other_actions_go_to_gymnasiums_step():
    """float64 actions, lists and wrong shapes: Gymnasium's step, its arithmetic and its error."""
    _, ours, _ = envs.make_for_rollouts(Config(env="HalfCheetah-v5"), quiet=True)
    theirs = gymnasium.make("HalfCheetah-v5").unwrapped
    for action in (np.full(6, 0.37), [0.1] * 6, np.full(6, 0.2, np.float16)):
        envs.reset(ours, 5)
        theirs.reset(seed=5)
        got, want = ours.step(action), theirs.step(action)
        assert _bits(got[0]) == _bits(want[0]) and _bits(got[1]) == _bits(want[1])
        assert got[4].keys() == want[4].keys()  # Gymnasium's own info: its step ran
    with pytest.raises(ValueError, match="Action dimension mismatch"):
        ours.step(np.zeros(5, np.float32))


def _stepped(env_id: str, **options):
    config = Config(env=env_id, **options)
    made, stepped, _ = envs.make_for_rollouts(config, quiet=True)
    return made, stepped, native.path(stepped, config)


def test_an_uncovered_keyword_falls_back():
    made = gymnasium.make("Hopper-v5")
    base = made.unwrapped
    assert native.why_not_native(base, {"healthy_reward": 2.0}) is None
    reason = native.why_not_native(base, {"healthy_reward": 2.0, "a_newer_keyword": 1})
    assert reason == "--env-kwargs a_newer_keyword not covered"
    assert native.stepping(base, {"a_newer_keyword": 1}) is base


def test_a_newer_gymnasium_falls_back(monkeypatch):
    """Sources other than the ones the kernels were checked against (a newer Gymnasium, or a
    patched file): Gymnasium's step, and the reason names the file."""
    monkeypatch.setitem(native.VERIFIED, "gymnasium.envs.mujoco.hopper_v5", "0" * 16)
    _, stepped, path = _stepped("Hopper-v5")
    assert not isinstance(stepped, NativeStep)
    assert "hopper_v5 differs from the Gymnasium source" in path
    monkeypatch.setitem(native.VERIFIED, "gymnasium.envs.mujoco.mujoco_env", "0" * 16)
    _, stepped, path = _stepped("HalfCheetah-v5")
    assert "mujoco_env differs" in path


def test_the_verified_sources_are_the_installed_ones():
    """The digests in native.VERIFIED are those of the installed Gymnasium: if this fails after
    an upgrade, run this file's comparisons against the new sources, then update VERIFIED."""
    for module, digest in native.VERIFIED.items():
        __import__(module)
        assert native.source_digest(module) == digest, module


@pytest.mark.parametrize(
    ("env_id", "options", "reason"),
    [
        ("HalfCheetah-v5", {"native": False}, "--no-native"),
        ("Hopper-v5", {"obs_keep": [0, 1, 2]}, "wrapped by TransformObservation"),
        ("Hopper-v5", {"behaviour": "info:x_position"}, "wrapped by"),
        ("Pusher-v5", {}, "PusherEnv has no native step"),
        ("CartPole-v1", {}, "CartPoleEnv has no native step"),
        ("toyenvs:ToyPixels", {}, "has no native step"),
    ],
)
def test_fallbacks_say_why(env_id, options, reason):
    made, stepped, path = _stepped(env_id, **options)
    assert not isinstance(stepped, NativeStep)
    assert path.startswith("Gymnasium's env.step (") and reason in path, path
    made.close()


def test_human_rendering_falls_back():
    made = gymnasium.make("Hopper-v5", render_mode="human")
    assert native.why_not_native(made.unwrapped, {}) == "render_mode 'human' draws in the step"


def test_training_says_which_path_and_native_changes_nothing(runs):
    """Two ranks, native and --no-native: the same returns and parameters, bit for bit."""
    common = ["train", "--env", "Hopper-v5", "--generations", "3", "--popsize", "16"]
    common += [*SMALL_TABLE, "--folder", str(runs)]
    shown = checked(esmpi(*common, "--run-name", "native", ranks=2)).stdout
    assert "Hopper-v5 steps through the native MuJoCo step" in shown
    shown = checked(esmpi(*common, "--run-name", "gym", "--no-native", ranks=2)).stdout
    assert "Hopper-v5 steps through Gymnasium's env.step (--no-native)" in shown
    ours = checkpoint.load(str(runs / "native" / "checkpoint.h5"))
    theirs = checkpoint.load(str(runs / "gym" / "checkpoint.h5"))
    for column in ("timesteps", "eval_return", "return_mean", "return_max"):
        assert np.array_equal(ours.history[column], theirs.history[column]), column
    assert np.array_equal(read_theta(runs / "native" / "checkpoint.h5"), theirs.theta)
    # --native is not part of what a run computes: a resume may change it
    checked(esmpi("train", "--resume", str(runs / "gym"), "--generations", "4", "--native"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sums_add_in_numpys_order(dtype):
    rng = np.random.default_rng(3)
    for count in [*range(1, 300), 1000, 4097, 70001]:
        values = (rng.standard_normal(count) * 10.0 ** rng.integers(-3, 6, count)).astype(dtype)
        assert pairwise_sum(values, 0, count) == np.sum(values), count
        assert sum_of_squares(values) == np.sum(np.square(values)), count
        if count > 5:
            assert pairwise_sum(values, 3, count - 5) == np.sum(values[3:-2]), count
    forces = np.square(rng.standard_normal((14, 6)) * 100)  # Ant's cfrc_ext: summed as one run
    assert pairwise_sum(forces.reshape(-1), 0, forces.size) == np.sum(forces)


def test_clip_is_numpys_clip():
    special = [np.nan, -np.inf, np.inf, -0.0, 0.0, -10.0, 10.0, 5e-324, -3.0, 11.0]
    bounds = [-10.0, -0.0, 0.0, 1.0, -2.0]
    for value, low, high in itertools.product(special, bounds, bounds):
        want = np.clip(np.full(9, value), low, high)[0]
        assert _bits(clip(value, low, high)) == _bits(want), (value, low, high)
