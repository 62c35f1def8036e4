"""What rank 0 writes beside checkpoint.h5 for watching a run as it trains: `progress.csv` (one row
per generation, the history's columns) and TensorBoard event files (tensorboardX), both in the run
folder, so `tensorboard --logdir runs` shows every run by its folder name.

The checkpoint stays the record; these follow it. On resume the CSV is written again from the
checkpoint's history, and the new event file starts with TensorBoard's purge marker at the
checkpoint's step, so rows a stopped run wrote after its last checkpoint are dropped, not shown
twice. Both are flushed before each checkpoint is written, so what a checkpoint holds is on disk
in both. A run folder without event files (a run older than them) gets its history first.

TensorBoard's step is the environment step count (as papers and --total-steps count); one event
per generation holds all the scalars.
"""

from __future__ import annotations

import csv
import glob
import math
import os

import numpy as np

from esmpi.checkpoint import FAILED_COLUMNS, HISTORY_DTYPE

CSV_FILENAME = "progress.csv"
COLUMNS: tuple[str, ...] = HISTORY_DTYPE.names or ()
EVENTS_PATTERN = "events.out.tfevents.*"
# TensorBoard tag -> history column (or the sum of the failed columns)
SCALARS = {
    "return/eval": "eval_return",
    "return/population_mean": "return_mean",
    "return/population_max": "return_max",
    "return/population_min": "return_min",
    "return/population_std": "return_std",
    "search/sigma": "sigma",
    "search/lr": "lr",
    "search/members": "members",
    "speed/steps_per_s": "steps_per_s",
    "episodes/failed": FAILED_COLUMNS,
    "episodes/failed_reward": "failed_reward",
    "episodes/failed_observation": "failed_observation",
    "episodes/failed_raised": "failed_raised",
    "progress/generation": "generation",
    "progress/wall_s": "wall_s",
}


def scalars(row) -> dict[str, float]:
    """The TensorBoard scalars of one history row."""
    found = {}
    for tag, column in SCALARS.items():
        if isinstance(column, tuple):
            found[tag] = float(sum(row[name] for name in column))
        else:
            found[tag] = float(row[column])
    return found


class ProgressFiles:
    """progress.csv and the event file of one run folder, on rank 0."""

    def __init__(self, folder: str, history: list):
        from tensorboardX import FileWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self.folder = folder
        earlier_files = len(glob.glob(os.path.join(folder, EVENTS_PATTERN)))
        new_events = earlier_files == 0
        self.csv = open(os.path.join(folder, CSV_FILENAME), "w", newline="")  # noqa: SIM115
        self.rows = csv.writer(self.csv)
        self.rows.writerow(COLUMNS)
        # tensorboardX names the file by the second and the host alone, and opens it with "wb": a
        # resume started within the same second as the run it continues would erase that run's
        # events. The part number keeps the names apart and in the order TensorBoard reads them.
        self.events = FileWriter(
            folder, flush_secs=30, filename_suffix=f".part{earlier_files + 1:04d}"
        )
        if history and not new_events:
            # TensorBoard hides, from earlier files, every event at or after this step.
            purge = int(history[-1]["timesteps"]) + 1
            self.events.add_event(Event(step=purge, file_version="brain.Event:2"))
            self.events.add_event(
                Event(step=purge, session_log=SessionLog(status=SessionLog.START))
            )
        for row in history:
            self.rows.writerow(_csv_cells(row))
            if new_events:
                self._add_event(row)
        self.flush()

    def add(self, row) -> None:
        self.rows.writerow(_csv_cells(row))
        self._add_event(row)

    def _add_event(self, row) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=v) for tag, v in scalars(row).items()]
        self.events.add_summary(Summary(value=values), global_step=int(row["timesteps"]))

    def flush(self) -> None:
        self.csv.flush()
        self.events.flush()

    def close(self) -> None:
        self.csv.close()
        self.events.close()


def _csv_cells(row) -> list:
    cells: list[int | str] = []
    for name in COLUMNS:
        value = row[name]
        if isinstance(value, np.integer):
            cells.append(int(value))
        else:
            cells.append(repr(float(value)) if math.isfinite(value) else str(float(value)))
    return cells
