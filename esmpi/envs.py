"""Making environments: Gymnasium ids, PyBullet and MuJoCo ids, and `module:EnvClass` classes.

One environment per rank, reused for every episode. Rollouts step the environment beneath
Gymnasium's API-checking wrappers (TimeLimit, OrderEnforcing, PassiveEnvChecker) and apply the time
limit themselves: the same transitions without three Python calls per step. Start-up chatter is
kept off the console and out of the working directory: pybullet's C-level banner is captured
and dropped, and MuJoCo's warnings reach Python instead of a MUJOCO_LOG.TXT file.

Observation pipelines (grayscale, resize, Atari preprocessing, frame stacking) are Gymnasium's own
wrappers, put around the environment after those API checks are stripped (`for_rollouts`), so the
time limit is still found and the wrappers' steps are the only extra calls. pygame-drawn pixel
observations (CarRacing) need no display: SDL's dummy video driver is selected unless a window is
asked for. Atari follows Machado et al. 2018 / Gymnasium's AtariPreprocessing: ROMs come with the
ale-py wheel.
"""

from __future__ import annotations

import contextlib
import ctypes
import difflib
import functools
import importlib
import os
import sys
import tempfile
import warnings

from esmpi.config import UsageError, named_attribute

# Packages that register further ids when imported, and how to recognise their ids.
_PLUGINS = (
    ("pybullet_envs_gymnasium", lambda env_id: "Bullet" in env_id, "pybullet-envs-gymnasium"),
    ("ale_py", lambda env_id: env_id.startswith("ALE/"), "'esmpi[atari]'"),
    (
        "gymnasium_robotics",
        lambda env_id: env_id.startswith(("PointMaze_", "AntMaze_")),
        "'esmpi[robotics]'",
    ),
)
_UNLIMITED = 1 << 62
_LIBC = ctypes.CDLL(None)


class EnvironmentWarning(UserWarning):
    """A warning from a simulator, shown once per message."""


@contextlib.contextmanager
def native_output_captured():
    """Capture what C libraries write to file descriptors 1 and 2 (behind Python's back), and
    replay it on stderr only if the block raises: banners vanish, error messages do not."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        _restore(saved)


def _restore(saved: list[int]) -> None:
    if not saved:
        return
    _LIBC.fflush(None)  # C's stdio buffers output to files and pipes: flush it into the capture
    for fd, copy in zip((1, 2), saved, strict=True):
        os.dup2(copy, fd)
        os.close(copy)
    saved.clear()


def _route_mujoco_warnings(env_id: str, quiet: bool) -> None:
    """MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory (and to stderr) unless
    a callback takes them; ours turns them into Python warnings, or drops them when `quiet`."""
    import gymnasium

    spec = gymnasium.registry.get(env_id)
    if spec is not None and "mujoco" in str(spec.entry_point):
        import mujoco  # noqa: F401  (before the model is compiled: that can warn too)
    if "mujoco" not in sys.modules:
        return

    def warn(message: str) -> None:
        if not quiet:
            warnings.warn(f"MuJoCo: {message.strip()}", EnvironmentWarning, stacklevel=2)

    sys.modules["mujoco"].set_mju_user_warning(warn)


def _load_plugins(env_id: str) -> None:
    for module, owns, package in _PLUGINS:
        if owns(env_id):
            with native_output_captured():
                try:
                    importlib.import_module(module)
                except ImportError:
                    raise UsageError(
                        f"Environment {env_id} needs the package {module}; install it with "
                        f"`pip install {package}`."
                    ) from None


def _user_class(env_id: str):
    """The class named by 'module:EnvClass', or None when env_id names something else."""
    candidate = named_attribute(env_id, f"environment {env_id}")
    return candidate if isinstance(candidate, type) else None


def _unknown(env_id: str) -> UsageError:
    import gymnasium

    close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return UsageError(
        f'Unknown environment id {env_id!r}.{hint} (`python -c "import gymnasium; '
        f'gymnasium.pprint_registry()"` lists the registered ids.)'
    )


def make_env(
    env_id: str, env_kwargs: dict | None = None, render_mode: str | None = None, quiet: bool = False
):
    """A Gymnasium environment for `env_id`, or UsageError with one sentence saying what is wrong.

    `quiet` drops the simulator's warnings (for every rank but one)."""
    import gymnasium
    from gymnasium.error import DependencyNotInstalled

    kwargs = dict(env_kwargs or {})
    if render_mode:
        kwargs["render_mode"] = render_mode
    if render_mode != "human":  # pygame draws pixel observations (CarRacing) without a display
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    _load_plugins(env_id)
    try:
        with native_output_captured():
            _route_mujoco_warnings(env_id, quiet)
            if ":" in env_id and (env_class := _user_class(env_id)) is not None:
                env = env_class(**kwargs)
            elif ":" not in env_id and env_id not in gymnasium.registry:
                raise _unknown(env_id)
            else:
                env = gymnasium.make(env_id, **kwargs)
    except DependencyNotInstalled as error:
        raise UsageError(f"Environment {env_id} needs a package that is missing: {error}") from None
    except gymnasium.error.Error as error:
        raise UsageError(f"Gymnasium cannot make {env_id}: {error}") from None
    except TypeError as error:
        raise UsageError(f"Environment {env_id} rejected --env-kwargs {kwargs}: {error}.") from None
    return env


