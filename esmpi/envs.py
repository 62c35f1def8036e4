"""Making environments: Gymnasium ids, PyBullet and MuJoCo ids, and `module:EnvClass` classes.

One environment per rank, reused for every episode. Rollouts step the environment beneath
Gymnasium's API-checking wrappers (TimeLimit, OrderEnforcing, PassiveEnvChecker) and apply the time
limit themselves: the same transitions without three Python calls per step. Start-up chatter is
kept off the console and out of the working directory: pybullet's C-level banner is captured
and dropped, and MuJoCo's warnings reach Python instead of a MUJOCO_LOG.TXT file.
"""

from __future__ import annotations

import contextlib
import ctypes
import difflib
import importlib
import os
import sys
import tempfile
import warnings

from esmpi.config import UsageError

# Packages that register further ids when imported, and how to recognise their ids.
_PLUGINS = (("pybullet_envs_gymnasium", lambda env_id: "Bullet" in env_id),)
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
    for module, owns in _PLUGINS:
        if owns(env_id):
            with native_output_captured():
                try:
                    importlib.import_module(module)
                except ImportError:
                    raise UsageError(
                        f"Environment {env_id} needs the package {module}; install it with "
                        f"`pip install {module.replace('_', '-')}`."
                    ) from None


def _user_class(env_id: str):
    """The class named by 'module:EnvClass', or None when env_id names something else."""
    module_name, _, attribute = env_id.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(
            f"Cannot import {module_name} for environment {env_id}: {error}."
        ) from None
    candidate = getattr(module, attribute, None)
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
