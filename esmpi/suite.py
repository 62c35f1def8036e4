"""Results suites: a TOML file of runs (environment, strategies, options, seeds, step budget), run
here one after another or submitted as a Slurm array, and turned into a markdown table and a
figure of learning curves over environment steps. The README's results tables come from these.

    folder = "runs/suite"          # where the run folders go (relative to the working directory)
    threads = 2                    # ranks per run

    [[runs]]
    env = "HalfCheetah-v5"
    strategy = ["openai-es", "pgpe"]   # one name or a list: one row each (default: the env's
                                       # preset's strategy, else openai-es)
    seeds = [0, 1, 2]
    total_steps = 5_000_000
    label = "paper"                # optional: names the row's runs (default: the options' digest)
    options = { sigma = 0.02, lr = 0.01, action_map = "tanh" }   # any `esmpi train` option
    target = 4800                  # optional: the mean final evaluation the row must reach
    reference = "Gymnasium's threshold 4800"   # optional: published figures to compare with

Each run is `esmpi train --env E --strategy S --seed K --total-steps N [options] --folder F
--run-name E__S__LABEL__K --resume auto`: what exists is continued, what is finished (it holds
its final evaluation) is left alone, so the command can be run again after an interruption. The
table reports, per row, the final evaluation of `theta` (the mean over its --final-episodes
episodes, on seeds no training episode used): its mean over seeds and range, and whether that
mean reaches the row's target (returns: higher is better).

The record, SUITE.results.jsonl beside the TOML file, keeps what the table and the figure need of
every finished run (its settings, final evaluation, steps, wall time, ranks and a thinned learning
curve), one JSON line a run. `run` adds each run it trains when it ends, `table` every finished
run it finds (those of a Slurm array); runs it holds are tabled and drawn without their folders,
and `run` does not train them again. Kept in version control, it lets a fresh clone make the table
and the figure again, and a new machine add a row without training the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields

import numpy as np

from esmpi import checkpoint, presets
from esmpi.config import Config, UsageError, from_toml, load_toml, option_arguments, value_text
from esmpi.results import configuration_of

_ENTRY_KEYS = {"env", "strategy", "seeds", "total_steps", "label", "options", "target", "reference"}


@dataclass(frozen=True)
class Row:
    """One row of the suite's table: an environment, a strategy and options, over seeds."""

    env: str
    strategy: str
    seeds: tuple[int, ...]
    total_steps: int
    label: str
    options: dict = field(default_factory=dict)
    target: float | None = None  # the mean final evaluation over seeds the row must reach
    reference: str = ""  # what to compare with (published figures), shown in the table

    def config(self, seed: int, folder: str) -> Config:
        """What `esmpi train` resolves the run's options to (presets included)."""
        values = {**self.options, "env": self.env, "strategy": self.strategy, "seed": seed}
        values.update(total_steps=self.total_steps, folder=folder, run_name=self.run_name(seed))
        return presets.resolve(values)[0]

    def run_name(self, seed: int) -> str:
        return f"{self.env.replace('/', '-')}__{self.strategy}__{self.label}__{seed}"

    def arguments(self, seed: str) -> list[str]:
        """The row's `esmpi train` options for `seed` (a number, or a shell variable)."""
        arguments = ["--env", self.env, "--strategy", self.strategy, "--seed", seed]
        arguments += ["--total-steps", str(self.total_steps)]
        arguments += option_arguments(self.options)
        return arguments

    def train_arguments(self, seed: int, folder: str) -> list[str]:
        """The `esmpi train` options of one run (without --threads)."""
        return [*self.arguments(str(seed)), "--folder", folder, "--run-name", self.run_name(seed)]

    def command(self, threads: int) -> str:
        """The command that reproduces the row's runs, seeds as a shell loop."""
        shown = (a if a == "$seed" else shlex.quote(a) for a in self.arguments("$seed"))
        seeds = " ".join(map(str, self.seeds))
        return f"for seed in {seeds}; do esmpi train {' '.join(shown)} --threads {threads}; done"


