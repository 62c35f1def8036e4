"""Presets and what they set: CarRacing (CNN on pixels, per-dimension action maps, early stop),
the PyBullet Ant (burn-in, distance fitness), Atari; the CNN kernel against its numpy twin; frame
stacking; and 2-rank smoke runs of the real command line."""

import json

import gymnasium
import h5py
import imageio
import numpy as np
import pytest

from conftest import SMALL_TABLE, checked, esmpi
from esmpi import checkpoint, envs, kernels, presets, reference
from esmpi.config import Config, UsageError, from_mapping, from_toml, option_arguments
from esmpi.policies import PolicySpec, actor_for, initial_theta, spec_for_spaces
from esmpi.rollout import PROGRESS_TERM, EpisodeRules, run_episode


class Recorder(gymnasium.Wrapper):
    """Keeps every action, reward and (PyBullet) progress term the episode produced."""

    def __init__(self, env):
        super().__init__(env)
        self.actions, self.rewards, self.progress = [], [], []

    def step(self, action):
        result = self.env.step(action)
        self.actions.append(np.array(action, dtype=np.float64))
        self.rewards.append(float(result[1]))
        terms = getattr(self.env.unwrapped, "rewards", None)
        self.progress.append(terms[PROGRESS_TERM] if terms else np.nan)
        return result


def _prepared(values):
    """(config, stepped env, spec, time limit) for option values, with the env's preset."""
    config, _ = presets.resolve(values)
    env = envs.make_env(config.env, envs.env_kwargs_for(config), quiet=True)
    stepped, limit = envs.for_rollouts(env, config)
    spec = spec_for_spaces(stepped.observation_space, stepped.action_space, config)
    envs.first_reset(env, 0)
    return config, stepped, spec, limit


# --- presets ---------------------------------------------------------------------------------


def test_presets_are_matched_by_id_then_pattern():
    assert presets.preset_for("AntBulletEnv-v0").values["burn_in"] == 40
    assert presets.preset_for("HopperBulletEnv-v0").values["action_map"] == "tanh"
    assert "burn_in" not in presets.preset_for("HopperBulletEnv-v0").values
    assert presets.preset_for("Walker2DBulletEnv-v0").pattern == "*BulletEnv-v0"
    assert presets.preset_for("HalfCheetahBulletEnv-v0").values["strategy"] == "ars"
    assert presets.preset_for("HalfCheetahBulletEnv-v0", "openai-es").values["sigma"] == 0.1
    assert presets.preset_for("BipedalWalker-v3").values["episode_cap"] == 400
    walker, _ = presets.resolve({"env": "BipedalWalker-v3", "strategy": "pgpe"})
    assert walker.episode_cap == 0  # its cap was measured with openai-es alone
    assert presets.preset_for("ALE/Breakout-v5").values["frame_stack"] == 4
    assert presets.preset_for("CartPole-v1") is None


def test_a_flag_or_toml_value_overrides_the_preset_and_the_alias_is_noted():
    config, notes = presets.resolve({"env": "CarRacing-v2", "early_stop": 5, "policy": "mlp"})
    assert config.env == "CarRacing-v3" and "CarRacing-v2 is now CarRacing-v3" in notes[0]
    assert config.early_stop == 5 and config.policy == "mlp"  # given: kept
    assert config.action_map == "tanh,sigmoid,sigmoid" and config.grayscale  # from the preset
    assert "--early-stop" not in notes[1] and "--grayscale" in notes[1]
    plain, notes = presets.resolve({"env": "CartPole-v1"})
    assert plain == Config() and notes == []


def test_esmpi_envs_lists_every_preset():
    out = checked(esmpi("envs")).stdout
    for preset in presets.PRESETS:
        assert preset.pattern in out and presets.describe(preset.values) in out


def test_the_flags_esmpi_envs_prints_set_the_presets_values():
    """What `esmpi envs` says a preset sets is a command line that sets it (lists as '32,32')."""
    from esmpi.cli import _explicit_config, build_parser

    for preset in presets.PRESETS:
        args = build_parser().parse_args(["train", *presets.describe(preset.values).split()])
        given = {name: value for name, value in _explicit_config(args).items() if value is not None}
        assert from_mapping(given) == from_mapping(preset.values), preset.pattern


