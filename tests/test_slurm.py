"""The job scripts in jobs/ on a real one-node Slurm cluster that these tests start and stop.

Needs Debian's slurm-wlm and munge (`make slurm`, part of `make test`) and root; without them the
module is skipped with a message saying why. Jobs are submitted from a temporary folder (their
slurm_out/ and runs/ land there) and find this checkout's .venv through ESMPI_HOME.
"""

import contextlib
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from slurmcluster import SlurmCluster, why_unavailable

from conftest import SMALL_TABLE, checked, child_environment, esmpi, read_theta
from esmpi.checkpoint import PAUSE_VARIABLE
from esmpi.train import EXIT_STOPPED

pytestmark = pytest.mark.mpi

CHECKOUT = Path(__file__).resolve().parents[1]
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
# The run that the signal and kill tests interrupt, and compare with an uninterrupted one.
RUN = ["--env", "CartPole-v1", "--popsize", "16", "--hidden", "16", *SMALL_TABLE]
GENERATIONS = 60


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = why_unavailable()
    if reason:
        warnings.warn(f"*** {reason} ***", pytest.PytestWarning, stacklevel=1)
        pytest.skip(reason)
    started = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    started.start()
    yield started
    started.stop()


@pytest.fixture
def submit_dir(tmp_path):
    (tmp_path / "slurm_out").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """theta after GENERATIONS generations of RUN in one go (plain mpiexec; ranks do not matter)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    generations = ["--generations", str(GENERATIONS)]
    checked(
        esmpi("train", *RUN, *generations, "--folder", str(folder), "--run-name", "all", ranks=2)
    )
    return read_theta(folder / "all" / "checkpoint.h5")


def job_environment(cluster: SlurmCluster, **extra: str) -> dict[str, str]:
    env = cluster.environment(child_environment())
    env["ESMPI_HOME"] = str(CHECKOUT)
    if not (CHECKOUT / ".venv" / "bin" / "python").exists():  # run from another environment
        env["VIRTUAL_ENV"] = sys.prefix
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env.update(extra)
    return env


def sbatch(cluster, submit_dir, *args: str, env=None) -> str:
    """Run `sbatch ARGS` in `submit_dir`; return the job id."""
    result = cluster.run(
        "sbatch",
        "--parsable",
        *args,
        env=env or job_environment(cluster),
        cwd=submit_dir,
    )
    return result.stdout.strip().split(";")[0]


def wait_for(cluster, job_id: str, done, timeout: float = 120) -> dict[str, str]:
    """Poll `scontrol show job` until done(record) holds; return the record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = cluster.job(job_id)
        if record and done(record):
            return record
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} not done after {timeout} s: {cluster.job(job_id)}")


def job_pids(cluster, job_id: str) -> list[int]:
    """Every process of the job on this node (the batch shell, srun, the ranks)."""
    listed = cluster.run("scontrol", "listpids", job_id).stdout.splitlines()[1:]
    return [int(line.split()[0]) for line in listed if line.split() and line.split()[0].isdigit()]


def finished(record: dict[str, str]) -> bool:
    return record["JobState"] in FINISHED


def job_output(submit_dir: Path, name: str = "*") -> str:
    return "".join(path.read_text() for path in sorted((submit_dir / "slurm_out").glob(name)))


