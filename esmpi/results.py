"""Reading finished (or running) runs back: finding checkpoints, summarising them, and the tables
of `esmpi inspect`. Everything comes from the checkpoint files through `checkpoint.py`; nothing
here writes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, TypeVar

import numpy as np

from esmpi import checkpoint, mazes
from esmpi.config import UsageError, from_toml, value_text

# Options that say how a run is named, reported or how long it lasts, not what it computes: runs
# that differ only in these (and the seed) are repetitions of one configuration.
_NOT_CONFIGURATION = (
    "seed",
    "run_name",
    "folder",
    "generations",
    "max_failed_share",
    "final_episodes",
    "print_every",
    "check_every",
)


@dataclass
class RunSummary:
    """What `esmpi inspect` shows of one run; `history` holds the HISTORY_DTYPE rows."""

    path: str
    run: str  # the run folder's name
    env_id: str
    strategy: str
    policy: str  # the policy's kind: mlp, linear, cnn, rnn, hebbian or a user's module:Class
    seed: int
    n_ranks: int
    generations: int
    timesteps: int
    wall_s: float
    steps_per_s: float  # over the whole run, all ranks
    last_eval: float
    best_eval: float
    best_generation: int
    last_return_mean: float
    last_return_max: float
    failed_episodes: int  # over the whole run, of every kind
    final_eval: float  # the end-of-run evaluation's mean return of theta (NaN: none yet)
    final_best_eval: float  # and of best/theta
    final_episodes: int  # episodes of each (0: none yet)
    esmpi_version: str
    versions: dict
    configuration: tuple  # (name, value) of every option that shapes the result but the seed
    history: np.ndarray

    def row(self) -> dict:
        """The summary without the history, as plain JSON-able values."""
        found = asdict(self)
        del found["history"], found["configuration"]
        return found


def find_checkpoints(paths: list[str]) -> list[str]:
    """The checkpoint files that `paths` name: files, run folders, or folders of run folders."""
    found = []
    for path in paths:
        if os.path.isfile(path):
            found.append(path)
        elif os.path.isfile(os.path.join(path, checkpoint.FILENAME)):
            found.append(os.path.join(path, checkpoint.FILENAME))
        elif os.path.isdir(path):
            nested = sorted(
                os.path.join(folder, checkpoint.FILENAME)
                for folder, _, files in os.walk(path)
                if checkpoint.FILENAME in files
            )
            if not nested:
                raise UsageError(f"{path} holds no {checkpoint.FILENAME} in it or its subfolders.")
            found.extend(nested)
        else:
            raise UsageError(f"There is no checkpoint file or run folder at {path}.")
    return list(dict.fromkeys(found))


def summarise(path: str) -> RunSummary:
    """Summary of the checkpoint at `path` (a file or run folder)."""
    state = checkpoint.load(path)
    attrs = checkpoint.metadata(path)
    history = state.history
    if history.size == 0:
        raise UsageError(f"{attrs['path']} holds no finished generation yet.")
    last = history[-1]
    wall_s = float(last["wall_s"])
    return RunSummary(
        path=attrs["path"],
        run=os.path.basename(os.path.dirname(os.path.abspath(attrs["path"]))),
        env_id=state.env_id,
        strategy=state.strategy,
        policy=state.policy.kind,
        seed=state.seed,
        n_ranks=state.n_ranks,
        generations=state.generation,
        timesteps=int(last["timesteps"]),
        wall_s=wall_s,
        steps_per_s=float(last["timesteps"]) / wall_s if wall_s > 0 else 0.0,
        last_eval=float(last["eval_return"]),
        best_eval=state.best_return,
        best_generation=state.best_generation,
        last_return_mean=float(last["return_mean"]),
        last_return_max=float(last["return_max"]),
        failed_episodes=int(sum(history[name].sum() for name in checkpoint.FAILED_COLUMNS)),
        **_final_columns(state),
        esmpi_version=str(attrs["esmpi_version"]),
        versions=attrs["versions"],
        configuration=configuration_of(state.config_toml),
        history=history,
    )


def configuration_of(config_toml: str) -> tuple:
    """(name, value) of every option of a run's settings that shapes its result but the seed:
    what makes runs repetitions of one configuration."""
    config = from_toml(config_toml)
    return tuple(
        (name, _hashable(value))
        for name, value in sorted(vars(config).items())
        if name not in _NOT_CONFIGURATION
    )


def _final_columns(state: checkpoint.Checkpoint) -> dict:
    """The end-of-run evaluation, when it describes the checkpoint's generation."""
    final = checkpoint.final_at(state.final, state.generation)
    if final is None:
        return {"final_eval": np.nan, "final_best_eval": np.nan, "final_episodes": 0}
    theta_mean, best_mean = final.means
    return {
        "final_eval": theta_mean,
        "final_best_eval": best_mean,
        "final_episodes": int(final.seeds.size),
    }


