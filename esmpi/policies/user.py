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

esmpi checks what it can of the protocol, each break in one sentence: the class's methods,
initial_theta's shape, finiteness and sameness for the same seed (every rank draws it), and the
first action of every episode (a Box's shape, one integer of a Discrete).

esmpi does not normalise the observations of a user class (it sees them raw). The checkpoint
stores 'module:Class' as the policy's kind; `esmpi eval` and a resume import it again, so the
module must be importable there too (on PYTHONPATH).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from esmpi.config import Config, UsageError, named_attribute
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
    found = named_attribute(name, f"--policy {name}")
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
    instance = _instance(spec)
    theta = np.asarray(instance.initial_theta(seed))
    if theta.shape != (spec.n_params,):
        raise UsageError(
            f"--policy {spec.kind}: initial_theta gave an array of shape {theta.shape} where "
            f"n_params = {spec.n_params} numbers were due."
        )
    if not (theta.dtype.kind in "fiu" and np.isfinite(theta).all()):
        raise UsageError(
            f"--policy {spec.kind}: initial_theta gave {theta.dtype} parameters that are not all "
            "finite numbers."
        )
    # Every rank draws the starting point itself: one drawn from a global random state would
    # differ between ranks and the run would silently train on mixed parameters.
    if not np.array_equal(np.asarray(instance.initial_theta(seed)), theta):
        raise UsageError(
            f"--policy {spec.kind}: initial_theta({seed}) gave other parameters when called again; "
            "draw them from the seed alone (np.random.default_rng(seed)), or each rank would "
            "start from its own."
        )
    return theta.astype(np.float32)


def _instance(spec: PolicySpec):
    if spec not in _INSTANCES:
        raise RuntimeError(f"no instance of {spec.kind}: make its spec with spec_for_spaces first")
    return _INSTANCES[spec]


class UserActor:
    """The actor of a user class: raw observations, no normalisation. The first action of each
    episode is checked against the action space (a Box's shape, a Discrete's integers), so that a
    class acting in the wrong shape fails the episode in one sentence rather than an environment
    quietly reading part of its action (Pendulum takes the first number of any array)."""

    def __init__(self, spec: PolicySpec, obs_clip: float = 5.0):
        self.spec = spec
        self.policy = _instance(spec)
        self.obs_sums = np.zeros((2, 0))  # nothing to normalise; kept for the common interface
        self._reset = getattr(self.policy, "reset", None)
        self._unchecked = True  # the next action is an episode's first

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        """A user class sees raw observations: nothing to set."""

    def reset(self, seed: int) -> None:
        self._unchecked = True
        if self._reset is not None:
            self._reset(seed)

    def act(self, obs, theta: np.ndarray):
        if isinstance(obs, np.ndarray) and obs.dtype.kind == "f" and not np.isfinite(obs).all():
            raise NonFiniteObservation(not_finite(obs))
        action = self.policy.act(obs, theta)
        if self._unchecked:
            self._unchecked = False
            _check_action(self.spec, action)
        return action


def _check_action(spec: PolicySpec, action) -> None:
    """ValueError unless `action` fits the spec's action space: a Box action of its shape (its
    bounds are the environment's to enforce), or one integer of a Discrete. The message has no
    full stop: the episode's failure adds '(step 1)' to it."""
    if spec.output == "argmax":
        first, n = spec.action_start, spec.sizes[-1]
        value = np.asarray(action)
        if not (value.ndim == 0 and value.dtype.kind in "iu" and first <= value < first + n):
            raise ValueError(
                f"--policy {spec.kind}: act gave {action!r} where one integer of "
                f"{first}..{first + n - 1} was due (a Discrete({n}) action)"
            )
    elif np.shape(action) != spec.action_shape:
        raise ValueError(
            f"--policy {spec.kind}: act gave an action of shape {np.shape(action)} where the "
            f"Box action space takes shape {spec.action_shape}"
        )
