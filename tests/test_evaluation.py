"""Honest evaluation: --eval-episodes per generation (the kept best chosen by their mean) and the
final evaluation at the end of a run, on seeds no training episode used, under real mpiexec
ranks; `esmpi eval --episode-seed` reproduces each final episode."""

import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import SMALL_TABLE, checked, esmpi, read_theta
from esmpi import noise
from esmpi import train as training
from esmpi.config import Config
from esmpi.evaluate import evaluate
from esmpi.strategies.base import MIRRORED, Population

pytestmark = pytest.mark.mpi

PENDULUM = ["--env", "Pendulum-v1", "--popsize", "8", "--hidden", "8", "--max-steps", "60"]
PENDULUM += [*SMALL_TABLE, "--seed", "3"]


def train(runs, name: str, *extra: str, ranks: int = 2):
    return checked(
        esmpi(
            "train",
            *PENDULUM,
            *("--folder", str(runs), "--run-name", name, "--print-every", "2", *extra),
            ranks=ranks,
        )
    )


def stored(path):
    with h5py.File(path / "checkpoint.h5", "r") as h5:
        found = {"history": h5["history"][...], "best": dict(h5["best"].attrs)}
        if "final" in h5:
            found["final"] = {
                **dict(h5["final"].attrs),
                **{name: h5["final"][name][...] for name in ("seeds", "returns", "lengths")},
            }
        return found


def test_eval_episodes_are_averaged_choose_the_best_and_do_not_depend_on_ranks(runs):
    extra = ("--generations", "5", "--eval-episodes", "3", "--final-episodes", "0")
    train(runs, "one", *extra, ranks=1)
    train(runs, "three", *extra, ranks=3)
    one, three = stored(runs / "one"), stored(runs / "three")
    assert np.array_equal(
        read_theta(runs / "one" / "checkpoint.h5"), read_theta(runs / "three" / "checkpoint.h5")
    )
    assert np.array_equal(one["history"]["eval_return"], three["history"]["eval_return"])
    history = one["history"]
    assert np.diff(history["episodes"], prepend=0).tolist() == [8 + 3] * 5
    assert np.diff(history["timesteps"], prepend=0).tolist() == [(8 + 3) * 60] * 5
    best = int(np.argmax(history["eval_return"]))
    assert one["best"]["eval_return"] == history["eval_return"][best]
    assert one["best"]["generation"] == best + 1
    assert "final" not in one


def test_each_member_scores_the_mean_of_its_episodes_on_any_ranks_and_resumes_exactly(runs):
    """--member-episodes 2: generation 2's members, replayed one episode at a time from the
    checkpoint of generation 1 on the seeds noise.member_episode_seeds gives, score what the
    run's history says as the means of their two episodes; 2 ranks resumed and 3 ranks straight
    through give the same bits, and every member's episodes are counted."""
    several = ("--member-episodes", "2", "--final-episodes", "0")
    train(runs, "after", "--generations", "1", *several)
    shutil.copytree(runs / "after", runs / "before")
    train(runs, "after", "--generations", "2", *several, "--resume", str(runs / "after"))
    train(runs, "three", "--generations", "2", *several, ranks=3)
    assert np.array_equal(
        read_theta(runs / "after" / "checkpoint.h5"), read_theta(runs / "three" / "checkpoint.h5")
    )
    before = str(runs / "before" / "checkpoint.h5")
    pairs, n_params = 4, read_theta(before).size
    offsets = noise.noise_offsets(3, 1, pairs, n_params, int(SMALL_TABLE[1]))
    seeds = noise.episode_seeds(3, 1, pairs + 1)
    means = np.empty((pairs, 2))
    for pair, offset in enumerate(offsets):
        episode_seeds = noise.member_episode_seeds(seeds[pair], 2)
        assert episode_seeds[0] == seeds[pair] and episode_seeds[1] != seeds[pair]
        for j, sign in enumerate((1, -1)):
            returns = [
                evaluate(before, 1, member=(int(offset), sign), episode_seed=int(s)).returns[0]
                for s in episode_seeds
            ]
            assert returns[0] != returns[1]  # two different episodes
            means[pair, j] = (returns[0] + returns[1]) / 2
    history = stored(runs / "after")["history"]
    assert history["return_max"][1] == means.max() and history["return_min"][1] == means.min()
    assert history["return_mean"][1] == pytest.approx(means.mean(), rel=1e-12)
    assert np.diff(history["episodes"], prepend=0).tolist() == [8 * 2 + 1] * 2
    assert np.diff(history["timesteps"], prepend=0).tolist() == [(8 * 2 + 1) * 60] * 2


