"""Your own policy class: `--policy module:Class`, as `--env module:Class` names an environment.

The protocol (numpy or numba; the README has an example):

    class Class:
        def __init__(self, observation_space, action_space, config): ...
            # the environment's spaces as the policy sees them (after --flatten-obs, --resize and
            # the other observation options) and esmpi's Config (--hidden, --activation, ...)
        n_params: int
            # the length of the flat float32 parameter vector esmpi searches over
        def initial_theta(self, seed: int) -> np.ndarray:
            # the parameters at the start of a run, float32 (n_params,), drawn from `seed` alone
        def reset(self, seed: int) -> None:
            # optional: the start of an episode whose environment was reset with `seed`; any
            # randomness of the episode must come from this seed (results must not depend on the
            # number of ranks)
        def act(self, observation, theta: np.ndarray):
            # the action for one raw observation under parameters `theta`

esmpi does not normalise the observations of a user class (it sees them raw). The checkpoint
stores 'module:Class' as the policy's kind; `esmpi eval` and a resume import it again, so the
module must be importable there too (on PYTHONPATH).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from esmpi.config import Config, UsageError
from esmpi.policies.spec import NonFiniteObservation, PolicySpec, not_finite

_REQUIRED = ("initial_theta", "act")
# The instance made for each spec by `made`, so that the actor uses the one whose n_params the
# spec holds (one process runs one policy; eval and bench make the spec first as training does).
_INSTANCES: dict[PolicySpec, Any] = {}


def load_class(name: str) -> type:
    """The class 'module:Class' names, or UsageError in one sentence."""
    module_name, _, attribute = name.partition(":")
    if not (module_name and attribute):
        raise UsageError(f"--policy takes a built-in name or 'module:Class'; got {name!r}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(
            f"Cannot import {module_name} for --policy {name}: {error} (is it on PYTHONPATH?)."
        ) from None
    found = getattr(module, attribute, None)
    if not isinstance(found, type):
        raise UsageError(f"--policy {name}: {module_name} has no class {attribute}.")
    missing = [method for method in _REQUIRED if not callable(getattr(found, method, None))]
    if missing:
        raise UsageError(
            f"--policy {name} does not follow the policy protocol: it has no "
            f"{' or '.join(missing)} method (see `esmpi/policies/user.py`)."
        )
    return found


def made(fields: dict[str, Any], observation_space, action_space, config: Config) -> PolicySpec:
    """The spec of the user class config.policy for these spaces (fields: those every
    policy has), its instance kept for `UserActor`."""
    name = config.policy
    try:
        instance = load_class(name)(observation_space, action_space, config)
        n_params = int(instance.n_params)
    except UsageError:
        raise
    except Exception as error:
        raise UsageError(
            f"--policy {name} failed to start: {type(error).__name__}: {error}."
        ) from None
    if n_params < 1:
        raise UsageError(f"--policy {name} gives n_params = {n_params}; it must be at least 1.")
    spec = PolicySpec(**{**fields, "obs_encoding": "raw", "user_params": n_params})
    _INSTANCES[spec] = instance
    return spec


def initial_theta(spec: PolicySpec, seed: int, index: int = 0) -> np.ndarray:
    """The class's initial parameters, checked."""
    if index:  # a meta-population: each starting point from a seed of its own
        seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    theta = np.asarray(_instance(spec).initial_theta(seed))
    if theta.shape != (spec.n_params,) or not np.isfinite(theta).all():
        raise UsageError(
            f"--policy {spec.kind}: initial_theta gave an array of shape {theta.shape} where "
            f"n_params = {spec.n_params} finite numbers were due."
        )
    return theta.astype(np.float32)


def _instance(spec: PolicySpec):
    if spec not in _INSTANCES:
        raise RuntimeError(f"no instance of {spec.kind}: make its spec with spec_for_spaces first")
    return _INSTANCES[spec]


class UserActor:
    """The actor of a user class: raw observations, no normalisation."""

    def __init__(self, spec: PolicySpec, obs_clip: float = 5.0):
        self.spec = spec
        self.policy = _instance(spec)
        self.obs_sums = np.zeros((2, 0))  # nothing to normalise; kept for the common interface
        self._reset = getattr(self.policy, "reset", None)

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        """A user class sees raw observations: nothing to set."""

    def reset(self, seed: int) -> None:
        if self._reset is not None:
            self._reset(seed)

    def act(self, obs, theta: np.ndarray):
        if isinstance(obs, np.ndarray) and obs.dtype.kind == "f" and not np.isfinite(obs).all():
            raise NonFiniteObservation(not_finite(obs))
        return self.policy.act(obs, theta)
