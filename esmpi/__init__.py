"""esmpi: OpenAI Evolution Strategies (Salimans et al. 2017) across MPI ranks."""

import os

__version__ = "0.1.0"

# One BLAS thread in every esmpi process, set before numpy loads its BLAS (`esmpi` and
# `python -m esmpi` import this first; a value the user set stays). For speed: the ranks are the
# parallelism, and a BLAS starting a thread per core in every rank makes them compete for the
# cores (PGPE's ClipUp step, two dot products of 10,752 numbers, took 9-30 ms instead of 1-2 ms
# with 2 ranks on 2 cores). For the same bits on any number of ranks: OpenBLAS splits a dot
# product of more than 10,000 numbers between its threads, which rounds differently, so a run on
# one rank outside MPI must use as many BLAS threads as the ranks of a run under it: one.
# jobs/*.sbatch export the same for the whole job.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