def test_the_final_evaluation_is_stored_printed_inspected_and_replayable(runs):
    result = train(runs, "final", "--generations", "4", "--final-episodes", "5")
    final = stored(runs / "final")["final"]
    assert final["generation"] == 4 and final["returns"].shape == (2, 5)
    assert (final["seeds"] >= 2**31).all() and (final["seeds"] < 2**32).all()
    training_seeds = {int(s) for g in range(4) for s in noise.episode_seeds(3, g, 5)}
    assert not training_seeds & set(final["seeds"].tolist())
    assert final["theta_mean"] == final["returns"][0].mean()
    assert f"final eval   theta {final['theta_mean']:.2f}" in result.stdout
    for row, best in ((0, []), (1, ["--best"])):
        for seed, want, length in zip(
            final["seeds"], final["returns"][row], final["lengths"][row], strict=True
        ):
            shown = checked(
                esmpi("eval", str(runs / "final"), "--episode-seed", str(seed), "--json", *best)
            )
            record = json.loads(shown.stdout)
            assert record["returns"] == [want] and record["lengths"] == [length]
    inspected = json.loads(checked(esmpi("inspect", str(runs / "final"), "--json")).stdout)[0]
    assert inspected["final_eval"] == final["theta_mean"] and inspected["final_episodes"] == 5
    assert "final eval (best)" in checked(esmpi("inspect", str(runs / "final"))).stdout


def test_a_resumed_run_is_evaluated_again_at_its_new_end_and_stays_exact(runs):
    train(runs, "resumed", "--generations", "4", "--final-episodes", "3")
    train(
        runs,
        "resumed",
        "--generations",
        "6",
        "--final-episodes",
        "3",
        "--resume",
        str(runs / "resumed"),
    )
    train(runs, "whole", "--generations", "6", "--final-episodes", "3")
    resumed, whole = stored(runs / "resumed"), stored(runs / "whole")
    assert resumed["final"]["generation"] == 6
    assert np.array_equal(resumed["final"]["returns"], whole["final"]["returns"])
    assert np.array_equal(
        read_theta(runs / "resumed" / "checkpoint.h5"), read_theta(runs / "whole" / "checkpoint.h5")
    )


def test_the_reward_shift_applies_to_the_populations_episodes_alone(runs):
    """CartPole pays 1 a step: shifted by 1, every member scores 0, while the evaluation episodes
    and the final evaluation report the true return; 1 and 2 ranks agree bit for bit."""
    cartpole = ["--env", "CartPole-v1", "--popsize", "8", "--hidden", "8", *SMALL_TABLE]
    for ranks in (1, 2):
        checked(
            esmpi(
                *("train", *cartpole, "--generations", "3", "--reward-shift", "1"),
                *("--final-episodes", "2", "--folder", str(runs), "--run-name", f"shift{ranks}"),
                ranks=ranks,
            )
        )
    found = stored(runs / "shift2")
    history = found["history"]
    assert (history["return_mean"] == 0).all() and (history["return_max"] == 0).all()
    assert (history["eval_return"] >= 8).all()  # CartPole lasts at least 8 steps
    assert found["final"]["returns"].min() >= 8
    theta = read_theta(runs / "shift1" / "checkpoint.h5")
    assert np.array_equal(theta, read_theta(runs / "shift2" / "checkpoint.h5"))


def test_the_adaptive_episode_cap_grows_when_episodes_reach_it_and_resumes_exactly(runs):
    """Pendulum never ends before its 60-step limit here: every member reaches the cap, so it
    doubles each generation from 10 up to the limit; evaluation episodes are never capped. 1 and
    2 ranks, and 3 generations plus a resume to 5, give the same bits."""
    cap = ("--episode-cap", "10", "--cap-share", "0.5", "--cap-raise", "2")
    common = (*cap, "--final-episodes", "0")
    train(runs, "one", "--generations", "5", *common, ranks=1)
    train(runs, "two", "--generations", "5", *common)
    train(runs, "half", "--generations", "3", *common)
    train(runs, "half", "--generations", "5", *common, "--resume", str(runs / "half"))
    history = stored(runs / "two")["history"]
    assert history["next_episode_cap"].tolist() == [20, 40, 60, 60, 60]
    caps = [10, 20, 40, 60, 60]
    assert np.diff(history["timesteps"], prepend=0).tolist() == [8 * c + 60 for c in caps]
    for name in ("one", "half"):
        assert np.array_equal(
            read_theta(runs / name / "checkpoint.h5"), read_theta(runs / "two" / "checkpoint.h5")
        )
        assert stored(runs / name)["history"]["next_episode_cap"].tolist() == [20, 40, 60, 60, 60]


