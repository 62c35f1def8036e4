"""The search strategies, by the name `--strategy` takes. Each module is one strategy (its paper
in its docstring) with the interface described in `base`; the shared pieces are `fitness`
(shaping), `optimizers` (Adam, SGD with momentum, ClipUp) and `novelty` (the archive's
k-nearest novelty and the parent draw of the novelty-seeking family, `novelty_es`). The GA (`ga`)
is the one strategy that is not an ES: seed-list genomes, truncation selection and elitism."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from esmpi.config import Config, UsageError, flag
from esmpi.strategies import ars, ga, ns_es, nsr_es, nsra_es, openai_es, pgpe, sep_cma_es, snes
from esmpi.strategies.base import Strategy, as_strategy

REGISTRY: dict[str, Strategy] = {
    "openai-es": as_strategy(openai_es),
    "ars": as_strategy(ars),
    "pgpe": as_strategy(pgpe),
    "snes": as_strategy(snes),
    "sep-cma-es": as_strategy(sep_cma_es),
    "ns-es": as_strategy(ns_es),
    "nsr-es": as_strategy(nsr_es),
    "nsra-es": as_strategy(nsra_es),
    "ga": as_strategy(ga),
}


def get(name: str) -> Strategy:
    """The strategy called `name`, or UsageError naming the choices."""
    if name not in REGISTRY:
        raise UsageError(f"--strategy must be one of {', '.join(REGISTRY)}; got {name!r}.")
    return REGISTRY[name]


def starting_points(config: Config) -> int:
    """How many initial parameter vectors config.strategy starts from (1 but for a
    meta-population)."""
    count = getattr(get(config.strategy), "starting_points", None)
    return count(config) if count else 1


def selector(name: str) -> Callable | None:
    """The `select` of strategy `name`, which chooses each generation's centre after measuring
    the last one (see `base`), or None for a strategy with one centre."""
    return getattr(get(name), "select", None)


def rechecker(name: str) -> Callable | None:
    """The `recheck` of strategy `name`, which asks for a second round of chosen parameters
    evaluated again before `tell` (see `base`), or None."""
    return getattr(get(name), "recheck", None)


def rebuilt(name: str, state: Any, table) -> Any:
    """`state` of strategy `name` with its cached fields recomputed from the noise table (after
    a resume); the state itself for a strategy with none."""
    rebuild = getattr(get(name), "rebuild", None)
    return rebuild(state, table) if rebuild else state


def own_options(name: str) -> frozenset[str]:
    """Config fields that only some strategies read, less those that `name` reads."""
    every = {option for strategy in REGISTRY.values() for option in strategy.OPTIONS}
    return frozenset(every - set(get(name).OPTIONS))


def check_options(name: str, given: dict[str, Any]) -> None:
    """UsageError when `given` (the options the user set) holds one that strategy `name` ignores:
    a setting that silently does nothing misleads more than a refusal."""
    unused = sorted(set(given) & own_options(name))
    if unused:
        users = [other for other, s in REGISTRY.items() if unused[0] in s.OPTIONS]
        raise UsageError(
            f"{flag(unused[0])} has no effect with --strategy {name}; it is an "
            f"option of {', '.join(users)}."
        )
