"""The updates' arithmetic whose bits do not depend on the CPU.

Every rank applies the same update to its own copy of the search state, so ranks on nodes with
different CPUs must round it the same way: a rank that rounded one last bit differently would
drift away from the others, and the check every --check-every generations stops the run. Two
libraries round by CPU. OpenBLAS picks its dot-product kernel by CPU (the SkylakeX and Haswell
kernels add in different orders: measured on vectors of 8 to 100,003 numbers), and numpy takes
float64 exp and log from its own AVX-512 code where the CPU has AVX-512, from the C library's
elsewhere. So the updates take sums of squares with numpy's pairwise summation, whose order is
written in its source, and exp and log from the C library (on x86-64 glibc picks one variant on
every CPU with FMA: Intel's since Haswell, AMD's since Zen). Elementwise +, -, *, / and sqrt are
correctly rounded everywhere; a reduction over a few numbers (a popsize-length sum) is left to
numpy, which sums pairwise.
"""

from __future__ import annotations

import math

import numpy as np

from esmpi import kernels


def norm(vector: np.ndarray) -> float:
    """The Euclidean norm of a float64 vector, without BLAS."""
    return math.sqrt(float(np.sum(np.square(vector))))


def exp(values: np.ndarray) -> np.ndarray:
    """exp of a 1-d float64 array, elementwise, by the C library."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty_like(values)
    kernels.exp_into(values, out)
    return out


def log(values: np.ndarray) -> np.ndarray:
    """log of a few numbers (a population's worth), elementwise, by the C library."""
    return np.array([math.log(value) for value in values], dtype=np.float64)
