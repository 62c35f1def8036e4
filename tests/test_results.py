"""Results tools on checkpoints of real short training runs: inspect, plot, eval (video, JSON),
export (and the README's numpy runner), the self-describing file, the progress line and summary."""

import csv
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import imageio.v2 as imageio
import numpy as np
import pandas as pd
import pytest

from conftest import SMALL_TABLE, checked, child_environment, esmpi
from esmpi import checkpoint, plotting, results
from esmpi.config import Config, UsageError, from_toml
from esmpi.evaluate import trained_policy
from esmpi.export import exported_arrays
from esmpi.policies import actor_for, spec_for_spaces
from esmpi.train import new_run, to_checkpoint

pytestmark = pytest.mark.slow

README = Path(__file__).parent.parent / "README.md"
SHORT = ["--generations", "4", "--popsize", "8", "--print-every", "2", *SMALL_TABLE]
# run name: (environment, seed, ranks, extra options); cp-lr differs from cp0/cp1 in --lr only
RUNS = {
    "cp0": ("CartPole-v1", 0, None, []),
    "cp1": ("CartPole-v1", 1, 2, []),
    "cp-lr": ("CartPole-v1", 0, None, ["--lr", "0.05"]),
    "pend": ("Pendulum-v1", 0, None, []),
}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Folder of the RUNS run folders, and each training command's stdout."""
    folder = tmp_path_factory.mktemp("results") / "runs"
    stdout = {}
    for name, (env_id, seed, ranks, extra) in RUNS.items():
        result = esmpi(
            "train",
            *("--env", env_id, "--seed", str(seed), "--folder", str(folder), "--run-name", name),
            *SHORT,
            *extra,
            ranks=ranks,
        )
        stdout[name] = checked(result).stdout
    return folder, stdout


def history_of(folder, name) -> np.ndarray:
    with h5py.File(folder / name / checkpoint.FILENAME) as h5:
        return h5["history"][...]


def root_and_best(folder, name) -> tuple[dict, dict]:
    with h5py.File(folder / name / checkpoint.FILENAME) as h5:
        return dict(h5.attrs), dict(h5["best"].attrs)


# inspect


def test_inspect_json_holds_the_numbers_of_the_files_best_last_eval_first(trained):
    folder, _ = trained
    runs = json.loads(checked(esmpi("inspect", str(folder), "--json")).stdout)
    assert sorted(run["run"] for run in runs) == sorted(RUNS)
    last_evals = [run["last_eval"] for run in runs]
    assert last_evals == sorted(last_evals, reverse=True)
    for run in runs:
        history = history_of(folder, run["run"])
        attrs, best = root_and_best(folder, run["run"])
        env_id, seed, ranks, _ = RUNS[run["run"]]
        assert (run["env_id"], run["seed"], run["n_ranks"]) == (env_id, seed, ranks or 1)
        assert run["generations"] == attrs["generation"] == 4 == len(history)
        assert run["timesteps"] == history["timesteps"][-1]
        assert run["wall_s"] == history["wall_s"][-1]
        assert run["steps_per_s"] == pytest.approx(history["timesteps"][-1] / run["wall_s"])
        assert run["last_eval"] == history["eval_return"][-1]
        assert run["last_return_mean"] == history["return_mean"][-1]
        assert run["best_eval"] == best["eval_return"] == history["eval_return"].max()
        assert run["best_generation"] == best["generation"]
        assert run["versions"] == json.loads(attrs["versions"])
        assert run["esmpi_version"] == attrs["esmpi_version"]


def test_inspect_table_is_one_line_per_run_in_the_json_order(trained):
    folder, _ = trained
    runs = json.loads(checked(esmpi("inspect", str(folder), "--json")).stdout)
    lines = checked(esmpi("inspect", str(folder))).stdout.splitlines()
    assert lines[0].split()[:5] == ["run", "env", "strategy", "policy", "seed"]
    for line, run in zip(lines[1:], runs, strict=False):
        cells = line.split()
        assert cells[0] == run["run"] and cells[1] == run["env_id"]
        assert cells[2] == run["strategy"] == "openai-es"
        assert cells[3] == run["policy"] == "mlp"
        assert f"{run['timesteps']:,}" in cells
        assert f"{run['last_eval']:.2f}" in cells
        assert f"{run['best_eval']:.2f}" in cells
    assert lines[len(runs) + 1].startswith("versions: ") and "numpy " in lines[len(runs) + 1]