@dataclass(frozen=True)
class Suite:
    path: str
    folder: str
    threads: int
    rows: tuple[Row, ...]

    def runs(self):
        """(row, seed, run folder) of every run of the suite."""
        for row in self.rows:
            for seed in row.seeds:
                yield row, seed, os.path.join(self.folder, row.run_name(seed))


def _digest(options: dict) -> str:
    if not options:
        return "defaults"
    text = json.dumps(options, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def load(path: str) -> Suite:
    """The suite in the TOML file at `path`, each row's options checked as `esmpi train` would."""
    document = load_toml(path)
    entries = document.get("runs")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path} lists no [[runs]].")
    folder = str(document.get("folder", "runs/suite"))
    rows = []
    for number, entry in enumerate(entries, 1):
        unknown = sorted(set(entry) - _ENTRY_KEYS)
        if unknown or "env" not in entry or "total_steps" not in entry:
            raise UsageError(
                f"{path}: run {number} needs env and total_steps and may have "
                f"{', '.join(sorted(_ENTRY_KEYS - {'env', 'total_steps'}))}; "
                f"got {', '.join(sorted(entry))}."
            )
        options = dict(entry.get("options", {}))
        target = entry.get("target")
        if target is not None and (isinstance(target, bool) or not isinstance(target, int | float)):
            raise UsageError(
                f"{path}: run {number}'s target is a number (a mean return), not {target!r}."
            )
        strategies = entry.get("strategy", presets.default_strategy(entry["env"]))
        for strategy in [strategies] if isinstance(strategies, str) else strategies:
            row = Row(
                env=entry["env"],
                strategy=strategy,
                seeds=tuple(int(seed) for seed in entry.get("seeds", (0, 1, 2))),
                total_steps=int(entry["total_steps"]),
                label=str(entry.get("label") or _digest(options)),
                options=options,
                target=None if target is None else float(target),
                reference=str(entry.get("reference", "")),
            )
            row.config(row.seeds[0], folder)  # UsageError for options `esmpi train` refuses
            rows.append(row)
    return Suite(path, folder, int(document.get("threads", 2)), tuple(rows))


def only(suite: Suite, envs: list[str]) -> Suite:
    """`suite` with the rows of these environments alone."""
    unknown = sorted(set(envs) - {row.env for row in suite.rows})
    if unknown:
        raise UsageError(f"{suite.path} has no runs of {', '.join(unknown)}.")
    rows = tuple(row for row in suite.rows if row.env in envs)
    return Suite(suite.path, suite.folder, suite.threads, rows)


def finished_state(run_folder: str) -> checkpoint.Checkpoint | None:
    """The run folder's checkpoint if it holds a run at its end with its final evaluation."""
    path = os.path.join(run_folder, checkpoint.FILENAME)
    if not os.path.exists(path):
        return None
    state = checkpoint.load(path)
    return state if checkpoint.final_at(state.final, state.generation) else None


def finished(run_folder: str) -> bool:
    return finished_state(run_folder) is not None


def check_current(suite: Suite, record: dict[str, RecordedRun] | None = None) -> None:
    """UsageError if a run folder, or the record's line of a run, holds a run made with other
    settings than its row gives today (a preset or a default changed since): its numbers would
    not be the row's."""
    for row, seed, folder in suite.runs():
        wanted = row.config(seed, suite.folder)
        path = os.path.join(folder, checkpoint.FILENAME)
        stored = []
        if os.path.exists(path):
            stored.append((folder, checkpoint.load(path).config_toml, "move it away"))
        if record and row.run_name(seed) in record:
            where = f"{row.run_name(seed)} in the record {record_path(suite)}"
            stored.append((where, record[row.run_name(seed)].config_toml, "delete its line"))
        for where, config_toml, remedy in stored:
            shown = _changed_settings(from_toml(config_toml), wanted)
            if shown:
                raise UsageError(
                    f"{where} was trained with other settings than its row gives today: "
                    f"{shown}; {remedy} to train it again."
                )


def _changed_settings(trained: Config, wanted: Config) -> str:
    """'popsize 8 (now 10), ...' for every setting that changes what the run computes."""
    return ", ".join(
        f"{name} {getattr(trained, name)!r} (now {getattr(wanted, name)!r})"
        for name in sorted(vars(wanted))
        if name not in _NOT_COMPARED and getattr(trained, name) != getattr(wanted, name)
    )


