"""Running observation mean and variance, merged from many ranks' partial sums.

Observations are normalised with statistics frozen for a whole generation; the policy kernel
accumulates sums of (obs - frozen mean) and of their squares, and after the generation the sums of
all episodes update the running estimate (Chan et al.'s parallel variance merge). Centring on the
frozen mean keeps the sums small, so the float64 sums lose no precision to cancellation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MIN_STD = 1e-2  # a constant feature must not be blown up to +-clip by a tiny std


@dataclass(frozen=True)
class ObsNorm:
    count: float
    mean: np.ndarray  # float64 (n,)
    var: np.ndarray  # float64 (n,)

    @classmethod
    def initial(cls, size: int) -> ObsNorm:
        return cls(count=0.0, mean=np.zeros(size), var=np.ones(size))

    @property
    def std(self) -> np.ndarray:
        return np.maximum(np.sqrt(self.var), _MIN_STD)

    def merged(self, count: float, centred_sum: np.ndarray, centred_sumsq: np.ndarray) -> ObsNorm:
        """Add `count` observations given as sums of (obs - self.mean) and (obs - self.mean)**2."""
        if count <= 0:
            return self
        batch_delta = centred_sum / count  # batch mean - self.mean
        batch_var = np.maximum(centred_sumsq / count - batch_delta**2, 0.0)
        total = self.count + count
        mean = self.mean + batch_delta * (count / total)
        if self.count == 0:
            return ObsNorm(count=total, mean=mean, var=batch_var)
        m2 = (
            self.var * self.count
            + batch_var * count
            + batch_delta**2 * (self.count * count / total)
        )
        return ObsNorm(count=total, mean=mean, var=m2 / total)
