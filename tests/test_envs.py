"""Environments: every kind of id, the stepping path beneath Gymnasium's checks, and quietness."""

import os
import subprocess
import sys

import gymnasium
import numpy as np
import pytest

from conftest import SMALL_TABLE, child_environment, train_on_1_2_3_ranks_and_resume
from esmpi import envs, presets
from esmpi.config import Config, UsageError
from esmpi.policies import actor_for, initial_theta, spec_for_spaces
from esmpi.rollout import EpisodeRules, run_episode


def _returns(env, horizon, spec, theta, seeds):
    actor = actor_for(spec)
    return [run_episode(env, actor, theta, seed, horizon) for seed in seeds]


@pytest.mark.parametrize(
    "env_id",
    [
        "CartPole-v1",
        "Pendulum-v1",
        "LunarLander-v3",
        "HalfCheetah-v5",
        "Hopper-v5",
        "AntBulletEnv-v0",
        "FrozenLake-v1",
    ],
)
def test_unwrapped_stepping_gives_the_same_returns_as_gymnasium(env_id):
    """Our own time limit beneath TimeLimit/OrderEnforcing/PassiveEnvChecker changes nothing."""
    config = Config(env=env_id, max_steps=0 if "Bullet" not in env_id else 200)
    wrapped = envs.make_env(env_id)
    spec = spec_for_spaces(wrapped.observation_space, wrapped.action_space, config)
    theta = initial_theta(spec, seed=1) * 20
    envs.first_reset(wrapped, 0)
    stepped, limit = envs.unwrapped_for_rollouts(wrapped)
    horizon = envs.horizon_for(limit, config.max_steps)
    assert stepped is wrapped.unwrapped and limit == wrapped.spec.max_episode_steps
    ours = _returns(stepped, horizon, spec, theta, [11, 12])
    again = envs.make_env(env_id)
    envs.first_reset(again, 0)
    theirs = _returns(again, horizon, spec, theta, [11, 12])
    assert ours == theirs


@pytest.mark.parametrize(
    "env_id, in_place",
    [
        ("CartPole-v1", True),
        ("Acrobot-v1", True),
        ("MountainCarContinuous-v0", True),
        ("LunarLander-v3", True),
        ("BipedalWalker-v3", True),
        ("CarRacing-v3", True),  # through its preset's grayscale, resize and frame stack
        ("Hopper-v5", True),
        ("FrozenLake-v1", True),
        ("Blackjack-v1", True),
        ("AntBulletEnv-v0", False),  # pybullet seeds its robot's own generator too
    ],
)
def test_seeded_reset_is_gymnasiums(env_id, in_place):
    """envs.reset(env, seed) gives the episode env.reset(seed=seed) gives on a new environment
    after its first reset (as a rank's): the same observations, rewards and ends under the same
    actions, for several seeds in turn, and the same np_random_seed; Gymnasium's own
    environments get it without a new generator."""
    config, _ = presets.resolve({"env": env_id})
    _, ours, _ = envs.make_for_rollouts(config, quiet=True)
    envs.first_reset(ours, 0)
    actions = ours.action_space
    actions.seed(1)
    for seed in (7, 2**31 - 1, 123456):
        _, theirs, _ = envs.make_for_rollouts(config, quiet=True)
        envs.first_reset(theirs, 0)
        generator = ours.unwrapped.np_random
        first, _ = envs.reset(ours, seed)
        assert (ours.unwrapped.np_random is generator) == in_place
        expected, _ = theirs.reset(seed=seed)
        assert np.array_equal(first, expected)
        assert ours.unwrapped.np_random_seed == theirs.unwrapped.np_random_seed
        for _ in range(40):
            action = actions.sample()
            step, their_step = ours.step(action), theirs.step(action)
            assert np.array_equal(step[0], their_step[0]) and step[1:4] == their_step[1:4]
            if step[2] or step[3]:
                break


@pytest.mark.parametrize(
    "env_id, max_steps",
    [
        ("BipedalWalker-v3", 0),
        ("LunarLander-v3", 0),
        ("CarRacing-v3", 150),
        ("HalfCheetah-v5", 300),
        ("Hopper-v5", 0),
        ("AntBulletEnv-v0", 300),
        ("ALE/Pong-v5", 300),
    ],
)
def test_an_episode_depends_on_its_seed_alone_not_on_the_episodes_before(env_id, max_steps):
    """Gymnasium's BipedalWalker keeps one Box2D world for all its episodes, and what Box2D
    keeps from the bodies of earlier episodes changes later ones: an episode then depends on
    which episodes its rank ran before, so on the number of ranks and on timing. envs.reset
    gives each episode a new world (LunarLander makes one itself). The other families are here
    so that kept state of their own is caught the same way: CarRacing (Box2D too), MuJoCo
    through the native step, PyBullet and the Arcade Learning Environment, each with its
    preset's pipeline (frames, actions); max_steps keeps the slow ones short."""
    config, _ = presets.resolve({"env": env_id, "max_steps": max_steps})
    _, env, horizon = envs.make_for_rollouts(config, quiet=True)
    spec = spec_for_spaces(env.observation_space, env.action_space, config)
    theta = initial_theta(spec, seed=1) * 3  # a flailing policy: legs hit the ground often
    actor, rules = _Watching(actor_for(spec)), EpisodeRules.from_config(config)

    def episode(seed):
        actor.seen = []
        score = run_episode(env, actor, theta, seed, horizon, rules)
        return score, actor.seen

    envs.first_reset(env, 0)  # as every rank does first (PyBullet's first reset differs)
    first = episode(7)
    others = [episode(seed) for seed in (1, 2, 3)]
    assert all(other[1] != first[1] for other in others)  # the seed matters
    assert episode(7) == first


