"""GA: Such, Madhavan, Conti, Lehman, Stanley and Clune (2017), "Deep Neuroevolution: Genetic
Algorithms Are a Competitive Alternative for Training Deep Neural Networks for Reinforcement
Learning" (reference code uber-research/deep-neuroevolution, `es_distributed/ga.py`).

Each generation has N = `--popsize` children, each a parent drawn uniformly from the T =
`--truncation` parents plus sigma * eps (one noise-table slice; no crossover), evaluated on one
episode. A genome is the list of (noise offset, mutation power) that leads from the start to its
parameters, so a parent is rebuilt from the noise table alone: every rank keeps the T parents'
parameters and builds each child from its parent and one slice, and no parameter vector travels.

Elitism: the best C = `--elite-candidates` children and the elite before them are each evaluated
again on E = `--elite-episodes` further episodes (a round of their own, on seeds of their own);
the best mean becomes the elite, the centre (`theta`) that `esmpi eval` and `export` use, and
parent 0 of the next generation, unchanged. The other T - 1 parents are the best children by
their one episode (truncation selection). A candidate with a failed episode (a return that is not
finite) is worst; ties keep the elite before them, then the better-ranked child.

Departure from the paper: every genome starts from the run's initial parameters (the start every
strategy's centre has), where Such et al. draw each first-generation individual's own
initialisation from the noise table; the first generation's children are mutations of it. The
mutation power is --sigma, constant, as in the paper's experiments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esmpi import noise
from esmpi.config import Config, UsageError
from esmpi.strategies import fitness
from esmpi.strategies.base import SINGLE, Population, cached, described, perturbed

OPTIONS = ("truncation", "elite_candidates", "elite_episodes")
# sigma 0.02: on HalfCheetah-v5 at 1e6 steps (seed 0) 2,581 against 972 with 0.01 and 997 with
# 0.05; on Hopper-v5 at 5e5, 1,114 against 1,048 with 0.05 (README, "The strategies side by side").
DEFAULTS: dict = dict(popsize=64, sigma=0.02)


@dataclass(frozen=True)
class State:
    theta: np.ndarray  # float32 (n_params,), the elite
    start: np.ndarray = described("the parameters every genome starts from")
    genome_offsets: np.ndarray = described(
        "noise offset of each parent's mutations in order (parents, mutations); parent 0 is the "
        "elite; -1 past a genome's length"
    )
    genome_powers: np.ndarray = described(
        "mutation power (sigma) of each parent's mutations (parents, mutations); 0 past a "
        "genome's length"
    )
    genome_lengths: np.ndarray = described("mutations in each parent's genome", "mutations")
    parents: np.ndarray = cached("the parents' parameters (parents, n_params), from the genomes")


def check(config: Config) -> None:
    if not 1 <= config.truncation <= config.popsize:
        raise UsageError(
            f"--truncation must be between 1 and --popsize {config.popsize} for ga (the parents "
            f"are the best children); got {config.truncation}."
        )
    if not 1 <= config.elite_candidates <= config.popsize or config.elite_episodes < 1:
        raise UsageError(
            "--elite-candidates must be between 1 and --popsize (a child must be able to become "
            "the elite) and --elite-episodes at least 1 for ga; got "
            f"{config.elite_candidates} and {config.elite_episodes}."
        )


def initial(config: Config, theta: np.ndarray) -> State:
    check(config)
    parents = np.tile(theta.astype(np.float32), (config.truncation, 1))
    return State(
        theta=theta.astype(np.float32),
        start=theta.astype(np.float32),
        genome_offsets=np.zeros((config.truncation, 0), dtype=np.int64),
        genome_powers=np.zeros((config.truncation, 0), dtype=np.float32),
        genome_lengths=np.zeros(config.truncation, dtype=np.int64),
        parents=parents,
    )


def ask(state: State, config: Config, generation: int, table_size: int) -> Population:
    """N children: new noise slices from (seed, generation), each on a parent drawn uniformly
    from the same generation's generator, the same on every rank."""
    n_params = state.theta.size
    offsets = noise.noise_offsets(config.seed, generation, config.popsize, n_params, table_size)
    base_of = noise.parent_generator(config.seed, generation).integers(
        0, state.parents.shape[0], size=config.popsize, dtype=np.int64
    )
    sigma = np.asarray(config.sigma, dtype=np.float32)
    return Population(offsets, SINGLE, sigma, state.parents, base_of)


def step_sizes(state: State, population: Population) -> tuple[float, float]:
    return 0.0, float(population.scale)  # no learning rate; sigma is the mutation power


def child(population: Population, task: int, table: np.ndarray) -> np.ndarray:
    """Task `task`'s parameters, built as every rank built them for its episode."""
    base = population.base(task, np.empty(0, dtype=np.float32))
    offset, out = population.offsets[task], np.empty_like(base)
    return perturbed(base, table[offset : offset + base.size], population.scale, out)