# --- kernels -----------------------------------------------------------------------------------


def _cnn_spec(obs_shape, bias, activation, output, n_out=3, scale=1.0 / 255.0):
    from esmpi.policies.cnn import cnn_features

    bounds = {}
    if output != "argmax":
        bounds = dict(
            action_low=tuple(np.linspace(-2, 0, n_out)),
            action_high=tuple(np.linspace(0.5, 3, n_out)),
            action_shape=(n_out,),
        )
    return PolicySpec(
        sizes=(cnn_features(obs_shape), 16, 8, n_out),
        activation=activation,
        bias=bias,
        output=output,
        obs_encoding="pixels",
        kind="cnn",
        obs_shape=obs_shape,
        obs_scale=scale,
        **bounds,
    )


@pytest.mark.parametrize(
    "obs_shape, dtype, bias, activation, output",
    [
        ((1, 20, 24, 1), np.uint8, False, "tanh", "tanh,sigmoid,sigmoid"),
        ((4, 18, 21, 1), np.uint8, True, "relu", "argmax"),
        ((2, 23, 17, 3), np.float32, True, "tanh", "clip"),
        ((1, 96, 96, 1), np.uint8, False, "tanh", "tanh,sigmoid,clip"),
    ],
)
def test_cnn_forward_equals_numpy_reference(obs_shape, dtype, bias, activation, output):
    spec = _cnn_spec(obs_shape, bias, activation, output)
    rng = np.random.default_rng(sum(obs_shape))
    actor = actor_for(spec)
    for _ in range(5):
        theta = (rng.standard_normal(spec.n_params) * 0.3).astype(np.float32)
        obs = rng.integers(0, 256, obs_shape).astype(dtype)
        expected = reference.cnn_step(obs, spec, theta)
        got = actor.act(obs, theta)
        if output == "argmax":
            assert got == expected
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_cnn_parameter_count_and_layout():
    spec = _cnn_spec((4, 84, 84, 1), False, "tanh", "argmax", n_out=6)
    # conv1 3x3x4x6, conv2 5x5x6x8; 84 -> 82 -> 41 -> 19 -> 9: 9*9*8 features
    assert spec.sizes[0] == 9 * 9 * 8
    assert spec.n_params == 3 * 3 * 4 * 6 + 5 * 5 * 6 * 8 + 648 * 16 + 16 * 8 + 8 * 6
    assert initial_theta(spec, 0).size == spec.n_params


def test_mlp_per_dimension_action_maps_equal_reference():
    spec = PolicySpec(
        sizes=(5, 7, 3),
        activation="tanh",
        bias=True,
        output="tanh,sigmoid,clip",
        obs_encoding="box",
        action_low=(-1.0, 0.0, -0.5),
        action_high=(1.0, 1.0, 0.5),
        action_shape=(3,),
    )
    rng = np.random.default_rng(3)
    actor = actor_for(spec)
    for _ in range(20):
        theta = (rng.standard_normal(spec.n_params) * 2).astype(np.float32)
        obs = rng.standard_normal(5)
        layers = reference.float64_layers(spec, theta)
        x = np.clip(obs, -5, 5)
        for i, (w, b) in enumerate(layers):
            x = x @ w + b
            x = np.tanh(x) if i < len(layers) - 1 else x
        expected = reference.map_outputs(x, spec.output, spec.action_low, spec.action_high)
        np.testing.assert_allclose(actor.act(obs, theta), expected, rtol=1e-5, atol=1e-6)
    assert kernels.OUT_SIGMOID in spec.output_codes


def test_action_map_per_dimension_must_match_the_action_space():
    box = gymnasium.spaces.Box(-1, 1, (4,))
    with pytest.raises(UsageError, match="names 3 mappings"):
        spec_for_spaces(box, gymnasium.spaces.Box(-1, 1, (2,)), Config(action_map="tanh,tanh,clip"))
    with pytest.raises(UsageError, match="--action-map takes"):
        presets.resolve({"action_map": "tanh,squash"})