class _Watching:
    """An actor that keeps every observation it acts on, so that episodes compare whole."""

    def __init__(self, actor):
        self.actor, self.seen = actor, []

    def reset(self, seed):
        self.actor.reset(seed)

    def act(self, obs, theta):
        self.seen.append(obs.tobytes())
        return self.actor.act(obs, theta)


@pytest.mark.mpi
def test_a_box2d_walker_trains_the_same_on_1_2_and_3_ranks_and_resumed(runs):
    """BipedalWalker-v3 through training: whichever rank ran which episodes before, the same
    bits (before each episode had a new Box2D world, 1 and 2 ranks parted in the first
    generation's evaluation)."""
    train = ["train", "--env", "BipedalWalker-v3", "--popsize", "8", "--max-steps", "200"]
    train_on_1_2_3_ranks_and_resume([*train, *SMALL_TABLE], runs)


def test_env_kwargs_and_max_steps():
    env = envs.make_env("Pendulum-v1", {"g": 3.0})
    assert env.unwrapped.g == 3.0
    assert envs.horizon_for(200, 50) == 50 and envs.horizon_for(200, 0) == 200


def test_user_class_by_module_and_name():
    env = envs.make_env("toyenvs:ToyTarget", {"target": 2.5})
    assert env.target == 2.5
    stepped, limit = envs.unwrapped_for_rollouts(env)
    assert stepped is env and limit == 1 << 62


def test_unknown_id_suggests_close_names():
    with pytest.raises(UsageError, match="Did you mean HalfCheetah-v5"):
        envs.make_env("HalfCheeta-v5")


def test_unsupported_spaces_are_refused():
    env = envs.make_env("toyenvs:DictObservations")
    with pytest.raises(UsageError, match="Observation space Dict.* is not supported"):
        spec_for_spaces(env.observation_space, env.action_space, Config())
    box = gymnasium.spaces.Box(-1, 1, (2,))
    with pytest.raises(UsageError, match="Action space MultiBinary"):
        spec_for_spaces(box, gymnasium.spaces.MultiBinary(3), Config())
    with pytest.raises(UsageError, match="--action-map tanh needs finite action bounds"):
        spec_for_spaces(box, gymnasium.spaces.Box(-np.inf, np.inf, (2,)), Config(action_map="tanh"))


def test_discrete_observations_are_one_hot():
    env = envs.make_env("FrozenLake-v1")
    spec = spec_for_spaces(env.observation_space, env.action_space, Config(hidden=[4]))
    assert spec.obs_encoding == "onehot" and spec.sizes == (16, 4, 4) and spec.output == "argmax"


def test_obs_keep_hides_the_other_elements_of_the_observation():
    """CartPole seen without its velocities (--obs-keep 0,2): the kept elements are the full
    observation's, episode for episode; a bad index or a non-flat space is one sentence."""
    _, full, _ = envs.make_for_rollouts(Config(env="CartPole-v1"), quiet=True)
    _, kept, _ = envs.make_for_rollouts(Config(env="CartPole-v1", obs_keep=[0, 2]), quiet=True)
    assert kept.observation_space.shape == (2,)
    assert np.array_equal(kept.observation_space.low, full.observation_space.low[[0, 2]])
    seen, _ = kept.reset(seed=4)
    whole, _ = full.reset(seed=4)
    for _ in range(20):
        assert np.array_equal(seen, whole[[0, 2]])
        seen = kept.step(1)[0]
        whole = full.step(1)[0]
    with pytest.raises(UsageError, match="indices 0 to 3"):
        envs.make_for_rollouts(Config(env="CartPole-v1", obs_keep=[4]), quiet=True)
    with pytest.raises(UsageError, match="flat Box observation"):
        envs.make_for_rollouts(Config(env="toyenvs:DictObservations", obs_keep=[0]), quiet=True)


def test_start_up_chatter_stays_off_the_console_and_out_of_the_folder(tmp_path):
    """pybullet's banner and MuJoCo's log file must not reach the user."""
    code = (
        "from esmpi import envs\n"
        "for name in ('AntBulletEnv-v0', 'HalfCheetah-v5'):\n"
        "    env = envs.make_env(name, quiet=True)\n"
        "    envs.first_reset(env, 0)\n"
        "print('made')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "made\n"
    assert "pybullet build time" not in result.stderr and "argv[0]" not in result.stderr
    assert "settotalmass" not in result.stderr
    assert os.listdir(tmp_path) == []


def test_native_errors_are_still_shown(capfd):
    with pytest.raises(RuntimeError), envs.native_output_captured():
        os.write(2, b"native trouble\n")
        raise RuntimeError("boom")
    assert "native trouble" in capfd.readouterr().err