def wait_for_output(submit_dir: Path, marker: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = job_output(submit_dir)
        if marker in output:
            return output
        time.sleep(0.1)
    raise AssertionError(f"no {marker!r} in the job output:\n{job_output(submit_dir)}")


def test_train_job_completes_and_leaves_the_checkpoint(cluster, submit_dir):
    job = sbatch(
        cluster,
        submit_dir,
        "-n",
        "2",
        str(CHECKOUT / "jobs" / "train.sbatch"),
        *["--env", "CartPole-v1", "--popsize", "16", "--generations", "3", *SMALL_TABLE],
    )
    record = wait_for(cluster, job, finished)
    output = job_output(submit_dir, f"esmpi-{job}.out")
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", output
    assert "on 2 rank(s)" in output and output.count("esmpi: done,") == 1
    assert "3 generations" in output
    with h5py.File(submit_dir / "runs" / f"CartPole-v1__0__{job}" / "checkpoint.h5", "r") as h5:
        assert int(h5.attrs["generation"]) == 3 and int(h5.attrs["n_ranks"]) == 2


def test_signalled_job_checkpoints_requeues_and_ends_like_an_uninterrupted_run(
    cluster, submit_dir, uninterrupted
):
    """SIGUSR1 to the batch shell (what --signal=B:USR1@T sends before the time limit): the ranks
    stop after a generation with a checkpoint, the script requeues the job, and the same job runs
    again with `--resume auto` to the end; theta equals that of a run never interrupted."""
    job = sbatch(
        cluster,
        submit_dir,
        "-n",
        "2",
        str(CHECKOUT / "jobs" / "train.sbatch"),
        *[*RUN, "--generations", str(GENERATIONS), "--print-every", "1"],
    )
    wait_for_output(submit_dir, f"gen     3/{GENERATIONS}")
    cluster.run("scancel", "--signal=USR1", "--batch", job)
    record = wait_for(cluster, job, lambda r: finished(r) and int(r["Restarts"]) >= 1)
    output = job_output(submit_dir)
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", output
    assert record["Restarts"] == "1", output
    assert output.count("esmpi: stopped by SIGUSR1 after generation ") == 1, output
    stopped_at = int(output.split("stopped by SIGUSR1 after generation ")[1].split()[0])
    assert 3 <= stopped_at < GENERATIONS, output
    assert f"exit code {EXIT_STOPPED}" in output and f"requeueing job {job}" in output
    assert f"resuming at generation {stopped_at}" in output
    assert output.count("esmpi: done,") == 1 and f"{GENERATIONS} generations" in output
    run = submit_dir / "runs" / f"CartPole-v1__0__{job}" / "checkpoint.h5"
    assert np.array_equal(read_theta(run), uninterrupted)


def test_sweep_array_runs_every_environment_and_seed(cluster, submit_dir):
    array_job = sbatch(
        cluster,
        submit_dir,
        "-n",
        "1",
        "--array=0-3",
        str(CHECKOUT / "jobs" / "sweep.sbatch"),
        *["--envs", "CartPole-v1,Pendulum-v1", "--seeds", "0,1"],
        *["--popsize", "8", "--hidden", "8", "--generations", "2", *SMALL_TABLE],
    )
    for task in range(4):
        record = wait_for(cluster, f"{array_job}_{task}", finished, timeout=180)
        assert record["JobState"] == "COMPLETED", job_output(submit_dir)
    for env in ("CartPole-v1", "Pendulum-v1"):
        for seed in (0, 1):
            (folder,) = (submit_dir / "runs").glob(f"{env}__{seed}__{array_job}_*")
            with h5py.File(folder / "checkpoint.h5", "r") as h5:
                assert int(h5.attrs["generation"]) == 2 and h5.attrs["env_id"] == env
    assert len(list((submit_dir / "slurm_out").glob(f"esmpi-sweep-{array_job}_*.out"))) == 4


def test_a_rank_that_raises_ends_the_job_with_an_error_within_seconds(cluster, submit_dir):
    job = sbatch(
        cluster,
        submit_dir,
        "-n",
        "2",
        str(CHECKOUT / "jobs" / "train.sbatch"),
        *["--env", "faultyenvs:CannotRestartCartPole", "--max-steps", "200"],
        *["--generations", "10000"],
        *["--popsize", "8", "--hidden", "8", *SMALL_TABLE],
    )
    record = wait_for(cluster, job, finished, timeout=90)
    output = job_output(submit_dir)
    assert record["JobState"] == "FAILED" and record["ExitCode"] != "0:0", output
    assert output.count("esmpi: rank 1 of 2 failed:") == 1, output
    assert output.count("RuntimeError: the simulator cannot restart") == 1, output
    assert "requeueing" not in output
    seconds = time.mktime(time.strptime(record["EndTime"], "%Y-%m-%dT%H:%M:%S")) - time.mktime(
        time.strptime(record["StartTime"], "%Y-%m-%dT%H:%M:%S")
    )
    assert seconds < 30, output  # start-up, a generation or two, then the abort: not a hang


def test_kill_9_during_a_checkpoint_write_leaves_a_checkpoint_that_resumes(
    cluster, submit_dir, uninterrupted
):
    """Kill -9 of every process of the job while rank 0 is inside the write of generation 4's
    checkpoint: generation 2's is still there and readable, and a new job with the same run name
    continues from it with `--resume auto` to the result of an uninterrupted run."""
    options = [*RUN, "--generations", str(GENERATIONS), "--print-every", "2"]
    options += ["--run-name", "killed"]
    script = str(CHECKOUT / "jobs" / "train.sbatch")
    env = job_environment(cluster, **{PAUSE_VARIABLE: "4"})
    job = sbatch(cluster, submit_dir, "-n", "2", script, *options, env=env)
    wait_for_output(submit_dir, f"{PAUSE_VARIABLE}: pausing inside the write")
    run = submit_dir / "runs" / "killed"
    (temporary,) = run.glob("checkpoint.h5.tmp*")  # the write under way
    pids = job_pids(cluster, job)
    assert len(pids) >= 3, pids  # the batch shell, srun and the ranks at least
    for pid in pids:  # all at once, with no warning: what a node crash does to the job
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    record = wait_for(cluster, job, finished)
    assert record["JobState"] != "COMPLETED" and record["Restarts"] == "0"
    with h5py.File(run / "checkpoint.h5", "r") as h5:
        assert int(h5.attrs["generation"]) == 2

    again = sbatch(cluster, submit_dir, "-n", "2", script, *options)
    record = wait_for(cluster, again, finished)
    output = job_output(submit_dir, f"esmpi-{again}.out")
    assert record["JobState"] == "COMPLETED", output
    assert "resuming at generation 2" in output
    assert not temporary.exists()  # the killed writer's leftover is cleaned up
    assert np.array_equal(read_theta(run / "checkpoint.h5"), uninterrupted)


def test_a_suite_submitted_as_an_array_finishes_every_run(cluster, submit_dir):
    """`esmpi suite run FILE --slurm` submits one jobs/sweep.sbatch task per unfinished run; the
    table then records and reports each row, and nothing is left to submit."""
    import subprocess

    suite_file = submit_dir / "suite.toml"
    suite_file.write_text(
        f'folder = "{submit_dir / "runs"}"\nthreads = 1\n\n[[runs]]\nenv = "CartPole-v1"\n'
        'strategy = ["openai-es", "snes"]\nseeds = [0, 1]\ntotal_steps = 5000\n'
        "options = { hidden = [8], noise_table_size = 2000000, final_episodes = 2 }\n"
    )
    command = [sys.executable, "-m", "esmpi", "suite", "run", str(suite_file), "--slurm"]
    environment = job_environment(cluster)
    submitted = subprocess.run(
        command, env=environment, cwd=submit_dir, capture_output=True, text=True, timeout=60
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    array_job = submitted.stdout.split("Submitted batch job ")[1].split()[0]
    for task in range(4):
        record = wait_for(cluster, f"{array_job}_{task}", finished, timeout=180)
        assert record["JobState"] == "COMPLETED", job_output(submit_dir)
    table = checked(esmpi("suite", "table", str(suite_file))).stdout
    assert table.count("| CartPole-v1 |") == 2 and "missing" not in table, table
    assert len((submit_dir / "suite.results.jsonl").read_text().splitlines()) == 4  # recorded
    again = subprocess.run(
        command, env=environment, cwd=submit_dir, capture_output=True, text=True, timeout=60
    )
    assert "nothing to submit" in again.stdout, again.stdout + again.stderr