# Settings that do not change what a run computes (RESUMABLE_CHANGES and where it is written).
_NOT_COMPARED = ("folder", "run_name", "generations", "print_every", "check_every")


def run_here(suite: Suite, threads: int | None = None) -> int:
    """Train every run of `suite` that is neither finished nor in its record, one after another,
    adding each to the record when it ends; return how many ran."""
    from esmpi.train import EXIT_STOPPED  # here: `esmpi suite table` need not load numba

    record = read_record(suite)
    check_current(suite, record)
    threads = threads or suite.threads
    esmpi = [sys.executable, "-m", "esmpi", "train"]
    ran = 0
    kept = [row.run_name(seed) for row, seed, _ in suite.runs() if row.run_name(seed) in record]
    if kept:
        print(
            f"esmpi suite: {len(kept)} run(s) are in {record_path(suite)} and are not trained "
            "again (delete their lines to train them)",
            flush=True,
        )
    for row, seed, folder in to_train(suite, record):
        arguments = [*row.train_arguments(seed, suite.folder), "--resume", "auto"]
        print(f"esmpi suite: {row.run_name(seed)}", flush=True)
        completed = subprocess.run([*esmpi, *arguments, "--threads", str(threads)])
        if completed.returncode == EXIT_STOPPED:
            raise UsageError(
                f"{row.run_name(seed)} was stopped by a signal after writing its checkpoint "
                f"(exit code {EXIT_STOPPED}); run the suite again to continue it."
            )
        if completed.returncode != 0:
            raise UsageError(
                f"{row.run_name(seed)} ended with exit code {completed.returncode}; its output "
                "above says why. Run the suite again to continue."
            )
        ran += 1
        # kept at once, not at the next `table`
        state = checkpoint.load(os.path.join(folder, checkpoint.FILENAME))
        add_to_record(suite, recorded(state, row.run_name(seed)))
    return ran


def task_list(suite: Suite) -> list[str]:
    """One line of `esmpi train` options per run neither finished nor recorded, for
    jobs/sweep.sbatch --list."""
    return [
        " ".join(row.train_arguments(seed, suite.folder))
        for row, seed, _ in to_train(suite, read_record(suite))
    ]


def to_train(suite: Suite, record: dict[str, RecordedRun]):
    """(row, seed, run folder) of every run of `suite` neither in the record nor finished."""
    for row, seed, folder in suite.runs():
        if row.run_name(seed) not in record and not finished(folder):
            yield row, seed, folder