def first_reset(env, seed: int):
    """The first reset, silenced: pybullet connects to its physics server (and prints) here."""
    with native_output_captured():
        return env.reset(seed=seed)


def reset(env, seed: int):
    """env.reset(seed=seed): the same first observation and the same episode, cheaper where that
    is known to hold.

    Gymnasium's seeded reset builds a new Generator(PCG64(SeedSequence(seed))) each time: about
    45 us inside a rollout loop (numpy's seeding code runs cold between the simulator's steps),
    more than a Hopper-v5 step, once per episode, and ES episodes of falling walkers last 20-30
    steps. Gymnasium's own environments take all their randomness from that generator and do
    nothing else with the seed, so the generator they have is set to the state the new one would
    start in (about 5 us) and the environment is reset without a seed. Any other environment
    (PyBullet's and ALE's seed more than this generator), wrapper or seed gets env.reset(seed=seed).
    Each episode of a Box2D environment that keeps one world for all of them gets a new world.
    """
    _new_box2d_world(env.unwrapped)
    generator = _generator_reseedable_in_place(env)
    if generator is None or not 0 <= seed < 2**32:
        return env.reset(seed=seed)
    generator.bit_generator.state = pcg64_state(seed)
    env.unwrapped._np_random_seed = seed  # what np_random_seed reports after a seeded reset
    return env.reset()


_KEEPING_ONE_BOX2D_WORLD = (
    "gymnasium.envs.box2d.bipedal_walker",
    "gymnasium.envs.box2d.car_racing",
)


def _new_box2d_world(env) -> None:
    """Give Gymnasium's BipedalWalker or CarRacing `env` (unwrapped) a new Box2D world before its
    reset. They make one world in __init__ and destroy and remake their bodies in it at every
    reset, and the world keeps something of the earlier episodes' bodies (Box2D's allocators and
    broad-phase tree, which order the contacts it solves, are the likely part; not pinned down):
    an episode's returns then depend on the episodes its environment ran before, so on the
    number of ranks and on timing. With a new world (as LunarLander makes itself at every reset)
    they depend on its seed alone; a world costs about 2 us."""
    if not any(kind.__module__ in _KEEPING_ONE_BOX2D_WORLD for kind in type(env).__mro__):
        return
    import Box2D

    env._destroy()  # the bodies of the world they belong to, as reset would
    env.world = Box2D.b2World(gravity=env.world.gravity)  # reset sets its contact listener


# Gymnasium's environments whose reset(seed=...) only passes the seed to Env.reset.
_SEEDED_BY_ENV_RESET = tuple(
    f"gymnasium.envs.{family}." for family in ("classic_control", "box2d", "mujoco", "toy_text")
)


@functools.cache
def _resets_passing_the_seed_on() -> tuple:
    """Wrapper resets that hand the seed to the environment beneath and do nothing else with it."""
    import gymnasium

    from esmpi import behaviour

    return (
        gymnasium.Wrapper.reset,
        gymnasium.ObservationWrapper.reset,
        gymnasium.wrappers.FrameStackObservation.reset,
        behaviour.last_info_class().reset,
    )