# --- observation pipelines -------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, obs_space_shape, obs_shape",
    [
        ({"grayscale": True, "frame_stack": 3}, (3, 96, 96), (3, 96, 96, 1)),
        ({"grayscale": True, "frame_stack": 4, "resize": 48}, (4, 48, 48), (4, 48, 48, 1)),
        ({"grayscale": False, "frame_stack": 2}, (2, 96, 96, 3), (2, 96, 96, 3)),
        ({"grayscale": False, "frame_stack": 1}, (96, 96, 3), (1, 96, 96, 3)),
    ],
)
def test_frame_stacking_shapes(values, obs_space_shape, obs_shape):
    config, stepped, spec, limit = _prepared({"env": "CarRacing-v3", **values})
    assert stepped.observation_space.shape == obs_space_shape and spec.obs_shape == obs_shape
    assert limit == 1000  # found beneath the pipeline
    obs, _ = stepped.reset(seed=1)
    assert obs.shape == obs_space_shape
    action = actor_for(spec).act(obs, initial_theta(spec, 0))
    assert action.shape == (3,)
    if config.frame_stack > 1:  # padded with the reset frame; each step shifts the stack by one
        assert (obs == obs[-1]).all()
        later = obs
        for _ in range(60):  # past CarRacing's zoom-in, where frames change
            previous, (later, *_) = later, stepped.step(action)
        assert (later[:-1] == previous[1:]).all() and (later[-1] != previous[-1]).any()


def test_atari_pipeline_fires_and_stacks():
    config, stepped, spec, limit = _prepared({"env": "ALE/Breakout-v5"})
    assert config.env_kwargs == {} and stepped.unwrapped._frameskip == 1
    assert type(stepped.env).__name__ == "FireOnReset"
    assert stepped.observation_space.shape == (4, 84, 84) and spec.output == "argmax"
    assert envs.horizon_for(limit, config.max_steps) == 27000


# --- episode rules ---------------------------------------------------------------------------


def test_carracing_actions_are_bounded_and_20_negative_steps_end_the_episode():
    config, stepped, spec, _ = _prepared({"env": "CarRacing-v3"})
    recorder = Recorder(stepped)
    actor, rng = actor_for(spec), np.random.default_rng(0)
    theta = (rng.standard_normal(spec.n_params) * 0.5).astype(np.float32)
    total, steps = run_episode(recorder, actor, theta, 3, 1000, EpisodeRules.from_config(config))
    actions = np.array(recorder.actions)
    assert steps == len(actions) < 1000 and total == pytest.approx(sum(recorder.rewards))
    assert (np.abs(actions[:, 0]) <= 1).all() and (
        (actions[:, 1:] >= 0) & (actions[:, 1:] <= 1)
    ).all()
    assert (actions[:, 1:] > 0).all()  # sigmoid, not clip: never exactly at the lower bound
    negative = np.array(recorder.rewards) < 0
    assert negative[-21:].all()  # the run of 21 negative rewards that ended it
    runs = np.convolve(negative, np.ones(21), mode="valid")
    assert (runs[:-1] < 21).all()  # and none before


def test_ant_burn_in_and_distance_fitness():
    config, stepped, spec, _ = _prepared({"env": "AntBulletEnv-v0"})
    rules = EpisodeRules.from_config(config)
    recorder = Recorder(stepped)
    # The preset's linear policy starts at zero: random weights make the ant move.
    theta = np.random.default_rng(0).standard_normal(spec.n_params).astype(np.float32)
    total, steps = run_episode(recorder, actor_for(spec), theta, 5, 300, rules)
    actions = np.array(recorder.actions)
    assert steps == len(actions) > 40  # the resting ant's 'terminated' is ignored
    assert not actions[:40].any() and actions[40:].any(axis=1).all()
    progress = np.array(recorder.progress)
    assert total == pytest.approx(progress[40:].sum())  # burn-in rewards do not count
    assert total != pytest.approx(sum(recorder.rewards[40:]))
    if steps < 300:  # ended by the rule: after step 200, more than 30 negative progress steps
        assert steps > 200 and (progress[-31:] < 0).all()
    # Why the preset ignores 'terminated': the resting ant is 'dead' to the env within the burn-in.
    assert run_episode(stepped, actor_for(spec), theta, 5, 300, EpisodeRules(burn_in=40)) == (
        0.0,
        pytest.approx(20, abs=10),
    )


