"""Learning curves of `esmpi plot`: one panel per environment, one colour per configuration, the
mean over seeds as a line and the range over seeds (min to max) as a band; the evaluation return
(unperturbed policy) solid, the population mean dashed.

Figures are built with matplotlib's object interface on the Agg canvas, never pyplot, so plotting
needs no display and leaves matplotlib's global backend alone.
"""

from __future__ import annotations

import os

import numpy as np

from esmpi.config import UsageError
from esmpi.results import RunSummary, configuration_groups, group_label

# --x choice: (history column, axis label)
X_AXES = {
    "generation": ("generation", "generation"),
    "timesteps": ("timesteps", "environment steps (all ranks)"),
    "wall": ("wall_s", "wall-clock time (s)"),
}
# history column, line style, legend wording
CURVES = (("eval_return", "-", "evaluation"), ("return_mean", "--", "population mean"))
FORMATS = (".png", ".svg", ".pdf")


def seed_curves(runs: list[RunSummary], x_column: str, y_column: str):
    """(x, y of shape (seeds, points)) on a grid that every seed covers, by linear interpolation.

    Generations line up exactly (the grid is 1, 2, ...); steps and seconds differ from seed to
    seed, so each seed is interpolated onto points spaced evenly over the common range."""
    xs = [run.history[x_column].astype(float) for run in runs]
    low, high = max(x[0] for x in xs), min(x[-1] for x in xs)
    points = max(len(x) for x in xs) if len(runs) > 1 else len(xs[0])
    grid = np.linspace(low, high, points) if len(runs) > 1 else xs[0]
    values = [np.interp(grid, x, run.history[y_column]) for x, run in zip(xs, runs, strict=True)]
    return grid, np.array(values)


def learning_curves(summaries: list[RunSummary], x: str = "generation"):
    """A matplotlib Figure of the runs' learning curves (see the module docstring)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if x not in X_AXES:
        raise UsageError(f"--x must be one of {', '.join(X_AXES)}; got {x!r}.")
    x_column, x_label = X_AXES[x]
    groups = configuration_groups(summaries)
    environments = list(dict.fromkeys(env_id for env_id, _ in groups))
    figure = Figure(figsize=(6.4 * min(len(environments), 3), 4.2), layout="constrained")
    axes = figure.subplots(1, len(environments), squeeze=False)[0]
    for env_id, ax in zip(environments, axes, strict=True):
        keys = [key for key in groups if key[0] == env_id]
        for colour, key in enumerate(keys):
            _draw_group(ax, groups[key], group_label(key, list(groups)), f"C{colour}", x_column)
        ax.set_title(env_id)
        ax.set_xlabel(x_label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=x == "generation"))
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    figure.suptitle(
        "episode return: mean over seeds, band from the lowest to the highest seed",
        fontsize="medium",
    )
    return figure


def _draw_group(ax, runs: list[RunSummary], label: str, colour: str, x_column: str) -> None:
    seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
    for y_column, style, wording in CURVES:
        grid, values = seed_curves(runs, x_column, y_column)
        name = f"{label} {wording}".strip()
        ax.plot(grid, values.mean(axis=0), style, color=colour, label=f"{name} ({seeds})")
        if len(runs) > 1:
            ax.fill_between(grid, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.15)


def save(figure, path: str, dpi: int = 100) -> None:
    """Write `figure` as PNG, SVG or PDF, chosen by the extension of `path`."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise UsageError(f"{path}: the plot file must end in {', '.join(FORMATS)}.")
    try:
        figure.savefig(path, dpi=dpi)
    except OSError as error:
        raise UsageError(f"Cannot write {path}: {error.strerror}.") from None
