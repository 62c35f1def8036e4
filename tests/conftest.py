"""Shared helpers: run the real `esmpi` command, with or without real MPI ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

BIN = Path(sys.executable).parent
MPIEXEC = str(BIN / "mpiexec")
TESTS = Path(__file__).parent
# Small enough to build in a blink, large enough for every policy the tests train.
SMALL_TABLE = ["--noise-table-size", "2000000"]
# One numba cache for the session (read when numba is first imported, after this module): the
# kernels that the tests, the ranks they launch and the Slurm jobs load are compiled once. Without
# it the jobs' script puts them in /tmp, and the first job of a fresh checkout spent 81 s of its
# 84 compiling them again.
os.environ.setdefault("NUMBA_CACHE_DIR", str(TESTS.parent / ".numba-cache"))


BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    for name in ("PMI_RANK", "PMI_FD", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_JOB_ID"):
        env.pop(name, None)
    # esmpi sets these in its own processes (and so, by importing it, in this one): children
    # start without them, as a user's command does, and set them themselves.
    for name in BLAS_THREADS:
        env.pop(name, None)
    return env


# MPICH splits the ranks of one machine into this many emulated nodes for
# Split_type(COMM_TYPE_SHARED): the per-node noise tables and the task split between nodes run.
TWO_NODES = {"MPIR_CVAR_NUM_CLIQUES": "2"}


# A Haswell-era node's libraries on this machine: OpenBLAS's Haswell kernels and numpy without its
# AVX-512 code (float64 exp and log among it), the two libraries whose results depend on the CPU.
# On a CPU without AVX-512 they are the machine's own, and a run under them shows nothing new.
HASWELL_LIBRARIES = {
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}


def esmpi(*args: str, ranks: int | None = None, cwd=None, timeout: float = 600, variables=None):
    """Run `esmpi ARGS` (under `mpiexec -n ranks` when given), with environment `variables`
    added; return the CompletedProcess."""
    command = [sys.executable, "-m", "esmpi", *args]
    if ranks is not None:
        command = [MPIEXEC, "-n", str(ranks), *command]
    return subprocess.run(
        command,
        cwd=cwd,
        env={**child_environment(), **(variables or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def esmpi_on_two_cpus(*args: str, timeout: float = 600):
    """Run `esmpi ARGS` on two ranks as on a cluster of two CPU types: rank 0, which writes the
    checkpoint, with HASWELL_LIBRARIES, rank 1 with this machine's own."""
    command = [sys.executable, "-m", "esmpi", *args]
    haswell = [word for item in HASWELL_LIBRARIES.items() for word in ("-env", *item)]
    return subprocess.run(
        [MPIEXEC, "-n", "1", *haswell, *command, ":", "-n", "1", *command],
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mpi_python(code: str, ranks: int, timeout: float = 120, variables=None):
    """Run a Python snippet on real MPI ranks, with environment `variables` added."""
    return subprocess.run(
        [MPIEXEC, "-n", str(ranks), sys.executable, "-c", code],
        env={**child_environment(), **(variables or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def checked(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def read_theta(path) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        return h5["theta"][...]


def strategy_datasets(path) -> dict:
    """Every dataset of a checkpoint's strategy group by its path in the group (the optimizer's
    and the strategy's float64 state, where a last bit shows before it reaches theta)."""
    values = {}

    def keep(name, node):  # returns None: visititems stops at the first value returned
        if isinstance(node, h5py.Dataset):
            values[name] = node[()]

    with h5py.File(path, "r") as h5:
        h5["strategy"].visititems(keep)
    return values


def strategy_state(path) -> dict:
    """theta and the strategy group's datasets (ClipUp's velocity, PGPE's sigmas)."""
    return {"theta": read_theta(path), **strategy_datasets(path)}


@pytest.fixture
def runs(tmp_path):
    """A folder for run folders, used as --folder."""
    return tmp_path / "runs"


def train_on_1_2_3_ranks_and_resume(train_args: list[str], runs: Path):
    """`esmpi train TRAIN_ARGS --folder runs` for 4 generations on 1, 2 and 3 ranks, and for 2 on
    2 ranks resumed to 4 on 3; asserts all four end with the same parameters, bit for bit, and
    returns the 2-rank run's checkpoint (its folder is runs / 'ranks2')."""
    from esmpi import checkpoint

    common = [*train_args, "--folder", str(runs)]
    for ranks in (1, 2, 3):
        checked(esmpi(*common, "--generations", "4", "--run-name", f"ranks{ranks}", ranks=ranks))
    checked(esmpi(*common, "--generations", "2", "--run-name", "split", ranks=2))
    checked(esmpi("train", "--resume", str(runs / "split"), "--generations", "4", ranks=3))
    expected = read_theta(runs / "ranks1" / "checkpoint.h5")
    for run in ("ranks2", "ranks3", "split"):
        assert np.array_equal(read_theta(runs / run / "checkpoint.h5"), expected), run
    return checkpoint.load(str(runs / "ranks2" / "checkpoint.h5"))


def assert_final_evaluation_replays(folder: Path, final) -> None:
    """`esmpi eval --episode-seed S` gives each of theta's final-evaluation returns again."""
    import json

    assert final is not None
    for seed, want in zip(final.seeds, final.returns[0], strict=True):
        shown = esmpi("eval", str(folder), "--episode-seed", str(seed), "--json")
        assert json.loads(checked(shown).stdout)["returns"] == [want]
