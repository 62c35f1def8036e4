"""The real command line: smoke runs on real environments, evaluation, and every bad input."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import SMALL_TABLE, checked, child_environment, esmpi

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "env_id, extra",
    [
        ("CartPole-v1", ()),
        ("Pendulum-v1", ()),
        ("LunarLander-v3", ()),
        ("HalfCheetah-v5", ()),
        # its preset's ARS keeps the best 10 of 30 directions; 8 members have 4
        ("AntBulletEnv-v0", ("--top-directions", "4")),
    ],
)
def test_two_generation_smoke_run(runs, env_id, extra, tmp_path):
    result = checked(
        esmpi(
            "train",
            "--env",
            env_id,
            *extra,
            "--generations",
            "2",
            "--popsize",
            "8",
            "--print-every",
            "1",
            "--folder",
            str(runs),
            *SMALL_TABLE,
            *("--final-episodes", "2"),
            ranks=2,
            cwd=tmp_path,
        )
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"esmpi: starting {env_id} seed 0 on 2 rank(s)")
    assert [line.split()[1] for line in lines if line.startswith("gen ")] == ["1/2", "2/2"]
    (run_dir,) = runs.iterdir()
    assert run_dir.name.startswith(env_id.replace("/", "-") + "__0__")
    with h5py.File(run_dir / "checkpoint.h5") as h5:
        assert h5.attrs["generation"] == 2 and h5.attrs["env_id"] == env_id
        history = h5["history"][...]
        assert history["generation"].tolist() == [1, 2]
        assert (np.diff(history["timesteps"]) > 0).all() and history["episodes"][-1] == 2 * 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no MUJOCO_LOG.TXT and such
    assert "pybullet build time" not in result.stderr + result.stdout


def test_user_class_with_kwargs_and_max_steps(runs):
    result = checked(
        esmpi(
            "train",
            "--env",
            "toyenvs:ToyTarget",
            "--env-kwargs",
            '{"target": 0.5}',
            "--max-steps",
            "25",
            "--generations",
            "2",
            "--popsize",
            "4",
            "--folder",
            str(runs),
            *SMALL_TABLE,
            ranks=2,
        )
    )
    assert "esmpi: done" in result.stdout
    (run_dir,) = runs.iterdir()
    with h5py.File(run_dir / "checkpoint.h5") as h5:
        assert h5["history"]["timesteps"][0] == 25 * 5  # 2 pairs of 2 episodes + 1 evaluation


def test_toml_config_with_command_line_override(runs, tmp_path):
    config = tmp_path / "cartpole.toml"
    config.write_text(
        f'env = "CartPole-v1"\npopsize = 6\ngenerations = 1\nfolder = "{runs}"\n'
        'run_name = "from-toml"\nhidden = [8]\nnoise_table_size = 2000000\n'
    )
    checked(esmpi("train", "--config", str(config), "--popsize", "4", ranks=2))
    with h5py.File(runs / "from-toml" / "checkpoint.h5") as h5:
        stored = h5.attrs["config"]
        assert "popsize = 4" in stored and "hidden = [\n    8,\n]" in stored
        assert h5["policy"].attrs["sizes"].tolist() == [4, 8, 2]


def test_eval_prints_mean_and_std_with_both_spellings(runs):
    checked(
        esmpi(
            "train",
            "--env",
            "CartPole-v1",
            "--generations",
            "1",
            "--popsize",
            "4",
            "--folder",
            str(runs),
            "--run-name",
            "e",
            *SMALL_TABLE,
        )
    )
    for args in (
        ["eval", str(runs / "e"), "--episodes", "3"],
        [
            "eval",
            "--environment",
            "CartPole-v1",
            "--path_weights",
            str(runs / "e" / "checkpoint.h5"),
            "--episodes",
            "3",
        ],
    ):
        result = checked(esmpi(*args))
        assert result.stdout.startswith("esmpi: 3 episode(s): return mean ")
        assert " std " in result.stdout


def test_make_train_reaches_475_on_cartpole(tmp_path):
    """`make train` with its defaults (CartPole-v1, 2 ranks) solves CartPole."""
    repo = Path(__file__).parent.parent
    result = subprocess.run(
        ["make", "-C", str(repo), "train", f"ARGS=--folder {tmp_path} --run-name make"],
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with h5py.File(tmp_path / "make" / "checkpoint.h5") as h5:
        assert h5["history"]["eval_return"][-1] >= 475
    evaluation = checked(esmpi("eval", str(tmp_path / "make"), "--episodes", "10"))
    assert float(evaluation.stdout.split("return mean ")[1].split()[0]) >= 475


BAD_INPUTS = [
    (["--env", "CartPol-v1"], "Unknown environment id 'CartPol-v1'. Did you mean CartPole-v1"),
    (["--env", "toyenvs:ToyMissing-v0"], "needs a package that is missing"),
    (["--env", "nosuchmodule:Env"], "Cannot import nosuchmodule"),
    (["--popsize", "1"], "--popsize must be an even number of at least 2"),
    (["--popsize", "7"], "--popsize must be an even number of at least 2"),
    (["--sigma", "0"], "--sigma must be positive"),
    (["--lr", "-0.1"], "--lr must be positive"),
    (["--folder", "/etc/hostname/runs"], "Cannot create the run folder /etc/hostname/runs"),
    (["--env", "toyenvs:DictObservations", "--max-steps", "5"], "Observation space Dict"),
    (["--env", "toyenvs:ToyTarget"], "has no time limit; give --max-steps"),
    (["--resume", "/nonexistent/run"], "There is no checkpoint at /nonexistent/run"),
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[m[:30] for _, m in BAD_INPUTS])
def test_bad_input_is_one_sentence_on_rank_0_and_a_clean_exit(runs, args, message):
    result = esmpi("train", "--folder", str(runs), *SMALL_TABLE, *args, ranks=2, timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stderr.count("esmpi: error:") == 1
    assert "Traceback" not in result.stderr


def test_existing_run_folder_needs_resume(runs):
    args = [
        "train",
        "--generations",
        "1",
        "--popsize",
        "4",
        "--folder",
        str(runs),
        "--run-name",
        "twice",
        *SMALL_TABLE,
    ]
    checked(esmpi(*args, ranks=2))
    result = esmpi(*args, ranks=2)
    assert result.returncode == 2
    assert (
        f"Run folder {runs / 'twice'} already exists; continue it with `--resume" in result.stderr
    )


@pytest.mark.parametrize("kind", ["foreign", "truncated"])
def test_unreadable_or_foreign_checkpoint(tmp_path, kind):
    path = tmp_path / "checkpoint.h5"
    if kind == "foreign":
        with h5py.File(path, "w") as h5:
            h5["x"] = 1
    else:
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    expected = "not an esmpi checkpoint" if kind == "foreign" else "not a readable HDF5 file"
    for args, ranks in ((["train", "--resume", str(path)], 2), (["eval", str(path)], None)):
        result = esmpi(*args, ranks=ranks)
        assert result.returncode == 2 and expected in result.stderr
        assert result.stderr.count("esmpi: error:") == 1


def test_version_and_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "esmpi", "--version"],
        capture_output=True,
        text=True,
        env=child_environment(),
    )
    assert result.stdout.startswith("esmpi ")


def test_total_steps_ends_the_run_at_its_step_budget_and_a_resume_may_raise_it(runs):
    """Pendulum's episodes last 200 steps: 5 episodes (2 pairs and the evaluation) a
    generation, so a budget of 2,500 steps ends after generation 3 (3,000 steps)."""
    common = ["--env", "Pendulum-v1", "--popsize", "4", "--hidden", "8", *SMALL_TABLE]
    args = ["train", *common, "--generations", "100", "--folder", str(runs), "--run-name", "b"]
    result = checked(esmpi(*args, "--total-steps", "2500", ranks=2))
    assert "3 generations, 3,000 steps" in result.stdout
    resumed = checked(esmpi("train", "--resume", str(runs / "b"), "--total-steps", "4000", ranks=2))
    assert "4 generations, 4,000 steps" in resumed.stdout
    with h5py.File(runs / "b" / "checkpoint.h5") as h5:
        assert h5["history"]["timesteps"].tolist() == [1000, 2000, 3000, 4000]


def test_a_step_budget_alone_sets_no_generation_limit(runs):
    """`--total-steps` without `--generations` runs until the budget (past the default 100
    generations), and the progress line shows no generation total."""
    from esmpi import presets

    config, _ = presets.resolve({"env": "CartPole-v1", "total_steps": 1000})
    assert config.generations == 0
    config, _ = presets.resolve({"env": "CartPole-v1", "total_steps": 1000, "generations": 5})
    assert config.generations == 5
    common = ["--env", "Pendulum-v1", "--popsize", "2", "--hidden", "4", "--max-steps", "10"]
    args = [*common, *SMALL_TABLE, "--folder", str(runs), "--run-name", "budget"]
    result = checked(esmpi("train", *args, "--total-steps", "3300", "--print-every", "50"))
    assert "110 generations, 3,300 steps" in result.stdout  # 3 episodes of 10 steps each
    assert "gen    50  45%" in result.stdout, result.stdout
    refused = esmpi("train", *args, "--generations", "0")
    assert refused.returncode == 2 and "0 with a --total-steps budget" in refused.stderr
