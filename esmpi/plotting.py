"""Learning curves of `esmpi plot`: one panel per environment (four to a row), one colour per
configuration, the mean over seeds as a line and the range over seeds (min to max) as a band; the
evaluation return (unperturbed policy) solid, the population mean dashed. With --behaviours,
where the policies went instead: one panel per configuration, the first two numbers of each
evaluation episode's BC as dots coloured by generation, best/theta's final evaluation as one
marker shape per seed, over the maze's walls, start and goal where the run trained in a maze_map.

Figures are built with matplotlib's object interface on the Agg canvas, never pyplot, so plotting
needs no display and leaves matplotlib's global backend alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from esmpi.config import UsageError
from esmpi.results import (
    BehaviourRun,
    LearningCurve,
    behaviour_groups,
    configuration_groups,
    curve_label,
)

# --x choice: (history column, axis label)
X_AXES = {
    "generation": ("generation", "generation"),
    "timesteps": ("timesteps", "environment steps (all ranks)"),
    "wall": ("wall_s", "wall-clock time (s)"),
}
# history column, line style, legend wording
CURVES = (("eval_return", "-", "evaluation"), ("return_mean", "--", "population mean"))
PANELS_PER_ROW = 4  # more environments wrap onto further rows
FORMATS = (".png", ".svg", ".pdf")


def seed_curves(runs: Sequence[LearningCurve], x_column: str, y_column: str):
    """(x, y of shape (seeds, points)) on a grid that every seed covers, by linear interpolation.

    Generations line up exactly (the grid is 1, 2, ...); steps and seconds differ from seed to
    seed, so each seed is interpolated onto points spaced evenly over the common range."""
    xs = [run.history[x_column].astype(float) for run in runs]
    low, high = max(x[0] for x in xs), min(x[-1] for x in xs)
    points = max(len(x) for x in xs) if len(runs) > 1 else len(xs[0])
    grid = np.linspace(low, high, points) if len(runs) > 1 else xs[0]
    values = [np.interp(grid, x, run.history[y_column]) for x, run in zip(xs, runs, strict=True)]
    return grid, np.array(values)


def learning_curves(summaries: Sequence[LearningCurve], x: str = "generation"):
    """A matplotlib Figure of the runs' learning curves (see the module docstring)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, MaxNLocator

    if x not in X_AXES:
        raise UsageError(f"--x must be one of {', '.join(X_AXES)}; got {x!r}.")
    x_column, x_label = X_AXES[x]
    groups = configuration_groups(summaries)
    environments = list(dict.fromkeys(env_id for env_id, _ in groups))
    columns = min(len(environments), PANELS_PER_ROW)
    rows = -(-len(environments) // columns)
    figure = Figure(figsize=(5.2 * columns, 3.9 * rows), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for spare in grid[len(environments) :]:
        spare.remove()
    for env_id, ax in zip(environments, grid, strict=False):
        keys = [key for key in groups if key[0] == env_id]
        for colour, key in enumerate(keys):
            _draw_group(ax, groups[key], curve_label(key, list(groups)), f"C{colour}", x_column)
        ax.set_title(env_id)
        ax.set_xlabel(x_label)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=x == "generation"))
        if x == "timesteps":  # 250k, 1.5M: full step counts run into each other
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    figure.suptitle(
        "episode return: mean over seeds, band from the lowest to the highest seed",
        fontsize="medium",
    )
    return figure


def _draw_group(ax, runs: Sequence[LearningCurve], label: str, colour: str, x_column: str) -> None:
    seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
    for y_column, style, wording in CURVES:
        grid, values = seed_curves(runs, x_column, y_column)
        name = f"{label} {wording}".strip()
        ax.plot(grid, values.mean(axis=0), style, color=colour, label=f"{name} ({seeds})")
        if len(runs) > 1:
            ax.fill_between(grid, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.15)


SEED_MARKERS = "os^Dvp*hX"


def behaviour_map(runs: list[BehaviourRun]):
    """A matplotlib Figure of where each configuration's policies ended (see the docstring)."""
    from matplotlib.figure import Figure

    groups = behaviour_groups(runs)
    figure = Figure(figsize=(4.2 * min(len(groups), 4), 3.6), layout="constrained")
    axes = figure.subplots(1, len(groups), squeeze=False)[0]
    last = max(int(run.generations.max()) for run in runs)
    for (name, members), ax in zip(groups.items(), axes, strict=True):
        maze = members[0].maze
        if maze is not None:
            _draw_maze(ax, maze)
        for index, run in enumerate(members):
            dots = ax.scatter(
                run.evaluations[:, 0],
                run.evaluations[:, 1],
                c=run.generations,
                cmap="viridis",
                vmin=1,
                vmax=last,
                s=4,
                alpha=0.35,
                linewidths=0,
            )
            if run.final_best is not None:
                ax.scatter(
                    run.final_best[:, 0],
                    run.final_best[:, 1],
                    marker=SEED_MARKERS[index % len(SEED_MARKERS)],
                    s=60,
                    facecolors="none",
                    edgecolors="C3",
                    linewidths=1.5,
                    label=f"seed {run.summary.seed}: best/theta",
                )
        shares = [share for run in members if (share := run.goal_share()) is not None]
        reached = ""
        if shares and len(shares) == len(members):
            reached = f"\ngoal reached in {sum(s >= 0.5 for s in shares)} of {len(shares)} seeds"
        ax.set_title(f"{name}{reached}", fontsize="medium")
        ax.set_aspect("equal")
        if any(run.final_best is not None for run in members):
            ax.legend(fontsize="x-small", loc="best")
    figure.colorbar(dots, ax=axes.tolist(), label="generation", shrink=0.8)
    figure.suptitle(
        "where the episodes ended: evaluation episodes (dots), best/theta's final evaluation "
        "(markers)",
        fontsize="medium",
    )
    return figure


def _draw_maze(ax, maze) -> None:
    """The maze's walls as grey squares, its start cells as a circle and goal cells as a star."""
    from matplotlib.patches import Rectangle

    half = maze.scaling / 2
    for x, y in maze.of_kind("1"):
        ax.add_patch(Rectangle((x - half, y - half), maze.scaling, maze.scaling, color="0.6"))
    for x, y in maze.of_kind("r"):
        ax.plot(x, y, "o", color="k", markersize=7, markerfacecolor="none")
    for x, y in maze.of_kind("gc"):
        ax.plot(x, y, "*", color="gold", markersize=14, markeredgecolor="k")
    height, width = maze.shape
    ax.set_xlim(-width * half, width * half)
    ax.set_ylim(-height * half, height * half)
    ax.set_xticks([])
    ax.set_yticks([])


def save(figure, path: str, dpi: int = 100) -> None:
    """Write `figure` as PNG, SVG or PDF, chosen by the extension of `path`."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise UsageError(f"{path}: the plot file must end in {', '.join(FORMATS)}.")
    try:
        figure.savefig(path, dpi=dpi)
    except OSError as error:
        raise UsageError(f"Cannot write {path}: {error.strerror}.") from None
