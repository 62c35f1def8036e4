"""Stopping early on a signal, and failures that must end every rank, under real mpiexec ranks.

The same behaviour under a real Slurm is in test_slurm.py; these run without one, in seconds.
"""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import MPIEXEC, SMALL_TABLE, checked, child_environment, esmpi, read_theta
from esmpi.train import EXIT_STOPPED

pytestmark = pytest.mark.mpi

CARTPOLE = ["--env", "CartPole-v1", "--popsize", "16", "--hidden", "16", *SMALL_TABLE]
FAULTY = ["--popsize", "8", "--hidden", "8", "--max-steps", "200", *SMALL_TABLE]


def start(*args: str, ranks: int = 2, env=None) -> subprocess.Popen:
    """Start `mpiexec -n ranks esmpi ARGS` in its own process group, output to a pipe."""
    return subprocess.Popen(
        [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "esmpi", *args],
        env=env or child_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def read_until(process: subprocess.Popen, marker: str, timeout: float = 120) -> str:
    """Read the process's output up to the first line holding `marker`."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    process.kill()
    raise AssertionError(f"no {marker!r} in the output:\n{''.join(seen)}")


def rank_pids(process: subprocess.Popen) -> list[int]:
    """The pids of the esmpi ranks below `process` (mpiexec -> hydra proxy -> ranks)."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    children = [pid for pid, parent in parents.items() if parent == process.pid]
    return sorted(pid for pid, parent in parents.items() if parent in children)


def test_sigterm_to_one_rank_stops_all_at_one_generation_and_resume_is_exact(runs):
    """One rank gets SIGTERM: every rank stops after the same generation, rank 0 writes that
    generation's checkpoint, all exit 75; `--resume auto` then ends where an uninterrupted run
    ends, bit for bit."""
    folder = ["--folder", str(runs), "--generations", "60"]
    process = start(
        "train",
        *CARTPOLE,
        *folder,
        "--print-every",
        "1",
        "--run-name",
        "stopped",
        "--resume",
        "auto",
    )
    shown = read_until(process, "gen     3/60")
    ranks = rank_pids(process)
    assert len(ranks) == 2, ranks
    os.kill(max(ranks), signal.SIGTERM)  # one rank only; which one does not matter
    rest, _ = process.communicate(timeout=60)
    output = shown + rest
    assert process.returncode == EXIT_STOPPED, output
    assert output.count("esmpi: stopped by SIGTERM after generation") == 1, output
    stopped_at = int(output.split("stopped by SIGTERM after generation ")[1].split()[0])
    assert 3 <= stopped_at < 60
    with h5py.File(runs / "stopped" / "checkpoint.h5", "r") as h5:
        assert int(h5.attrs["generation"]) == stopped_at
    assert not list((runs / "stopped").glob("*.tmp*"))

    resumed = checked(
        esmpi("train", *CARTPOLE, *folder, "--run-name", "stopped", "--resume", "auto", ranks=2)
    )
    assert f"resuming at generation {stopped_at}" in resumed.stdout
    checked(esmpi("train", *CARTPOLE, *folder, "--run-name", "whole", ranks=2))
    whole = read_theta(runs / "whole" / "checkpoint.h5")
    assert np.array_equal(read_theta(runs / "stopped" / "checkpoint.h5"), whole)


@pytest.mark.parametrize(
    ("env_class", "says"),
    [
        ("CannotRestartCartPole", "RuntimeError: the simulator cannot restart"),
        ("CrashingCartPole", "Fatal Python error: Segmentation fault"),
    ],
)
def test_a_failing_rank_ends_every_rank_within_seconds(runs, env_class, says):
    """Rank 1 fails in generation 2 or 3 while rank 0 waits in the sum of the results (its
    environment cannot be made again after a failed episode, or it crashes): the run must end
    with an error (printed once) soon after, not hang. A failed episode alone is survived
    (test_failures.py)."""
    started = time.monotonic()
    result = esmpi(
        "train",
        "--env",
        f"faultyenvs:{env_class}",
        *FAULTY,
        "--generations",
        "1000",
        "--folder",
        str(runs),
        ranks=2,
        timeout=90,
    )
    output = result.stdout + result.stderr
    assert result.returncode not in (0, EXIT_STOPPED), output
    assert output.count(says) == 1, output
    assert "gen " in output or "starting" in output  # it failed while training, not before
    assert time.monotonic() - started < 60, output


@pytest.fixture
def small_disk(tmp_path):
    """A 48 KiB file system (tmpfs, mounted as root): room for one small checkpoint, not two."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr!r}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_during_a_checkpoint_write_aborts_and_keeps_the_last_one(small_disk):
    """Rank 0 runs out of disk space while writing a checkpoint next to the previous one: the
    error is printed once, every rank ends (none waits for rank 0 in a collective), and the folder
    holds the previous checkpoint, readable, and no half-written file."""
    started = time.monotonic()
    result = esmpi(
        "train",
        *CARTPOLE,
        "--generations",
        "1000",
        "--print-every",
        "1",
        "--folder",
        str(small_disk),
        "--run-name",
        "full",
        ranks=2,
        timeout=90,
    )
    output = result.stdout + result.stderr
    assert result.returncode not in (0, EXIT_STOPPED), output
    assert output.count("esmpi: rank ") == 1, output  # one traceback, from rank 0
    assert "Cannot write the checkpoint" in output and "No space left on device" in output
    assert time.monotonic() - started < 60
    left = sorted(os.listdir(small_disk / "full"))
    assert [name for name in left if name.startswith("checkpoint")] == ["checkpoint.h5"], left
    with h5py.File(small_disk / "full" / "checkpoint.h5", "r") as h5:
        written = int(h5.attrs["generation"])
    assert 1 <= written < 1000
    assert f"gen {written + 1:>5}/1000" in output  # the next one was being written
