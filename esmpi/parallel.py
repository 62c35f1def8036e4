"""The MPI layer, and the only module that imports mpi4py.

Kept thin: how work is split, the few collectives a generation needs (buffer-based, on contiguous
numpy arrays), one node-shared copy of the noise table (MPI-3 shared memory), agreement on
errors so that a mistake seen by one rank stops every rank cleanly, the catching of
SIGUSR1/SIGTERM for stopping early (train.py sends the signal with each generation's sum), and an
abort on any uncaught exception so that no rank is left waiting in a collective. `comm` is
always passed in.
"""

from __future__ import annotations

import atexit
import faulthandler
import os
import shutil
import signal
import sys
import time
import traceback
import zlib

import numpy as np

from esmpi import noise
from esmpi.config import UsageError

# Set in a process started by an MPI launcher: MPICH's Hydra and PMI-2 (srun --mpi=pmi2), PMIx
# (srun --mpi=pmix, Open MPI 5), Open MPI's own launcher.
_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_FD", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE")


def launched_by_mpi() -> bool:
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def mpiexec_command(n_ranks: int, arguments: list[str]) -> list[str]:
    """The command running `python -m esmpi ARGUMENTS` on n_ranks ranks with the venv's mpiexec."""
    return mpiexec_python(n_ranks, ["-m", "esmpi", *arguments])


def mpiexec_python(n_ranks: int, python_arguments: list[str]) -> list[str]:
    """The command running this Python with `python_arguments` on n_ranks ranks."""
    beside_python = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = beside_python if os.path.exists(beside_python) else shutil.which("mpiexec")
    if mpiexec is None:
        raise UsageError(
            "--threads needs an `mpiexec`, and none is beside this Python or on PATH; install the "
            "`mpich` wheel (`pip install mpich`) or start esmpi with your cluster's launcher."
        )
    return [mpiexec, "-n", str(n_ranks), sys.executable, *python_arguments]


def relaunch(command: list[str]) -> None:
    """Replace this process by `command`, after saying what it is."""
    print("esmpi: running " + " ".join(command), flush=True)
    os.execv(command[0], command)


_ABORT_GRACE_S = 1.0


def abort_on_uncaught_exception(comm) -> None:
    """Make an uncaught exception on any rank print once and abort every rank (no deadlock).
    A crash inside compiled code (numba, a simulator) prints the Python stack of the crashing rank;
    the launcher then ends the others (`mpiexec` always, `srun` with --kill-on-bad-exit)."""
    faulthandler.enable()

    def hook(kind, value, trace):
        if _python_frames_above():
            # Not an uncaught exception: C extensions report errors they cannot raise (Cython's
            # unraisable errors, such as h5py's while a full disk fails a checkpoint write)
            # through sys.excepthook in the middle of running code. Print, do not abort.
            sys.__excepthook__(kind, value, trace)
            return
        text = "".join(traceback.format_exception(kind, value, trace))
        sys.stderr.write(f"esmpi: rank {comm.Get_rank()} of {comm.Get_size()} failed:\n{text}")
        sys.stderr.flush()
        # MPI_Abort kills every process at once; the launcher forwards what a rank printed from a
        # pipe, and without this pause it sometimes kills the job before the message is through.
        time.sleep(_ABORT_GRACE_S)
        comm.Abort(1)

    sys.excepthook = hook


def _python_frames_above() -> bool:
    """Whether the excepthook that calls this was called from running Python code (an
    uncaught exception reaches it with the Python stack already unwound)."""
    try:
        sys._getframe(2)  # 0: this function, 1: the hook, 2: whoever called the hook
    except ValueError:
        return False
    return True


def agree(comm, error: UsageError | None) -> None:
    """Raise on every rank if any rank saw an error; the lowest failing rank's message wins."""
    messages = comm.allgather(None if error is None else str(error))
    first = next((message for message in messages if message is not None), None)
    if first is not None:
        raise UsageError(first)


def merged(comm, mapping: dict) -> dict:
    """The union of every rank's `mapping` (small, picklable; keys distinct across ranks), on
    every rank."""
    union: dict = {}
    for part in comm.allgather(mapping):
        union.update(part)
    return union


def on_rank0(comm, action):
    """Run `action()` on rank 0 only and share its result; a UsageError there stops every rank."""
    result, error = None, None
    if comm.Get_rank() == 0:
        try:
            result = action()
        except UsageError as caught:
            error = caught
    agree(comm, error)
    return comm.bcast(result, root=0)


def everywhere(comm, action):
    """Run `action()` on every rank; a UsageError on any rank stops every rank."""
    result, error = None, None
    try:
        result = action()
    except UsageError as caught:
        error = caught
    agree(comm, error)
    return result


