"""The GA (Such et al. 2017) as pure functions: parents rebuilt from their seed lists equal the
parameters the ranks built, bit for bit; truncation selection and elitism against plain Python
versions; the parent draw; the one-sentence errors. On real ranks: the genomes in the
checkpoint, and `eval` and `export` of the elite."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from faultyenvs import faulty

from conftest import SMALL_TABLE, checked, esmpi, read_theta
from esmpi import checkpoint, noise, strategies
from esmpi.config import Config, UsageError, from_toml
from esmpi.evaluate import member_theta
from esmpi.presets import resolve
from esmpi.strategies import ga
from esmpi.strategies.base import perturbed, state_from_items

TABLE = noise.build_table(1 << 16, seed=7)
DIM = 20
TARGET = np.linspace(-1.0, 1.0, DIM)


def _config(**values) -> Config:
    values = {"strategy": "ga", "popsize": 12, "truncation": 4, "elite_candidates": 3, **values}
    return resolve({"env": "Pendulum-v1", "elite_episodes": 2, **values})[0]


def _score(theta: np.ndarray) -> float:
    return -float(np.square(theta - TARGET).sum())


def _built(population, task: int) -> np.ndarray:
    """A member's parameters as a rank builds them in train.Trainer.run_round."""
    base, offset = population.base(task, np.empty(0)), population.offsets[task]
    out = np.empty(DIM, dtype=np.float32)
    return perturbed(base, TABLE[offset : offset + DIM], population.signed_scales()[1], out)


def _generation(state, config, generation, noisy=0.0):
    """One generation on the smooth objective (plus `noisy` times a fixed jitter per episode):
    the population, its returns, the recheck round and its returns, the next state."""
    population = ga.ask(state, config, generation, TABLE.size)
    jitter = np.random.default_rng(generation).normal(0.0, 1.0, 1000)
    returns = np.array(
        [[_score(_built(population, k)) + noisy * jitter[k]] for k in range(config.popsize)]
    )
    again = ga.recheck(state, population, returns, TABLE, config)
    rechecked = np.array(
        [_score(_built(again, k)) + noisy * jitter[500 + k] for k in range(again.offsets.size)]
    )
    told = ga.tell(state, population, returns, TABLE, config, rechecked=rechecked)
    return population, returns, again, rechecked, told


def test_parents_rebuilt_from_their_genomes_are_the_members_the_ranks_built():
    config = _config()
    state = ga.initial(config, np.full(DIM, 0.1, dtype=np.float32))
    for generation in range(12):
        population, _, _, _, told = _generation(state, config, generation, noisy=0.5)
        # every parent but a kept elite is a member of this generation: its genome is its
        # parent's plus (offset, sigma), its parameters the member's bits
        built = {population.offsets[k]: _built(population, k) for k in range(config.popsize)}
        for parent in range(config.truncation):
            length = told.genome_lengths[parent]
            last = told.genome_offsets[parent, length - 1] if length else -1
            if last in built and length == generation + 1:
                assert np.array_equal(told.parents[parent], built[last])
            assert told.genome_powers[parent, length - 1 if length else 0] in (
                0,
                np.float32(config.sigma),
            )
        rebuilt = ga.rebuild(
            ga.State(
                told.theta,
                told.start,
                told.genome_offsets,
                told.genome_powers,
                told.genome_lengths,
                np.zeros(0, dtype=np.float32),
            ),
            TABLE,
        )
        assert np.array_equal(rebuilt.parents, told.parents)
        assert np.array_equal(told.theta, told.parents[0])  # the elite is parent 0
        state = told
    assert _score(state.theta) > _score(np.full(DIM, 0.1))


