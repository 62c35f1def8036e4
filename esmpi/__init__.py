"""esmpi: OpenAI Evolution Strategies (Salimans et al. 2017) across MPI ranks."""

import os

__version__ = "0.1.0"

# Set in a process started by an MPI launcher: MPICH's Hydra and PMI-2 (srun --mpi=pmi2), PMIx
# (srun --mpi=pmix, Open MPI 5), Open MPI's own launcher.
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_FD", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE")

# One thread per rank: the ranks are the parallelism. A BLAS that starts a thread per core in every
# rank makes them compete for the cores; its spinning threads made a 10,752-parameter ClipUp step
# (two dot products) take 9-15 ms instead of about 1 ms with 2 ranks on 2 cores. Set here, before
# numpy loads its BLAS (`esmpi` and `python -m esmpi` import this first); a value the user set
# stays. jobs/*.sbatch export the same for the whole job.
if any(name in os.environ for name in LAUNCHER_VARIABLES):
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
