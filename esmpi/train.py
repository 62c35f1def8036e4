"""The generation loop: composes environments, rollouts, the ES update, MPI and checkpoints.

Each generation the search strategy says what to evaluate (noise offsets and signs, derived from
the seed and the generation); every rank runs its share of the tasks (the members of one noise
slice, an antithetic pair or a single member, or the evaluation episode of the unperturbed
policy), writes what it measured into its rows of a (tasks, columns) table, and one in-place sum
over ranks gives every rank the whole table. From it every rank computes the same update with the
strategy's `tell`. Rank 0 alone prints and writes the checkpoint. Nothing here knows which
strategy runs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from esmpi import checkpoint, envs, noise, parallel, strategies
from esmpi.config import Config, UsageError, flag, from_toml, to_toml
from esmpi.obsnorm import ObsNorm
from esmpi.policies import (
    Actor,
    PolicySpec,
    actor_for,
    cache_aligned_zeros,
    initial_theta,
    spec_for_spaces,
)
from esmpi.progress import ProgressFiles
from esmpi.rollout import FAILURE_KINDS, EpisodeFailed, EpisodeRules, check_rules, run_episode
from esmpi.strategies.base import (
    Population,
    perturbed,
    state_arrays,
    state_from_items,
    state_items,
)

# Exit code of a run stopped early by SIGUSR1/SIGTERM after writing its checkpoint: sysexits.h's
# EX_TEMPFAIL, "try again later". The job scripts requeue on it; `--resume auto` continues the run.
EXIT_STOPPED = 75


# Exit code of a run stopped because too many episodes failed (more than --max-failed-share of a
# generation's): sysexits.h's EX_SOFTWARE. Not EXIT_STOPPED: requeueing would fail the same way.
EXIT_EPISODES_FAILED = 70


class StoppedEarly(Exception):
    """A stop signal ended the run at a generation boundary; the checkpoint holds that one."""


class EpisodesFailed(Exception):
    """More than --max-failed-share of a generation's episodes failed; the checkpoint holds the
    generation before, from which `esmpi eval` replays the failed episode the message names."""


# Columns of the per-generation task table: the return, the length and the failure code (0: none,
# else 1 + the index in rollout.FAILURE_KINDS) of each member of the task (at most an antithetic
# pair: columns RETURN + j, LENGTH + j and FAILURE + j for the j-th sign), the task's noise
# offset, then the observation sums of its members that did not fail, when normalising. After the
# task rows come one row per rank: the seconds it spent on its tasks, and the stop signal it has
# received (0: none).
RETURN, LENGTH, OFFSET, FAILURE = 0, 2, 4, 5
FIXED_COLUMNS = 7
RANK_SECONDS, RANK_STOP_SIGNAL = 0, 1


@dataclass
class Run:
    """The state of a run between generations (the same on every rank)."""

    config: Config
    spec: PolicySpec
    state: Any  # the strategy's State
    obs_norm: ObsNorm
    best: tuple[float, int, np.ndarray, ObsNorm]  # eval return, generation, theta, normalisation
    history: list  # HISTORY_DTYPE rows
    generation: int = 0
    final: checkpoint.FinalEvaluation | None = None
    # With --behaviour: per generation, the BCs (rows, size) of its members and its evaluations.
    behaviours: list[tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def strategy(self) -> strategies.Strategy:
        return strategies.get(self.config.strategy)

    @property
    def timesteps(self) -> int:
        return int(self.history[-1]["timesteps"]) if self.history else 0

    @property
    def episodes(self) -> int:
        return int(self.history[-1]["episodes"]) if self.history else 0

    @property
    def finished(self) -> bool:
        """Whether the run has done its --generations or spent its --total-steps."""
        generations, budget = self.config.generations, self.config.total_steps
        return bool(generations and self.generation >= generations) or bool(
            budget and self.timesteps >= budget
        )

    def episode_cap(self, horizon: int) -> int:
        """Steps the population's episodes may last in the next generation: `horizon`, or the
        adaptive cap (--episode-cap) where it is on."""
        start = self.config.episode_cap
        if not start:
            return horizon
        stored = int(self.history[-1]["next_episode_cap"]) if self.history else 0
        return min(stored or start, horizon)

    @property
    def done_share(self) -> float:
        """How much of the run is done: of its generations or of its step budget, the larger."""
        generations = self.config.generations
        share = self.generation / generations if generations else 0.0
        if self.config.total_steps:
            share = max(share, self.timesteps / self.config.total_steps)
        return min(share, 1.0)

    @property
    def wall_s(self) -> float:
        return float(self.history[-1]["wall_s"]) if self.history else 0.0


def run_name(config: Config) -> str:
    """'{env}__{seed}__{SLURM job id or local time}', unless --run-name says otherwise."""
    if config.run_name:
        return config.run_name
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:
        job = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    else:
        job = os.environ.get("SLURM_JOB_ID") or time.strftime("%Y%m%d-%H%M%S")
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', config.env)}__{config.seed}__{job}"


def create_run_folder(path: str) -> None:
    """Make the run folder (rank 0), or say in one sentence why it cannot be made."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UsageError(f"Cannot create the run folder {path}: {error.strerror}.") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"The run folder {path} is not writable.")


def new_run(config: Config, spec: PolicySpec) -> Run:
    count = strategies.starting_points(config)
    starts = np.stack([initial_theta(spec, config.seed, i) for i in range(count)])
    theta = starts[0]
    state = strategies.get(config.strategy).initial(config, theta if count == 1 else starts)
    obs_norm = ObsNorm.initial(spec.sizes[0])
    return Run(config, spec, state, obs_norm, (-np.inf, 0, theta.copy(), obs_norm), [])


