"""Results suites: the TOML file, running it here (again: nothing to redo), the table and the
figure. The Slurm array is in test_slurm.py."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import checked, esmpi
from esmpi import checkpoint, suite
from esmpi.config import UsageError

pytestmark = pytest.mark.mpi

SUITE = """
folder = "{folder}"
threads = 2

[[runs]]
env = "CartPole-v1"
strategy = ["openai-es", "ars"]
seeds = [0, 1]
total_steps = 20000
options = {{ popsize = 16, noise_table_size = 2000000, final_episodes = 3 }}

[[runs]]
env = "Pendulum-v1"
seeds = [4]
total_steps = 5000
label = "short"
options = {{ popsize = 8, hidden = [8], max_steps = 100, noise_table_size = 2000000, \
obs_norm = false }}
"""


def write(tmp_path, text: str):
    path = tmp_path / "suite.toml"
    path.write_text(text.format(folder=tmp_path / "runs"))
    return path


def test_a_suite_lists_one_row_per_strategy_and_checks_each_rows_options(tmp_path):
    loaded = suite.load(str(write(tmp_path, SUITE)))
    assert [(r.env, r.strategy, r.seeds) for r in loaded.rows] == [
        ("CartPole-v1", "openai-es", (0, 1)),
        ("CartPole-v1", "ars", (0, 1)),
        ("Pendulum-v1", "openai-es", (4,)),
    ]
    assert loaded.rows[2].run_name(4) == "Pendulum-v1__openai-es__short__4"
    assert "--no-obs-norm" in loaded.rows[2].arguments("4")  # booleans as the command line has them
    hopper = SUITE + '[[runs]]\nenv = "Hopper-v5"\ntotal_steps = 1000\n'
    assert suite.load(str(write(tmp_path, hopper))).rows[3].strategy == "ars"  # its preset's
    assert len(list(loaded.runs())) == 5
    with pytest.raises(UsageError, match="--top-directions"):
        bad = SUITE.replace("final_episodes = 3", "top_directions = 2")
        suite.load(str(write(tmp_path, bad)))
    with pytest.raises(UsageError, match="needs env and total_steps"):
        suite.load(str(write(tmp_path, SUITE.replace("total_steps = 5000", "steps = 5000"))))


def test_a_suite_runs_here_once_and_its_table_reports_the_final_evaluations(tmp_path):
    path = write(tmp_path, SUITE)
    first = checked(esmpi("suite", "run", str(path)))
    assert "5 run(s) trained" in first.stdout
    assert "0 run(s) trained" in checked(esmpi("suite", "run", str(path))).stdout
    figure = tmp_path / "curves.png"
    table = checked(esmpi("suite", "table", str(path), "--figure", str(figure))).stdout
    lines = [
        line
        for line in table.splitlines()
        if line.startswith("| CartPole") or line.startswith("| Pendulum")
    ]
    assert len(lines) == 3
    finals = []
    (row,) = [row for row in suite.load(str(path)).rows if row.strategy == "ars"]
    for seed in row.seeds:
        with h5py.File(tmp_path / "runs" / row.run_name(seed) / "checkpoint.h5", "r") as h5:
            finals.append(float(h5["final"].attrs["theta_mean"]))
            assert h5["final"]["seeds"].shape == (3,)
            assert h5["history"][-1]["timesteps"] >= 20000
    ars = next(line for line in lines if "| ars |" in line)
    mean = np.mean(finals)
    assert f"| {mean:.1f} [{min(finals):.1f}, {max(finals):.1f}] |" in ars, ars
    assert "--strategy ars --seed $seed --total-steps 20000" in ars
    assert figure.stat().st_size > 10_000
    # The record keeps the runs: without their folders the table is the same, the figure is
    # drawn again, and `run` trains nothing.
    record = tmp_path / "suite.results.jsonl"
    assert len(record.read_text().splitlines()) == 5
    (tmp_path / "runs").rename(tmp_path / "moved")
    again = tmp_path / "again.png"
    assert checked(esmpi("suite", "table", str(path), "--figure", str(again))).stdout == table
    assert again.stat().st_size > 10_000
    rerun = checked(esmpi("suite", "run", str(path))).stdout
    assert "5 run(s) are in" in rerun and "0 run(s) trained" in rerun, rerun
    # The labelled row's options change: its run is no longer the row's, and the suite says so,
    # of the run folder and of the record's line.
    path.write_text(path.read_text().replace("popsize = 8,", "popsize = 10,"))
    stale = esmpi("suite", "table", str(path))
    assert stale.returncode == 2 and "popsize 8 (now 10)" in stale.stderr, stale.stderr
    assert "in the record" in stale.stderr and "delete its line" in stale.stderr
    (tmp_path / "moved").rename(tmp_path / "runs")
    stale = esmpi("suite", "run", str(path))
    assert stale.returncode == 2 and "runs/Pendulum-v1__openai-es__short__4 was" in stale.stderr


def test_the_record_keeps_a_thinned_curve_that_ends_at_the_runs_end():
    history = np.zeros(1000, checkpoint.HISTORY_DTYPE)
    history["generation"] = np.arange(1, 1001)
    history["timesteps"] = np.arange(1, 1001) * 12345
    history["eval_return"] = np.sin(np.arange(1000)) / 3
    curve = suite.thinned_curve(history)
    assert curve.size == suite.RECORD_POINTS
    assert curve["generation"][0] == 1 and curve["generation"][-1] == 1000
    assert np.all(np.diff(curve["generation"]) > 0)
    run = suite.RecordedRun("E__ars__x__0", "E", 'env = "E"\n', 2, 1 / 3, 10, 12345000, 6.0, curve)
    back = suite.RecordedRun.from_line(run.line())
    assert (back.final_eval, back.timesteps, back.config_toml) == (1 / 3, 12345000, 'env = "E"\n')
    assert back.history["timesteps"][-1] == 12345000.0
    np.testing.assert_allclose(back.history["eval_return"], curve["eval_return"], rtol=1e-6)
    assert suite.thinned_curve(history[:5]).size == 5  # a short run keeps every generation


def test_the_table_says_whether_each_row_meets_its_target_and_gives_every_seeds_final(tmp_path):
    text = SUITE.replace(
        'label = "short"', 'label = "short"\ntarget = -300\nreference = "paper: -130"'
    )
    text = text.replace("total_steps = 20000", "total_steps = 20000\ntarget = 475")
    loaded = suite.load(str(write(tmp_path, text)))
    assert [row.target for row in loaded.rows] == [475.0, 475.0, -300.0]
    curve = suite.thinned_curve(np.zeros(3, checkpoint.HISTORY_DTYPE))

    def run(row, seed, final, ranks):
        name = row.run_name(seed)
        return name, suite.RecordedRun(name, row.env, "", ranks, final, 10, 20480, 9.0, curve)

    es, ars, pendulum = loaded.rows
    record = dict([run(es, 0, 500.0, 2), run(es, 1, 440.0, 1), run(ars, 1, 480.0, 2)])
    record.update([run(pendulum, 4, -280.5, 2)])
    lines = suite.markdown_table(loaded, record).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]
    assert [c["final eval: mean [min, max]"] for c in cells] == [
        "470.0 [440.0, 500.0]",
        "480.0 [480.0, 480.0]",
        "-280.5 [-280.5, -280.5]",
    ]
    assert [c["per seed"] for c in cells] == [
        "0: 500.0, 1: 440.0",
        "1: 480.0 (0 missing)",
        "4: -280.5",
    ]
    # the mean over seeds is judged, not the best seed; a row with seeds missing is judged so far
    assert [c["target"] for c in cells] == ["475: missed", "475: met so far", "-300: met"]
    assert [c["reference"] for c in cells] == ["", "", "paper: -130"]
    assert [c["cores"] for c in cells] == ["1, 2", "2", "2"]
    with pytest.raises(UsageError, match="target is a number"):
        suite.load(str(write(tmp_path, text.replace("target = 475", 'target = "475"'))))


def test_suite_runs_of_different_rows_side_by_side_keep_each_others_record_lines(tmp_path):
    # One `suite run --envs` a core is how a 2-core machine records a suite's long rows; each
    # read the record when it started, and the one that wrote last used to drop the other's line.
    path = write(tmp_path, SUITE.replace('strategy = ["openai-es", "ars"]', 'strategy = "ars"'))
    with ThreadPoolExecutor(2) as pool:
        lanes = [
            pool.submit(esmpi, "suite", "run", str(path), "--threads", "1", "--envs", env)
            for env in ("CartPole-v1", "Pendulum-v1")
        ]
        for lane in lanes:
            checked(lane.result())
    loaded = suite.load(str(path))
    names = sorted(row.run_name(seed) for row, seed, _ in loaded.runs())
    assert len(names) == 3 and sorted(suite.read_record(loaded)) == names
    assert not list(tmp_path.glob("*.partial"))
    assert sorted(p.name for p in tmp_path.glob("suite.results.jsonl*")) == [
        "suite.results.jsonl",
        "suite.results.jsonl.lock",
    ]


def test_the_readmes_presets_table_is_the_presets_suites_table_of_its_record():
    # The README says its "Presets measured" table is `esmpi suite table`'s output, unedited:
    # a record line added or a row changed without the README following fails here.
    root = Path(__file__).parent.parent
    marker = "<!-- esmpi suite table jobs/suites/presets.toml -->\n"
    readme = (root / "README.md").read_text()
    assert marker in readme, "README lost the presets table's marker"
    shown = readme.split(marker, 1)[1].split("\n\n", 1)[0]
    presets = suite.load(str(root / "jobs" / "suites" / "presets.toml"))
    assert shown == suite.markdown_table(presets, suite.read_record(presets))