def test_inspect_history_csv_and_text_are_the_history_dataset(trained):
    folder, _ = trained
    paths = [str(folder / "cp1"), str(folder / "pend" / checkpoint.FILENAME)]
    table = list(
        csv.DictReader(io.StringIO(checked(esmpi("inspect", *paths, "--csv", "--history")).stdout))
    )
    for name in ("cp1", "pend"):
        history = history_of(folder, name)
        rows = [row for row in table if row["run"] == name]
        assert len(rows) == len(history) == 4
        for row, stored in zip(rows, history, strict=True):
            for column in history.dtype.names:
                assert float(row[column]) == pytest.approx(float(stored[column]), rel=1e-12)
    text = checked(esmpi("inspect", str(folder / "cp0"), "--history")).stdout
    history = history_of(folder, "cp0")
    generation_lines = [line.split() for line in text.splitlines() if re.match(r"\s+\d+\s", line)]
    assert [int(cells[0]) for cells in generation_lines] == [1, 2, 3, 4]
    assert [int(cells[1]) for cells in generation_lines] == history["timesteps"].tolist()


def test_inspect_of_a_folder_without_checkpoints_is_one_sentence(tmp_path):
    result = esmpi("inspect", str(tmp_path))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"esmpi: error: {tmp_path} holds no checkpoint.h5 in it or its subfolders."
    )


# plot


def test_plot_draws_mean_lines_and_seed_bands_per_configuration(trained):
    folder, _ = trained
    figure = plotting.learning_curves(results.summarise_all([str(folder)]))
    panels = {ax.get_title(): ax for ax in figure.axes}
    assert set(panels) == {"CartPole-v1", "Pendulum-v1"}
    cartpole, pendulum = panels["CartPole-v1"], panels["Pendulum-v1"]
    # two configurations (lr 0.03 with 2 seeds, lr 0.05 with 1) x (evaluation, population mean);
    # a band only where there are seeds to spread
    assert len(cartpole.lines) == 4 and len(cartpole.collections) == 2
    assert len(pendulum.lines) == 2 and len(pendulum.collections) == 0
    two_seeds = [line for line in cartpole.lines if "(2 seeds)" in line.get_label()]
    evaluation = next(line for line in two_seeds if line.get_linestyle() == "-")
    expected = history_of(folder, "cp0")["eval_return"] + history_of(folder, "cp1")["eval_return"]
    assert np.allclose(evaluation.get_ydata(), expected / 2)
    assert np.array_equal(evaluation.get_xdata(), [1, 2, 3, 4])
    labels = [text.get_text() for text in cartpole.get_legend().get_texts()]
    assert any(label.startswith("lr=0.05 evaluation") for label in labels)
    assert cartpole.get_xlabel() == "generation" and cartpole.get_ylabel() == "episode return"
    band = cartpole.collections[0].get_paths()[0].vertices[:, 1]
    lowest = np.minimum(
        history_of(folder, "cp0")["eval_return"], history_of(folder, "cp1")["eval_return"]
    )
    assert np.isclose(band.min(), lowest.min())


def test_legends_name_a_configuration_by_its_strategy_where_that_tells_it_apart():
    """A panel comparing strategies names each by its strategy (their presets' options spelt
    out made legends wider than the panels); one strategy's configurations by the options that
    differ."""
    hopper_ars = ("Hopper-v5", (("lr", 0.01), ("sigma", 0.025), ("strategy", "ars")))
    hopper_oes = ("Hopper-v5", (("lr", 0.01), ("sigma", 0.02), ("strategy", "openai-es")))
    slow = ("CartPole-v1", (("lr", 0.03), ("strategy", "openai-es")))
    fast = ("CartPole-v1", (("lr", 0.05), ("strategy", "openai-es")))
    alone = ("Pendulum-v1", (("lr", 0.03), ("strategy", "pgpe")))
    keys = [hopper_ars, hopper_oes, slow, fast, alone]
    labels = [results.curve_label(key, keys) for key in keys]
    assert labels == ["ars", "openai-es", "lr=0.03", "lr=0.05", ""]