# --- smoke runs ------------------------------------------------------------------------------


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id, steps, given",
    [
        ("CarRacing-v3", 60, {"action_map": "tanh,sigmoid,clip"}),
        ("AntBulletEnv-v0", 250, {"top_directions": 1}),
        ("HopperBulletEnv-v0", 200, {}),
        ("ALE/Pong-v5", 60, {}),
    ],
)
def test_two_generation_smoke_run_on_two_ranks(runs, env_id, steps, given):
    result = checked(
        esmpi(
            "train",
            "--env",
            env_id,
            "--generations",
            "2",
            "--popsize",
            "4",
            "--max-steps",
            str(steps),
            "--print-every",
            "1",
            "--folder",
            str(runs),
            "--run-name",
            "smoke",
            *SMALL_TABLE,
            *("--final-episodes", "2"),
            *option_arguments(given),
            ranks=2,
        )
    )
    assert f"preset {presets.preset_for(env_id).pattern} sets" in result.stderr
    assert "gen     2/2" in result.stdout
    path = runs / "smoke" / "checkpoint.h5"
    with h5py.File(path, "r") as h5:
        config = from_toml(h5.attrs["config"])
        assert h5["history"].shape == (2,)
        assert h5["policy"].attrs["kind"] == config.policy
    expected, _ = presets.resolve({"env": env_id, "max_steps": steps, "final_episodes": 2, **given})
    assert all(getattr(config, name) == value for name, value in given.items())  # over the preset
    assert config.replace(
        generations=expected.generations,
        popsize=4,
        print_every=1,
        folder=expected.folder,
        run_name=expected.run_name,
        noise_table_size=expected.noise_table_size,
    ) == expected.replace(popsize=4, print_every=1)
    if config.policy == "cnn":  # exported as a CNN (test_results checks the README's runner)
        from esmpi.export import export

        arrays = export(str(path), str(runs / "policy.npz"))
        spec = checkpoint.load(str(path)).policy
        assert str(arrays["kind"]) == "cnn" and tuple(arrays["obs_shape"]) == spec.obs_shape
        # The video shows what a person sees, the environment's own RGB frame, not the policy's
        # small grayscale input: one frame after the reset, then one per step.
        video = runs / "episode.mp4"
        shown = checked(
            esmpi("eval", str(runs / "smoke"), "--episodes", "1", "--video", str(video), "--json")
        )
        record = json.loads(shown.stdout)
        assert record["video_frames"] == record["lengths"][0] + 1
        frame = imageio.get_reader(str(video)).get_data(0)
        assert frame.shape[2] == 3 and frame.shape[:2] != spec.obs_shape[1:3]
        assert frame.std() > 0  # a picture, not a blank frame


def test_a_preset_measured_with_one_strategy_leaves_the_others_their_defaults():
    tuned, notes = presets.resolve({"env": "HalfCheetah-v5"})
    assert (tuned.sigma, tuned.lr, tuned.action_map) == (0.02, 0.01, "tanh")
    assert (tuned.episode_cap, tuned.cap_raise) == (125, 1.001)
    assert "preset HalfCheetah-v5 sets --action-map tanh" in notes[0]
    config, notes = presets.resolve({"env": "HalfCheetah-v5", "strategy": "snes"})
    assert config.action_map == "clip" and config.lr == 1.0  # snes's own lr, not 0.01
    assert config.episode_cap == 0  # whole episodes: the cap was measured with openai-es, pgpe
    assert "measured with openai-es, pgpe only; snes keeps its own defaults" in notes[0]
    assert "runs  " in presets.table() and "for   --strategy openai-es" in presets.table()
    # PGPE's own preset has the same episode rules and leaves PGPE its search settings.
    config, _ = presets.resolve({"env": "HalfCheetah-v5", "strategy": "pgpe"})
    assert (config.action_map, config.episode_cap, config.cap_raise) == ("tanh", 125, 1.001)
    assert (config.optimizer, config.lr) == ("clipup", 0.075)  # pgpe's own, not 0.01


