"""The policies, by the name `--policy` takes: one module per family, each owning its kernel, its
actor and its initial parameters; `spec` holds what all of them share (PolicySpec, the parameter
views). Families: `mlp` (the MLP, and the linear policy that is the MLP without hidden layers),
`cnn` (pixels), `recurrent` (Elman), `hebbian` (Najarro & Risi's evolved plasticity) and `user`
(your own class, `--policy module:Class`).

An actor (one per rank, reused) turns one raw observation into one action: `act(obs, theta)`;
`reset(seed)` at the start of every episode (the seed the environment was reset with);
`obs_sums`, the centred sums and squares of the episode's observations when it normalises them,
and `set_normalisation(mean, std)`.

Box actions are mapped per dimension: 'clip' to the bounds, 'tanh' or 'sigmoid' rescaled into
them (`--action-map tanh,sigmoid,sigmoid` gives each dimension its own; one name maps all).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from esmpi.config import Config, UsageError
from esmpi.policies import cnn, mlp, user
from esmpi.policies.spec import (
    NonFiniteObservation,
    PolicySpec,
    cache_aligned_zeros,
    conv_views,
    layer_views,
)

__all__ = [
    "Actor",
    "NonFiniteObservation",
    "PolicySpec",
    "actor_for",
    "cache_aligned_zeros",
    "conv_views",
    "initial_theta",
    "layer_views",
    "spec_for_spaces",
]


class Actor(Protocol):
    """What every family's actor offers (see the module docstring)."""

    @property
    def obs_sums(self) -> np.ndarray: ...

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None: ...

    def reset(self, seed: int) -> None: ...

    def act(self, obs, theta: np.ndarray) -> Any: ...


def spec_for_spaces(observation_space, action_space, config: Config) -> PolicySpec:
    """The PolicySpec of config.policy for an environment's spaces, or UsageError if they are
    unsupported."""
    from gymnasium import spaces

    kind = config.policy
    fields: dict[str, Any] = dict(kind=kind, activation=config.activation, bias=config.bias)
    if kind == "cnn" or (kind == "hebbian" and _images(observation_space)):
        if not isinstance(observation_space, spaces.Box):
            raise UsageError(
                f"--policy cnn reads image observations, not {observation_space}; use --policy mlp."
            )
        obs_shape = cnn.frames_shape(tuple(observation_space.shape), config.frame_stack)
        n_in, obs_encoding = cnn.cnn_features(obs_shape), "pixels"
        scale = 1.0 / 255.0 if config.scale_obs else 1.0
        fields.update(obs_shape=obs_shape, obs_scale=scale)
    elif isinstance(observation_space, spaces.Discrete):
        n_in, obs_encoding = int(observation_space.n), "onehot"
    elif isinstance(observation_space, spaces.Box):
        n_in, obs_encoding = int(np.prod(observation_space.shape)), "box"
    else:
        raise UsageError(
            f"Observation space {observation_space} is not supported: esmpi policies read Box "
            "and Discrete observations; --flatten-obs makes one vector of a Dict or Tuple of them."
        )
    if kind == "hebbian":
        if config.bias:
            raise UsageError("--policy hebbian has no biases (the paper's network); drop --bias.")
        fields.update(plastic_norm=config.plastic_norm)
    fields.update(obs_encoding=obs_encoding, **_action_fields(action_space, config))
    hidden = () if kind == "linear" else tuple(config.hidden)
    fields["sizes"] = (n_in, *hidden, fields.pop("n_out"))
    if ":" in kind:
        return user.made(fields, observation_space, action_space, config)
    return PolicySpec(**fields)


def _images(observation_space) -> bool:
    """Whether observations are images: a Box of uint8 or of three dimensions or more (frames,
    possibly stacked). The Hebbian policy reads those through the CNN's convolutions."""
    from gymnasium import spaces

    shape = getattr(observation_space, "shape", None) or ()
    return isinstance(observation_space, spaces.Box) and (
        observation_space.dtype == np.uint8 or len(shape) >= 3
    )


def _action_fields(action_space, config: Config) -> dict[str, Any]:
    from gymnasium import spaces

    if isinstance(action_space, spaces.Discrete):
        return dict(
            n_out=int(action_space.n), output="argmax", action_start=int(action_space.start)
        )
    if isinstance(action_space, spaces.Box):
        low = action_space.low.astype(np.float64).ravel()
        high = action_space.high.astype(np.float64).ravel()
        _check_action_map(config.action_map, action_space, low, high)
        return dict(
            n_out=low.size,
            output=config.action_map,
            action_low=tuple(low),
            action_high=tuple(high),
            action_shape=tuple(action_space.shape),
        )
    raise UsageError(
        f"Action space {action_space} is not supported: esmpi policies act in Discrete and Box "
        "spaces."
    )


def _check_action_map(action_map: str, action_space, low: np.ndarray, high: np.ndarray) -> None:
    names = action_map.split(",")
    if len(names) > 1 and len(names) != low.size:
        raise UsageError(
            f"--action-map {action_map} names {len(names)} mappings but {action_space} has "
            f"{low.size} dimensions; give one mapping, or one per dimension."
        )
    rescaled = np.array([name != "clip" for name in names]) & np.ones(low.size, dtype=bool)
    if not (np.isfinite(low[rescaled]).all() and np.isfinite(high[rescaled]).all()):
        raise UsageError(
            f"--action-map {action_map} needs finite action bounds where it rescales, but "
            f"{action_space} has infinite ones there; use --action-map clip."
        )


def initial_theta(spec: PolicySpec, seed: int, index: int = 0) -> np.ndarray:
    """The parameters a run starts from (`index` numbers the starting points of a
    meta-population, each its own draw; 0 is the run's)."""
    if spec.is_user_class:
        return user.initial_theta(spec, seed, index)
    if spec.kind == "hebbian":
        from esmpi.policies import hebbian

        return hebbian.initial_theta(spec, seed, index)
    return mlp.initial_theta(spec, seed, index)


def actor_for(spec: PolicySpec, obs_clip: float = 5.0) -> Actor:
    """The actor that runs `spec`."""
    if spec.is_user_class:
        return user.UserActor(spec, obs_clip)
    if spec.kind == "cnn":
        return cnn.cnn_actor(spec, obs_clip)
    # The families' modules are imported where used: each loads its compiled kernels (0.04-0.12
    # s at start-up), which a run of another family never calls.
    if spec.kind == "rnn":
        from esmpi.policies import recurrent

        return recurrent.RnnActor(spec, obs_clip)
    if spec.kind == "hebbian":
        from esmpi.policies import hebbian

        return hebbian.hebbian_actor(spec, obs_clip)
    return mlp.mlp_actor(spec, obs_clip)