def run_from_checkpoint(stored: checkpoint.Checkpoint, config: Config) -> Run:
    state_type = strategies.get(stored.strategy).State
    state = state_from_items(state_type, stored.strategy_state, stored.theta)
    obs_norm = ObsNorm(stored.obs_count, stored.obs_mean, stored.obs_var)
    best_norm = ObsNorm(0.0, stored.best_obs_mean, stored.best_obs_var)
    best = (stored.best_return, stored.best_generation, stored.best_theta, best_norm)
    history = list(stored.history)
    behaviours = None
    if stored.behaviours is not None:
        behaviours = split_behaviours(stored.behaviours, stored.history, config.eval_episodes)
    return Run(
        config,
        stored.policy,
        state,
        obs_norm,
        best,
        history,
        stored.generation,
        stored.final,
        behaviours,
    )


def split_behaviours(stored: checkpoint.Behaviours, history: np.ndarray, eval_episodes: int):
    """The checkpoint's BCs as Run.behaviours keeps them: one (members, evaluations) pair per
    generation."""
    member_ends = np.cumsum(history["members"])[:-1]
    evaluation_ends = eval_episodes * np.arange(1, len(history))
    members = np.split(stored.members, member_ends) if len(history) else []
    evaluations = np.split(stored.evaluations, evaluation_ends) if len(history) else []
    return list(zip(members, evaluations, strict=True))


def joined_behaviours(run: Run) -> checkpoint.Behaviours | None:
    """Run.behaviours as the checkpoint keeps them (every generation's rows in one array)."""
    if run.behaviours is None:
        return None
    if not run.behaviours:
        return checkpoint.Behaviours(run.config.behaviour, np.zeros((0, 0)), np.zeros((0, 0)))
    members, evaluations = zip(*run.behaviours, strict=True)
    return checkpoint.Behaviours(
        run.config.behaviour, np.concatenate(members), np.concatenate(evaluations)
    )


def to_checkpoint(run: Run, n_ranks: int) -> checkpoint.Checkpoint:
    best_return, best_generation, best_theta, best_norm = run.best
    return checkpoint.Checkpoint(
        config_toml=to_toml(run.config),
        env_id=run.config.env,
        seed=run.config.seed,
        generation=run.generation,
        n_ranks=n_ranks,
        theta=run.state.theta,
        policy=run.spec,
        strategy=run.config.strategy,
        strategy_state=state_items(run.state),
        obs_count=run.obs_norm.count,
        obs_mean=run.obs_norm.mean,
        obs_var=run.obs_norm.var,
        best_theta=best_theta,
        best_return=best_return,
        best_generation=best_generation,
        best_obs_mean=best_norm.mean,
        best_obs_var=best_norm.var,
        history=np.array(run.history, dtype=checkpoint.HISTORY_DTYPE),
        final=run.final,
        behaviours=joined_behaviours(run),
    )


def normalising(spec: PolicySpec, config: Config) -> bool:
    return config.obs_norm and spec.obs_encoding == "box"


@dataclass
class Generation:
    """What one generation evaluated, the same on every rank: the members (the strategy's, then
    those a growing population added), the task table summed over ranks (the population's tasks,
    the evaluation episodes, then one row per rank), each task's episode seed, the episodes
    that failed on this rank by (task, sign index), and the parameters and normalisation the
    evaluation episodes ran (the centre before a strategy's `select` moved it). With a strategy's
    `recheck`, its round: the population it asked for and that round's task rows; its seeds
    follow the evaluation episodes' in `seeds`, and its failures are numbered after them."""

    population: Population
    rows: np.ndarray
    seeds: np.ndarray
    failures: dict[tuple[int, int], EpisodeFailed]
    evaluated: tuple[np.ndarray, ObsNorm]
    rechecked: tuple[Population, np.ndarray] | None = None

    @property
    def tasks(self) -> int:
        return self.population.offsets.size

    @property
    def rechecks(self) -> int:
        return self.rechecked[0].offsets.size if self.rechecked else 0

    def episodes(self, config: Config) -> int:
        """Episodes run: the members' (--member-episodes each), the evaluation episodes and the
        recheck round's (--member-episodes for each candidate's)."""
        members = self.population.size + self.rechecks
        return members * config.member_episodes + config.eval_episodes

    def failed(self, eval_episodes: int) -> np.ndarray:
        """The failed episodes by kind (FAILURE_KINDS order), every round's."""
        counts = failure_counts(self.rows, self.tasks + eval_episodes)
        if self.rechecked:
            counts += failure_counts(self.rechecked[1], self.rechecks)
        return counts

    def lost_episodes(self, config: Config) -> int:
        """Episodes whose returns the generation cannot use: each failed evaluation episode and
        every one of a failed member's --member-episodes (it ends at its first failed episode,
        the rest unplayed), so that --max-failed-share means the same share whatever that is."""
        members = int(self.failed(0).sum())  # the members' rounds alone
        return int(self.failed(config.eval_episodes).sum()) + members * (config.member_episodes - 1)


def tasks_to_add(config: Config, generation: Generation, first_round: int) -> int:
    """How many tasks a growing population adds next: those of `first_round` (the strategy's
    popsize) more members, no more than --popsize-max in all, while the population's episodes
    have taken fewer than --population-steps steps (0: it does not grow, or has grown enough)."""
    if not config.population_steps:
        return 0
    width = len(generation.population.signs)
    steps = generation.rows[: generation.tasks, LENGTH : LENGTH + width].sum()
    room = most_members(config, first_round) - generation.population.size
    if steps >= config.population_steps or room < width:
        return 0
    return min(first_round, room) // width


def most_members(config: Config, first_round: int) -> int:
    """--popsize-max, or 8 times the first round's members for 0."""
    return config.popsize_max or 8 * first_round