def test_a_member_of_several_episodes_reaches_the_cap_when_all_of_them_do():
    def next_cap(summed_lengths):
        values = dict(episode_cap=10, cap_share=0.5, cap_raise=2.0, member_episodes=2)
        run = training.Run(Config(**values), None, None, None, (0.0, 0, None, None), [])
        return training.next_episode_cap(run, np.array(summed_lengths, dtype=float), 60)

    assert next_cap([[20, 20], [20, 14]]) == 20  # 3 of 4 members at the cap: raised
    assert next_cap([[20, 14], [15, 14]]) == 10  # 1 of 4 (each sum above 10, no mean at it)


def test_the_adaptive_cap_counts_a_member_at_it_when_all_its_episodes_reach_it(runs):
    """Pendulum's episodes all reach the cap, so with --member-episodes 2 each member's mean
    length is the cap and it doubles as with one episode, while each member plays two capped
    episodes a generation."""
    cap = ("--episode-cap", "10", "--cap-share", "0.5", "--cap-raise", "2")
    train(runs, "capped", "--generations", "3", *cap, "--member-episodes", "2")
    history = stored(runs / "capped")["history"]
    assert history["next_episode_cap"].tolist() == [20, 40, 60]
    assert np.diff(history["timesteps"], prepend=0).tolist() == [
        8 * 2 * c + 60 for c in (10, 20, 40)
    ]


def test_a_growing_population_adds_rounds_of_popsize_until_its_steps_or_its_most_members():
    def added(lengths, **values):
        config = Config(**{"popsize": 8, "population_steps": 1000, **values})
        pairs = np.asarray(lengths, dtype=float).reshape(-1, 2)
        rows = np.zeros((pairs.shape[0] + 2, training.FIXED_COLUMNS))
        rows[: pairs.shape[0], training.LENGTH : training.LENGTH + 2] = pairs
        population = Population(np.zeros(pairs.shape[0], np.int64), MIRRORED, np.float32(0.1))
        generation = training.Generation(
            population, rows, np.zeros(pairs.shape[0] + 1), {}, (np.zeros(1), None)
        )
        return training.tasks_to_add(config, generation, first_round=8)

    assert added([100] * 8) == 4  # 800 steps of 1000: 8 more members, 4 pairs
    assert added([125] * 8) == 0  # 1000 steps
    assert added([10] * 64) == 0  # 8 x popsize members, the default most
    assert added([10] * 60, popsize_max=64) == 2  # room for 4 members
    assert added([10] * 8, population_steps=0) == 0  # a fixed population


def test_a_growing_population_stops_at_its_most_members(runs):
    """Pendulum's episodes last 60 steps here: 8 members take 480, so --population-steps 1000
    would need 24; --popsize-max 16 stops the growth at 16, every generation."""
    grow = ("--population-steps", "1000", "--popsize-max", "16", "--final-episodes", "0")
    train(runs, "grown", "--generations", "3", *grow)
    history = stored(runs / "grown")["history"]
    assert history["members"].tolist() == [16, 16, 16]
    assert np.diff(history["timesteps"], prepend=0).tolist() == [(16 + 1) * 60] * 3


def test_a_growing_population_reaches_its_steps_on_any_ranks_and_resumes_exactly(runs):
    """CartPole's episodes end when the pole falls, so how many rounds of 8 members a generation
    needs for 300 population steps changes from one generation to the next; 1 rank, and 3 ranks
    for 2 generations resumed to 4, give the same members and the same bits."""
    cartpole = ["--env", "CartPole-v1", "--popsize", "8", "--hidden", "8", *SMALL_TABLE]
    grow = ("--population-steps", "300", "--final-episodes", "0", "--folder", str(runs))

    def grown(name, generations, *extra, ranks):
        checked(
            esmpi(
                *("train", *cartpole, *grow, "--run-name", name, "--generations", generations),
                *extra,
                ranks=ranks,
            )
        )

    grown("one", "4", ranks=1)
    grown("three", "2", ranks=3)
    grown("three", "4", "--resume", str(runs / "three"), ranks=3)
    one, three = stored(runs / "one")["history"], stored(runs / "three")["history"]
    assert np.array_equal(
        read_theta(runs / "one" / "checkpoint.h5"), read_theta(runs / "three" / "checkpoint.h5")
    )
    assert one["members"].tolist() == three["members"].tolist()
    assert len(set(one["members"].tolist())) > 1 and (one["members"] % 8 == 0).all()
    # The population's steps: all steps less the evaluation episode's (CartPole pays 1 a step).
    population_steps = np.diff(one["timesteps"], prepend=0) - one["eval_return"]
    assert (population_steps >= 300).all()  # 64 members, the most, last at least 8 * 64 steps