def test_plot_wraps_many_environments_into_rows_with_readable_step_ticks(trained):
    """A suite's figure has a panel per environment, four to a row (13 in one row were 1.5
    inches wide each), and step counts on the x axis as 250k, 1M, which do not run together."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    folder, _ = trained
    run = results.summarise(str(folder / "cp0"))
    history = run.history.copy()
    history["timesteps"] *= 3000  # a few hundred steps become a budget in the millions
    names = [f"Env{index}-v0" for index in range(6)]
    runs = [dataclasses.replace(run, env_id=name, history=history) for name in names]
    figure = plotting.learning_curves(runs, x="timesteps")
    FigureCanvasAgg(figure).draw()
    assert [ax.get_title() for ax in figure.axes] == names
    rows = [ax.get_subplotspec().rowspan.start for ax in figure.axes]
    assert rows == [0, 0, 0, 0, 1, 1]
    for ax in figure.axes:
        labels = [label.get_text() for label in ax.get_xticklabels() if label.get_text()]
        assert labels and all(len(label) <= 5 for label in labels), labels
        assert any(label[-1] in "kM" for label in labels), labels


@pytest.mark.parametrize(
    "name, magic", [("c.png", b"\x89PNG"), ("c.svg", b"<?xml"), ("c.pdf", b"%PDF")]
)
def test_plot_command_writes_the_format_of_the_extension(trained, tmp_path, name, magic):
    folder, _ = trained
    out = tmp_path / name
    checked(esmpi("plot", str(folder), "-o", str(out), "--x", "timesteps"))
    assert out.read_bytes().startswith(magic)


def test_plot_over_steps_interpolates_seeds_onto_their_common_range(trained):
    folder, _ = trained
    runs = [results.summarise(str(folder / name)) for name in ("cp0", "cp1")]
    grid, values = plotting.seed_curves(runs, "timesteps", "eval_return")
    assert grid[0] == max(run.history["timesteps"][0] for run in runs)
    assert grid[-1] == min(run.history["timesteps"][-1] for run in runs)
    for run, curve in zip(runs, values, strict=True):
        assert np.allclose(
            curve, np.interp(grid, run.history["timesteps"], run.history["eval_return"])
        )
    with pytest.raises(UsageError, match="must end in"):
        plotting.save(plotting.learning_curves(runs), "curves.jpg")


# eval


def _eval_json(*args):
    return json.loads(checked(esmpi("eval", *args, "--json")).stdout)


def test_eval_video_has_one_frame_per_reset_and_step_and_changes_no_return(trained, tmp_path):
    folder, _ = trained
    run = str(folder / "cp1")
    plain = _eval_json(run, "--episodes", "2", "--seed", "3")
    video = tmp_path / "episodes.mp4"
    recorded = _eval_json(run, "--episodes", "2", "--seed", "3", "--video", str(video))
    assert recorded["returns"] == plain["returns"] and recorded["lengths"] == plain["lengths"]
    expected = sum(plain["lengths"]) + 2  # the frame after each reset, then one per step
    assert recorded["video_frames"] == expected
    reader = imageio.get_reader(str(video))
    assert reader.count_frames() == expected
    assert reader.get_data(0).shape == (400, 600, 3)  # CartPole's frame, not resized
    gif = tmp_path / "episodes.gif"
    _eval_json(run, "--episodes", "1", "--video", str(gif))
    # Pillow merges identical consecutive frames, so a GIF may hold fewer
    assert 1 < len(imageio.mimread(str(gif))) <= recorded["lengths"][0] + 1


def test_eval_json_and_plain_output_agree_and_the_seed_picks_the_episodes(trained):
    folder, _ = trained
    record = _eval_json(str(folder / "pend"), "--episodes", "3", "--seed", "5")
    assert record["episodes"] == 3 and record["lengths"] == [200, 200, 200]
    assert record["mean"] == pytest.approx(np.mean(record["returns"]))
    plain = checked(esmpi("eval", str(folder / "pend"), "--episodes", "3", "--seed", "5")).stdout
    assert plain.startswith(f"esmpi: 3 episode(s): return mean {record['mean']:.2f} ")
    other = _eval_json(str(folder / "pend"), "--episodes", "3", "--seed", "6")
    assert other["returns"] != record["returns"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY is how Linux finds X")
def test_render_without_a_display_is_one_sentence(trained):
    folder, _ = trained
    env = {k: v for k, v in child_environment().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run(
        [sys.executable, "-m", "esmpi", "eval", str(folder / "cp0"), "--render"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--render needs a display" in result.stderr and "xvfb-run" in result.stderr
    assert "Traceback" not in result.stderr


# export and the README's runner


def readme_runner(name: str = "load_policy"):
    """`name` from README's `esmpi export` code blocks (load_policy, or StatefulPolicy, which uses
    the first block's functions), run as the README shows them."""
    text = README.read_text()
    first = re.search(r"```python\n(import numpy as np\n.*?\ndef load_policy\(.*?)```", text, re.S)
    second = re.search(r"```python\n(class StatefulPolicy:.*?)```", text, re.S)
    assert first and second, "README lost its numpy runner"
    body = [line for line in first.group(1).splitlines() if line.strip()]
    assert len(body) <= 45, "the README's runner should stay short"
    namespace = {}
    exec(first.group(1), namespace)
    exec(second.group(1), namespace)
    return namespace[name]