def play(
    environment: envs.RankEnvironment,
    actor: Actor,
    theta: np.ndarray,
    seed: int,
    rules: EpisodeRules,
    row: np.ndarray,
    j: int,
    horizon: int,
) -> EpisodeFailed | None:
    """One episode of `theta`, at most `horizon` steps, into the j-th member's columns of `row`,
    its observations added to actor.obs_sums. A failed episode has return NaN (strategies rank
    it worst) and its failure code, and has the environment made again if it raised."""
    size = environment.behaviour_size
    behaviour = row[FIXED_COLUMNS + j * size : FIXED_COLUMNS + (j + 1) * size]
    try:
        row[RETURN + j], row[LENGTH + j] = run_episode(
            environment.stepped, actor, theta, seed, horizon, rules
        )
    except EpisodeFailed as error:
        failed = error
    else:
        if environment.describe is not None:
            behaviour[:] = described(environment)
        return None
    row[RETURN + j], row[LENGTH + j], row[FAILURE + j] = np.nan, failed.steps, failed.code
    behaviour[:] = np.nan
    if failed.kind == "raised":  # outside the except block: its own error, if any, stands alone
        environment.remake()
    return failed


def play_member(
    environment: envs.RankEnvironment,
    actor: Actor,
    theta: np.ndarray,
    seeds: np.ndarray,
    rules: EpisodeRules,
    row: np.ndarray,
    j: int,
    horizon: int,
) -> EpisodeFailed | None:
    """A member's episodes, one on each of `seeds` (--member-episodes), into the j-th member's
    columns of `row`: the mean of their returns and of their BCs, the steps of them all, their
    observations summed in actor.obs_sums. The first episode that fails ends the member, which
    fails as that episode did, with the steps of all the episodes it played."""
    actor.obs_sums[:] = 0.0
    size = environment.behaviour_size
    behaviour = row[FIXED_COLUMNS + j * size : FIXED_COLUMNS + (j + 1) * size]
    total, steps, behaviours = 0.0, 0.0, np.zeros(size)
    for seed in seeds:
        failed = play(environment, actor, theta, seed, rules, row, j, horizon)
        steps += row[LENGTH + j]
        if failed:
            row[LENGTH + j] = steps
            return failed
        total += row[RETURN + j]
        behaviours += behaviour
    row[RETURN + j], row[LENGTH + j] = total / seeds.size, steps
    behaviour[:] = behaviours / seeds.size
    return None


def described(environment: envs.RankEnvironment) -> np.ndarray:
    """The BC of the episode `environment` has just ended (--behaviour)."""
    assert environment.describe is not None
    found = environment.describe(environment.stepped)
    if found.size != environment.behaviour_size:
        raise UsageError(
            f"--behaviour {environment.config.behaviour} gave {found.size} numbers where it gave "
            f"{environment.behaviour_size} after the first reset; a BC keeps its size."
        )
    return found


