"""Running a trained policy from a checkpoint: `esmpi eval`, with an optional video of the episodes
(offscreen frames from `render_mode="rgb_array"`, written by imageio: MP4 through its ffmpeg plugin,
GIF through Pillow; MuJoCo's on a headless machine through the back-end offscreen.py picks) or a
window (`render_mode="human"`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from esmpi import checkpoint, envs, offscreen
from esmpi.config import Config, UsageError, from_toml
from esmpi.obsnorm import ObsNorm
from esmpi.policies import actor_for, spec_for_spaces
from esmpi.rollout import EpisodeFailed, EpisodeRules, run_episode

VIDEO_FORMATS = (".mp4", ".gif")


@dataclass
class Evaluation:
    returns: np.ndarray  # one per episode
    lengths: np.ndarray  # steps per episode
    frames: int  # video frames written: one after each reset and each step; 0 without a video


def trained_policy(state: checkpoint.Checkpoint, config: Config, best: bool):
    """(theta, obs mean, obs std) of the checkpoint's policy, or of best/theta with the
    normalisation it ran with; mean 0 and std 1 when the policy does not normalise."""
    theta = state.best_theta if best else state.theta
    n_in = state.policy.sizes[0]
    if not (config.obs_norm and state.policy.obs_encoding == "box"):
        return theta, np.zeros(n_in), np.ones(n_in)
    mean, var = (
        (state.best_obs_mean, state.best_obs_var) if best else (state.obs_mean, state.obs_var)
    )
    obs_norm = ObsNorm(state.obs_count, mean, var)
    return theta, obs_norm.mean, obs_norm.std


def member_theta(state: checkpoint.Checkpoint, config: Config, offset: int, sign: int):
    """The parameters of the population member with noise `offset` and `sign` in the generation
    after the checkpoint's (the one a run stopped for failed episodes names), as training built
    them."""
    from esmpi import noise, strategies
    from esmpi.strategies.base import perturbed, state_from_items

    strategy = strategies.get(state.strategy)
    strategy_state = state_from_items(strategy.State, state.strategy_state, state.theta)
    if hasattr(strategy, "rebuild"):  # the GA's parents, from their genomes and the whole table
        table = noise.build_table(config.noise_table_size, config.seed)
        strategy_state = strategies.rebuilt(state.strategy, strategy_state, table)
    population = strategy.ask(strategy_state, config, state.generation, config.noise_table_size)
    if offset not in population.offsets or sign not in population.signs:
        signs = " or ".join(f"{s:+d}" for s in population.signs)
        raise UsageError(
            f"Generation {state.generation + 1} of {state.env_id} has no member with noise offset "
            f"{offset} and sign {sign:+d} (signs {signs}); take them from the message that "
            "stopped the run."
        )
    eps = noise.table_slice(config.noise_table_size, config.seed, offset, state.theta.size)
    scale = population.signed_scales()[sign]
    base = population.base(int(np.flatnonzero(population.offsets == offset)[0]), state.theta)
    return perturbed(base, eps, scale, np.empty_like(state.theta))


def evaluate(
    path: str,
    episodes: int,
    seed: int = 0,
    env_id: str | None = None,
    best: bool = False,
    render: bool = False,
    video: str | None = None,
    progress: bool = False,
    member: tuple[int, int] | None = None,
    episode_seed: int | None = None,
) -> Evaluation:
    """Run `episodes` episodes of the checkpoint's policy (theta, or best/theta, or the
    population `member` (noise offset, sign) of the next generation); with `video` record them
    to that .mp4 or .gif file, with `render` show them in a window. `episode_seed` runs one
    episode with exactly that reset seed instead of seeds drawn from `seed`. A failed episode
    raises rollout.EpisodeFailed."""
    if member and best:
        raise UsageError("--member perturbs theta, not best/theta; drop --best.")
    if video and render:
        raise UsageError("--video and --render exclude each other; give one of them.")
    if video and os.path.splitext(video)[1].lower() not in VIDEO_FORMATS:
        raise UsageError(f"{video}: the video file must end in {' or '.join(VIDEO_FORMATS)}.")
    if render:
        _check_display()
    state = checkpoint.load(path)
    config = from_toml(state.config_toml)
    render_mode = "human" if render else "rgb_array" if video else None
    if video:
        # Frames are drawn offscreen: keep pygame (Gymnasium's classic-control renderer) from
        # probing for a display server, which prints errors on headless machines.
        os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    # With the run's observation pipeline and episode horizon.
    env, stepped, horizon = envs.make_for_rollouts(config, env_id, render_mode)
    if video and offscreen.is_mujoco(env):  # before its renderer makes the first GL context
        offscreen.choose_backend()
    if spec_for_spaces(stepped.observation_space, stepped.action_space, config) != state.policy:
        raise UsageError(
            f"{env_id or config.env} has other observation or action spaces than the policy in "
            f"{path} was trained on."
        )
    actor = actor_for(state.policy, config.obs_clip)
    theta, obs_mean, obs_std = trained_policy(state, config, best)
    if member:
        theta = member_theta(state, config, *member)
    actor.set_normalisation(obs_mean, obs_std)
    if episode_seed is not None:
        episode_seeds = np.array([episode_seed])
    else:
        episode_seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=episodes)
    envs.first_reset(env, int(episode_seeds[0]))
    rules = EpisodeRules.from_config(config)
    writer = _video_writer(video, env.metadata.get("render_fps") or 30) if video else None
    recorder = _Recorder(stepped, writer) if writer else None
    results = []
    try:
        for seed_now in _progress(episode_seeds, progress):
            try:
                results.append(
                    run_episode(recorder or stepped, actor, theta, seed_now, horizon, rules)
                )
            except EpisodeFailed as failed:
                detail = f"episode seed {seed_now}: {failed.detail}"
                raise EpisodeFailed(failed.kind, failed.steps, detail) from failed.__cause__
    finally:
        if writer is not None:
            writer.close()
        env.close()
    returns, lengths = (np.array(column) for column in zip(*results, strict=True))
    return Evaluation(returns, lengths.astype(np.int64), recorder.frames if recorder else 0)


def _progress(episode_seeds: np.ndarray, shown: bool):
    """The episode seeds, behind a progress bar on stderr when `shown` and stderr is a terminal."""
    if not shown:
        return episode_seeds
    from tqdm import tqdm

    return tqdm(episode_seeds, desc="esmpi eval", unit="episode", disable=None, file=sys.stderr)


def _check_display() -> None:
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise UsageError(
            "--render needs a display and none is set (no DISPLAY); record a video with "
            "--video out.mp4 instead, or run under `xvfb-run -a esmpi eval ...`."
        )


class _Recorder:
    """The environment as run_episode steps it, writing a rendered frame after every reset and
    every step, so that recording changes nothing about the episodes."""

    def __init__(self, env, writer):
        self.env, self.writer, self.frames = env, writer, 0

    def __getattr__(self, name):  # action_space, unwrapped, ...: the environment's
        return getattr(self.env, name)

    def reset(self, **kwargs):
        result = self.env.reset(**kwargs)
        self._record()
        return result

    def step(self, action):
        result = self.env.step(action)
        self._record()
        return result

    def _record(self) -> None:
        self.writer.append_data(np.asarray(self.env.render()))
        self.frames += 1


def _video_writer(path: str, fps: float):
    """An imageio writer for `path`: MP4 (H.264 via the ffmpeg binary of imageio-ffmpeg) or GIF."""
    import imageio.v2 as imageio

    try:
        if path.lower().endswith(".gif"):
            return imageio.get_writer(path, mode="I", duration=1000.0 / fps, loop=0)
        # macro_block_size 2: keep the frame size (H.264 needs even sides) instead of resizing.
        return imageio.get_writer(path, fps=fps, macro_block_size=2, quality=7)
    except OSError as error:
        raise UsageError(f"Cannot write the video {path}: {error}.") from None