def esmpi_actions(path, observations, best=False):
    state = checkpoint.load(str(path))
    config = from_toml(state.config_toml)
    theta, obs_mean, obs_std = trained_policy(state, config, best)
    actor = actor_for(state.policy, config.obs_clip)
    actor.set_normalisation(obs_mean, obs_std)
    return [actor.act(obs, theta) for obs in observations]


def random_observations(path, count=100, seed=0):
    """Raw observations spread over three standard deviations of the run's statistics, so that
    some are clipped."""
    state = checkpoint.load(str(path))
    std = np.maximum(np.sqrt(state.obs_var), 1e-2)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((count, state.obs_mean.size))
    return (state.obs_mean + 3 * std * noise).astype(np.float32)


@pytest.mark.parametrize("name, best", [("cp0", False), ("pend", False), ("pend", True)])
def test_exported_policy_acts_like_esmpi_on_100_observations(trained, tmp_path, name, best):
    folder, _ = trained
    out = tmp_path / "policy.npz"
    checked(esmpi("export", str(folder / name), "-o", str(out), *(["--best"] if best else [])))
    act = readme_runner()(out)
    observations = random_observations(folder / name)
    ours = esmpi_actions(folder / name, observations, best)
    theirs = [act(obs) for obs in observations]
    if name == "cp0":
        assert theirs == ours and set(ours) == {0, 1}
    else:
        assert np.allclose(np.array(theirs), np.array(ours), rtol=0, atol=1e-5)
        assert theirs[0].shape == (1,)
        assert len({float(a[0]) for a in ours}) > 50  # varied actions, not one clipped value


CNN = dict(policy="cnn", obs_norm=False, scale_obs=True)
# case: (observation, action, Config options); observations: 'box' Box(-10, 10, (3, 2)), 'onehot'
# Discrete(5), 'frames' two stacked 41x43 colour frames, 'carracing' the CarRacing preset's
# 96x96 grayscale frames (uint8 pixels)
SPACES = {
    "discrete-start relu bias": ("box", ("discrete", 3, -1), dict(activation="relu", bias=True)),
    "tanh-mapped 2-d box": ("box", ("box", (2,)), dict(action_map="tanh", bias=True)),
    "per-dimension maps": ("box", ("box", (3,)), dict(action_map="tanh,sigmoid,sigmoid")),
    "sigmoid-mapped 2x2 box": ("box", ("box", (2, 2)), dict(action_map="sigmoid", bias=True)),
    "one-hot observations": ("onehot", ("discrete", 4, 0), dict(bias=False)),
    "unnormalised 2x2 box": ("box", ("box", (2, 2)), dict(obs_norm=False, hidden=[6])),
    "cnn stacked colour frames": ("frames", ("discrete", 6, 0), dict(**CNN, bias=True)),
    "cnn relu clip": ("frames", ("box", (2,)), dict(**CNN, activation="relu", bias=True)),
    "cnn carracing": ("carracing", ("box", (3,)), dict(**CNN, action_map="tanh,sigmoid,sigmoid")),
}
OBSERVATION_SHAPES = {"box": (3, 2), "frames": (2, 41, 43, 3), "carracing": (96, 96)}


