"""Per-environment presets: the settings the environments users train on need, as data.

A preset is picked by the environment id (an exact id first, then the first matching `fnmatch`
pattern) and the strategy, and sets Config fields, the strategy among them where one is clearly
better for the environment; the TOML file and the command line override any of them. An
environment may have a preset for each strategy whose measured settings differ: `--strategy S`
gets the one measured with S, `--env` alone and any other strategy the first listed. Resolution
order: dataclass defaults < the strategy's defaults < preset < TOML file < command line. A
preset's search hyperparameters (SEARCH_SETTINGS) apply to the strategies it was measured with
(`Preset.strategies`; where it names none, the strategy it sets, OpenAI-ES where it sets none);
the other strategies keep their own defaults for them, and where the preset names its
strategies, for every setting of it. The checkpoint stores the fully resolved config, so a
resumed run does not depend on this table.

Old ids of an environment map to today's with a printed note (`ALIASES`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from esmpi import strategies
from esmpi.config import Config, from_mapping, option_arguments

# Preset values that tune the search: the strategy, its population and noise, and any strategy's
# own options (lr, optimizer, top_directions, ...). A strategy the preset was not measured with
# keeps its own defaults for them.
SEARCH_SETTINGS = frozenset(
    {"strategy", "popsize", "sigma"}.union(*(s.OPTIONS for s in strategies.REGISTRY.values()))
)


@dataclass(frozen=True)
class Preset:
    pattern: str  # an environment id, or an fnmatch pattern such as '*BulletEnv-v0'
    values: dict[str, Any] = field(default_factory=dict)  # Config field -> value
    note: str = ""  # why, in one line; `esmpi envs` shows it
    evidence: str = ""  # the measured runs behind it and where they are kept
    # Where given, the strategies the preset was measured with and applies to; the others keep
    # their own defaults for every setting of it (or get another preset of the same id, measured
    # with them). Where not, it was measured with the strategy it sets (OpenAI-ES where it sets
    # none), and every strategy gets all of it but its SEARCH_SETTINGS (how actions reach the
    # environment, how its episodes run and are scored).
    strategies: tuple[str, ...] = ()


# Suggested hyperparameters: Salimans et al.'s (sigma 0.02, Adam lr 0.01) for locomotion and
# Atari. Measured here (README, "Presets measured"): better than the defaults (sigma 0.1, lr 0.03)
# on HopperBulletEnv-v0 and Walker2DBulletEnv-v0, far worse on HalfCheetahBulletEnv-v0.
_PAPER = dict(sigma=0.02, lr=0.01)
_PIXELS = dict(policy="cnn", obs_norm=False, scale_obs=True)
_LOCOMOTION = dict(action_map="tanh", **_PAPER)
# How the PyBullet ant's episodes run and are scored (the published Ant baseline's rules).
_ANT_BULLET_EPISODES = dict(
    action_map="tanh",
    burn_in=40,
    fitness="progress",
    early_stop=30,
    early_stop_after=200,
    ignore_terminated=True,
)

# Reacher-v5's and Pusher-v5's search (measured with openai-es): the paper's settings with tanh
# actions, the lr decaying 0.997 a generation, since with a constant lr the policy drifts from its
# best on these tasks, whose rewards are small distances.
_REACHING = dict(_LOCOMOTION, lr_decay=0.997)

# How HalfCheetah-v5's episodes run in training (measured with openai-es and pgpe): tanh actions,
# the population's episodes capped at 125 steps, the cap one step longer each generation.
_CHEETAH_EPISODES = dict(action_map="tanh", episode_cap=125, cap_raise=1.001)

PRESETS = (
    Preset(
        "CarRacing-v3",
        dict(
            **_PIXELS,
            grayscale=True,
            action_map="tanh,sigmoid,sigmoid",
            early_stop=20,
            popsize=32,
            sigma=0.05,
            lr=0.01,
        ),
        "the published pixel baseline: CNN on 96x96 grayscale frames; steer in [-1, 1] by "
        "tanh, gas and brake in [0, 1] by sigmoid; an episode ends after more than 20 "
        "consecutive steps with negative reward (off the track or standing); popsize 32, as "
        "CarRacing draws every frame with pygame (~15 ms a step), sigma 0.05, lr 0.01",
        "README 'Presets': one seed, 2 ranks, 10 minutes (75k steps): best eval 46.5, the "
        "first tiles driven; not yet measured to a score",
    ),
    Preset(
        "AntBulletEnv-v0",
        dict(
            strategy="ars",
            popsize=60,
            top_directions=10,
            lr=0.02,
            sigma=0.025,
            **_ANT_BULLET_EPISODES,
        ),
        "ARS V2-t (a linear policy on normalised observations, N = 30 directions, the best b = "
        "10 kept, step 0.02, noise 0.025) under the published Ant baseline's episode rules, "
        "which every strategy gets: tanh actions; 40 zero-action steps first so that the ant "
        "settles on the floor; fitness is the distance walked (the progress term of the "
        "reward); after step 200 an episode ends after more than 30 consecutive steps of "
        "negative progress; the env's own end (body below 0.26, where a resting ant lies) is "
        "ignored",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 1e7 steps, "
        "seeds 0-3, final eval 348.5 [255.2, 459.8], every seed walking (openai-es with sigma "
        "0.02, lr 0.01, the preset until 2026-12-04: 215.4 on the same seeds, 236.6 [29.2, "
        "436.2] over seeds 0-5; ARS with the Ant-v5 preset's 60 directions: 204.4 on the same "
        "seeds)",
    ),
    Preset(
        "HalfCheetah-v5",
        {**_LOCOMOTION, **_CHEETAH_EPISODES},
        "Gymnasium's MuJoCo HalfCheetah: tanh-rescaled actions, sigma 0.02 and lr 0.01 (Salimans "
        "et al.'s settings for MuJoCo), and the population's episodes capped at 125 steps, the "
        "cap one step longer each generation (about 400 at 5e6 steps; evaluations play the "
        "whole 1,000): the cheetah never ends an episode early and its gait repeats, so short "
        "episodes judge a gait about as well as whole ones and give several times the updates "
        "in the same steps",
        "jobs/suites/presets.toml, README 'Presets measured': 5e6 steps, final eval 5414 "
        "[4758, 6140] on seeds 0-2 and 5041 over seeds 0-6, where whole episodes (the preset "
        "until 2026-12-05) gave 4096 and 3962, caps of 250 and 500 4957 and 4612 over seeds 0-6 "
        "(the defaults: 679 [455, 823] at 2e6)",
        strategies=("openai-es",),
    ),
    Preset(
        "HalfCheetah-v5",
        _CHEETAH_EPISODES,
        "Gymnasium's MuJoCo HalfCheetah for PGPE: the openai-es preset's episode rules (tanh "
        "actions, the population's episodes capped at 125 steps, one step longer each "
        "generation) with PGPE's own search settings (ClipUp, popsize 64, sigma from 0.02 "
        "adapted per parameter)",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 5e6 steps, "
        "final eval 5887 [5232, 6539] on seeds 0-2 and 5462 [4549, 6539] over seeds 0-6, where "
        "the openai-es preset gave 5041 over seeds 0-6; PGPE with whole episodes and Salimans et "
        "al.'s sigma and lr: 1171 on seeds 0-2 (PGPE's defaults: 1770 at 2e6)",
        strategies=("pgpe",),
    ),
    Preset(
        "Hopper-v5",
        dict(
            strategy="ars",
            popsize=16,
            top_directions=4,
            lr=0.01,
            sigma=0.025,
            reward_shift=0.75,
        ),
        "Gymnasium's MuJoCo Hopper: ARS V2-t with the paper's Hopper settings (a linear policy "
        "on normalised observations, N = 8 directions, the best b = 4 kept, step 0.01, noise "
        "0.025) and a shift of 0.75 a step in training: the paper's 1 removes the whole alive "
        "bonus, which makes standing still a local optimum, but then about one seed in five "
        "settled on a slow hop near 2,500; with a quarter of the bonus kept every seed of five "
        "found the fast one, while with half of it one seed in five barely moved",
        "jobs/suites/presets.toml, README 'Presets measured': 1e7 steps, final eval 3486 [3279, "
        "3678] over seeds 0-4, where the paper's shift of 1 gave 3140 [2476, 3608] and 0.5 gave "
        "2877 [1154, 3535] (openai-es with its defaults: 1016 at 7e5 steps, seed 0)",
        strategies=("ars",),
    ),
    Preset(
        "Hopper-v5",
        dict(**_LOCOMOTION, reward_shift=1.0),
        "Gymnasium's MuJoCo Hopper for OpenAI-ES: tanh-rescaled actions, Salimans et al.'s "
        "sigma 0.02 and lr 0.01, and a shift of 1 a step in training, which removes the alive "
        "bonus: without it the same settings stand nearly still (the bonus and little else)",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 1e7 steps, "
        "final eval 3486 [3327, 3586] on seeds 0-2 (ARS's preset: 3492 on the same seeds) and "
        "3502 [3327, 3672] over seeds 0-4 (ARS's preset: 3486), every final episode the whole "
        "1,000 steps; without the shift 1171 (seed 0), openai-es's defaults 1016 at 7e5 steps "
        "(seed 0)",
        strategies=("openai-es",),
    ),
    Preset(
        "Ant-v5",
        dict(
            strategy="ars",
            popsize=120,
            top_directions=20,
            lr=0.015,
            sigma=0.025,
            reward_shift=1.0,
        ),
        "Gymnasium's MuJoCo Ant: ARS V2-t with the paper's Ant settings (a linear policy on "
        "normalised observations, N = 60 directions, the best b = 20 kept, step 0.015, noise "
        "0.025) and its shift of 1 a step in training, which removes the alive bonus",
        "jobs/suites/presets.toml, README 'Presets measured': 3e7 steps, 3 seeds, final eval "
        "4035 [3733, 4193]",
        strategies=("ars",),
    ),
    Preset(
        "Walker2d-v5",
        dict(
            strategy="pgpe",
            policy="linear",
            popsize=100,
            population_steps=75_000,
            popsize_max=800,
            optimizer="clipup",
            lr=0.0075,
            max_speed=0.015,
            sigma=0.022,
            stdev_lr=0.1,
            reward_shift=1.0,
        ),
        "Gymnasium's MuJoCo Walker2d: PGPE with ClipUp and pgpelib's Walker2d settings (a linear "
        "policy on normalised observations, 100 members growing to at most 800 until a "
        "generation's episodes have taken 75,000 steps, centre lr 0.0075, max speed 0.015, "
        "sigma 0.022 (pgpelib's radius 0.225 over 102 parameters), stdev lr 0.1) and a shift of "
        "1 a step in training, which removes the alive bonus that makes standing still a local "
        "optimum; walks where openai-es and ARS stood still",
        "jobs/suites/presets.toml, README 'Presets measured': 3.75e7 steps, 5 seeds, final eval "
        "2406 [954, 4345] over seeds 0-4 (4 of 5 walk for 1000 steps; seed 1 falls at step "
        "349); openai-es with its defaults: 796 at the same budget, seed 0 (PGPE: 2179)",
        strategies=("pgpe",),
    ),
    Preset(
        "InvertedPendulum-v5",
        dict(popsize=16),
        "Gymnasium's MuJoCo InvertedPendulum: popsize 16, four times the updates of 64 in the "
        "same steps, where one good direction balances the pole",
        "jobs/suites/presets.toml, README 'Presets measured': 1e5 steps, 3 seeds, final eval "
        "1000 [1000, 1000] (popsize 64: 719 [158, 1000]; 32: 725)",
        strategies=("openai-es",),
    ),
    Preset(
        "Swimmer-v5",
        dict(popsize=16),
        "Gymnasium's MuJoCo Swimmer: popsize 16, four times the updates of 64 in the same steps "
        "(59 generations in 1e6 steps instead of 16); the swimmer's episodes never end early, "
        "so a generation of 64 takes 64,000 steps",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 1e6 steps, "
        "final eval 354.0 [347.7, 358.9] over seeds 0-4 (popsize 64, the defaults: 264.0 [231.3, "
        "290.1]; ARS with 8 directions: 339.4; Salimans et al.'s sigma and lr: 266.2; episodes "
        "capped at 125 steps: 45.2)",
        strategies=("openai-es",),
    ),
    Preset(
        "BipedalWalker-v3",
        dict(episode_cap=400, cap_raise=1.001),
        "Gymnasium's Box2D BipedalWalker: the population's episodes capped at 400 steps, the cap "
        "one step longer each generation (about 690 at 1e7 steps; evaluations play the whole "
        "course, about 900 steps for the walkers trained so): the walker's gait repeats, so a "
        "capped episode judges it, and the distance a gait covers inside the cap rewards speed",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 1e7 steps, "
        "final eval 262.4 [259.9, 265.2] on seeds 0-2, where the defaults' whole episodes gave "
        "228.3 [203.0, 241.1] and a cap of 200 159.4 (seed 0); Gymnasium's threshold is 300",
        strategies=("openai-es",),
    ),
    Preset(
        "InvertedDoublePendulum-v5",
        dict(strategy="ars", popsize=64),
        "Gymnasium's MuJoCo InvertedDoublePendulum: ARS V2 (a linear policy on normalised "
        "observations, N = 32 directions, all kept, step 0.02, noise 0.03; each direction's "
        "pair plays its own start, so a step averages over 32 of them): with 16 (ARS's "
        "defaults), 8 of 16 kept, or OpenAI-ES, some seeds' final policies still drop some of "
        "their ten episodes within about 30 steps",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 2e6 steps, "
        "final eval 9359.7 [9359.5, 9359.9] over seeds 0-4, every final episode held to the "
        "time limit, where ARS's defaults gave 9056.3 and the openai-es preset 7524.2 on seeds "
        "0-2",
        strategies=("ars",),
    ),
    Preset(
        "InvertedDoublePendulum-v5",
        dict(_LOCOMOTION),
        "Gymnasium's MuJoCo InvertedDoublePendulum for OpenAI-ES: Salimans et al.'s sigma and lr "
        "with tanh-rescaled actions; the defaults' clipped actions and larger steps stay near 150",
        "jobs/suites/presets.toml, README 'Presets measured': 2e6 steps, 3 seeds, final eval "
        "7524 [7515, 7535] (ARS's preset: 9359.7 on the same seeds; the defaults: 147 at 1e6 "
        "steps, seed 0; sigma 0.05 lr 0.02: 4574 at 2e6, seed 0)",
        strategies=("openai-es",),
    ),
    Preset(
        "Reacher-v5",
        _REACHING,
        "Gymnasium's MuJoCo Reacher: Salimans et al.'s sigma and lr with tanh-rescaled actions, "
        "lr decaying 0.997 a generation (to --lr-min's 0.001 by generation 767, about 2.5e6 "
        "steps): with a constant lr the population's mean return falls after about 1e6 steps "
        "(from -6 to about -30 by 5e6), and with the defaults' larger steps sooner",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 5e6 steps, "
        "seeds 0-2, final eval -5.30 [-5.74, -4.90]; without the decay (the preset until "
        "2026-12-06) -6.8 [-7.7, -6.1] at 1e6 and -35.6 [-41.0, -30.3] at 5e6, with popsize 256 "
        "-5.72 [-6.60, -5.15] at 5e6; ARS, linear, 16 directions: -6.8 at 1e6 and at 5e6 (the "
        "defaults: -50.9 at 1e6)",
        strategies=("openai-es",),
    ),
    Preset(
        "Pusher-v5",
        dict(strategy="ars", popsize=8, top_directions=4, lr=0.02, sigma=0.03),
        "Gymnasium's MuJoCo Pusher: ARS V2 (a linear policy on normalised observations, N = 4 "
        "directions, all kept, step 0.02, noise 0.03); OpenAI-ES's defaults and Salimans et "
        "al.'s settings drift away from their best and end below a policy that does nothing "
        "(-54), as do ARS's directions on a 64-64 network",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 2e6 steps, "
        "final eval -37.6 [-42.0, -33.6] over seeds 0-4 (8 directions: -39.5; ARS settings "
        "tried, seeds 0-2: -37.3 to -41.7; openai-es with its defaults: -111.3, with Salimans "
        "et al.'s sigma and lr: -67.9; ARS on a 64-64 network: -88.1)",
        strategies=("ars",),
    ),
    Preset(
        "Pusher-v5",
        _REACHING,
        "Gymnasium's MuJoCo Pusher for OpenAI-ES: Salimans et al.'s sigma and lr with "
        "tanh-rescaled actions and lr decaying 0.997 a generation (to 0.001 by generation 767), "
        "Reacher's preset: with a constant lr the policy drifts away from its best",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 2e6 steps, "
        "seeds 0-2, final eval -38.5 [-43.3, -30.8], where ARS's preset gave -37.5 on the same "
        "seeds; the same with a constant lr -67.9, lr decaying 0.99 -39.4, openai-es's defaults "
        "-111.3",
        strategies=("openai-es",),
    ),
    Preset(
        "Pendulum-v1",
        dict(popsize=100, sigma=0.1, lr=0.125, lr_decay=0.99, hidden=[32, 32], activation="relu"),
        "Gymnasium's Pendulum: gymnax-blines' OpenES popsize and lr (100, 0.125) on a 32-32 "
        "relu network with sigma 0.1, lr decaying by 0.99 a generation: swings up from every "
        "start tried, where the 128-64 tanh default leaves some hanging",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 2e6 steps, "
        "final eval -146.5 [-160.0, -136.8] over seeds 0-2 and -156.9 over seeds 0-14 (every "
        "seed -194 or above), where gymnax-blines' settings on the default network gave -446",
        strategies=("openai-es",),
    ),
    Preset(
        "Pendulum-v1",
        dict(popsize=100, sigma=0.13, lr=0.15, max_speed=0.3, hidden=[32, 32], activation="relu"),
        "Gymnasium's Pendulum for PGPE: the openai-es preset's 32-32 relu network and popsize "
        "100, with ClipUp's step and radius doubled (centre lr 0.15, max speed 0.3, sigma 0.13: "
        "a radius of 4.5 over the 1,217 parameters): swings up from every start tried, where "
        "ClipUp's usual radius (sigma 0.064) and PGPE's defaults stay near -800",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 2e6 steps, "
        "final eval -146.6 [-158.3, -138.6] over seeds 0-2 and -161.3 [-224.1, -119.7] over "
        "seeds 0-14 (sigma 0.064: -791.6, PGPE's defaults: -823.7, each over seeds 0-4)",
        strategies=("pgpe",),
    ),
    Preset(
        "Pendulum-v1",
        dict(popsize=16, mirrored=True, hidden=[32, 32], activation="relu"),
        "Gymnasium's Pendulum for SNES: the openai-es preset's 32-32 relu network, with 8 "
        "antithetic pairs (popsize 16, more generations than the 25 SNES takes from the "
        "parameter count): without the pairs the same network stays near -300",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 2e6 steps, "
        "final eval -227.1 [-447.3, -138.7] over seeds 0-14 (12 pairs: -248.1 [-555.5, "
        "-111.7]; over seeds 0-4, 24 pairs: -300.8, unpaired popsize 25: -298.5, 16: -465.7, "
        "SNES's defaults: -799.1)",
        strategies=("snes",),
    ),
    Preset(
        "HalfCheetahBulletEnv-v0",
        dict(strategy="ars"),
        "PyBullet's HalfCheetah: ARS V2 with its defaults (a linear policy on normalised "
        "observations, N = 16 directions, all kept, step 0.02, noise 0.03) and clipped actions",
        "jobs/suites/presets.toml and presets-tried.toml, README 'Presets measured': 2e6 steps, "
        "final eval 498.0 [322.2, 679.5] over seeds 0-2, where the openai-es preset gave 190.5 "
        "[101.3, 283.2] and ARS with 32 directions -629.4 (seed 0)",
        strategies=("ars",),
    ),
    Preset(
        "HalfCheetahBulletEnv-v0",
        dict(action_map="clip", sigma=0.1, lr=0.03),
        "PyBullet's HalfCheetah for OpenAI-ES: the defaults' clipped actions, sigma 0.1 and lr "
        "0.03, not the PyBullet walkers' preset: with its sigma 0.02 the cheetah stays down, its "
        "shins or thighs on the ground (-1 a step) nearly all the time",
        "jobs/suites/presets-tried.toml, README 'Presets measured': 2e6 steps, final eval 190.5 "
        "[101.3, 283.2] over seeds 0-2 (ARS's preset: 498.0), where the `*BulletEnv-v0` "
        "preset gave -854.3 [-1092.4, -408.7] and tanh actions with sigma 0.1 and lr 0.03 71.6 "
        "[15.6, 139.1]",
        strategies=("openai-es",),
    ),
    Preset(
        "*BulletEnv-v0",
        _LOCOMOTION,
        "PyBullet locomotion: tanh-rescaled actions (better than clipping for Box actions); "
        "sigma 0.02 and lr 0.01, the paper's settings for locomotion",
        "jobs/suites/presets-tried.toml, README 'Presets measured': HopperBulletEnv-v0 at 1e6 "
        "steps, final eval 779.2 [642.1, 897.6] over seeds 0-2, the defaults 574.8 [355.6, "
        "726.6]; Walker2DBulletEnv-v0 at 2e6 steps, 403.7 [177.7, 640.7], the defaults 299.6 "
        "[250.7, 324.6] (HalfCheetahBulletEnv-v0 has a preset of its own)",
    ),
    Preset(
        "ALE/*",
        dict(
            **_PIXELS,
            atari=True,
            grayscale=True,
            resize=84,
            frame_stack=4,
            max_steps=27000,
            **_PAPER,
        ),
        "Atari (ale-py): no-op starts, frame skip 4, 84x84 grayscale, 4 stacked frames, FIRE "
        "after reset and lost lives where the game has it; episodes capped at 27,000 steps "
        "(108,000 frames, ALE's own cap, which Gymnasium's spec does not state); sigma 0.02, "
        "lr 0.01 (the paper's)",
        "README 'Presets': ALE/Pong-v5, one seed, 6 minutes (298k steps): -21 throughout; not "
        "yet measured to a score",
    ),
)

ALIASES = {
    "CarRacing-v0": "CarRacing-v3",
    "CarRacing-v1": "CarRacing-v3",
    "CarRacing-v2": "CarRacing-v3",
}


def presets_of(env_id: str) -> list[Preset]:
    """The presets of `env_id`: those listed for the exact id, else the first matching pattern's."""
    exact = [preset for preset in PRESETS if preset.pattern == env_id]
    if exact:
        return exact
    for preset in PRESETS:
        if fnmatch.fnmatchcase(env_id, preset.pattern):
            return [preset]
    return []