def test_a_rebuilt_parent_is_the_start_plus_each_mutation_in_float32():
    state = ga.initial(_config(), np.zeros(DIM, dtype=np.float32))
    genome = ga.State(
        state.theta,
        state.start + 0.5,
        np.array([[10, 300, 7], [5, -1, -1], [-1, -1, -1], [9, 9, -1]]),
        np.array([[0.1, 0.2, 0.3], [0.05, 0, 0], [0, 0, 0], [1.0, 1.0, 0]], dtype=np.float32),
        np.array([3, 1, 0, 2]),
        np.zeros(0, dtype=np.float32),
    )
    rebuilt = ga.rebuild(genome, TABLE).parents
    for parent in range(4):
        want = genome.start.copy()
        for j in range(genome.genome_lengths[parent]):
            offset, power = genome.genome_offsets[parent, j], genome.genome_powers[parent, j]
            want = (TABLE[offset : offset + DIM] * power + want).astype(np.float32)
        assert rebuilt[parent].dtype == np.float32 and np.array_equal(rebuilt[parent], want)


def test_truncation_and_elitism_are_the_papers_selection():
    """Plain Python: the elite is the candidate (the elite before, then the best C children by
    their one episode) with the best mean over its episodes; the other parents are the best
    T - 1 children but the elite."""
    config = _config()
    state = ga.initial(config, np.full(DIM, 0.1, dtype=np.float32))
    for generation in range(6):
        population, returns, again, rechecked, told = _generation(state, config, generation, 3.0)
        by_return = sorted(range(config.popsize), key=lambda k: (-returns[k, 0], k))
        candidates = [None] + by_return[: config.elite_candidates]
        means = rechecked.reshape(len(candidates), -1).mean(axis=1)
        winner = candidates[int(np.argmax(means))]
        assert np.array_equal(again.bases[0], state.theta)
        others = [k for k in by_return if k != winner][: config.truncation - 1]
        expected = [state.theta if winner is None else _built(population, winner)]
        expected += [_built(population, k) for k in others]
        assert np.array_equal(told.parents, np.stack(expected))
        state = told


def test_a_failed_candidate_episode_rules_it_out_and_ties_keep_the_elite():
    config = _config()
    state = ga.initial(config, np.full(DIM, 0.1, dtype=np.float32))
    population = ga.ask(state, config, 0, TABLE.size)
    returns = np.arange(config.popsize, dtype=float)[:, None]
    rechecked = np.zeros(2 * (1 + config.elite_candidates))
    rechecked[2:4] = [100.0, np.nan]  # the best child: a failed episode
    rechecked[4:6] = [5.0, 5.0]  # the second best: the best finite mean
    told = ga.tell(state, population, returns, TABLE, config, rechecked=rechecked)
    assert np.array_equal(told.theta, _built(population, config.popsize - 2))
    tied = ga.tell(state, population, returns, TABLE, config, rechecked=np.zeros_like(rechecked))
    assert np.array_equal(tied.theta, state.theta) and tied.genome_lengths[0] == 0


def test_children_draw_their_parents_uniformly_from_seed_and_generation():
    config = _config(popsize=4000, truncation=5)
    state = ga.initial(config, np.zeros(DIM, dtype=np.float32))
    population = ga.ask(state, config, 3, TABLE.size)
    counts = np.bincount(population.base_of, minlength=5)
    assert counts.sum() == 4000 and np.all(np.abs(counts - 800) < 5 * np.sqrt(800))
    again = ga.ask(state, config, 3, TABLE.size)
    assert np.array_equal(population.base_of, again.base_of)
    assert not np.array_equal(population.base_of, ga.ask(state, config, 4, TABLE.size).base_of)


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"truncation": 13}, "--truncation must be between 1 and --popsize 12"),
        ({"truncation": 0}, "--truncation must be between 1"),
        ({"elite_episodes": 0}, "--elite-episodes at least 1"),
        ({"elite_candidates": 13}, "--elite-candidates must be between 1 and --popsize"),
        ({"elite_candidates": 0}, "a child must be able to become the elite"),
    ],
)
def test_settings_that_cannot_work_are_one_sentence(values, fragment):
    with pytest.raises(UsageError, match=fragment):
        ga.initial(_config(**values), np.zeros(DIM, dtype=np.float32))


def test_ga_options_belong_to_ga_alone():
    with pytest.raises(UsageError, match="--truncation has no effect with --strategy openai-es"):
        resolve({"strategy": "openai-es", "truncation": 4})