def _hashable(value):
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def summarise_all(paths: list[str]) -> list[RunSummary]:
    """Summaries of every run that `paths` name, best final evaluation return first."""
    summaries = [summarise(path) for path in find_checkpoints(paths)]
    return sorted(summaries, key=lambda s: (-_score(s), s.env_id, s.seed, s.path))


def _score(summary: RunSummary) -> float:
    """What ranks runs: the final evaluation where a run has one, else its last eval return."""
    return summary.final_eval if summary.final_episodes else summary.last_eval


def duration(seconds: float) -> str:
    """'42.1 s', '3 min 05 s', '2 h 07 min': wall time a person reads at a glance."""
    if seconds < 59.95:  # what rounds to 60.0 s reads better as 1 min 00 s
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(float(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# header, alignment, how to show the value of a RunSummary
_SUMMARY_COLUMNS = (
    ("run", "<", lambda s: s.run),
    ("env", "<", lambda s: s.env_id),
    ("strategy", "<", lambda s: s.strategy),
    ("policy", "<", lambda s: s.policy),
    ("seed", ">", lambda s: str(s.seed)),
    ("ranks", ">", lambda s: str(s.n_ranks)),
    ("gens", ">", lambda s: str(s.generations)),
    ("timesteps", ">", lambda s: f"{s.timesteps:,}"),
    ("wall", ">", lambda s: duration(s.wall_s)),
    ("steps/s", ">", lambda s: f"{s.steps_per_s:,.0f}"),
    ("last eval", ">", lambda s: f"{s.last_eval:.2f}"),
    ("best eval (gen)", ">", lambda s: f"{s.best_eval:.2f} ({s.best_generation})"),
    ("pop mean", ">", lambda s: f"{s.last_return_mean:.2f}"),
    ("final eval (best)", ">", lambda s: _final_cell(s)),
    ("failed", ">", lambda s: f"{s.failed_episodes:,}"),
    ("esmpi", "<", lambda s: s.esmpi_version),
)


def _final_cell(summary: RunSummary) -> str:
    if not summary.final_episodes:
        return "-"
    return f"{summary.final_eval:.2f} ({summary.final_best_eval:.2f})"


def aligned(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(line, align, widths, strict=True))
        for line in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def summary_table(summaries: list[RunSummary]) -> str:
    """One line per run, then the library versions (once when all runs share them)."""
    header = [name for name, _, _ in _SUMMARY_COLUMNS]
    rows = [[show(s) for _, _, show in _SUMMARY_COLUMNS] for s in summaries]
    text = aligned(header, rows, [a for _, a, _ in _SUMMARY_COLUMNS])
    version_sets: dict[str, list[str]] = {}
    for s in summaries:
        shown = ", ".join(f"{name} {version}" for name, version in sorted(s.versions.items()))
        version_sets.setdefault(shown, []).append(s.run)
    for shown, runs in version_sets.items():
        whose = "" if len(version_sets) == 1 else f" ({', '.join(runs)})"
        text += f"\nversions{whose}: {shown}"
    return text


def history_table(summary: RunSummary) -> str:
    """The per-generation history of one run, one line per generation."""
    names = list(summary.history.dtype.names or ())  # units: the NAME.unit attributes, README
    rows = [[_cell(row[name]) for name in names] for row in summary.history]
    return f"{summary.path}\n" + aligned(names, rows, [">"] * len(names))


def _cell(value) -> str:
    if isinstance(value, np.integer):
        return str(int(value))
    return f"{float(value):.6g}"


def summaries_csv(summaries: list[RunSummary]) -> str:
    rows = [s.row() for s in summaries]
    for row in rows:
        row["versions"] = json.dumps(row["versions"], sort_keys=True)
    return _csv(list(rows[0]), [list(row.values()) for row in rows])


def histories_csv(summaries: list[RunSummary]) -> str:
    """Every run's history in one CSV, a `run` and `seed` column first."""
    names = list(summaries[0].history.dtype.names or ())
    rows = [
        [s.run, s.env_id, s.seed, *(row[name].item() for name in names)]
        for s in summaries
        for row in s.history
    ]
    return _csv(["run", "env", "seed", *names], rows)


def _csv(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().rstrip("\n")


def summaries_json(summaries: list[RunSummary], with_history: bool) -> str:
    """A JSON list of runs; each holds its history as a list of rows when `with_history`."""
    found = []
    for s in summaries:
        row = s.row()
        if with_history:
            names = s.history.dtype.names or ()
            row["history"] = [{name: r[name].item() for name in names} for r in s.history]
        found.append(row)
    return json.dumps(found, indent=2)


class LearningCurve(Protocol):
    """What a learning curve is drawn from: a RunSummary, or a suite's record of a run."""

    @property
    def env_id(self) -> str: ...

    @property
    def configuration(self) -> tuple: ...

    @property
    def history(self) -> np.ndarray: ...


Curve = TypeVar("Curve", bound=LearningCurve)


def configuration_groups(summaries: Sequence[Curve]) -> dict[tuple, list[Curve]]:
    """Runs grouped by environment and configuration (seeds of one setting go together)."""
    groups: dict[tuple, list[Curve]] = {}
    for s in summaries:
        groups.setdefault((s.env_id, s.configuration), []).append(s)
    return groups


def group_label(key: tuple, keys: list[tuple]) -> str:
    """The options in which this group differs from the other groups of its environment, as
    'lr=0.01 sigma=0.05', or '' when it is its environment's only group."""
    env_id, configuration = key
    others = [other for other_env, other in keys if other_env == env_id and other != configuration]
    if not others:
        return ""
    differing = [
        f"{name}={value_text(value)}"
        for name, value in configuration
        if any(dict(other).get(name) != value for other in others)
    ]
    return " ".join(differing)


def curve_label(key: tuple, keys: list[tuple]) -> str:
    """How a legend names a group beside the other groups of its environment: its strategy where
    no other group there has that strategy (the options a strategy's own preset or defaults set
    differ with it, and spelt out they made legends wider than their panels), else the options
    in which it differs (group_label); '' when it is its environment's only group."""
    env_id, configuration = key
    strategy = dict(configuration).get("strategy")
    others = [other for other_env, other in keys if other_env == env_id and other != configuration]
    if others and strategy and all(dict(other).get("strategy") != strategy for other in others):
        return str(strategy)
    return group_label(key, keys)


@dataclass(frozen=True)
class BehaviourRun:
    """What `esmpi plot --behaviours` draws of one run trained with --behaviour."""

    summary: RunSummary
    # (episodes, B): the evaluation episodes' BCs, generation after generation
    evaluations: np.ndarray
    generations: np.ndarray  # (episodes,): the generation of each
    final_best: np.ndarray | None  # (K, B): best/theta's final evaluation, where it has one
    maze: mazes.Maze | None  # the layout, where --env-kwargs gave a maze_map

    def goal_share(self) -> float | None:
        """The share of best/theta's final-evaluation episodes that ended in a goal cell (None
        without a maze or a final evaluation)."""
        if self.maze is None or self.final_best is None:
            return None
        return float(self.maze.in_goal(self.final_best[:, :2]).mean())


def behaviour_runs(paths: list[str]) -> list[BehaviourRun]:
    """The runs that `paths` name, with their BCs; UsageError for a run without them."""
    found = []
    for summary in summarise_all(paths):
        state = checkpoint.load(summary.path)
        if state.behaviours is None or not state.behaviours.evaluations.size:
            raise UsageError(f"{summary.path} was trained without --behaviour: no BCs to plot.")
        config = from_toml(state.config_toml)
        evaluations = state.behaviours.evaluations
        generations = np.repeat(state.history["generation"], config.eval_episodes)
        final = checkpoint.final_at(state.final, state.generation)
        final_best = (
            final.behaviours[1] if final is not None and final.behaviours is not None else None
        )
        maze = mazes.from_config(config.env, config.env_kwargs)
        found.append(BehaviourRun(summary, evaluations, generations, final_best, maze))
    return found


def behaviour_groups(runs: list[BehaviourRun]) -> dict[str, list[BehaviourRun]]:
    """The runs by configuration (seeds of one setting together), each named by its strategy,
    with the options that set it apart where two configurations share a strategy."""
    groups: dict[tuple, list[BehaviourRun]] = {}
    for run in runs:  # as configuration_groups groups the summaries
        groups.setdefault((run.summary.env_id, run.summary.configuration), []).append(run)
    keys = list(groups)
    strategies = [dict(configuration)["strategy"] for _, configuration in keys]
    named: dict[str, list[BehaviourRun]] = {}
    for key, strategy in zip(keys, strategies, strict=True):
        name = strategy
        if strategies.count(strategy) > 1 or len({env_id for env_id, _ in keys}) > 1:
            name = f"{key[0]} {strategy} {group_label(key, keys)}".strip()
        named[name] = groups[key]
    return named


def goal_summary(runs: list[BehaviourRun]) -> str:
    """One line per configuration: in how many seeds best/theta's final evaluation ended in the
    goal cell in at least half of its episodes (runs without a maze or a final evaluation are
    left out)."""
    lines = []
    for name, members in behaviour_groups(runs).items():
        shares = [run.goal_share() for run in members]
        known = [
            (run, share) for run, share in zip(members, shares, strict=True) if share is not None
        ]
        if not known:
            continue
        reached = sum(share >= 0.5 for _, share in known)
        each = ", ".join(f"seed {run.summary.seed} {share:.0%}" for run, share in known)
        lines.append(
            f"{name}: goal reached in {reached} of {len(known)} seeds (best/theta's final "
            f"evaluation episodes that ended in the goal cell: {each})"
        )
    return "\n".join(lines)