def candidates(population: Population, returns: np.ndarray, config: Config) -> np.ndarray:
    """The children evaluated again: the best C by their one episode, best first."""
    return fitness.descending_order(returns[:, 0])[: config.elite_candidates]


def recheck(
    state: State, population: Population, returns: np.ndarray, table: np.ndarray, config: Config
) -> Population:
    """The elite before this generation, then the best C children, each on E episodes (scale 0:
    each task runs its base unperturbed)."""
    chosen = [state.theta] + [
        child(population, k, table) for k in candidates(population, returns, config)
    ]
    count, episodes = len(chosen), config.elite_episodes
    return Population(
        offsets=np.zeros(count * episodes, dtype=np.int64),
        signs=SINGLE,
        scale=np.zeros((), dtype=np.float32),
        bases=np.stack(chosen),
        base_of=np.repeat(np.arange(count, dtype=np.int64), episodes),
    )


def grown(state: State, parent: int, offset: int, power: float) -> tuple[np.ndarray, np.ndarray]:
    """The genome (offsets, powers) of a child of `parent` mutated by the slice at `offset`."""
    length = state.genome_lengths[parent]
    offsets = np.append(state.genome_offsets[parent, :length], offset)
    powers = np.append(state.genome_powers[parent, :length], np.float32(power))
    return offsets, powers.astype(np.float32)


def padded(genomes: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Genomes of different lengths as (offsets, powers, lengths) arrays, -1 and 0 past each."""
    lengths = np.array([offsets.size for offsets, _ in genomes], dtype=np.int64)
    width = int(lengths.max())
    offsets = np.full((len(genomes), width), -1, dtype=np.int64)
    powers = np.zeros((len(genomes), width), dtype=np.float32)
    for row, (genome_offsets, genome_powers) in enumerate(genomes):
        offsets[row, : genome_offsets.size] = genome_offsets
        powers[row, : genome_powers.size] = genome_powers
    return offsets, powers, lengths


def tell(
    state: State,
    population: Population,
    returns: np.ndarray,
    table: np.ndarray,
    config: Config,
    behaviours: np.ndarray | None = None,
    rechecked: np.ndarray | None = None,
) -> State:
    """The next parents from the children's returns (tasks, 1) and the elite candidates'
    returns `rechecked` ((1 + C) * E, in `recheck`'s order)."""
    if rechecked is None:
        raise ValueError("ga's tell needs the returns of its recheck round")
    chosen = candidates(population, returns, config)
    means = fitness.worst_if_not_finite(rechecked.reshape(1 + chosen.size, -1)).mean(axis=1)
    winner = int(np.argmax(means))  # the first best: a tie keeps the elite before
    sigma, base_of = float(population.scale), population.base_of
    assert base_of is not None

    def genome(k: int) -> tuple[np.ndarray, np.ndarray]:
        return grown(state, int(base_of[k]), int(population.offsets[k]), sigma)

    elite_child = int(chosen[winner - 1]) if winner else -1
    if winner:
        elite_genome, elite = genome(elite_child), child(population, elite_child, table)
    else:
        length = state.genome_lengths[0]
        elite_genome = (state.genome_offsets[0, :length], state.genome_powers[0, :length])
        elite = state.theta
    order = fitness.descending_order(returns[:, 0])
    others = [int(k) for k in order if k != elite_child][: state.parents.shape[0] - 1]
    genomes = [elite_genome] + [genome(k) for k in others]
    offsets, powers, lengths = padded(genomes)
    parents = np.stack([elite] + [child(population, k, table) for k in others])
    return State(elite.copy(), state.start, offsets, powers, lengths, parents)


def rebuilt_parent(state: State, parent: int, table: np.ndarray) -> np.ndarray:
    """Parent `parent`'s parameters from its genome: the start, then each mutation in order,
    computed as the ranks computed it (`perturbed`, float32), so the same bits."""
    theta, out = state.start.copy(), np.empty_like(state.start)
    for offset, power in zip(
        state.genome_offsets[parent, : state.genome_lengths[parent]],
        state.genome_powers[parent, : state.genome_lengths[parent]],
        strict=True,
    ):
        perturbed(theta, table[offset : offset + theta.size], power, out)
        theta, out = out, theta
    return theta


def rebuild(state: State, table: np.ndarray) -> State:
    """`state` with its parents' parameters rebuilt from the genomes (after a resume)."""
    parents = np.stack([rebuilt_parent(state, i, table) for i in range(state.genome_lengths.size)])
    return State(
        state.theta,
        state.start,
        state.genome_offsets,
        state.genome_powers,
        state.genome_lengths,
        parents,
    )