@pytest.mark.mpi
def test_the_checkpoint_keeps_genomes_and_the_elite_which_eval_and_export_use(runs):
    """On 2 ranks: /strategy holds the genomes (not the parents' parameters), /theta the elite;
    the history counts the recheck round's episodes; `esmpi export` writes the elite."""
    args = ["train", "--env", "CartPole-v1", "--strategy", "ga", "--popsize", "16"]
    args += ["--generations", "3", "--folder", str(runs), "--run-name", "ga", *SMALL_TABLE]
    checked(esmpi(*args, ranks=2))
    path = runs / "ga" / "checkpoint.h5"
    with h5py.File(path) as h5:
        assert set(h5["strategy"]) == {"genome_offsets", "genome_powers", "genome_lengths", "start"}
        assert h5["strategy/genome_offsets"].shape == (8, 3)
        assert list(h5["history"]["episodes"]) == [37, 74, 111]  # 16 + 1 + (1 + 4) * 4 a gen
    checked(esmpi("export", str(runs / "ga"), "-o", str(runs / "elite.npz")))
    with np.load(runs / "elite.npz") as exported:
        layers = np.concatenate([exported[key].ravel() for key in ("W0", "W1", "W2")])
    assert np.array_equal(np.sort(layers), np.sort(read_theta(path)))


@pytest.mark.mpi
def test_failed_episodes_of_every_round_are_counted_and_the_run_goes_on(runs):
    """NaN rewards on some episode seeds (tests/faultyenvs.py): the history counts those of the
    children, of the evaluation episode and of the recheck round, on 3 ranks."""
    popsize, candidates, episodes, seed = 10, 2, 3, 2
    args = ["train", "--env", "faultyenvs:NaNRewardPendulum", "--strategy", "ga"]
    args += ["--popsize", str(popsize), "--truncation", "3", "--elite-candidates", str(candidates)]
    args += ["--elite-episodes", str(episodes), "--seed", str(seed), "--max-steps", "50"]
    args += ["--max-failed-share", "1", "--generations", "4", "--hidden", "8", *SMALL_TABLE]
    checked(esmpi(*args, "--folder", str(runs), "--run-name", "faults", ranks=3))
    expected = []
    for generation in range(4):
        seeds = noise.episode_seeds(seed, generation, popsize + 1)
        rechecks = noise.recheck_seeds(seed, generation, (1 + candidates) * episodes)
        expected.append(sum(map(faulty, [*seeds, *rechecks])))
    with h5py.File(runs / "faults" / "checkpoint.h5") as h5:
        history = h5["history"][...]
        theta = h5["theta"][...]
    assert list(history["failed_reward"]) == expected and sum(expected) > 0
    assert np.isfinite(theta).all()


@pytest.mark.mpi
def test_eval_member_rebuilds_a_child_of_the_next_generation(runs):
    """`esmpi eval --member OFFSET --sign 1` (what a run stopped for failed episodes names) runs
    the child the ranks would build: its parent rebuilt from the genomes, plus its slice."""
    args = ["train", "--env", "Pendulum-v1", "--strategy", "ga", "--popsize", "12"]
    args += ["--generations", "3", "--hidden", "8", "--folder", str(runs), "--run-name", "m"]
    checked(esmpi(*args, *SMALL_TABLE, ranks=2))
    stored = checkpoint.load(str(runs / "m" / checkpoint.FILENAME))
    config = from_toml(stored.config_toml)
    table = noise.build_table(config.noise_table_size, config.seed)
    state = state_from_items(ga.State, stored.strategy_state, stored.theta)
    state = strategies.rebuilt("ga", state, table)
    assert state.parents.shape[0] == config.truncation and not (state.parents == 0).all()
    population = ga.ask(state, config, stored.generation, table.size)
    for task in (0, 7):
        offset = int(population.offsets[task])
        assert np.array_equal(
            member_theta(stored, config, offset, 1), ga.child(population, task, table)
        )