def _generator_reseedable_in_place(env):
    """The numpy generator env.reset(seed=...) would replace, when setting its state instead
    gives the same reset (see `reset`); otherwise None."""
    import gymnasium
    import numpy as np

    while isinstance(env, gymnasium.Wrapper):
        if type(env).reset not in _resets_passing_the_seed_on():
            return None
        env = env.env
    if not type(env).__module__.startswith(_SEEDED_BY_ENV_RESET):
        return None
    generator = getattr(env, "_np_random", None)  # None before the environment's first reset
    if isinstance(generator, np.random.Generator) and isinstance(
        generator.bit_generator, np.random.PCG64
    ):
        return generator
    return None


_PCG_MULTIPLIER = (2549297995355413924 << 64) + 4865540595714422341
_LOW128 = (1 << 128) - 1


def pcg64_state(seed: int) -> dict:
    """np.random.PCG64(seed).state for 0 <= seed < 2**32, computed without building a PCG64:
    the SeedSequence words (a numba kernel), then PCG64's seeding, pcg_setseq_128_srandom_r."""
    from esmpi.kernels import seed_sequence_words

    words = [int(word) for word in seed_sequence_words(seed)]
    start, stream = (words[0] << 64) | words[1], (words[2] << 64) | words[3]
    increment = ((stream << 1) | 1) & _LOW128
    state = (increment + start) & _LOW128  # one step from state 0, then the start added
    state = (state * _PCG_MULTIPLIER + increment) & _LOW128  # and one more step
    return {
        "bit_generator": "PCG64",
        "state": {"state": state, "inc": increment},
        "has_uint32": 0,
        "uinteger": 0,
    }


def unwrapped_for_rollouts(env):
    """The environment beneath Gymnasium's API checks, and the time limit those wrappers applied."""
    from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

    horizon = _UNLIMITED
    while isinstance(env, (TimeLimit, OrderEnforcing, PassiveEnvChecker)):
        if isinstance(env, TimeLimit):
            horizon = min(horizon, env._max_episode_steps)
        env = env.env
    return env, horizon


def horizon_for(time_limit: int, max_steps: int) -> int:
    """Steps an episode may last: the environment's limit, capped by --max-steps when given."""
    return min(time_limit, max_steps) if max_steps > 0 else time_limit


def env_kwargs_for(config) -> dict:
    """The keyword arguments to make config.env with: --env-kwargs, and frameskip=1 for Atari
    preprocessing (which skips frames itself)."""
    return {"frameskip": 1, **config.env_kwargs} if config.atari else dict(config.env_kwargs)


def for_rollouts(env, config):
    """(environment to step, episode horizon): `env` beneath the API checks
    (unwrapped_for_rollouts) with the observation pipeline of `config` around it, stepped
    natively where it can be (esmpi.native), and the environment's time limit capped by
    --max-steps."""
    from esmpi import behaviour, native

    stepped, time_limit = unwrapped_for_rollouts(env)
    stepped = behaviour.wrapped(observation_pipeline(stepped, config), config.behaviour)
    stepped = native.stepping(stepped, config.env_kwargs, config.native)
    return stepped, horizon_for(time_limit, config.max_steps)


def make_for_rollouts(config, env_id=None, render_mode=None, quiet=False):
    """(env as made, env to step, episode horizon) for `config` (or env_id instead of config.env):
    the one way train, eval and bench build an environment."""
    env = make_env(env_id or config.env, env_kwargs_for(config), render_mode, quiet)
    return (env, *for_rollouts(env, config))