class TaskCounter:
    """Hands out task indices to whichever rank asks first: dynamic load balancing.

    Episodes differ in length (a Hopper that falls ends early), so a fixed share per rank would
    leave ranks idle; with the counter a rank that finishes early takes the next task. Which rank
    runs a task never changes its result.

    Each node holds one int64 counter in MPI-3 shared memory, and its ranks take tasks with an
    atomic CPU increment (kernels.fetch_and_increment). Not MPI_Fetch_and_op: with MPICH that
    waits until the target rank next enters MPI, i.e. until it finishes its current episode. The
    tasks of a round are split between nodes in proportion to their ranks, and handed out
    dynamically within each node.

    The counter is never reset: in each round every rank of the node draws until it gets a number
    past the node's tasks, so a round consumes exactly its tasks plus the node's ranks, and the
    next round starts after that. The collective that sums the results between rounds ensures no
    rank still draws from the previous one.
    """

    def __init__(self, comm):
        from mpi4py import MPI

        self.shared = NodeShared(comm, 1, np.int64)
        node = self.shared.node
        self.node_size = node.Get_size()
        # Ranks on nodes before this one (nodes ordered by their lowest world rank).
        first_ranks = comm.allgather(node.allreduce(comm.Get_rank(), op=MPI.MIN))
        mine = first_ranks[comm.Get_rank()]
        self.ranks_before = sum(1 for first in first_ranks if first < mine)
        self.world_size = comm.Get_size()
        if node.Get_rank() == 0:
            self.shared.array[0] = 0
        node.Barrier()
        self.round_start = 0

    def node_share(self, n_tasks: int) -> range:
        """The tasks of a round that this node's ranks share."""
        start = n_tasks * self.ranks_before // self.world_size
        end = n_tasks * (self.ranks_before + self.node_size) // self.world_size
        return range(start, end)

    def tasks(self, n_tasks: int):
        """Yield this rank's share of task indices 0..n_tasks-1 for one round."""
        from esmpi.kernels import fetch_and_increment

        share = self.node_share(n_tasks)
        end = self.round_start + len(share)
        while (drawn := fetch_and_increment(self.shared.array)) < end:
            yield share[drawn - self.round_start]
        self.round_start = end + self.node_size

    def free(self) -> None:
        """Release the node's counter (collective over the node's ranks)."""
        self.shared.free()


def rest_until_all_arrive(comm, poll_s: float = 0.001) -> None:
    """A barrier that sleeps while it waits: MPICH's Barrier spins, which would take this rank's
    core from the ranks still working (the bench measures one rank working alone this way)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll_s)


def self_comm():
    """A communicator of this rank alone."""
    from mpi4py import MPI

    return MPI.COMM_SELF


def sum_records(comm, records: np.ndarray) -> None:
    """Sum float64 `records` over all ranks in place. Each row is filled by exactly one rank and
    is zero elsewhere, so the sum is exact and the same whatever the number of ranks."""
    from mpi4py import MPI

    comm.Allreduce(MPI.IN_PLACE, records, op=MPI.SUM)


def arrays_agree(comm, *arrays: np.ndarray) -> bool:
    """Whether every rank holds bit-identical `arrays` (compared by checksum)."""
    checksum = 0
    for array in arrays:
        checksum = zlib.crc32(np.ascontiguousarray(array).data, checksum)
    checksums = np.empty(comm.Get_size(), dtype=np.int64)
    comm.Allgather(np.array([checksum], dtype=np.int64), checksums)
    return bool((checksums == checksums[0]).all())


class NodeShared:
    """A numpy array held once per node in MPI-3 shared memory (an MPI window on the node's
    communicator), readable and writable by every rank of the node.

    `free()` releases it, collectively over the node's ranks; an array never freed is released
    before MPI finalises (mpi4py's own atexit hook, registered first, runs after ours). After
    `free()` the array's memory is gone: nothing may read `array` again."""

    def __init__(self, comm, size: int, dtype):
        from mpi4py import MPI

        self.node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        itemsize = np.dtype(dtype).itemsize
        self.window = MPI.Win.Allocate_shared(
            size * itemsize if self.node.Get_rank() == 0 else 0, itemsize, comm=self.node
        )
        buffer, _ = self.window.Shared_query(0)
        # mpi4py's stub gives MPI.buffer the buffer protocol only from Python 3.12 (PEP 688).
        self.array = np.ndarray(buffer=buffer, dtype=dtype, shape=(size,))  # type: ignore[arg-type]
        self.freed = False
        atexit.register(self.free)

    def free(self) -> None:
        from mpi4py import MPI

        if self.freed or MPI.Is_finalized():
            return
        atexit.unregister(self.free)
        self.array = np.empty(0, dtype=self.array.dtype)
        self.window.Free()
        self.node.Free()
        self.freed = True


def shared_noise_table(comm, table_size: int, seed: int) -> NodeShared:
    """The noise table, held once per node in MPI-3 shared memory and filled by all of the node's
    ranks together (each a share of the blocks; a block's numbers depend only on seed and index)."""
    shared = NodeShared(comm, table_size, np.float32)
    node = shared.node
    blocks = range(node.Get_rank(), noise.block_count(table_size), node.Get_size())
    noise.fill_blocks(shared.array, seed, blocks)
    node.Barrier()
    return shared


# Asking a run to stop early: the batch shell forwards Slurm's warning signal (`--signal`) as
# SIGUSR1, and Slurm sends SIGTERM at preemption and at the time limit.
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopSignals:
    """Catches SIGUSR1 and SIGTERM instead of dying of them, and remembers the last one, until
    `restore()` puts the previous handlers back. Only sets a number: each rank sends it with its
    results of the generation (the one sum of a generation), so a signal never interrupts a
    collective and every rank learns of it at the same generation."""

    def __init__(self):
        self.received = 0
        self._previous = {number: signal.signal(number, self._note) for number in STOP_SIGNALS}

    def _note(self, number, frame) -> None:
        self.received = number

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