def test_a_preset_may_choose_the_strategy_and_tunes_it_alone():
    """Hopper-v5's first preset runs ARS with the paper's Hopper settings; OpenAI-ES asked for
    gets its own, another strategy all its own defaults; a suite row without a strategy runs the
    first preset's."""
    config, notes = presets.resolve({"env": "Hopper-v5", "total_steps": 1000})
    assert (config.strategy, config.policy, config.popsize) == ("ars", "linear", 16)
    assert (config.top_directions, config.lr, config.sigma) == (4, 0.01, 0.025)
    assert config.reward_shift == 0.75 and "sets --strategy ars" in notes[0]
    assert presets.default_strategy("Hopper-v5") == "ars"
    assert presets.default_strategy("Walker2d-v5") == "pgpe"
    assert presets.default_strategy("Swimmer-v5") == "openai-es"
    assert presets.resolve({"env": "Swimmer-v5"})[0].popsize == 16  # openai-es, 4x the updates
    config, _ = presets.resolve({"env": "Pusher-v5"})  # ARS with 4 directions, all kept
    assert (config.strategy, config.policy) == ("ars", "linear")
    assert (config.popsize, config.top_directions) == (8, 4)
    config, _ = presets.resolve({"env": "InvertedDoublePendulum-v5"})  # 32 directions, all kept
    assert (config.strategy, config.policy, config.popsize) == ("ars", "linear", 64)
    assert (config.top_directions, config.lr, config.sigma) == (0, 0.02, 0.03)  # ars's own
    config, _ = presets.resolve({"env": "InvertedDoublePendulum-v5", "strategy": "openai-es"})
    assert (config.policy, config.action_map) == ("mlp", "tanh")
    assert (config.sigma, config.lr) == (0.02, 0.01)
    config, notes = presets.resolve({"env": "Hopper-v5", "strategy": "snes"})
    assert (config.policy, config.sigma, config.reward_shift) == ("mlp", 0.1, 0.0)
    assert "measured with ars, openai-es only" in notes[0]
    # OpenAI-ES asked for gets its own Hopper preset: its network, the paper's sigma and lr.
    config, _ = presets.resolve({"env": "Hopper-v5", "strategy": "openai-es"})
    assert (config.policy, config.popsize, config.sigma, config.lr) == ("mlp", 64, 0.02, 0.01)
    assert (config.action_map, config.reward_shift) == ("tanh", 1.0)
    # Walker2d-v5's runs PGPE with a growing population (pgpelib's settings); openai-es asked for
    # keeps its own network and a fixed population.
    config, _ = presets.resolve({"env": "Walker2d-v5"})
    assert (config.strategy, config.policy, config.optimizer) == ("pgpe", "linear", "clipup")
    assert (config.popsize, config.population_steps, config.popsize_max) == (100, 75_000, 800)
    assert (config.sigma, config.lr) == (0.022, 0.0075)
    assert (config.max_speed, config.reward_shift) == (0.015, 1.0)
    config, _ = presets.resolve({"env": "Walker2d-v5", "strategy": "openai-es"})
    assert (config.policy, config.population_steps, config.reward_shift) == ("mlp", 0, 0.0)