class RankEnvironment:
    """The environment one rank steps for `config`: `made` (as made), `stepped` (what rollouts
    step), `horizon`, `path` (how it steps: natively or through Gymnasium, and why), and with
    --behaviour `describe(stepped)`, the episode's BC, of `behaviour_size` numbers; `remake()`
    closes it and makes it afresh, as after it raised (what it kept from before may be what
    broke it). Each episode's seeded reset makes the remade one run the same episodes."""

    def __init__(self, config, quiet: bool = False):
        from esmpi import behaviour

        self.config = config
        from esmpi import native

        self.made, self.stepped, self.horizon = make_for_rollouts(config, quiet=quiet)
        self.path = native.path(self.stepped, config)
        self.describe = behaviour.describer(config.behaviour) if config.behaviour else None
        self.behaviour_size = 0

    def first_reset(self) -> None:
        """The run's first reset; then, with --behaviour, the size of a BC read from it."""
        from esmpi import behaviour

        first_reset(self.made, self.config.seed)
        if self.describe is not None:
            name, seed = self.config.behaviour, self.config.seed
            self.behaviour_size = behaviour.size(self.stepped, self.describe, name, seed)

    def remake(self) -> None:
        self.close()
        self.made, self.stepped, self.horizon = make_for_rollouts(self.config, quiet=True)
        self.first_reset()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a broken environment may not close cleanly
            self.made.close()


def observation_pipeline(env, config):
    """Gymnasium's observation wrappers as `config` asks for them: Atari preprocessing (with FIRE
    after reset and after a lost life) or grayscale then resize; then frame stacking."""
    from gymnasium import wrappers
    from gymnasium.error import DependencyNotInstalled

    if config.flatten_obs:
        env = wrappers.FlattenObservation(env)
    if config.obs_keep:
        env = _kept_observation(env, config.obs_keep)
    try:
        if config.atari:
            env = wrappers.AtariPreprocessing(
                env,
                noop_max=30,
                frame_skip=4,
                screen_size=config.resize or 84,
                terminal_on_life_loss=config.end_on_life_loss,
                grayscale_obs=config.grayscale,
                scale_obs=False,  # the CNN scales (--scale-obs): uint8 frames stay small
            )
            if "FIRE" in env.unwrapped.get_action_meanings():
                env = _fire_on_reset_class()(env)
        else:
            if config.grayscale:
                env = wrappers.GrayscaleObservation(env, keep_dim=False)
            if config.resize:
                env = wrappers.ResizeObservation(env, (config.resize, config.resize))
    except DependencyNotInstalled as error:
        raise UsageError(
            f"{error} (`pip install opencv-python-headless`, or `pip install 'esmpi[atari]'`)."
        ) from None
    except (AttributeError, ValueError, AssertionError) as error:
        raise UsageError(
            f"The observation pipeline cannot wrap {config.env} "
            f"(observations {env.observation_space}): {error}"
        ) from None
    if config.frame_stack > 1:
        env = wrappers.FrameStackObservation(env, config.frame_stack)
    return env


def _kept_observation(env, indices: list[int]):
    """`env` seeing only `indices` of its flat Box observation (--obs-keep)."""
    from gymnasium import spaces, wrappers

    space = env.observation_space
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise UsageError(
            f"--obs-keep picks elements of a flat Box observation; {space} is not one "
            "(--flatten-obs makes one of a Dict or Tuple)."
        )
    if min(indices) < 0 or max(indices) >= space.shape[0]:
        raise UsageError(
            f"--obs-keep {','.join(map(str, indices))}: observations have {space.shape[0]} "
            f"elements, indices 0 to {space.shape[0] - 1}."
        )
    kept = list(indices)  # numpy's fancy indexing: a copy of those elements
    box = spaces.Box(space.low[kept], space.high[kept], dtype=space.dtype)
    return wrappers.TransformObservation(env, lambda obs: obs[kept], box)


@functools.cache
def _fire_on_reset_class():
    import gymnasium

    class FireOnReset(gymnasium.Wrapper):
        """Press FIRE after a reset and after each lost life: games such as Breakout wait for it,
        and a policy that has not learnt to press it would otherwise stand still for the whole
        episode. An episode ending on the FIRE step is reset again."""

        def __init__(self, env):
            super().__init__(env)
            self.fire = env.unwrapped.get_action_meanings().index("FIRE")
            self.lives = 0

        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            obs, _, terminated, truncated, info = self.env.step(self.fire)
            if terminated or truncated:
                obs, info = self.env.reset()
            self.lives = self.env.unwrapped.ale.lives()
            return obs, info

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            lives = self.env.unwrapped.ale.lives()
            if lives < self.lives and not (terminated or truncated):
                obs, more, terminated, truncated, info = self.env.step(self.fire)
                reward += more
            self.lives = lives
            return obs, reward, terminated, truncated, info

    return FireOnReset
