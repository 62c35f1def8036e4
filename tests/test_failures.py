"""Episodes that go wrong (a NaN or inf reward or observation, a reset or step that raises) under
real mpiexec ranks: the run goes on, counts them, ranks the failed members worst and keeps its
statistics finite, or stops cleanly when too many fail."""

import json
import sys

import h5py
import numpy as np
import pytest

from conftest import SMALL_TABLE, TESTS, checked, esmpi, mpi_python, read_theta
from esmpi import noise
from esmpi.train import EXIT_EPISODES_FAILED

sys.path.insert(0, str(TESTS))
from faultyenvs import FAULT_STEP, faulty  # noqa: E402

pytestmark = pytest.mark.mpi

POPSIZE, GENERATIONS, SEED = 16, 8, 2
PENDULUM = [
    *("--popsize", str(POPSIZE), "--hidden", "8", "--max-steps", "100", "--seed", str(SEED)),
    *SMALL_TABLE,
]
KINDS = {
    "NaNRewardPendulum": "reward",
    "InfObservationPendulum": "observation",
    "NaNObservationPendulum": "observation",
    "RaisingStepPendulum": "raised",
    "RaisingResetPendulum": "raised",
}


def train(runs, env_class: str, name: str, *extra: str, ranks: int = 2):
    return esmpi(
        "train",
        *("--env", f"faultyenvs:{env_class}", *PENDULUM, "--generations", str(GENERATIONS)),
        *("--folder", str(runs), "--run-name", name, "--print-every", "1", *extra),
        ranks=ranks,
    )


def expected_failures(generations: int) -> list[int]:
    """Failed episodes per generation: both members of a task on a faulty episode seed, and the
    evaluation episode when its seed is faulty."""
    tasks = POPSIZE // 2
    counts = []
    for generation in range(generations):
        seeds = noise.episode_seeds(SEED, generation, tasks + 1)
        counts.append(2 * sum(map(faulty, seeds[:tasks])) + int(faulty(seeds[tasks])))
    return counts


def read(path):
    with h5py.File(path / "checkpoint.h5", "r") as h5:
        return {
            "history": h5["history"][...],
            "theta": h5["theta"][...],
            "obs_mean": h5["obs_norm/mean"][...],
            "obs_var": h5["obs_norm/var"][...],
        }


def test_the_fixture_fails_some_generations_and_not_others():
    counts = expected_failures(GENERATIONS)
    assert sum(counts) >= 3 and 0 in counts, counts


@pytest.mark.parametrize("env_class", sorted(KINDS))
def test_failed_episodes_are_counted_and_the_run_goes_on(runs, env_class):
    result = checked(train(runs, env_class, "run", "--max-failed-share", "1"))
    stored = read(runs / "run")
    history = stored["history"]
    kind = KINDS[env_class]
    assert len(history) == GENERATIONS
    assert history[f"failed_{kind}"].tolist() == expected_failures(GENERATIONS)
    for other in {"reward", "observation", "raised"} - {kind}:
        assert not history[f"failed_{other}"].any()
    for name in ("theta", "obs_mean", "obs_var"):
        assert np.isfinite(stored[name]).all(), name
    assert np.isfinite(history["return_mean"]).all()  # over the episodes that did not fail
    first = next(i for i, n in enumerate(expected_failures(GENERATIONS)) if n)
    line = next(x for x in result.stdout.splitlines() if x.startswith(f"gen {first + 1:>5}/"))
    count = expected_failures(GENERATIONS)[first]
    assert line.endswith(f" | {count} failed ({count} {kind})"), result.stdout
    inspected = json.loads(checked(esmpi("inspect", str(runs / "run"), "--json")).stdout)[0]
    assert inspected["failed_episodes"] == sum(expected_failures(GENERATIONS))