def submit(suite: Suite, sbatch_options: list[str], jobs_folder: str) -> str:
    """Submit the unfinished runs as one Slurm array of jobs/sweep.sbatch tasks; return sbatch's
    output (the job id)."""
    check_current(suite, read_record(suite))
    lines = task_list(suite)
    if not lines:
        return "nothing to submit: every run of the suite is finished or recorded"
    if any(" " in argument for line in lines for argument in shlex.split(line)):
        raise UsageError("Slurm task lists are split at spaces: keep spaces out of options.")
    os.makedirs(suite.folder, exist_ok=True)
    listing = os.path.join(suite.folder, "suite-tasks.txt")
    with open(listing, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.makedirs("slurm_out", exist_ok=True)
    command = ["sbatch", f"--array=0-{len(lines) - 1}", f"--ntasks={suite.threads}"]
    command += [*sbatch_options, os.path.join(jobs_folder, "sweep.sbatch"), "--list", listing]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise UsageError("sbatch is not on PATH: submit from a Slurm login node.") from None
    if done.returncode != 0:
        raise UsageError(f"sbatch refused the array: {done.stderr.strip()}")
    return done.stdout.strip()


# Learning-curve points the record keeps of a run, evenly spread, the last one always: plenty for
# a panel of the figure, and a few kilobytes a run in the repository.
RECORD_POINTS = 100
_CURVE_COLUMNS = ("generation", "timesteps", "wall_s", "eval_return", "return_mean")


@dataclass
class RecordedRun:
    """What the suite's record keeps of one finished run: one line of SUITE.results.jsonl."""

    run: str  # the run folder's name: the row's run_name(seed)
    env_id: str
    config_toml: str  # the run's settings, as its checkpoint stores them
    n_ranks: int
    final_eval: float  # the final evaluation's mean return of theta
    final_episodes: int
    timesteps: int
    wall_s: float
    history: np.ndarray  # the learning curve: _CURVE_COLUMNS, at most RECORD_POINTS rows

    @property
    def configuration(self) -> tuple:
        return configuration_of(self.config_toml)

    def line(self) -> str:
        fields = {
            f.name: getattr(self, f.name) for f in dataclass_fields(self) if f.name != "history"
        }
        # 7 significant digits: curve points need no more, and the file stays small
        fields["curve"] = {c: [float(f"{v:.7g}") for v in self.history[c]] for c in _CURVE_COLUMNS}
        return json.dumps(fields)

    @classmethod
    def from_line(cls, line: str) -> RecordedRun:
        fields = json.loads(line)
        curve = fields.pop("curve")
        history = np.zeros(len(curve["generation"]), [(c, np.float64) for c in _CURVE_COLUMNS])
        for column in _CURVE_COLUMNS:
            history[column] = curve[column]
        return cls(**fields, history=history)


def record_path(suite: Suite) -> str:
    """The suite's record: SUITE.results.jsonl beside SUITE.toml."""
    return os.path.splitext(suite.path)[0] + ".results.jsonl"


def recorded(state: checkpoint.Checkpoint, run: str) -> RecordedRun:
    """The record of a finished run's checkpoint (its final evaluation at its last generation)."""
    final = checkpoint.final_at(state.final, state.generation)
    if final is None:
        raise ValueError(f"{run} has no final evaluation at its last generation")
    history = state.history
    return RecordedRun(
        run=run,
        env_id=state.env_id,
        config_toml=state.config_toml,
        n_ranks=state.n_ranks,
        final_eval=final.means[0],
        final_episodes=int(final.seeds.size),
        timesteps=int(history[-1]["timesteps"]),
        wall_s=float(history[-1]["wall_s"]),
        history=thinned_curve(history),
    )


def thinned_curve(history: np.ndarray) -> np.ndarray:
    """The record's learning curve of a run's history: its _CURVE_COLUMNS at RECORD_POINTS rows
    at most, evenly spread, the first and the last kept."""
    rows = np.unique(np.linspace(0, history.size - 1, RECORD_POINTS).round().astype(np.int64))
    curve = np.zeros(rows.size, [(c, np.float64) for c in _CURVE_COLUMNS])
    for column in _CURVE_COLUMNS:
        curve[column] = history[column][rows]
    return curve


def read_record(suite: Suite) -> dict[str, RecordedRun]:
    """The suite's record by run name (empty where there is none yet)."""
    path = record_path(suite)
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        runs = [RecordedRun.from_line(line) for line in handle if line.strip()]
    return {run.run: run for run in runs}


def update_record(suite: Suite) -> dict[str, RecordedRun]:
    """The record with every finished run folder of the suite in it (a folder's run replaces a
    line of the same name), written back when that changed it. Lines of runs the suite no longer
    lists are left as they are."""
    with _record_locked(suite):
        record = read_record(suite)
        check_current(suite, record)
        before = {name: run.line() for name, run in record.items()}
        for row, seed, folder in suite.runs():
            state = finished_state(folder)
            if state is not None:
                record[row.run_name(seed)] = recorded(state, row.run_name(seed))
        if {name: run.line() for name, run in record.items()} != before:
            _write_record(suite, record)
    return record


def add_to_record(suite: Suite, run: RecordedRun) -> None:
    """The record with `run` in it, read and written under a lock: suite runs of other rows going
    on beside this one (one a core) keep the lines they add meanwhile."""
    with _record_locked(suite):
        record = read_record(suite)
        record[run.run] = run
        _write_record(suite, record)


@contextlib.contextmanager
def _record_locked(suite: Suite):
    # A lock file opened for writing, not the folder: on NFS (a cluster's home) flock is a POSIX
    # lock, which needs a file open for writing. The file stays (removing it would race).
    with open(record_path(suite) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


def _write_record(suite: Suite, record: dict[str, RecordedRun]) -> None:
    """The record's file: one line a run, in order of run name (diffs stay small). Written
    beside it and renamed over it, so a reader never sees half a record."""
    path = record_path(suite)
    partial = path + ".partial"
    with open(partial, "w") as handle:
        handle.writelines(record[name].line() + "\n" for name in sorted(record))
    os.replace(partial, path)


@dataclass
class RowResult:
    row: Row
    seeds: tuple[int, ...]  # the seeds with a run in the record
    finals: np.ndarray  # final evaluation of theta, one per such seed
    steps: np.ndarray
    walls: np.ndarray
    ranks: tuple[int, ...]  # the ranks its runs had, each once

    @property
    def missing(self) -> tuple[int, ...]:
        """The row's seeds without a run in the record."""
        return tuple(seed for seed in self.row.seeds if seed not in self.seeds)

    def verdict(self) -> str:
        """The target and whether the mean over the recorded seeds reaches it ('4800: met',
        '4800: missed so far' while seeds are missing); the target alone before any run is
        recorded, '' without a target."""
        target = self.row.target
        if target is None or not self.finals.size:
            return "" if target is None else f"{target:g}"
        met = "met" if self.finals.mean() >= target else "missed"
        return f"{target:g}: {met}{' so far' if self.missing else ''}"


def results(suite: Suite, record: dict[str, RecordedRun]) -> list[RowResult]:
    found = []
    for row in suite.rows:
        runs = {seed: record.get(row.run_name(seed)) for seed in row.seeds}
        recorded = {seed: run for seed, run in runs.items() if run is not None}
        seeds, kept = tuple(recorded), list(recorded.values())
        found.append(
            RowResult(
                row,
                seeds,
                np.array([run.final_eval for run in kept]),
                np.array([run.timesteps for run in kept]),
                np.array([run.wall_s for run in kept]),
                tuple(sorted({run.n_ranks for run in kept})),
            )
        )
    return found


def markdown_table(suite: Suite, record: dict[str, RecordedRun]) -> str:
    """The suite's table from its record: one row per (environment, strategy, options), the final
    evaluation's mean over seeds, its range and each seed's, the target and whether it is met,
    what to compare with, env steps, wall time, cores, and the command."""
    from esmpi.results import duration

    lines = [
        "| environment | strategy | options | budget | seeds | final eval: mean [min, max] "
        "| per seed | target | reference | env steps (mean) | wall per run (mean) | cores "
        "| command |",
        "| --- | --- | --- | ---: | ---: | --- | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for result in results(suite, record):
        row = result.row
        options = " ".join(f"{k}={value_text(v)}" for k, v in row.options.items()) or "none"
        if result.finals.size:
            finals = result.finals
            score = f"{finals.mean():.1f} [{finals.min():.1f}, {finals.max():.1f}]"
            steps = f"{result.steps.mean():,.0f}"
            wall = duration(float(result.walls.mean()))
        else:
            score, steps, wall = "not run", "", ""
        finals_by_seed = zip(result.seeds, result.finals, strict=True)
        per_seed = ", ".join(f"{seed}: {final:.1f}" for seed, final in finals_by_seed)
        if result.missing:
            per_seed += f" ({', '.join(map(str, result.missing))} missing)"
        lines.append(
            f"| {row.env} | {row.strategy} | {options} | {row.total_steps:,} | "
            f"{result.finals.size} | {score} | {per_seed.strip()} | {result.verdict()} | "
            f"{row.reference} | {steps} | {wall} | {', '.join(map(str, result.ranks))} | "
            f"`{row.command(suite.threads)}` |"
        )
    return "\n".join(lines)


def figure(suite: Suite, record: dict[str, RecordedRun], path: str) -> None:
    """Learning curves over environment steps of every recorded run (esmpi plot's figure)."""
    from esmpi import plotting

    runs = [
        record[name] for name in (r.run_name(seed) for r, seed, _ in suite.runs()) if name in record
    ]
    if not runs:
        raise UsageError(f"No run of {suite.path} has finished yet.")
    plotting.save(plotting.learning_curves(runs, x="timesteps"), path)