def _spaces(observation, action):
    from gymnasium import spaces

    if observation == "onehot":
        obs_space = spaces.Discrete(5)
    elif observation == "box":
        obs_space = spaces.Box(-10, 10, OBSERVATION_SHAPES[observation])
    else:
        obs_space = spaces.Box(0, 255, OBSERVATION_SHAPES[observation], dtype=np.uint8)
    if action[0] == "discrete":
        return obs_space, spaces.Discrete(action[1], start=action[2])
    high = np.linspace(0.5, 3.0, int(np.prod(action[1]))).reshape(action[1])
    return obs_space, spaces.Box(-2.0, high.astype(np.float32), dtype=np.float32)


def _observations(observation, rng, count=100):
    if observation == "onehot":
        return list(rng.integers(0, 5, size=count))
    if observation == "box":
        return list(rng.uniform(-8, 8, (count, 3, 2)).astype(np.float32))
    return list(rng.integers(0, 256, (count, *OBSERVATION_SHAPES[observation]), dtype=np.uint8))


@pytest.mark.parametrize("case", SPACES)
def test_the_runner_covers_every_policy_layout(tmp_path, case):
    """Layouts the short runs do not reach, in checkpoints with random parameters and statistics.

    esmpi computes in float32, the runner in float64. MLP actions agree to 1e-5. A CNN's values
    are float32 sums of hundreds of products (150 per value of the second convolution, 968 in the
    CarRacing network's first dense layer), so its actions are compared to 1e-4: the largest
    difference measured was 2e-5, with weights 4 times these.
    """
    observation, action, options = SPACES[case]
    config = Config(hidden=options.pop("hidden", [7, 5]), **options)
    obs_space, action_space = _spaces(observation, action)
    spec = spec_for_spaces(obs_space, action_space, config)
    state = to_checkpoint(new_run(config, spec), 1)
    rng = np.random.default_rng(1)
    # A CNN's units add up hundreds of inputs: smaller weights, or nearly every action is clipped.
    weight_scale = 0.25 if spec.kind == "cnn" else 1.0
    state.theta = (rng.standard_normal(spec.n_params) * weight_scale).astype(np.float32)
    n_in = spec.sizes[0]
    state.obs_mean, state.obs_var = rng.standard_normal(n_in), rng.uniform(0.0, 4.0, n_in)
    path = tmp_path / checkpoint.FILENAME
    checkpoint.save(str(path), state)
    np.savez(tmp_path / "policy.npz", **exported_arrays(str(path)))
    act = readme_runner()(tmp_path / "policy.npz")
    observations = _observations(observation, rng)
    ours, theirs = esmpi_actions(path, observations), [act(obs) for obs in observations]
    if action[0] == "discrete":
        assert theirs == ours and min(ours) >= action[2] and len(set(ours)) > 1
    else:
        tolerance = 1e-4 if spec.kind == "cnn" else 1e-5
        np.testing.assert_allclose(np.array(theirs), np.array(ours), rtol=0, atol=tolerance)
        assert theirs[0].shape == action[1]
        spread = np.ptp(np.array(ours).reshape(len(ours), -1), axis=0)
        assert spread.min() > 0.1  # each dimension's actions vary: not all one clipped value


def test_export_refuses_other_extensions(trained, tmp_path):
    folder, _ = trained
    result = esmpi("export", str(folder / "cp0"), "-o", str(tmp_path / "policy.pkl"))
    assert result.returncode == 2 and "must end in .npz" in result.stderr


# the file explains itself


