"""Distributed behaviour on real MPI ranks (mpiexec from the venv's MPICH, oversubscribed)."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import (
    SMALL_TABLE,
    checked,
    child_environment,
    esmpi,
    mpi_python,
    read_theta,
    strategy_state,
)
from esmpi import presets

pytestmark = pytest.mark.mpi

COMMON = ["--env", "Pendulum-v1", "--popsize", "10", "--hidden", "16,8", *SMALL_TABLE]


def test_rank_invariance_bit_identical_theta_with_1_2_and_3_ranks(runs):
    """Same config and seed: the same bits whichever rank ran which member."""
    thetas = []
    for ranks in (1, 2, 3):
        name = f"ranks{ranks}"
        checked(
            esmpi(
                "train",
                *COMMON,
                "--generations",
                "3",
                "--folder",
                str(runs),
                "--run-name",
                name,
                ranks=ranks,
            )
        )
        thetas.append(read_theta(runs / name / "checkpoint.h5"))
    assert np.array_equal(thetas[0], thetas[1]) and np.array_equal(thetas[0], thetas[2])
    assert not np.array_equal(thetas[0], np.zeros_like(thetas[0]))


def test_four_ranks_with_more_ranks_than_pairs_of_work(runs):
    result = checked(
        esmpi(
            "train",
            *COMMON,
            "--popsize",
            "4",
            "--generations",
            "2",
            "--folder",
            str(runs),
            "--run-name",
            "four",
            ranks=4,
        )
    )
    assert "on 4 rank(s)" in result.stdout
    assert result.stdout.count("esmpi: done") == 1  # rank 0 alone reports


def test_resume_continues_bit_identically(runs):
    """10 generations in one go equal 5, then a resume to 10 (on another number of ranks)."""
    checked(
        esmpi(
            "train",
            *COMMON,
            "--generations",
            "10",
            "--folder",
            str(runs),
            "--run-name",
            "whole",
            ranks=2,
        )
    )
    checked(
        esmpi(
            "train",
            *COMMON,
            "--generations",
            "5",
            "--folder",
            str(runs),
            "--run-name",
            "split",
            ranks=3,
        )
    )
    result = checked(
        esmpi("train", "--resume", str(runs / "split"), "--generations", "10", ranks=2)
    )
    assert "resuming at generation 5" in result.stdout
    whole, split = runs / "whole" / "checkpoint.h5", runs / "split" / "checkpoint.h5"
    assert np.array_equal(read_theta(whole), read_theta(split))

    with h5py.File(whole) as a, h5py.File(split) as b:
        assert np.array_equal(a["history"]["eval_return"], b["history"]["eval_return"])
        assert b.attrs["generation"] == 10 and b.attrs["n_ranks"] == 2


def test_resume_auto_starts_then_continues(runs):
    args = ["train", *COMMON, "--folder", str(runs), "--run-name", "auto", "--resume", "auto"]
    checked(esmpi(*args, "--generations", "2", ranks=2))
    result = checked(esmpi(*args, "--generations", "4", ranks=2))
    assert "resuming at generation 2" in result.stdout


def test_resume_refuses_a_changed_setting(runs):
    checked(
        esmpi(
            "train",
            *COMMON,
            "--generations",
            "1",
            "--folder",
            str(runs),
            "--run-name",
            "r",
            ranks=2,
        )
    )
    result = esmpi("train", "--resume", str(runs / "r"), "--sigma", "0.5", ranks=2)
    assert result.returncode == 2
    preset_sigma = presets.preset_for("Pendulum-v1").values["sigma"]  # what the run stored
    assert f"--sigma 0.5 differs from the checkpoint's {preset_sigma}" in result.stderr
    assert result.stderr.count("esmpi: error") == 1


def test_threads_starts_ranks_itself(runs):
    result = checked(
        esmpi(
            "train",
            *COMMON,
            "--generations",
            "1",
            "--threads",
            "2",
            "--folder",
            str(runs),
            "--run-name",
            "t",
        )
    )
    assert "esmpi: running " in result.stdout and "mpiexec -n 2" in result.stdout
    assert "on 2 rank(s)" in result.stdout


def test_threads_must_match_the_launcher(runs):
    result = esmpi("train", *COMMON, "--threads", "3", "--folder", str(runs), ranks=2)
    assert result.returncode == 2
    assert "--threads 3 does not match the 2 rank(s)" in result.stderr
    assert result.stderr.count("esmpi: error") == 1


def test_shared_noise_table_equals_a_private_one_on_3_ranks():
    code = (
        "import numpy as np\n"
        "from esmpi import noise, parallel\n"
        "comm = parallel.world()\n"
        "table = parallel.shared_noise_table(comm, 5 * noise.BLOCK + 77, 9).array\n"
        "ok = comm.gather(bool(np.array_equal(table, noise.build_table(table.size, 9))))\n"
        "if comm.Get_rank() == 0:\n"
        "    print(ok)\n"
    )
    result = checked(mpi_python(code, 3))
    assert result.stdout.strip() == "[True, True, True]"


CLOSED_TRAINERS = """
import json
from esmpi import parallel, train
from esmpi.config import Config
comm = parallel.world()

