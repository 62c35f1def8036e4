"""What every search strategy shares: the population it asks for, the member it perturbs, and
how its frozen state is described as named arrays for the checkpoint.

A strategy is a module with a frozen `State` (its `theta` is the centre the unperturbed policy
runs), `initial(config, theta) -> State`, `ask(state, config, generation, table_size) ->
Population`, `tell(state, population, returns, table, config, behaviours=None) -> State`
(`behaviours`: the members' BCs (tasks, len(signs), B) with --behaviour, else None) and
`step_sizes(state, population) -> (lr, sigma)` for the history; `OPTIONS` names the Config fields
it reads beyond the common ones, `DEFAULTS` the values it needs where the dataclass defaults are
OpenAI-ES's. Pure numpy: no MPI, HDF5 or Gymnasium. Every rank calls `ask` and `tell` with the same
inputs and gets the same bits, so results do not depend on the number of ranks (evosax's
init/ask/tell on an immutable state).

Two optional functions serve strategies with several centres (novelty search's meta-population):
`starting_points(config) -> int`, the number of initial parameter vectors `initial` then gets
stacked (count, n_params) instead of one; and `select(state, config, generation, returns,
behaviours, obs_norm) -> (state, obs_norm)`. With `select`, each generation first runs the
evaluation episodes of `state.theta` alone (their returns (K,) and BCs (K, B)), then `select`
chooses the centre that `ask`'s population (drawn before, the same whichever centre) perturbs, and
swaps the observation normalisation for that centre's.

Two more serve strategies whose members are not perturbations of one centre (the GA): a
Population may name several `bases`, each task perturbing its own (`base_of`); `recheck(state,
population, returns, table, config) -> Population` asks for a round after the population's, of
chosen parameters evaluated again on several episodes, whose returns reach `tell` as
`rechecked`; and `rebuild(state, table) -> State` recomputes the fields marked `cached` (vectors
derived from the noise table, left out of the checkpoint) after a resume.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from esmpi import noise
from esmpi.config import Config, UsageError

MIRRORED, SINGLE = (1, -1), (1,)


@dataclass(frozen=True)
class Population:
    """What to evaluate in one generation. Task k runs the members
    theta + sign * scale * table[offsets[k] : offsets[k] + n_params] for each sign in `signs`,
    all on the same episode seed (common random numbers for an antithetic pair)."""

    offsets: np.ndarray  # int64 (tasks,)
    signs: tuple[int, ...]  # MIRRORED (each task an antithetic pair) or SINGLE
    scale: np.ndarray  # float32: () one sigma for every parameter, or (n_params,)
    # Where given, task k perturbs bases[base_of[k]] (float32 (bases, n_params)) instead of the
    # strategy's theta: the GA's parents, or the candidates it evaluates again (scale 0).
    bases: np.ndarray | None = None
    base_of: np.ndarray | None = None  # int64 (tasks,)

    @property
    def size(self) -> int:
        return self.offsets.size * len(self.signs)

    def base(self, task: int, theta: np.ndarray) -> np.ndarray:
        """The parameters task `task` perturbs: its base, or `theta` for a population of one
        centre."""
        if self.bases is None or self.base_of is None:
            return theta
        return self.bases[self.base_of[task]]

    def signed_scales(self) -> dict[int, np.ndarray | np.float32]:
        """sign -> sign * scale in float32 (negation is exact, so -eps is the mirror of +eps)."""
        return {sign: (sign * self.scale).astype(np.float32) for sign in self.signs}


def population(
    config: Config, generation: int, tasks: int, n_params: int, table_size: int, signs, scale
) -> Population:
    """The Population of `tasks` noise slices drawn from (seed, generation), the same on every
    rank without communication."""
    offsets = noise.noise_offsets(config.seed, generation, tasks, n_params, table_size)
    return Population(offsets, signs, np.asarray(scale, dtype=np.float32))


def check_pairs(config: Config, strategy: str) -> None:
    """UsageError unless --popsize is an even number of at least 2 (antithetic pairs)."""
    if config.popsize < 2 or config.popsize % 2:
        raise UsageError(
            f"--popsize must be an even number of at least 2 for {strategy} (members come in "
            f"antithetic +eps/-eps pairs); got {config.popsize}."
        )


def perturbed(theta: np.ndarray, eps: np.ndarray, signed_scale, out: np.ndarray) -> np.ndarray:
    """out = theta + signed_scale * eps in float32 (signed_scale from Population.signed_scales)."""
    np.multiply(eps, signed_scale, out=out)
    out += theta
    return out


def described(description: str, unit: str = "1") -> Any:
    """A State field with its meaning and unit, written beside it in the checkpoint."""
    return field(metadata={"description": description, "unit": unit})


def cached(description: str) -> Any:
    """A State field derived from the others and the noise table: not written to the
    checkpoint, recomputed by the strategy's `rebuild` after a resume."""
    return field(metadata={"description": description, "cached": True})


def is_cached(state_field: dataclasses.Field) -> bool:
    return bool(state_field.metadata.get("cached"))


class Strategy(Protocol):
    """The module interface above, for the type checker."""

    OPTIONS: tuple[str, ...]
    DEFAULTS: dict[str, Any]
    State: type

    def initial(self, config: Config, theta: np.ndarray) -> Any: ...

    def ask(self, state: Any, config: Config, generation: int, table_size: int) -> Population: ...

    def tell(
        self,
        state: Any,
        population: Population,
        returns: np.ndarray,
        table: np.ndarray,
        config: Config,
        behaviours: np.ndarray | None = None,
    ) -> Any: ...

    def step_sizes(self, state: Any, population: Population) -> tuple[float, float]: ...


def as_strategy(module: ModuleType) -> Strategy:
    return typing.cast(Strategy, module)


# The checkpoint's view of a state: name -> (value, description, unit), a nested dict for a
# nested state (the optimizer's). `theta` is left out: the checkpoint keeps it as /theta.
Items = dict[str, Any]


def state_items(state: Any) -> Items:
    items: Items = {}
    for state_field in dataclasses.fields(state):
        if state_field.name == "theta" or is_cached(state_field):
            continue
        value = getattr(state, state_field.name)
        if dataclasses.is_dataclass(value):
            items[state_field.name] = state_items(value)
        else:
            meta = state_field.metadata
            items[state_field.name] = (value, meta["description"], meta["unit"])
    return items


def state_arrays(state: Any) -> list[np.ndarray]:
    """theta and every other value of the state, as arrays: what every rank holds alike."""
    arrays = [np.asarray(state.theta)]

    def add(items: Items) -> None:
        for item in items.values():
            if isinstance(item, dict):
                add(item)
            else:
                arrays.append(np.asarray(item[0]))

    add(state_items(state))
    return arrays


def state_from_items(state_type: type, items: Items, theta=None) -> Any:
    """Rebuild a State from `items` as state_items describes them (and the checkpoint reads them
    back), with `theta` when the state has one. Cached fields are left empty for the strategy's
    `rebuild`."""
    hints = typing.get_type_hints(state_type)
    arguments: dict[str, Any] = {}
    for state_field in dataclasses.fields(state_type):
        name, kind = state_field.name, hints[state_field.name]
        if name == "theta":
            arguments[name] = theta
        elif is_cached(state_field):
            arguments[name] = np.zeros(0, dtype=np.float32)
        elif dataclasses.is_dataclass(kind):
            arguments[name] = state_from_items(typing.cast(type, kind), items[name])
        elif kind in (int, float, bool):
            arguments[name] = kind(items[name][0])
        else:
            arguments[name] = np.asarray(items[name][0])
    return state_type(**arguments)
