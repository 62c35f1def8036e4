"""progress.csv and the TensorBoard event files beside the checkpoint, read back with pandas and
TensorBoard's own reader, across resumptions."""

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import SMALL_TABLE, checked, esmpi

pytestmark = pytest.mark.mpi

CARTPOLE = ["--env", "CartPole-v1", "--popsize", "16", "--hidden", "8", *SMALL_TABLE]


def train(folder, generations: int, *extra: str):
    return checked(
        esmpi(
            *("train", *CARTPOLE, "--generations", str(generations), "--print-every", "4"),
            *("--folder", str(folder.parent), "--run-name", folder.name, *extra),
            ranks=2,
        )
    )


def history(folder) -> np.ndarray:
    with h5py.File(folder / "checkpoint.h5", "r") as h5:
        return h5["history"][...]


def scalars(folder, tag: str) -> list[tuple[int, float]]:
    """(step, value) of `tag` as TensorBoard shows it (its reader, purging orphaned events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def check_files_match_history(folder) -> None:
    rows = history(folder)
    table = pd.read_csv(folder / "progress.csv")
    assert list(table.columns) == list(rows.dtype.names)
    for name in rows.dtype.names:
        assert np.array_equal(table[name].to_numpy(), rows[name], equal_nan=True), name
    for tag, column in (("return/eval", "eval_return"), ("progress/generation", "generation")):
        shown = scalars(folder, tag)
        assert [step for step, _ in shown] == rows["timesteps"].tolist(), tag
        want = rows[column].astype(np.float32)
        assert np.array_equal(np.array([value for _, value in shown], np.float32), want), tag


def test_a_run_writes_progress_csv_and_tensorboard_events_matching_its_history(runs):
    folder = runs / "plain"
    train(folder, 6)
    assert len(history(folder)) == 6
    check_files_match_history(folder)
    for tag in ("search/sigma", "speed/steps_per_s", "episodes/failed"):
        assert len(scalars(folder, tag)) == 6, tag


def test_resumed_runs_show_every_generation_once(runs):
    """Generations 1-4, resumed to 8; then the generation-4 checkpoint put back (as if the run had
    died after writing generations 5-8 to the event file but before their checkpoint) and resumed
    to 10: TensorBoard and the CSV show generations 1-10, each once, with no gap."""
    folder = runs / "resumed"
    train(folder, 4)
    shutil.copy(folder / "checkpoint.h5", runs / "at4.h5")
    train(folder, 8, "--resume", str(folder))
    check_files_match_history(folder)
    shutil.copy(runs / "at4.h5", folder / "checkpoint.h5")
    train(folder, 10, "--resume", str(folder))
    assert len(list(folder.glob("events.out.tfevents.*"))) == 3
    assert history(folder)["generation"].tolist() == list(range(1, 11))
    check_files_match_history(folder)
    uninterrupted = runs / "whole"
    train(uninterrupted, 10)
    assert scalars(uninterrupted, "return/eval") == scalars(folder, "return/eval")


def test_a_run_from_before_the_event_files_gets_its_history_on_resume(runs):
    folder = runs / "older"
    train(folder, 4)
    for path in [*folder.glob("events.out.tfevents.*"), folder / "progress.csv"]:
        path.unlink()
    train(folder, 6, "--resume", str(folder))
    check_files_match_history(folder)