def shared_mib():  # this process's shared mappings (MPICH's shared-memory windows among them)
    total = 0
    for line in open("/proc/self/maps"):
        span, permissions = line.split()[:2]
        if "s" in permissions:
            start, end = (int(address, 16) for address in span.split("-"))
            total += end - start
    return total / 2**20

config = Config(env="Pendulum-v1", popsize=4, hidden=[4], max_steps=20, generations=1,
                noise_table_size=16 * 2**20, folder={folder!r})
seen = [shared_mib()]
for seed in range(3):  # trainers one after another, each closed before the next
    trainer = train.prepare(config.replace(seed=seed, run_name=f"prepared{{seed}}"), comm)
    trainer.generation()
    seen.append(shared_mib())
    trainer.close()
    seen.append(shared_mib())
train.train(config.replace(run_name="trained"), comm)  # closes its trainer
seen.append(shared_mib())
everything = comm.gather(seen)
if comm.Get_rank() == 0:
    print(json.dumps(everything))
"""


def test_closed_trainers_release_their_shared_memory(tmp_path):
    """Trainer.close() (and train(), which calls it) frees the node-shared noise table, so that
    a process training runs one after another holds one table at a time."""
    result = checked(mpi_python(CLOSED_TRAINERS.format(folder=str(tmp_path)), 2))
    table_mib = 16 * 4  # float32
    for seen in json.loads(result.stdout.strip().splitlines()[-1]):
        baseline = seen[0]
        opened, closed = seen[1:-1:2], seen[2:-1:2] + seen[-1:]
        assert all(mib >= baseline + table_mib for mib in opened), seen
        assert all(mib < baseline + 1 for mib in closed), seen


BLAS_THREADS_SEEN = """
import os, esmpi, numpy as np
vector = np.ones(100_000)
vector @ vector  # a BLAS call: its threads are running by now
seen = f'{os.environ["OPENBLAS_NUM_THREADS"]} {len(os.listdir("/proc/self/task"))}\\n'
os.write(1, seen.encode())  # one write a rank: the two ranks' lines do not interleave
"""


def test_esmpi_runs_blas_on_one_thread_unless_told_otherwise():
    """An esmpi process's BLAS starts no threads of its own (they competed with the ranks for
    the cores), under MPI or not, where the user has not set a number; a number set is kept."""
    command = [sys.executable, "-c", BLAS_THREADS_SEEN]
    alone = checked(
        subprocess.run(command, env=child_environment(), capture_output=True, text=True)
    ).stdout
    ranks = checked(mpi_python(BLAS_THREADS_SEEN, 2)).stdout.split()
    chosen = checked(mpi_python(BLAS_THREADS_SEEN, 2, variables={"OPENBLAS_NUM_THREADS": "2"}))
    chosen_words = chosen.stdout.split()
    assert alone.split()[0] == "1" and ranks[::2] == ["1", "1"] and chosen_words[::2] == ["2", "2"]
    if (os.cpu_count() or 1) > 1:  # OpenBLAS starts no more threads than there are cores
        threads, threads_when_chosen = int(ranks[1]), int(chosen_words[1])
        assert threads_when_chosen == threads + 1  # the BLAS's second thread


def test_a_large_policy_gets_the_same_bits_outside_mpi_and_on_two_ranks(tmp_path):
    """PGPE's ClipUp takes dot products of all the parameters, which OpenBLAS splits between its
    threads beyond 10,000 numbers: 16,896 parameters on one rank without mpiexec and on two
    ranks end with the same parameters."""
    train = ["train", "--env", "Pendulum-v1", "--strategy", "pgpe", "--hidden", "128,128"]
    train += ["--popsize", "4", "--generations", "2", *SMALL_TABLE, "--folder", str(tmp_path)]
    checked(esmpi(*train, "--run-name", "alone"))
    checked(esmpi(*train, "--run-name", "ranks", ranks=2))
    alone, ranks = (
        strategy_state(tmp_path / name / "checkpoint.h5") for name in ("alone", "ranks")
    )
    assert alone["theta"].size == 16_896 and "optimizer/first_moment" in alone
    assert alone.keys() == ranks.keys()
    assert all(np.array_equal(alone[key], ranks[key]) for key in alone)


def test_parameter_checksums_detect_divergence():
    code = (
        "import json, numpy as np\n"
        "from esmpi import parallel\n"
        "comm = parallel.world()\n"
        "same = parallel.arrays_agree(comm, np.ones(100, np.float32))\n"
        "theta = np.ones(100, np.float32)\n"
        "theta[3] += (comm.Get_rank() == 1) * 1e-7\n"
        "differ = parallel.arrays_agree(comm, theta)\n"
        "rows = comm.gather([comm.Get_rank(), same, differ])\n"
        "if comm.Get_rank() == 0:\n"
        "    print(json.dumps(rows))\n"
    )
    result = checked(mpi_python(code, 2))
    assert json.loads(result.stdout) == [[0, True, False], [1, True, False]]


def test_an_error_on_one_rank_stops_every_rank():
    code = (
        "from esmpi import parallel\n"
        "from esmpi.config import UsageError\n"
        "comm = parallel.world()\n"
        "try:\n"
        "    parallel.everywhere(comm, lambda: (_ for _ in ()).throw(UsageError('only rank 2'))"
        " if comm.Get_rank() == 2 else 1)\n"
        "except UsageError as error:\n"
        "    messages = comm.gather(str(error))\n"
        "    if comm.Get_rank() == 0:\n"
        "        print(messages)\n"
    )
    result = checked(mpi_python(code, 3))
    assert result.stdout.strip() == str(["only rank 2"] * 3)


def test_an_exception_on_one_rank_aborts_all_instead_of_hanging():
    code = (
        "from esmpi import parallel\n"
        "comm = parallel.world()\n"
        "parallel.abort_on_uncaught_exception(comm)\n"
        "if comm.Get_rank() == 1:\n"
        "    raise ValueError('simulated crash')\n"
        "comm.Barrier()\n"
    )
    result = mpi_python(code, 3, timeout=60)
    assert result.returncode != 0
    assert "rank 1 of 3 failed" in result.stderr and "simulated crash" in result.stderr


def test_task_counter_hands_out_every_task_once_per_round():
    """Dynamic load balancing: over several rounds of different sizes, each task index goes to
    exactly one rank, whichever rank is faster."""
    code = (
        "import json, time\n"
        "from esmpi import parallel\n"
        "comm = parallel.world()\n"
        "counter = parallel.TaskCounter(comm)\n"
        "rounds = []\n"
        "for n_tasks in (5, 1, 12, 0, 7):\n"
        "    mine = []\n"
        "    for task in counter.tasks(n_tasks):\n"
        "        mine.append(task)\n"
        "        time.sleep(0.002 * (comm.Get_rank() + 1))  # ranks of different speeds\n"
        "    rounds.append(mine)\n"
        "    comm.Barrier()\n"
        "everything = comm.gather(rounds)\n"
        "if comm.Get_rank() == 0:\n"
        "    print(json.dumps(everything))\n"
    )
    result = checked(mpi_python(code, 3))
    per_rank = json.loads(result.stdout)
    for round_index, n_tasks in enumerate((5, 1, 12, 0, 7)):
        handed = sorted(task for rank in per_rank for task in rank[round_index])
        assert handed == list(range(n_tasks))
    assert len(per_rank[0][2]) > len(per_rank[2][2])  # the fastest rank took the most of 12
