"""The MPI layer, and the only module that imports mpi4py.

Kept thin: how work is split, the few collectives a generation needs (buffer-based, on contiguous
numpy arrays), one node-shared copy of the noise table (MPI-3 shared memory), agreement on
errors so that a mistake seen by one rank stops every rank cleanly, and an abort on any uncaught
exception so that no rank is left waiting in a collective. `comm` is always passed in.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
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
    beside_python = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = beside_python if os.path.exists(beside_python) else shutil.which("mpiexec")
    if mpiexec is None:
        raise UsageError(
            "--threads needs an `mpiexec`, and none is beside this Python or on PATH; install the "
            "`mpich` wheel (`pip install mpich`) or start esmpi with your cluster's launcher."
        )
    return [mpiexec, "-n", str(n_ranks), sys.executable, "-m", "esmpi", *arguments]


def relaunch(command: list[str]) -> None:
    """Replace this process by `command`, after saying what it is."""
    print("esmpi: running " + " ".join(command), flush=True)
    os.execv(command[0], command)


def abort_on_uncaught_exception(comm) -> None:
    """Make an uncaught exception on any rank print once and abort every rank (no deadlock)."""

    def hook(kind, value, trace):
        text = "".join(traceback.format_exception(kind, value, trace))
        sys.stderr.write(f"esmpi: rank {comm.Get_rank()} of {comm.Get_size()} failed:\n{text}")
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = hook


def agree(comm, error: UsageError | None) -> None:
    """Raise on every rank if any rank saw an error; the lowest failing rank's message wins."""
    messages = comm.allgather(None if error is None else str(error))
    first = next((message for message in messages if message is not None), None)
    if first is not None:
        raise UsageError(first)


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


def assigned_tasks(n_tasks: int, rank: int, size: int) -> range:
    """The task indices rank `rank` of `size` runs: round robin, so long and short tasks mix."""
    return range(rank, n_tasks, size)


def sum_records(comm, records: np.ndarray) -> None:
    """Sum float64 `records` over all ranks in place. Each row is filled by exactly one rank and
    is zero elsewhere, so the sum is exact and the same whatever the number of ranks."""
    from mpi4py import MPI

    comm.Allreduce(MPI.IN_PLACE, records, op=MPI.SUM)


def parameters_agree(comm, *arrays: np.ndarray) -> bool:
    """Whether every rank holds bit-identical `arrays` (compared by checksum)."""
    checksum = 0
    for array in arrays:
        checksum = zlib.crc32(np.ascontiguousarray(array).view(np.uint8), checksum)
    checksums = np.empty(comm.Get_size(), dtype=np.int64)
    comm.Allgather(np.array([checksum], dtype=np.int64), checksums)
    return bool((checksums == checksums[0]).all())


def shared_noise_table(comm, table_size: int, seed: int) -> np.ndarray:
    """The noise table, held once per node in MPI-3 shared memory and filled by all of the node's
    ranks together (each a share of the blocks; a block's numbers depend only on seed and index)."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    itemsize = np.dtype(np.float32).itemsize
    window = MPI.Win.Allocate_shared(
        table_size * itemsize if node.Get_rank() == 0 else 0, itemsize, comm=node
    )
    buffer, _ = window.Shared_query(0)
    table = np.ndarray(buffer=buffer, dtype=np.float32, shape=(table_size,))
    blocks = range(node.Get_rank(), noise.block_count(table_size), node.Get_size())
    noise.fill_blocks(table, seed, blocks)
    node.Barrier()
    # The window must be freed before MPI finalises (mpi4py's own atexit hook, registered first,
    # runs after this one).
    atexit.register(_free_window, window, node)
    return table


def _free_window(window, node) -> None:
    from mpi4py import MPI

    if not MPI.Is_finalized():
        window.Free()
        node.Free()
