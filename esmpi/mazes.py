"""The layout of a Gymnasium-Robotics maze given by its `maze_map` keyword, in the coordinates of
the agent's position (`--behaviour position`), for the behaviour plots and for counting the runs
that reached the goal.

A maze_map is a list of rows, each a list of cells: 1 a wall, 0 free, "r" a start cell, "g" a goal
cell, "c" either. Gymnasium-Robotics puts cell (row, col) of a map `height` rows by `width` columns
at x = (col + 0.5) s - width s / 2, y = height s / 2 - (row + 0.5) s, s being
`maze_size_scaling` (1 for PointMaze, 4 for AntMaze by default; `maze_v4.Maze.cell_rowcol_to_xy`).
Goals and starts are drawn within 0.25 s of their cell's centre, so a position inside the goal
cell's square is counted as having reached the goal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Maze:
    cells: tuple[tuple[str, ...], ...]  # "1" wall, "0" free, "r", "g", "c"
    scaling: float

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.cells), len(self.cells[0])

    def centre(self, row: int, col: int) -> tuple[float, float]:
        height, width = self.shape
        s = self.scaling
        return (col + 0.5) * s - width * s / 2, height * s / 2 - (row + 0.5) * s

    def of_kind(self, kinds: str) -> list[tuple[float, float]]:
        """Centres of the cells whose mark is one of `kinds`."""
        return [
            self.centre(row, col)
            for row, line in enumerate(self.cells)
            for col, cell in enumerate(line)
            if cell in kinds
        ]

    def in_goal(self, points: np.ndarray) -> np.ndarray:
        """Whether each (x, y) of `points` (N, 2) lies inside a goal cell ("g" or "c")."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        inside = np.zeros(len(points), dtype=bool)
        for x, y in self.of_kind("gc"):
            near = np.abs(points - [x, y]) <= self.scaling / 2
            inside |= near.all(axis=1)
        return inside


def from_config(env_id: str, env_kwargs: dict) -> Maze | None:
    """The maze a run trained in, when its --env-kwargs give a maze_map; else None."""
    layout = env_kwargs.get("maze_map")
    if not layout:
        return None
    default_scaling = 4.0 if env_id.startswith("AntMaze") else 1.0
    cells = tuple(tuple(str(cell) for cell in row) for row in layout)
    return Maze(cells, float(env_kwargs.get("maze_size_scaling", default_scaling)))