def test_an_environment_may_have_a_preset_for_each_strategy():
    """Pendulum-v1 has three presets: `--env` alone and an unmeasured strategy get the first
    (openai-es's), PGPE and SNES each get their own whole; the note of an unmeasured strategy
    names every strategy the id's presets were measured with."""
    first, pgpe, snes = presets.presets_of("Pendulum-v1")
    assert [p.strategies for p in (first, pgpe, snes)] == [("openai-es",), ("pgpe",), ("snes",)]
    assert presets.preset_for("Pendulum-v1") is first
    assert presets.preset_for("Pendulum-v1", "snes") is snes
    assert presets.preset_for("Pendulum-v1", "pgpe") is pgpe
    assert presets.preset_for("Pendulum-v1", "sep-cma-es") is first
    assert presets.default_strategy("Pendulum-v1") == "openai-es"
    config, notes = presets.resolve({"env": "Pendulum-v1", "strategy": "pgpe"})
    assert (config.popsize, config.sigma, config.lr, config.max_speed) == (100, 0.13, 0.15, 0.3)
    assert (config.hidden, config.activation, config.optimizer) == ([32, 32], "relu", "clipup")
    assert config.lr_decay == Config().lr_decay  # openai-es's preset's decay is not pgpe's
    assert len(notes) == 1 and "preset Pendulum-v1 sets --popsize 100 --sigma 0.13" in notes[0]
    config, _ = presets.resolve({"env": "Pendulum-v1", "strategy": "snes"})
    assert (config.popsize, config.mirrored, config.hidden) == (16, True, [32, 32])
    assert (config.lr, config.sigma) == (1.0, Config().sigma)  # snes's own
    config, _ = presets.resolve({"env": "Pendulum-v1"})
    assert (config.strategy, config.sigma, config.lr, config.lr_decay) == (
        "openai-es",
        0.1,
        0.125,
        0.99,
    )
    config, notes = presets.resolve({"env": "Pendulum-v1", "strategy": "sep-cma-es"})
    assert config.hidden == Config().hidden and config.popsize == 0  # sep-cma-es's own
    assert "measured with openai-es, pgpe, snes only; sep-cma-es keeps its own defaults" in notes[0]
    assert presets.table().count("\nPendulum-v1\n") == 3
    assert "for   --strategy pgpe (measured with it)" in presets.table()


def test_the_environments_settings_of_a_preset_reach_every_strategy():
    """AntBulletEnv-v0's preset sets ARS and names no strategies: its search settings stay with
    ARS, while how the ant's episodes run and are scored (burn-in, distance fitness, early stop,
    tanh actions) is the environment's and reaches openai-es too, which keeps its own search
    settings and policy."""
    config, notes = presets.resolve({"env": "AntBulletEnv-v0"})
    assert (config.strategy, config.policy, config.popsize) == ("ars", "linear", 60)
    assert (config.top_directions, config.sigma, config.lr) == (10, 0.025, 0.02)
    assert (config.burn_in, config.fitness, config.ignore_terminated) == (40, "progress", True)
    assert len(notes) == 1 and "sets --strategy ars --popsize 60 --top-directions 10" in notes[0]
    assert presets.default_strategy("AntBulletEnv-v0") == "ars"
    config, notes = presets.resolve({"env": "AntBulletEnv-v0", "strategy": "openai-es"})
    own = Config()
    assert (config.policy, config.popsize, config.top_directions, config.sigma, config.lr) == (
        own.policy,
        own.popsize,
        own.top_directions,
        own.sigma,
        own.lr,
    )
    assert (config.action_map, config.burn_in, config.fitness) == ("tanh", 40, "progress")
    assert (config.early_stop, config.early_stop_after, config.ignore_terminated) == (30, 200, True)
    assert "measured with ars only; openai-es keeps its own popsize, lr, sigma there" in notes[0]
    assert "sets --action-map tanh --burn-in 40 --fitness progress" in notes[1]
    assert "--sigma" not in notes[1] and "--top-directions" not in notes[1]
    shown = presets.table()
    assert "all   --action-map tanh --burn-in 40" in shown
    assert "(any strategy; the rest ars only)" in shown  # AntBulletEnv-v0
    assert "all   --action-map tanh (any strategy; the rest openai-es only)" in shown  # *Bullet
