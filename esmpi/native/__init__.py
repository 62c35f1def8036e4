"""Gymnasium's MuJoCo v5 environments stepped natively: mujoco.mj_step on the environment's own
MjModel and MjData, then a compiled kernel for the observation, reward and termination, giving
what Gymnasium's `step` gives, bit for bit, without the Python around the physics (the action
check, the info dict, np.concatenate, the reward terms' numpy calls): a third of HalfCheetah's
step. Resets stay Gymnasium's, so seeding and the start states are its own.

An environment steps natively only where that is known to be exact:
- it is one of COVERED's classes exactly (not a subclass, which may change the step), made
  through gymnasium.make and stepped with no wrapper of esmpi's in between (an observation
  pipeline or an --behaviour reading info steps through Gymnasium);
- its module and Gymnasium's mujoco_env.py are the sources the kernels were checked against
  (VERIFIED, sha256 of the files): a newer Gymnasium may change a reward, and then falls back
  until its sources are checked (tests/test_native.py) and added;
- every keyword the user passed is one the native step honours: all of the verified
  constructors' own (the steps read the settings from the environment's attributes),
  MujocoEnv's rendering ones and gymnasium.make's;
  and render_mode is not 'human' (Gymnasium's step draws the window).
Otherwise the environment steps through Gymnasium, and `esmpi train` says why.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import sys

# Gymnasium class -> (esmpi.native module, step class).
COVERED = {
    "HalfCheetahEnv": ("planar", "HalfCheetahStep"),
    "HopperEnv": ("planar", "HopperStep"),
    "Walker2dEnv": ("planar", "Walker2dStep"),
    "SwimmerEnv": ("planar", "SwimmerStep"),
    "AntEnv": ("ant", "AntStep"),
    "HumanoidEnv": ("humanoid", "HumanoidStep"),
    "InvertedPendulumEnv": ("pendulums", "InvertedPendulumStep"),
    "InvertedDoublePendulumEnv": ("pendulums", "InvertedDoublePendulumStep"),
    "ReacherEnv": ("reacher", "ReacherStep"),
}
# sha256 (first 16 hex digits) of the Gymnasium sources the native steps reproduce: 1.4.0's.
VERIFIED = {
    "gymnasium.envs.mujoco.mujoco_env": "77e8205c380d8e0d",
    "gymnasium.envs.mujoco.half_cheetah_v5": "c6520e364985f471",
    "gymnasium.envs.mujoco.hopper_v5": "daa2951970f5f558",
    "gymnasium.envs.mujoco.walker2d_v5": "10219f0e6b5208d6",
    "gymnasium.envs.mujoco.swimmer_v5": "5bdb513ea955bc2e",
    "gymnasium.envs.mujoco.ant_v5": "03be9596a1fbc171",
    "gymnasium.envs.mujoco.humanoid_v5": "53792f8fd48efbee",
    "gymnasium.envs.mujoco.inverted_pendulum_v5": "860e8436475689a4",
    "gymnasium.envs.mujoco.inverted_double_pendulum_v5": "a4ce6cadb4daf557",
    "gymnasium.envs.mujoco.reacher_v5": "be2f75d48b6b19e6",
}
NATIVE_PATH = "the native MuJoCo step (mujoco.mj_step, then compiled observation and reward)"
_BASE_MODULE = "gymnasium.envs.mujoco.mujoco_env"
# Keywords every covered environment takes besides its own: MujocoEnv's (rendering only) and
# gymnasium.make's (the wrappers rollouts step beneath).
_SHARED_KEYWORDS = frozenset(
    ("render_mode", "width", "height", "camera_id", "camera_name", "max_geom", "visual_options")
) | frozenset(("max_episode_steps", "disable_env_checker"))


def stepping(env, env_kwargs: dict, wanted: bool = True):
    """What rollouts step: `env` (the environment beneath Gymnasium's API wrappers, with esmpi's
    wrappers around it if any) in its native step where that is exact and `wanted`, else `env`."""
    if not wanted or why_not_native(env, env_kwargs) is not None:
        return env
    return step_class(env)(env)


def step_class(env):
    """The NativeStep subclass of `env`'s class (one of COVERED's)."""
    module, name = COVERED[type(env.unwrapped).__name__]
    return getattr(importlib.import_module(f"esmpi.native.{module}"), name)


def path(stepped, config) -> str:
    """How `stepped` (from envs.for_rollouts with `config`) steps, in a few words."""
    # No NativeStep exists before its module is imported, and importing it imports MuJoCo: a
    # tenth of a second of every classic-control run's start-up.
    step_module = sys.modules.get("esmpi.native.step")
    if step_module is not None and isinstance(stepped, step_module.NativeStep):
        return NATIVE_PATH
    reason = why_not_native(stepped, config.env_kwargs) if config.native else "--no-native"
    return f"Gymnasium's env.step ({reason})"


def why_not_native(env, env_kwargs: dict) -> str | None:
    """Why `env` cannot step natively, in a few words, or None when it can."""
    base = getattr(env, "unwrapped", env)
    name = type(base).__name__
    if name not in COVERED or not type(base).__module__.startswith("gymnasium.envs.mujoco."):
        return f"{name} has no native step"
    if env is not base:
        return f"wrapped by {type(env).__name__}"
    for module in (type(base).__module__, _BASE_MODULE):
        if module not in VERIFIED:
            return f"{module} has no native step"
        if source_digest(module) != VERIFIED[module]:
            return f"{module} differs from the Gymnasium source the native step was checked against"
    unknown = sorted(set(env_kwargs) - honoured_keywords(type(base)))
    if unknown:
        return f"--env-kwargs {', '.join(unknown)} not covered"
    if getattr(base, "render_mode", None) == "human":
        return "render_mode 'human' draws in the step"
    return None


@functools.cache
def source_digest(module: str) -> str:
    """sha256 (first 16 hex digits) of the source file of the imported `module`."""
    with open(inspect.getfile(sys.modules[module]), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()[:16]


def honoured_keywords(env_class) -> frozenset:
    """The keywords of `env_class` that its native step honours: its constructor's own (read from
    the environment's attributes), MujocoEnv's rendering ones and gymnasium.make's."""
    named = inspect.signature(env_class.__init__).parameters.values()
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    own = {parameter.name for parameter in named if parameter.kind in keywords}
    return frozenset(own - {"self"}) | _SHARED_KEYWORDS