def preset_for(env_id: str, strategy: str | None = None) -> Preset | None:
    """The preset a run of `strategy` on `env_id` starts from: the environment's preset measured
    with that strategy, else its first (the one `--env` alone gets)."""
    candidates = presets_of(env_id)
    for preset in candidates:
        if strategy in _measured_with(preset):
            return preset
    return candidates[0] if candidates else None


def default_strategy(env_id: str) -> str:
    """The strategy `esmpi train --env ENV_ID` runs without --strategy: its preset's, if it sets
    one, else OpenAI-ES."""
    return _strategy_of(preset_for(ALIASES.get(env_id, env_id)))


def _strategy_of(preset: Preset | None) -> str:
    default = str(Config.__dataclass_fields__["strategy"].default)
    return str(preset.values.get("strategy", default)) if preset else default


def resolve(values: dict[str, Any]) -> tuple[Config, list[str]]:
    """The Config for `values` (TOML and command-line options, the latter already on top) with
    the environment's preset beneath them; and the notes to print (alias used, preset applied)."""
    env_id = values.get("env", Config.__dataclass_fields__["env"].default)
    notes = []
    if env_id in ALIASES:
        notes.append(f"{env_id} is now {ALIASES[env_id]} in Gymnasium; training that")
        env_id = ALIASES[env_id]
    name = values.get("strategy", _strategy_of(preset_for(env_id)))
    preset = preset_for(env_id, name)
    strategy = strategies.get(name)
    strategies.check_options(name, values)
    base = {}
    if preset is not None:
        withheld = [
            option
            for option in preset.values
            if option not in values
            and option not in strategies.own_options(name)
            and not _reaches(preset, option, name)
        ]
        if withheld:
            kept = "defaults" if preset.strategies else ", ".join(withheld)
            measured = [s for other in presets_of(env_id) for s in _measured_with(other)]
            notes.append(
                f"preset {preset.pattern} was measured with "
                f"{', '.join(measured)} only; {name} keeps its own {kept} there"
            )
        base = {
            option: value
            for option, value in preset.values.items()
            if option not in values and _reaches(preset, option, name)
        }
        if base:
            notes.append(
                f"preset {preset.pattern} sets {describe(base)}; any option given overrides it "
                "(`esmpi envs` lists the presets)"
            )
    if values.get("total_steps") and "generations" not in values:
        base["generations"] = 0  # a step budget alone ends the run
    return from_mapping({**strategy.DEFAULTS, **base, **values, "env": env_id}), notes