def test_every_dataset_and_column_says_what_it_is_and_pandas_reads_the_history(trained):
    folder, _ = trained
    with h5py.File(folder / "pend" / checkpoint.FILENAME) as h5:
        assert h5.attrs["description"] and h5.attrs["format_version"] == checkpoint.FORMAT_VERSION
        datasets, groups = [], []
        h5.visititems(
            lambda name, item: (datasets if isinstance(item, h5py.Dataset) else groups).append(item)
        )
        # /strategy: lr, sigma, optimizer/*; /final: seeds, returns, lengths
        assert len(datasets) == 16 and len(groups) == 6
        for item in datasets + groups:
            assert item.attrs.get("description"), item.name
        for dataset in datasets:
            assert "unit" in dataset.attrs, dataset.name
        for name, _, unit, meaning in checkpoint.HISTORY_COLUMNS:
            assert h5["history"].attrs[f"{name}.unit"] == unit
            assert h5["history"].attrs[f"{name}.description"] == meaning
        history = pd.DataFrame(h5["history"][...])
    assert list(history.columns) == [name for name, *_ in checkpoint.HISTORY_COLUMNS]
    assert history["generation"].tolist() == [1, 2, 3, 4]


def test_a_file_without_format_version_is_refused_with_one_sentence(trained, tmp_path):
    folder, _ = trained
    copy = tmp_path / checkpoint.FILENAME
    copy.write_bytes((folder / "cp0" / checkpoint.FILENAME).read_bytes())
    with h5py.File(copy, "a") as h5:
        del h5.attrs["format_version"]
    result = esmpi("inspect", str(copy))
    assert result.returncode == 2
    assert "has no valid checkpoint format_version" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# the console


def test_progress_lines_and_summary_show_the_files_numbers(trained):
    folder, stdout = trained
    history = history_of(folder, "cp0")
    _, best = root_and_best(folder, "cp0")
    lines = stdout["cp0"].splitlines()
    progress = [line for line in lines if line.startswith("gen ")]
    assert [line.split()[1] for line in progress] == ["2/4", "4/4"]
    last = progress[-1]
    assert f"eval {history['eval_return'][-1]:>9.2f}" in last
    assert f"best {best['eval_return']:>9.2f}" in last
    assert f"{history['timesteps'][-1]:,} steps" in last
    assert "100% |" in last and "0.0 s left" in last
    summary = lines[lines.index(next(line for line in lines if line.startswith("esmpi: done"))) :]
    assert summary[0].startswith(
        f"esmpi: done, CartPole-v1 seed 0: 4 generations, {history['timesteps'][-1]:,} steps in "
    )
    assert (
        f"last {history['eval_return'][-1]:.2f}, best {best['eval_return']:.2f} at generation "
        f"{best['generation']}" in summary[1]
    )
    with h5py.File(folder / "cp0" / checkpoint.FILENAME) as h5:
        final_mean = h5["final"].attrs["theta_mean"]
    assert summary[2].startswith(f"  final eval   theta {final_mean:.2f} (std ")
    assert summary[3].split() == ["checkpoint", str(folder / "cp0" / checkpoint.FILENAME)]
    assert f"esmpi inspect {folder / 'cp0'}" in summary[4]


@pytest.mark.parametrize(
    "seconds, shown",
    [
        (4.26, "4.3 s"),
        (59.96, "1 min 00 s"),
        (185, "3 min 05 s"),
        (7620, "2 h 07 min"),
        (np.array(185.0), "3 min 05 s"),  # a field of a history row is a 0-d array
    ],
)
def test_durations_read_at_a_glance(seconds, shown):
    assert results.duration(seconds) == shown


def test_find_checkpoints_takes_files_run_folders_and_folders_of_runs(trained):
    folder, _ = trained
    every = results.find_checkpoints([str(folder)])
    assert [Path(path).parent.name for path in every] == sorted(RUNS)
    one = str(folder / "cp0" / checkpoint.FILENAME)
    assert results.find_checkpoints([str(folder / "cp0"), one]) == [one]
    with pytest.raises(UsageError, match="There is no checkpoint file or run folder"):
        results.find_checkpoints([os.path.join(str(folder), "missing")])
