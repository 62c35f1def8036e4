"""An OpenGL back-end for MuJoCo's offscreen renderer on machines without a display.

Gymnasium's MuJoCo renderer uses the back-end that MUJOCO_GL names (and PyOpenGL the platform
PYOPENGL_PLATFORM names); unset, it tries GLFW first, which needs a display: on a headless
cluster node the video ends in "an OpenGL platform library has not been loaded". Without a
display, esmpi tries EGL, then OSMesa, each in a short child process (a back-end that fails can
leave PyOpenGL unusable in the process that tried it), and sets the first that renders before
MuJoCo makes its context. A back-end the user chose with MUJOCO_GL is left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from esmpi.config import UsageError

BACKENDS = ("egl", "osmesa")  # in the order tried: EGL renders on a GPU or in software (llvmpipe)
_PROBE = "from mujoco.{0} import GLContext; c = GLContext(16, 16); c.make_current(); c.free()"
MISSING = (
    "Recording a MuJoCo video without a display needs an offscreen OpenGL library, and neither "
    "EGL nor OSMesa works here: install one (Debian/Ubuntu: `apt-get install libegl1 "
    "libgl1-mesa-dri` or `libosmesa6`; conda: `conda install -c conda-forge mesalib`), or run "
    "under `xvfb-run -a esmpi eval ...`."
)


def has_display() -> bool:
    if not sys.platform.startswith("linux"):
        return True  # macOS and Windows render offscreen through their own platform layers
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def renders(backend: str) -> bool:
    """Whether MuJoCo can make and use an offscreen context with `backend` here."""
    variables = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE.format(backend)],
            env=variables,
            capture_output=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def choose_backend(probe: Callable[[str], bool] = renders) -> str | None:
    """Set MUJOCO_GL (and PYOPENGL_PLATFORM) to the first of BACKENDS that `probe` finds working,
    unless the user set MUJOCO_GL or there is a display; return the back-end now in use (None:
    Gymnasium's own choice, with a display). UsageError with what to install when none works."""
    chosen = os.environ.get("MUJOCO_GL")
    if chosen or has_display():
        return chosen
    for backend in BACKENDS:
        if probe(backend):
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    raise UsageError(MISSING)


def is_mujoco(env) -> bool:
    """Whether `env` (any wrapper) is one of Gymnasium's MuJoCo environments."""
    try:
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
    except ImportError:  # gymnasium without its mujoco extra
        return False
    return isinstance(env.unwrapped, MujocoEnv)