def _measured_with(preset: Preset) -> tuple[str, ...]:
    """The strategies the preset was measured with: those it names, else the one it sets."""
    return preset.strategies or (_strategy_of(preset),)


def _for_every_strategy(preset: Preset) -> dict[str, Any]:
    """The settings of the preset that every strategy gets: none where it names its strategies,
    else all but its SEARCH_SETTINGS."""
    if preset.strategies:
        return {}
    return {k: v for k, v in preset.values.items() if k not in SEARCH_SETTINGS}


def _reaches(preset: Preset, option: str, strategy: str) -> bool:
    """Whether the preset's setting `option` applies to a run of `strategy`."""
    return strategy in _measured_with(preset) or option in _for_every_strategy(preset)


def describe(values: dict[str, Any]) -> str:
    """'--policy cnn --early-stop 20 ...': settings as the command-line options that set them."""
    return " ".join(option_arguments(values))


def table() -> str:
    """What `esmpi envs` prints: each preset, what it sets and why."""
    lines = ["Presets (the TOML file and the command line override any setting):", ""]
    for preset in PRESETS:
        lines += [
            f"{preset.pattern}",
            f"  sets  {describe(preset.values)}",
            f"  why   {preset.note}",
        ]
        if preset.strategies:
            lines.append(f"  for   --strategy {' or '.join(preset.strategies)} (measured with it)")
        shared = _for_every_strategy(preset)
        if shared and shared != preset.values:
            only = ", ".join(_measured_with(preset))
            lines.append(f"  all   {describe(shared)} (any strategy; the rest {only} only)")
        if preset.evidence:
            lines.append(f"  runs  {preset.evidence}")
        lines.append("")
    aliases = ", ".join(f"{old} -> {new}" for old, new in ALIASES.items())
    lines.append(f"Aliases: {aliases}.")
    lines.append(
        "Any other id: the defaults (Box actions clipped to the bounds; --action-map tanh "
        "rescales instead)."
    )
    return "\n".join(lines)