def test_which_rank_meets_the_failures_does_not_change_the_result(runs):
    """1, 2 and 3 ranks run different members on each rank, and the rank whose environment
    raised makes it again: the parameters come out bit for bit the same."""
    thetas = []
    for ranks in (1, 2, 3):
        checked(
            train(runs, "RaisingStepPendulum", f"r{ranks}", "--max-failed-share", "1", ranks=ranks)
        )
        thetas.append(read_theta(runs / f"r{ranks}" / "checkpoint.h5"))
    assert all(np.array_equal(thetas[0], theta) for theta in thetas[1:])


RANKED_WORST = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from esmpi import parallel, train
from esmpi.config import Config
comm = parallel.world()
config = Config(env="faultyenvs:InfObservationPendulum", popsize={popsize}, hidden=[8],
                max_steps=100, seed={seed}, noise_table_size=2_000_000, max_failed_share=1.0,
                weight_decay=0.0, folder={folder!r}, run_name="worst")
trainer = train.prepare(config, comm)
run = trainer.run
for _ in range({before}):
    trainer.generation()
before = run.state
generation = trainer.run_generation()
population, rows, tasks = generation.population, generation.rows, generation.tasks
returns = rows[:tasks, train.RETURN : train.RETURN + 2]
failed = rows[:tasks, train.FAILURE : train.FAILURE + 2] == 2  # observation
assert failed.any() and np.isnan(returns[failed]).all() and np.isfinite(returns[~failed]).all()
worst = returns.copy()
worst[failed] = returns[~failed].min() - 1000.0
want = run.strategy.tell(before, population, worst, trainer.table, config)
got = run.strategy.tell(before, population, returns, trainer.table, config)
assert np.array_equal(want.theta, got.theta)
if comm.Get_rank() == 0:
    print("failed members", int(failed.sum()), "ranked worst")
