"""The MLP policy: parameter layout, initialisation, observation encoding and action mapping.

A policy is a flat float32 vector `theta` plus a `PolicySpec` that says how to read it (see the
layout in `kernels.py`). `Actor` owns the per-rank scratch buffers and turns one raw observation
into one action with a single call of `kernels.policy_step`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esmpi import kernels
from esmpi.config import Config, UsageError

_ACTIVATIONS = {"tanh": kernels.ACT_TANH, "relu": kernels.ACT_RELU}
_OUTPUT_MAPS = {"argmax": kernels.OUT_ARGMAX, "clip": kernels.OUT_CLIP, "tanh": kernels.OUT_TANH}


@dataclass(frozen=True)
class PolicySpec:
    """The architecture of a policy, enough to rebuild it from a checkpoint."""

    sizes: tuple[int, ...]  # (n_in, hidden..., n_out)
    activation: str  # hidden activation, a key of _ACTIVATIONS
    bias: bool
    output: str  # 'argmax' (Discrete actions), 'clip' or 'tanh' (Box actions)
    obs_encoding: str  # 'box' (flattened values) or 'onehot' (Discrete observations)
    action_low: tuple[float, ...] = ()  # Box bounds, one per output; empty for argmax
    action_high: tuple[float, ...] = ()
    action_shape: tuple[int, ...] = ()  # the Box action's own shape; the policy outputs it flat
    action_start: int = 0  # Discrete(n, start): the first action's value

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        return list(zip(self.sizes[:-1], self.sizes[1:], strict=True))

    @property
    def n_params(self) -> int:
        return sum(n_in * n_out + (n_out if self.bias else 0) for n_in, n_out in self.layer_shapes)


def spec_for_spaces(observation_space, action_space, config: Config) -> PolicySpec:
    """The PolicySpec for an environment's spaces, or UsageError if they are unsupported."""
    from gymnasium import spaces

    if isinstance(observation_space, spaces.Discrete):
        n_in, obs_encoding = int(observation_space.n), "onehot"
    elif isinstance(observation_space, spaces.Box):
        n_in, obs_encoding = int(np.prod(observation_space.shape)), "box"
    else:
        raise UsageError(
            f"Observation space {observation_space} is not supported: esmpi policies read Box "
            "and Discrete observations (flatten others with a Gymnasium wrapper)."
        )
    common = dict(activation=config.activation, bias=config.bias, obs_encoding=obs_encoding)
    hidden = tuple(config.hidden)
    if isinstance(action_space, spaces.Discrete):
        return PolicySpec(
            sizes=(n_in, *hidden, int(action_space.n)),
            output="argmax",
            action_start=int(action_space.start),
            **common,
        )
    if isinstance(action_space, spaces.Box):
        low = action_space.low.astype(np.float64).ravel()
        high = action_space.high.astype(np.float64).ravel()
        if config.action_map == "tanh" and not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise UsageError(
                f"--action-map tanh needs finite action bounds, but {action_space} has infinite "
                "ones; use --action-map clip."
            )
        return PolicySpec(
            sizes=(n_in, *hidden, low.size),
            output=config.action_map,
            action_low=tuple(low),
            action_high=tuple(high),
            action_shape=tuple(action_space.shape),
            **common,
        )
    raise UsageError(
        f"Action space {action_space} is not supported: esmpi policies act in Discrete and Box "
        "spaces."
    )


def initial_theta(spec: PolicySpec, seed: int) -> np.ndarray:
    """Parameters drawn like the Salimans et al. starter code: each weight column scaled to unit
    norm (0.01 for the output layer, so that the first actions are near the middle), zero biases."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1217]))
    parts = []
    for layer, (n_in, n_out) in enumerate(spec.layer_shapes):
        weights = rng.standard_normal((n_in, n_out))
        scale = 0.01 if layer == len(spec.layer_shapes) - 1 else 1.0
        weights *= scale / np.sqrt(np.square(weights).sum(axis=0, keepdims=True))
        parts.append(weights.ravel())
        if spec.bias:
            parts.append(np.zeros(n_out))
    return np.concatenate(parts).astype(np.float32)


def layer_views(spec: PolicySpec, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(W, b) views into theta per layer; b is None without biases."""
    views, position = [], 0
    for n_in, n_out in spec.layer_shapes:
        weights = theta[position : position + n_in * n_out].reshape(n_in, n_out)
        position += n_in * n_out
        bias = None
        if spec.bias:
            bias = theta[position : position + n_out]
            position += n_out
        views.append((weights, bias))
    return views


class Actor:
    """Turns raw observations into actions for one policy spec; one per rank, reused.

    `norm` (mean, 1/std) is frozen during a generation; `obs_stats` accumulates the centred sums
    that the next normalisation update needs.
    """

    def __init__(self, spec: PolicySpec, obs_clip: float = 5.0):
        self.spec = spec
        n_in, n_out = spec.sizes[0], spec.sizes[-1]
        self.sizes = np.array(spec.sizes, dtype=np.int64)
        self.activation = _ACTIVATIONS[spec.activation]
        self.output = _OUTPUT_MAPS[spec.output]
        self.obs_clip = float(obs_clip)
        self.norm = np.zeros((2, n_in))
        self.norm[1] = 1.0
        self.obs_stats = np.zeros((2, n_in))
        self.work = np.zeros((2, max(spec.sizes)), dtype=np.float32)
        self.action = np.zeros(n_out, dtype=np.float32)
        self.bounds = np.zeros((2, n_out), dtype=np.float32)
        if spec.output != "argmax":
            self.bounds[0] = np.maximum(spec.action_low, np.finfo(np.float32).min)
            self.bounds[1] = np.minimum(spec.action_high, np.finfo(np.float32).max)
        self.onehot = np.zeros(n_in, dtype=np.float32) if spec.obs_encoding == "onehot" else None
        self.action_view = self.action.reshape(spec.action_shape) if spec.action_shape else None

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.norm[0] = mean
        self.norm[1] = 1.0 / std

    def act(self, obs, theta: np.ndarray):
        if self.onehot is not None:
            self.onehot[:] = 0.0
            self.onehot[int(obs)] = 1.0
            obs = self.onehot
        elif obs.ndim != 1 or obs.dtype.kind != "f" or obs.dtype.itemsize < 4:
            obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        index = kernels.policy_step(
            obs,
            self.norm,
            self.obs_clip,
            self.obs_stats,
            theta,
            self.sizes,
            self.spec.bias,
            self.activation,
            self.output,
            self.bounds,
            self.work,
            self.action,
        )
        if index >= 0:
            return index + self.spec.action_start
        # A copy: an environment may keep the action it was given, and the buffer is reused.
        return self.action_view.copy()
