"""MuJoCo videos on a machine without a display: the back-end choice, and real recordings."""

import os
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

from conftest import checked, child_environment, esmpi
from esmpi import offscreen
from esmpi.config import UsageError


@pytest.fixture
def headless(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM"):
        monkeypatch.delenv(name, raising=False)


def test_without_a_display_the_first_backend_that_renders_is_chosen(headless):
    tried = []

    def probe(backend):
        tried.append(backend)
        return backend == "osmesa"

    assert offscreen.choose_backend(probe) == "osmesa"
    assert tried == ["egl", "osmesa"]
    assert os.environ["MUJOCO_GL"] == os.environ["PYOPENGL_PLATFORM"] == "osmesa"


def test_egl_comes_first(headless):
    assert offscreen.choose_backend(lambda backend: True) == "egl"


def test_none_rendering_says_what_to_install(headless):
    with pytest.raises(UsageError, match="apt-get install libegl1 libgl1-mesa-dri"):
        offscreen.choose_backend(lambda backend: False)
    assert "MUJOCO_GL" not in os.environ


def test_a_users_choice_or_a_display_is_left_alone(headless, monkeypatch):
    def probe(backend):
        raise AssertionError("no probe expected")

    monkeypatch.setenv("DISPLAY", ":0")
    assert offscreen.choose_backend(probe) is None
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    assert offscreen.choose_backend(probe) == "glfw"


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    checked(
        esmpi(
            *("train", "--env", "InvertedPendulum-v5", "--generations", "2", "--popsize", "8"),
            *("--hidden", "8", "--noise-table-size", "2000000"),
            *("--folder", str(folder), "--run-name", "pendulum"),
        )
    )
    return folder / "pendulum"


def headless_environment(**variables):
    environment = child_environment()
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM"):
        environment.pop(name, None)
    return {**environment, **variables}


def record(run, video, **variables):
    return subprocess.run(
        [sys.executable, "-m", "esmpi", "eval", str(run), "--episodes", "1", "--video", video],
        env=headless_environment(**variables),
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_video(path, result):
    assert result.returncode == 0, result.stdout + result.stderr
    frames = np.array(imageio.mimread(path, memtest=False))
    assert frames.ndim == 4 and frames.shape[0] >= 2, frames.shape
    assert frames.std() > 1.0  # a drawn scene, not a blank frame
    assert not np.array_equal(frames[0], frames[-1])  # the pole moved
    shown = result.stdout.split("video of ")[1].split()[0]
    assert int(shown) == frames.shape[0]


def test_a_mujoco_video_records_on_this_headless_machine_with_nothing_set(pendulum_run, tmp_path):
    if not any(map(offscreen.renders, offscreen.BACKENDS)):
        pytest.skip("neither EGL nor OSMesa renders here (`make opengl` installs them as root)")
    video = str(tmp_path / "pendulum.mp4")
    check_video(video, record(pendulum_run, video))


def test_osmesa_when_the_user_names_it(pendulum_run, tmp_path):
    if not offscreen.renders("osmesa"):
        pytest.skip("OSMesa does not render here (`make opengl` installs libosmesa6 as root)")
    video = str(tmp_path / "pendulum.mp4")
    check_video(video, record(pendulum_run, video, MUJOCO_GL="osmesa"))