"""


def test_a_failed_member_ranks_worst(runs):
    """An observation that turns inf at step 50 leaves a finite partial return; the member must
    still rank below every healthy one (its return is NaN in the table), on 2 ranks. (No weight
    decay: it would order the failed members among themselves by their parameters' size.)"""
    before = next(i for i, n in enumerate(expected_failures(GENERATIONS)) if n)
    code = RANKED_WORST.format(
        tests=str(TESTS), popsize=POPSIZE, seed=SEED, folder=str(runs), before=before
    )
    result = checked(mpi_python(code, ranks=2))
    assert "ranked worst" in result.stdout


def test_too_many_failures_stop_the_run_with_a_sentence_and_a_replayable_checkpoint(runs):
    counts = expected_failures(GENERATIONS)
    first = next(i for i, n in enumerate(counts) if n)
    result = train(runs, "RaisingStepPendulum", "stopped", "--max-failed-share", "0")
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_EPISODES_FAILED, output
    assert "Traceback" not in output, output
    sentence = next(line for line in output.splitlines() if "more than --max-failed-share" in line)
    assert f"generation {first + 1} failed ({counts[first]} raised)" in sentence, sentence
    assert "RuntimeError: the simulator went unstable" in sentence, sentence
    assert f"(step {FAULT_STEP})" in sentence, sentence
    stored = read(runs / "stopped")
    assert len(stored["history"]) == first  # the generation before the failing one

    replay = sentence.split("`esmpi eval ")[1].split("`")[0].split()
    assert replay[0] == str(runs / "stopped") and "--episode-seed" in replay, sentence
    replayed = esmpi("eval", *replay)
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert "RuntimeError: the simulator went unstable" in replayed.stderr  # its traceback
    assert "the episode failed: episode seed" in replayed.stderr
    assert f"(step {FAULT_STEP})" in replayed.stderr

    resumed = train(
        runs,
        "RaisingStepPendulum",
        "stopped",
        "--resume",
        str(runs / "stopped"),
        "--max-failed-share",
        "1",
    )
    checked(resumed)
    assert len(read(runs / "stopped")["history"]) == GENERATIONS
    assert read(runs / "stopped")["history"]["failed_raised"].tolist() == counts


def test_a_member_fails_with_the_episode_that_failed_of_its_several(runs):
    """With --member-episodes 2 a member ends at its first failed episode, here the second of
    its two in generation 1 (seed 2): the sentence counts every member's episodes, names the seed
    of the episode that failed (not the member's first) and replays it."""
    tasks = POPSIZE // 2
    seeds = noise.episode_seeds(SEED, 0, tasks + 1)
    episodes = {task: noise.member_episode_seeds(seeds[task], 2) for task in range(tasks)}
    failing = [task for task in range(tasks) if any(map(faulty, episodes[task]))]
    first = failing[0]
    failed_seed = next(seed for seed in episodes[first] if faulty(seed))
    assert failed_seed != seeds[first]  # the case this test is for
    result = train(
        runs, "RaisingStepPendulum", "several", "--member-episodes", "2", "--max-failed-share", "0"
    )
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_EPISODES_FAILED, output
    sentence = next(line for line in output.splitlines() if "more than --max-failed-share" in line)
    failed = 2 * len(failing) + int(faulty(seeds[tasks]))
    lost = 2 * failed - int(faulty(seeds[tasks]))  # a failed member's 2 episodes, 1 evaluation
    assert (
        f"{lost} of {2 * POPSIZE + 1} episodes of generation 1 failed or went unplayed after "
        f"their member's failure ({failed} failed: {failed} raised)"
    ) in sentence, sentence
    assert f"on episode seed {failed_seed} in" in sentence, sentence
    replayed = esmpi("eval", *sentence.split("`esmpi eval ")[1].split("`")[0].split())
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert "RuntimeError: the simulator went unstable" in replayed.stderr
    assert f"(step {FAULT_STEP})" in replayed.stderr


def test_the_failed_share_counts_a_failed_members_episodes_whatever_their_number(runs):
    """With --member-episodes 4 about a third of the members fail (one of their four seeds is
    faulty): failed members, not failed episodes played, set the share, so the default 0.25 stops
    the run at the first generation where more than a quarter of the episodes are lost, which
    counting one failure a member against four episodes a member would never reach."""
    tasks, shares = POPSIZE // 2, []
    for generation in range(GENERATIONS):
        seeds = noise.episode_seeds(SEED, generation, tasks + 1)
        members = [noise.member_episode_seeds(seed, 4) for seed in seeds[:tasks]]
        failed, evaluation = 2 * sum(any(map(faulty, e)) for e in members), faulty(seeds[tasks])
        shares.append((4 * failed + evaluation, failed + evaluation))
    planned = 4 * POPSIZE + 1
    stop = next(g for g, (lost, _) in enumerate(shares) if lost > 0.25 * planned)
    assert all(failed <= 0.25 * planned for _, failed in shares[: stop + 1])  # the former rule
    result = train(runs, "RaisingStepPendulum", "four", "--member-episodes", "4")
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_EPISODES_FAILED, output
    lost = shares[stop][0]
    assert f"{lost} of {planned} episodes of generation {stop + 1} failed or went" in output, output
    assert len(read(runs / "four")["history"]) == stop


def test_an_environment_failing_every_episode_stops_at_the_first_generation(runs):
    result = train(runs, "BrokenPendulum", "broken")
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_EPISODES_FAILED, output
    assert "gen " not in output  # no generation finished
    assert f"{POPSIZE + 1} of {POPSIZE + 1} episodes of generation 1 failed" in output, output
    assert "step raised KeyError: 'torque' (step 1)" in output, output
    assert output.count("more than --max-failed-share 0.25") == 1, output
    # the checkpoint the message names holds generation 0, and its replay command runs
    assert len(read(runs / "broken")["history"]) == 0
    sentence = next(line for line in output.splitlines() if "more than --max-failed-share" in line)
    replayed = esmpi("eval", *sentence.split("`esmpi eval ")[1].split("`")[0].split())
    assert "step raised KeyError: 'torque'" in replayed.stderr, replayed.stderr