def final_evaluation(run: Run, environment, actor: Actor, comm, counter) -> None:
    """Evaluate theta and best/theta (each with the normalisation it runs with) over
    --final-episodes episodes each, on seeds no training episode used, the episodes shared among
    ranks like a generation's tasks; store the result in run.final (the same on every rank)."""
    config, episodes = run.config, run.config.final_episodes
    seeds = noise.final_seeds(config.seed, episodes)
    _, _, best_theta, best_norm = run.best
    candidates = ((run.state.theta, run.obs_norm), (best_theta, best_norm))
    rules = EpisodeRules.from_config(config)
    rows = np.zeros((2 * episodes, FIXED_COLUMNS + 2 * environment.behaviour_size))
    for task in counter.tasks(2 * episodes):
        theta, obs_norm = candidates[task // episodes]
        if normalising(run.spec, config):
            actor.set_normalisation(obs_norm.mean, obs_norm.std)
        seed, horizon = seeds[task % episodes], environment.horizon
        play(environment, actor, theta, seed, rules, rows[task], 0, horizon)
    parallel.sum_records(comm, rows)
    returns = rows[:, RETURN].reshape(2, episodes)
    lengths = rows[:, LENGTH].astype(np.int64).reshape(2, episodes)
    size = environment.behaviour_size
    behaviours = rows[:, FIXED_COLUMNS : FIXED_COLUMNS + size].reshape(2, episodes, size)
    run.final = checkpoint.FinalEvaluation(
        run.generation, seeds, returns, lengths, behaviours if size else None
    )


def needs_final_evaluation(run: Run) -> bool:
    """Whether a finished run has yet to be evaluated at its end (as configured now)."""
    final, episodes = checkpoint.final_at(run.final, run.generation), run.config.final_episodes
    if not (run.finished and episodes and run.generation):
        return False
    return final is None or final.seeds.size != episodes


def failure_counts(table_rows: np.ndarray, all_tasks: int) -> np.ndarray:
    """A generation's failed episodes by kind (FAILURE_KINDS order), its evaluation included."""
    codes = table_rows[:all_tasks, FAILURE : FAILURE + 2].astype(np.int64).ravel()
    return np.bincount(codes, minlength=len(FAILURE_KINDS) + 1)[1:]


def failures_message(run: Run, generation: Generation, seen: dict, path: str) -> str:
    """The sentence that stops a run for failed episodes: how many, of what kind, the first one
    (its member and episode seed, and what the environment did) and the command replaying it.
    `seen` maps each failed member's (task, sign index), on every rank, to (what went wrong, the
    reset seed of the episode that failed)."""
    population, tasks, n_eval = generation.population, generation.tasks, run.config.eval_episodes
    counts = generation.failed(n_eval)
    kinds = counted_kinds(counts)
    task, j = min(seen)
    detail, seed = seen[task, j]  # the seed of the episode that failed, of the member's several
    folder = os.path.dirname(path) or "."
    if task >= tasks + n_eval:
        member, replay = "an elite candidate evaluated again", ""
    elif task >= tasks:
        member, replay = "the unperturbed policy", ""
    else:
        offset, sign = int(population.offsets[task]), population.signs[j]
        member = f"member offset {offset} sign {sign:+d}"
        if population.base_of is not None:
            member += f" of parent {population.base_of[task]}"
        replay = f" --member {offset} --sign {sign}"
    lost, failed = generation.lost_episodes(run.config), f"failed ({kinds})"
    if lost != counts.sum():  # --member-episodes: a failed member's other episodes count too
        failed = (
            f"failed or went unplayed after their member's failure ({counts.sum()} failed: {kinds})"
        )
    return (
        f"{lost} of {generation.episodes(run.config)} episodes of generation {run.generation + 1} "
        f"{failed}, more than --max-failed-share {run.config.max_failed_share:g}; the "
        f"first, {member} on episode seed {seed} in {run.config.env}: {detail}. The "
        f"checkpoint {path} holds generation {run.generation}, before it; `esmpi eval {folder}"
        f"{replay} --episode-seed {seed}` replays that episode, and `--resume {folder} "
        f"--max-failed-share S` continues with a higher share (exit code {EXIT_EPISODES_FAILED})"
    )


def population_statistics(returns: np.ndarray) -> tuple[float, float, float, float]:
    """(mean, std, min, max) of the finite returns (NaN when none is): one failed episode must
    not turn the history's population columns into NaN."""
    finite = returns[np.isfinite(returns)]
    if not finite.size:
        return (np.nan,) * 4
    return finite.mean(), finite.std(), finite.min(), finite.max()


def advance(
    run: Run,
    generation: Generation,
    table,
    seconds: float,
    checkpoint_s: float,
    horizon: int,
    behaviour_size: int = 0,
) -> None:
    """Apply one generation's results to `run` (identically on every rank, but for the timings in
    the history row: `seconds` since the generation started and `checkpoint_s` spent writing the
    previous checkpoint, as this rank measured them). `horizon` bounds the adaptive cap;
    `behaviour_size` is the number of each BC's columns in the table (--behaviour)."""
    update_started = time.perf_counter()
    population, table_rows = generation.population, generation.rows
    config, tasks, width = run.config, population.offsets.size, len(population.signs)
    returns = table_rows[:tasks, RETURN : RETURN + width]
    lengths = table_rows[:tasks, LENGTH : LENGTH + width]
    all_tasks = tasks + config.eval_episodes
    # The mean of the evaluation episodes (NaN when one failed: no best from this generation).
    eval_return = table_rows[tasks:all_tasks, RETURN].mean()
    steps = int(lengths.sum() + table_rows[tasks:all_tasks, LENGTH].sum())
    extra = {}
    if generation.rechecked:
        rechecked = generation.rechecked[1][: generation.rechecks]
        steps += int(rechecked[:, LENGTH].sum())
        extra["rechecked"] = rechecked[:, RETURN]
    lr, sigma = run.strategy.step_sizes(run.state, population)
    if eval_return > run.best[0]:
        evaluated_theta, evaluated_norm = generation.evaluated
        run.best = (eval_return, run.generation + 1, evaluated_theta.copy(), evaluated_norm)
    members = table_rows[:tasks, FIXED_COLUMNS : FIXED_COLUMNS + width * behaviour_size]
    behaviours = members.reshape(tasks, width, behaviour_size) if behaviour_size else None
    run.state = run.strategy.tell(
        run.state, population, returns, table, config, behaviours, **extra
    )
    if normalising(run.spec, config):
        n_obs = run.spec.sizes[0]
        sums = table_rows[:tasks, -2 * n_obs :].sum(axis=0)
        scored = table_rows[:tasks, FAILURE : FAILURE + width] == 0
        count = float(lengths[scored].sum())
        run.obs_norm = run.obs_norm.merged(count, sums[:n_obs], sums[n_obs:])
    if run.behaviours is not None:
        evaluations = table_rows[tasks:all_tasks, FIXED_COLUMNS : FIXED_COLUMNS + behaviour_size]
        run.behaviours.append((members.reshape(-1, behaviour_size), evaluations.copy()))
    run.generation += 1
    update_s = time.perf_counter() - update_started
    seconds += update_s + checkpoint_s
    rank_seconds = table_rows[all_tasks:, RANK_SECONDS]
    row = np.zeros((), dtype=checkpoint.HISTORY_DTYPE)
    row["generation"] = run.generation
    row["timesteps"] = run.timesteps + steps
    row["episodes"] = run.episodes + generation.episodes(config)
    row["members"] = population.size
    statistics = population_statistics(returns)
    row["return_mean"], row["return_std"], row["return_min"], row["return_max"] = statistics
    row["eval_return"], row["lr"], row["sigma"] = eval_return, lr, sigma
    row["wall_s"] = run.wall_s + seconds
    row["steps_per_s"] = steps / seconds if seconds > 0 else 0.0
    row["rollout_s"], row["idle_s"] = rank_seconds.max(), rank_seconds.max() - rank_seconds.mean()
    row["update_s"], row["checkpoint_s"] = update_s, checkpoint_s
    for kind, count in zip(FAILURE_KINDS, generation.failed(config.eval_episodes), strict=True):
        row[f"failed_{kind}"] = count
    if config.episode_cap:
        row["next_episode_cap"] = next_episode_cap(run, lengths, horizon)
    run.history.append(row)


def next_episode_cap(run: Run, lengths: np.ndarray, horizon: int) -> int:
    """The adaptive cap after a generation whose members' episodes took `lengths` steps (each
    member's, over its --member-episodes episodes): raised by --cap-raise (by one step at least)
    when at least --cap-share of the members reached it (Salimans et al.'s starter code; a member
    of several episodes reaches it when all of them do: their mean length is the cap), never
    above `horizon`."""
    cap, config = run.episode_cap(horizon), run.config
    if (lengths / config.member_episodes >= cap).mean() < config.cap_share:
        return cap
    return min(max(cap + 1, int(config.cap_raise * cap)), horizon)


def progress_line(run: Run) -> str:
    """The --print-every line: progress, the unperturbed policy's return and the best so far, the
    population's returns, then steps, speed and time, with the time left at the run's pace."""
    from esmpi.results import duration

    row, total, done = run.history[-1], run.config.generations, run.done_share
    seconds_per_gen = row["wall_s"] - (run.history[-2]["wall_s"] if len(run.history) > 1 else 0)
    left = row["wall_s"] / done * (1 - done) if done > 0 else 0.0
    members = f" | {row['members']} members" if run.config.population_steps else ""
    return (
        f"gen {run.generation:>5}{f'/{total}' if total else ''} {done:>4.0%} | "
        f"eval {row['eval_return']:>9.2f} best {run.best[0]:>9.2f} | "
        f"population mean {row['return_mean']:>9.2f} max {row['return_max']:>9.2f} | "
        f"{row['timesteps']:>11,} steps {row['steps_per_s']:>8,.0f}/s {seconds_per_gen:>6.2f} s/gen"
        f"{members}"
        f" | {duration(row['wall_s'])} elapsed, {duration(left)} left{failed_note(row)}"
    )


def failed_note(row) -> str:
    """' | 3 failed (2 reward, 1 raised)' for a history row with failed episodes, else ''."""
    counts = [int(row[f"failed_{kind}"]) for kind in FAILURE_KINDS]
    return f" | {sum(counts)} failed ({counted_kinds(counts)})" if sum(counts) else ""


def counted_kinds(counts) -> str:
    """'2 reward, 1 raised': failed episodes by kind (FAILURE_KINDS order), the kinds present."""
    return ", ".join(f"{n} {kind}" for kind, n in zip(FAILURE_KINDS, counts, strict=True) if n)


def final_summary(run: Run, path: str, n_ranks: int) -> str:
    """What a finished run prints: what ran, how well, where it is, and what to run next."""
    from esmpi.results import duration

    best_return, best_generation = run.best[0], run.best[1]
    last = run.history[-1]
    final, evaluated = "", checkpoint.final_at(run.final, run.generation)
    if evaluated is not None:
        theta_mean, best_mean = evaluated.means
        returns = evaluated.returns[0]
        final = (
            f"\n  final eval   theta {theta_mean:.2f} (std {returns.std():.2f}, min "
            f"{returns.min():.2f}, max {returns.max():.2f}), best/theta {best_mean:.2f}, over "
            f"{returns.size} episodes on unseen seeds"
        )
    speed = run.timesteps / run.wall_s if run.wall_s > 0 else 0.0
    folder = os.path.dirname(path) or "."
    return "\n".join(
        (
            f"esmpi: done, {run.config.env} seed {run.config.seed}: {run.generation} generations, "
            f"{run.timesteps:,} steps in {duration(run.wall_s)} ({speed:,.0f} steps/s on "
            f"{n_ranks} rank(s))",
            f"  eval return  last {last['eval_return']:.2f}, best {best_return:.2f} at generation "
            f"{best_generation}; population mean {last['return_mean']:.2f}, max "
            f"{last['return_max']:.2f}{final}",
            f"  checkpoint   {path}",
            f"  next         esmpi inspect {folder} --history | esmpi eval {folder} --video "
            f"episodes.mp4 | esmpi plot {os.path.dirname(folder) or '.'} -o curves.png",
        )
    )


# Options a resumed run may change: they decide how long it runs, how fast and how it reports,
# not what it computes.
RESUMABLE_CHANGES = (
    "native",
    "generations",
    "total_steps",
    "final_episodes",
    "max_failed_share",
    "print_every",
    "check_every",
)


def resumed_config(stored: Config, requested: Config, explicit: frozenset[str]) -> Config:
    """The checkpoint's config with the options a resumed run may change taken from `requested`.
    Any other option given explicitly must agree with the checkpoint."""
    differing = [
        name
        for name in sorted(explicit - set(RESUMABLE_CHANGES))
        if name in Config.__dataclass_fields__ and getattr(requested, name) != getattr(stored, name)
    ]
    if differing:
        name = differing[0]
        raise UsageError(
            f"{flag(name)} {getattr(requested, name)!r} differs from the "
            f"checkpoint's {getattr(stored, name)!r}; a resumed run keeps its configuration (only "
            f"{', '.join(flag(n) for n in RESUMABLE_CHANGES)} may change)."
        )
    changes = {name: getattr(requested, name) for name in RESUMABLE_CHANGES if name in explicit}
    return stored.replace(**changes)


def locate(config: Config, resume: str | None) -> tuple[str, str | None]:
    """(run folder, checkpoint to resume from or None), decided on rank 0; creates nothing.

    resume is None (a new run, whose folder must not exist yet), a checkpoint file or run folder,
    or 'auto': continue the run folder that --folder/--run-name name if it holds a checkpoint,
    else start it afresh."""
    if resume and resume != "auto":
        return (resume if os.path.isdir(resume) else os.path.dirname(resume) or "."), resume
    run_dir = os.path.join(config.folder, run_name(config))
    if resume == "auto":
        found = os.path.exists(os.path.join(run_dir, checkpoint.FILENAME))
        return run_dir, (run_dir if found else None)
    if os.path.exists(run_dir):
        raise UsageError(
            f"Run folder {run_dir} already exists; continue it with `--resume {run_dir}` or "
            "choose another --run-name or --folder."
        )
    return run_dir, None


@dataclass
class Trainer:
    """A run ready to train on this rank: its state and everything a generation uses."""

    run: Run
    environment: envs.RankEnvironment
    actor: Actor
    noise_table: parallel.NodeShared
    comm: Any  # an mpi4py communicator
    counter: parallel.TaskCounter
    path: str  # the checkpoint file
    saved: int  # generation of the checkpoint on disk (rank 0 keeps it up to date)
    progress: ProgressFiles | None  # progress.csv and TensorBoard events, on rank 0
    checkpoint_s: float = 0.0  # spent writing the last checkpoint, counted in the next generation

    @property
    def table(self) -> np.ndarray:
        return self.noise_table.array

    def close(self) -> None:
        """Release what the trainer holds beyond Python objects: rank 0's progress files, the
        environment, and the node-shared noise table and task counter. Collective over each
        node's ranks (every rank calls it, after the same generation); the trainer is not used
        after. A process that trains several runs in turn calls it between them so that their
        tables do not pile up in shared memory; at exit, what is left open is released anyway."""
        if self.progress:
            self.progress.close()
        self.environment.close()
        self.counter.free()
        self.noise_table.free()

    def save(self) -> None:
        """Rank 0: the progress files flushed, then the checkpoint of the run as it is now."""
        if self.progress:
            self.progress.flush()
        checkpoint.save(self.path, to_checkpoint(self.run, self.comm.Get_size()))
        self.saved = self.run.generation

    def run_generation(self, stop_signal: int = 0) -> Generation:
        """Run the tasks the counter gives this rank in generation `run.generation`: the
        population the strategy asks for and the evaluation episodes, then, with
        --population-steps, further rounds of new members while the population's episodes have
        taken fewer steps than that. `stop_signal` (what this rank has received, 0: none)
        travels in the first round's sum, so every rank learns at once whether any rank was told
        to stop."""
        run, comm = self.run, self.comm
        config = run.config
        population = run.strategy.ask(run.state, config, run.generation, self.table.size)
        tasks, n_eval = population.offsets.size, config.eval_episodes
        seeds = noise.episode_seeds(config.seed, run.generation, tasks + n_eval)
        evaluated = (run.state.theta, run.obs_norm)
        self.normalise()
        select = strategies.selector(config.strategy)
        if select:
            rows, failures = self.run_selecting(population, seeds, stop_signal, select)
        else:
            rows, failures = self.run_round(population, seeds)
            rows[tasks + n_eval + comm.Get_rank(), RANK_STOP_SIGNAL] = stop_signal
            parallel.sum_records(comm, rows)
        if not np.array_equal(rows[:tasks, OFFSET], population.offsets):
            raise RuntimeError("ranks disagree on the noise offsets of this generation")
        generation = Generation(population, rows, seeds, failures, evaluated)
        round_ = 1
        while (added := tasks_to_add(config, generation, population.size)) > 0:
            generation, round_ = self.grow(generation, added, round_), round_ + 1
        recheck = strategies.rechecker(config.strategy)
        return self.run_recheck(generation, recheck) if recheck else generation

    def run_recheck(self, generation: Generation, recheck: Callable) -> Generation:
        """`generation` with the round its strategy's `recheck` asks for after the population's
        returns (the GA's elite candidates, each on several episodes), on seeds of its own."""
        run, comm, config = self.run, self.comm, self.run.config
        tasks, n_eval, size = generation.tasks, config.eval_episodes, comm.Get_size()
        returns = generation.rows[:tasks, RETURN : RETURN + len(generation.population.signs)]
        again = recheck(run.state, generation.population, returns, self.table, config)
        seeds = noise.recheck_seeds(config.seed, run.generation, again.offsets.size)
        rows, failures = self.run_round(again, seeds)
        parallel.sum_records(comm, rows)
        generation.rows[-size:, RANK_SECONDS] += rows[-size:, RANK_SECONDS]
        before = tasks + n_eval
        generation.failures.update(
            {(before + task, j): failed for (task, j), failed in failures.items()}
        )
        return dataclasses.replace(
            generation,
            seeds=np.concatenate([generation.seeds, seeds]),
            rechecked=(again, rows[: again.offsets.size]),
        )

    def normalise(self) -> None:
        """The actor normalises observations with the run's statistics (where it normalises)."""
        run = self.run
        if normalising(run.spec, run.config):
            self.actor.set_normalisation(run.obs_norm.mean, run.obs_norm.std)

    def run_selecting(
        self, population: Population, seeds: np.ndarray, stop_signal: int, select: Callable
    ) -> tuple[np.ndarray, dict[tuple[int, int], EpisodeFailed]]:
        """A generation of a strategy that selects its centre: the evaluation episodes of
        `state.theta` as a round of their own (carrying `stop_signal`), the strategy's `select`
        with their returns and BCs, then the population around the centre it chose. Returns the
        rows summed over ranks as `run_round` lays them out, and this rank's failed episodes."""
        run, comm, config = self.run, self.comm, self.run.config
        tasks, n_eval, size = population.offsets.size, config.eval_episodes, comm.Get_size()
        alone = dataclasses.replace(population, offsets=population.offsets[:0])
        measured, measure_failures = self.run_round(alone, seeds[tasks:])
        measured[n_eval + comm.Get_rank(), RANK_STOP_SIGNAL] = stop_signal
        parallel.sum_records(comm, measured)
        behaviours = measured[
            :n_eval, FIXED_COLUMNS : FIXED_COLUMNS + self.environment.behaviour_size
        ]
        run.state, run.obs_norm = select(
            run.state, config, run.generation, measured[:n_eval, RETURN], behaviours, run.obs_norm
        )
        self.normalise()
        rows, failures = self.run_round(population, seeds[:tasks])
        parallel.sum_records(comm, rows)
        combined = np.concatenate([rows[:tasks], measured])
        combined[-size:, RANK_SECONDS] += rows[tasks:, RANK_SECONDS]
        failures.update(
            {(tasks + task, j): failed for (task, j), failed in measure_failures.items()}
        )
        return combined, failures

    def run_round(
        self, population: Population, seeds: np.ndarray
    ) -> tuple[np.ndarray, dict[tuple[int, int], EpisodeFailed]]:
        """This rank's share of one round of tasks: the population's, then (where `seeds` holds
        more than one per task) the evaluation episodes of the unperturbed policy. Returns the
        round's table, filled in this rank's rows only, and its failed episodes by (task, sign
        index)."""
        run, environment, actor, comm = self.run, self.environment, self.actor, self.comm
        config, spec, theta = run.config, run.spec, run.state.theta
        offsets, n_params, tasks = population.offsets, spec.n_params, population.offsets.size
        n_obs_columns = 2 * spec.sizes[0] if normalising(spec, config) else 0
        obs_start = FIXED_COLUMNS + 2 * environment.behaviour_size
        table_rows = np.zeros((seeds.size + comm.Get_size(), obs_start + n_obs_columns))
        member = cache_aligned_zeros(n_params)
        scales = population.signed_scales()
        rules = EpisodeRules.from_config(config, training=True)
        evaluation_rules = EpisodeRules.from_config(config)
        uncapped = environment.horizon
        cap = run.episode_cap(uncapped)
        failures = {}
        started = time.perf_counter()
        for task in self.counter.tasks(seeds.size):
            row = table_rows[task]
            if task >= tasks:  # an evaluation episode of the unperturbed policy
                failed = play(
                    environment, actor, theta, seeds[task], evaluation_rules, row, 0, uncapped
                )
                if failed:
                    failures[task, 0] = failed
                continue
            eps = self.table[offsets[task] : offsets[task] + n_params]
            base = population.base(task, theta)
            member_seeds = noise.member_episode_seeds(seeds[task], config.member_episodes)
            for j, sign in enumerate(population.signs):
                perturbed(base, eps, scales[sign], member)
                failed = play_member(environment, actor, member, member_seeds, rules, row, j, cap)
                if failed:
                    failures[task, j] = failed
                elif n_obs_columns:  # a failed member's observations never enter the statistics
                    row[obs_start:] += actor.obs_sums.ravel()
            row[OFFSET] = offsets[task]
        table_rows[seeds.size + comm.Get_rank(), RANK_SECONDS] = time.perf_counter() - started
        return table_rows, failures

    def grow(self, generation: Generation, tasks: int, round_: int) -> Generation:
        """`generation` with round `round_` of a growing population: `tasks` new noise slices
        and episode seeds drawn from (seed, generation, round), the same on every rank, their
        rows placed after the population's (before the evaluation episodes')."""
        run, comm = self.run, self.comm
        config, n_params = run.config, run.spec.n_params
        offsets = noise.noise_offsets(
            config.seed, run.generation, tasks, n_params, self.table.size, round_
        )
        seeds = noise.episode_seeds(config.seed, run.generation, tasks, round_)
        rows, failures = self.run_round(
            dataclasses.replace(generation.population, offsets=offsets), seeds
        )
        parallel.sum_records(comm, rows)
        before, old = generation.tasks, generation.rows
        combined = np.concatenate([old[:before], rows[:tasks], old[before:]])
        combined[-comm.Get_size() :, RANK_SECONDS] += rows[tasks:, RANK_SECONDS]
        moved = {
            (task + tasks if task >= before else task, j): failed
            for (task, j), failed in generation.failures.items()
        }
        moved.update({(before + task, j): failed for (task, j), failed in failures.items()})
        population = dataclasses.replace(
            generation.population,
            offsets=np.concatenate([generation.population.offsets, offsets]),
        )
        all_seeds = np.concatenate([generation.seeds[:before], seeds, generation.seeds[before:]])
        return Generation(population, combined, all_seeds, moved, generation.evaluated)

    def generation(self, stop_signal: int = 0) -> int:
        """One generation on every rank: the rollouts, the update, the check that ranks agree on
        the parameters (every --check-every), and on rank 0 the progress line and the checkpoint
        (every --print-every and at the last generation). `stop_signal` is the one this rank has
        received (0: none); returns the one any rank had received, the same on every rank.

        No collective precedes the rollouts: while rank 0 writes a checkpoint the other ranks
        already take the next generation's tasks."""
        run, comm = self.run, self.comm
        started = time.perf_counter()
        generation = self.run_generation(stop_signal)
        seconds = time.perf_counter() - started
        population, table_rows = generation.population, generation.rows
        all_tasks = population.offsets.size + run.config.eval_episodes
        allowed = run.config.max_failed_share * generation.episodes(run.config)
        if generation.lost_episodes(run.config) > allowed:
            self.stop_for_failures(generation)
        horizon = self.environment.horizon
        advance(
            run,
            generation,
            self.table,
            seconds,
            self.checkpoint_s,
            horizon,
            self.environment.behaviour_size,
        )
        self.checkpoint_s = 0.0
        if run.generation % run.config.check_every == 0 and not parallel.arrays_agree(
            comm, *state_arrays(run.state)
        ):
            raise RuntimeError(
                f"ranks hold different search states after generation {run.generation}: the "
                "update is not deterministic here (CPUs older than Haswell or Zen, or different C "
                "libraries or numba builds across nodes? README, 'Nodes of different CPU types')"
            )
        last = run.finished
        if self.progress:
            self.progress.add(run.history[-1])
        if comm.Get_rank() == 0 and (run.generation % run.config.print_every == 0 or last):
            print(progress_line(run), flush=True)
            writing = time.perf_counter()
            self.save()
            self.checkpoint_s = time.perf_counter() - writing
        return int(table_rows[all_tasks:, RANK_STOP_SIGNAL].max())

    def final_evaluation(self) -> None:
        """The end-of-run evaluation on every rank; rank 0 writes it into the checkpoint."""
        final_evaluation(self.run, self.environment, self.actor, self.comm, self.counter)
        if self.comm.Get_rank() == 0:
            self.save()

    def stop_early(self, signal_number: int) -> None:
        """Rank 0 writes the checkpoint (unless it already holds this generation) and says so;
        then every rank raises StoppedEarly."""
        run, name = self.run, signal.Signals(signal_number).name
        if self.comm.Get_rank() == 0:
            if run.generation > self.saved:
                self.save()
            where = f"checkpoint {self.path}" if run.generation else "nothing to save yet"
            print(
                f"esmpi: stopped by {name} after generation {run.generation}"
                f"{f' of {run.config.generations}' if run.config.generations else ''}; {where}; "
                "`--resume auto` with the same options "
                f"continues the run (exit code {EXIT_STOPPED})",
                flush=True,
            )
        raise StoppedEarly(f"stopped by {name} after generation {run.generation}")

    def stop_for_failures(self, generation: Generation) -> None:
        """Too many episodes of this generation failed: rank 0 writes the checkpoint of the
        generation before (the parameters the failed episodes ran from) and says which episode
        failed first, how, and how to replay it; every rank raises EpisodesFailed."""
        run, comm = self.run, self.comm
        failures = generation.failures
        seen = parallel.merged(
            comm, {key: (str(failed), failed.seed) for key, failed in failures.items()}
        )
        # The message names the checkpoint to replay from: a new run failing in its first
        # generation has none on disk yet, so its generation 0 is written too.
        unsaved = run.generation > self.saved or not os.path.exists(self.path)
        if comm.Get_rank() == 0 and unsaved:
            self.save()
        message = failures_message(run, generation, seen, self.path)
        if comm.Get_rank() == 0:
            print(f"esmpi: {message}", flush=True)
        raise EpisodesFailed(message)


def prepare(config: Config, comm, resume: str | None = None, explicit=frozenset()) -> Trainer:
    """Everything before the first generation of `config` (or of the checkpoint that `resume`
    names): the run folder, the environment, the policy, the node-shared noise table. `explicit`
    names the options the user gave, which a resumed run checks against its file."""
    rank, n_ranks = comm.Get_rank(), comm.Get_size()

    def find_state():
        run_dir, source = locate(config, resume)
        return run_dir, (checkpoint.load(source) if source else None)

    run_dir, state = parallel.on_rank0(comm, find_state)
    path = os.path.join(run_dir, checkpoint.FILENAME)
    run = None
    if state is not None:
        config = parallel.everywhere(
            comm, lambda: resumed_config(from_toml(state.config_toml), config, explicit)
        )
        run = run_from_checkpoint(state, config)

    # Observation wrappers go around the environment beneath the API checks; the policy sees
    # their spaces.
    environment = parallel.everywhere(comm, lambda: envs.RankEnvironment(config, quiet=rank != 0))
    stepped, horizon = environment.stepped, environment.horizon
    spec = parallel.everywhere(
        comm, lambda: spec_for_spaces(stepped.observation_space, stepped.action_space, config)
    )
    if run is None:
        run = parallel.everywhere(comm, lambda: new_run(config, spec))
    elif run.spec != spec:
        parallel.agree(comm, UsageError(f"{config.env} no longer matches the checkpoint's policy."))
    parallel.everywhere(comm, environment.first_reset)
    if config.behaviour and run.behaviours is None:
        run.behaviours = []
    parallel.everywhere(comm, lambda: check_rules(stepped, EpisodeRules.from_config(config)))
    if horizon >= 1 << 62:
        parallel.agree(
            comm, UsageError(f"{config.env} has no time limit; give --max-steps to end episodes.")
        )
    parallel.everywhere(comm, lambda: _check_table(config, spec))
    parallel.on_rank0(comm, lambda: create_run_folder(run_dir))
    noise_table = parallel.shared_noise_table(comm, config.noise_table_size, config.seed)
    table = noise_table.array
    if state is not None:  # the state's cached vectors, recomputed from the noise table
        run.state = strategies.rebuilt(config.strategy, run.state, table)
    actor = actor_for(spec, config.obs_clip)
    counter = parallel.TaskCounter(comm)
    if rank == 0:
        what = f"resuming at generation {run.generation}" if state else "starting"
        members = run.strategy.ask(run.state, config, run.generation, table.size).size
        if config.population_steps:
            growing = f" {members}, growing to {most_members(config, members)} members"
            members_text = f"{growing} until {config.population_steps:,} steps"
        else:
            members_text = f" {members}"
        print(
            f"esmpi: {what} {config.env} seed {config.seed} on {n_ranks} rank(s), "
            f"{config.strategy}, {spec.n_params:,} parameters, popsize{members_text}; "
            f"checkpoint {path}",
            flush=True,
        )
        print(f"esmpi: {config.env} steps through {environment.path}", flush=True)
    progress = ProgressFiles(run_dir, run.history) if rank == 0 else None
    return Trainer(
        run, environment, actor, noise_table, comm, counter, path, run.generation, progress
    )


def train(config: Config, comm, resume: str | None = None, explicit=frozenset()) -> str:
    """Train `config` (or continue the checkpoint that `resume` names); return the checkpoint path.

    `explicit` names the options the user gave, which a resumed run checks against its file."""
    stop = parallel.StopSignals()
    trainer = prepare(config, comm, resume, explicit)
    run = trainer.run
    stopped_by = 0
    try:
        while not run.finished and not stopped_by:
            # Every rank learns of a signal with the same generation's results, so all ranks
            # stop after the same generation.
            stopped_by = trainer.generation(stop.received)
        if stopped_by and not run.finished:
            trainer.stop_early(stopped_by)
        if needs_final_evaluation(run):
            trainer.final_evaluation()
    except BaseException:
        # Not trainer.close(), which is collective: the other ranks may not have stopped.
        if trainer.progress:
            trainer.progress.close()
        raise
    finally:
        stop.restore()
    trainer.close()
    if comm.Get_rank() == 0:
        print(final_summary(run, trainer.path, comm.Get_size()), flush=True)
    return trainer.path


def _check_table(config: Config, spec: PolicySpec) -> None:
    if spec.n_params > config.noise_table_size:
        raise UsageError(
            f"The policy has {spec.n_params:,} parameters, more than --noise-table-size "
            f"{config.noise_table_size:,}; raise --noise-table-size."
        )
