"""Behaviour characterisations (--behaviour): what each built-in reads, a user function, the
sentences for names that cannot work, and on real MPI ranks the checkpoint's /behaviour,
identical on 1 and 3 ranks and across a resume, NaN for failed episodes."""

import json

import h5py
import numpy as np
import pytest

from conftest import SMALL_TABLE, TESTS, checked, esmpi
from esmpi import behaviour, envs, mazes, suite
from esmpi.config import Config, UsageError
from esmpi.policies import actor_for, initial_theta, spec_for_spaces
from esmpi.rollout import run_episode


def episode(config: Config, seed: int = 4, steps: int = 40):
    """One episode of the initial policy, perturbed so that it moves; the env as it ended."""
    made, stepped, _ = envs.make_for_rollouts(config)
    envs.first_reset(made, 0)
    spec = spec_for_spaces(stepped.observation_space, stepped.action_space, config)
    theta = initial_theta(spec, 0) + np.float32(0.3)
    run_episode(stepped, actor_for(spec), theta, seed, steps)
    return stepped


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Ant-v5"])
def test_position_is_where_the_last_step_left_the_main_body(env_id):
    """MuJoCo's torso (x, y) after the last step, as Gymnasium's info reports it (x_position,
    and y_position where the robot moves in the plane)."""
    stepped = episode(Config(env=env_id, behaviour="info:x_position"))
    position = behaviour.final_position(stepped)
    info = stepped.last_info
    assert position[0] == pytest.approx(info["x_position"], abs=1e-12) and position[0] != 0
    assert position[1] == pytest.approx(info.get("y_position", 0.0), abs=1e-12)
    assert behaviour.describer("info:x_position")(stepped).tolist() == [info["x_position"]]


def test_position_reads_the_pybullet_robots_body():
    stepped = episode(Config(env="HopperBulletEnv-v0"))
    body = stepped.unwrapped.robot.body_xyz
    assert behaviour.final_position(stepped).tolist() == [body[0], body[1]]


def test_a_user_function_gets_the_env_and_its_last_info():
    config = Config(env="Pendulum-v1", behaviour="toyenvs:pendulum_state")
    stepped = episode(config)
    read = behaviour.describer(config.behaviour)(stepped)
    assert read.tolist() == stepped.unwrapped.state.tolist() and read.dtype == np.float64


@pytest.mark.parametrize(
    "env_id, name, message",
    [
        ("Pendulum-v1", "position", "needs a MuJoCo or PyBullet environment"),
        ("HalfCheetah-v5", "info:no_such_key", "has no key 'no_such_key'"),
        ("Pendulum-v1", "no_such_module:f", "Cannot load --behaviour no_such_module:f"),
        ("Pendulum-v1", "positions", "takes 'position', 'info:KEY' or 'module:function'"),
    ],
)
def test_a_behaviour_that_cannot_be_read_is_one_sentence_before_any_episode(env_id, name, message):
    with pytest.raises(UsageError, match=message):
        environment = envs.RankEnvironment(Config(env=env_id, behaviour=name))
        environment.first_reset()


PENDULUM = ["--env", "Pendulum-v1", "--popsize", "8", "--hidden", "8", "--max-steps", "60"]
PENDULUM += [*SMALL_TABLE, "--seed", "2", "--final-episodes", "0", "--eval-episodes", "2"]


def stored(path):
    with h5py.File(path / "checkpoint.h5", "r") as h5:
        group = h5["behaviour"]
        return (
            str(group.attrs["name"]),
            group["members"][...],
            group["evaluations"][...],
            h5["history"]["members"],
        )


@pytest.mark.mpi
def test_every_episodes_behaviour_is_kept_the_same_on_any_ranks_and_across_a_resume(runs):
    """The pendulum's final state per member and evaluation episode, in the checkpoint; 1 rank,
    and 3 ranks for 2 generations resumed to 4, store the same bits, with a growing population
    (its later rounds' members included)."""
    extra = ("--behaviour", "toyenvs:pendulum_state", "--population-steps", "600")

    def train(name, generations, *more, ranks):
        checked(
            esmpi(
                *("train", *PENDULUM, *extra, "--generations", generations),
                *("--folder", str(runs), "--run-name", name, "--print-every", "1", *more),
                ranks=ranks,
            )
        )

    train("one", "4", ranks=1)
    train("three", "2", ranks=3)
    train("three", "4", "--resume", str(runs / "three"), ranks=3)
    name, members, evaluations, counts = stored(runs / "one")
    assert name == "toyenvs:pendulum_state" and counts.tolist() == [16] * 4  # 8 x 60 < 600
    assert members.shape == (64, 2) and evaluations.shape == (8, 2)
    assert np.isfinite(members).all() and len(np.unique(members[:, 0])) > 32
    for got, want in zip(stored(runs / "three")[1:3], (members, evaluations), strict=True):
        assert np.array_equal(got, want)


@pytest.mark.mpi
def test_a_failed_episode_has_no_behaviour(runs):
    """Pendulums that return an inf observation in 1 episode in 10 (faultyenvs): their members'
    rows are NaN, one for each failed episode the history counts."""
    checked(
        esmpi(
            *("train", *PENDULUM, "--env", "faultyenvs:InfObservationPendulum"),
            *("--behaviour", "toyenvs:pendulum_state", "--max-failed-share", "1"),
            *("--generations", "4", "--folder", str(runs), "--run-name", "faulty"),
            ranks=2,
        )
    )
    _, members, evaluations, _ = stored(runs / "faulty")
    with h5py.File(runs / "faulty" / "checkpoint.h5", "r") as h5:
        failed = int(h5["history"]["failed_observation"].sum())
    nan_rows = np.isnan(members).all(axis=1).sum() + np.isnan(evaluations).all(axis=1).sum()
    assert failed > 0 and nan_rows == failed
    assert np.isfinite(members[~np.isnan(members).all(axis=1)]).all()


# Gymnasium-Robotics' U-maze made deceptive: the start ('r') above the goal ('g'), a wall between
# them, so that the dense reward (exp(-distance)) leads into the wall (esmpi[robotics]).
# The deceptive maze of the results suite jobs/suites/maze.toml (one definition for both).
MAZE_KWARGS = (
    suite.load(str(TESTS.parent / "jobs" / "suites" / "maze.toml")).rows[0].options["env_kwargs"]
)
DECEPTIVE_MAZE = json.dumps(MAZE_KWARGS)


def test_position_in_a_maze_is_the_agents_final_xy():
    """The ball's (x, y), which the maze's flattened observation also holds (achieved_goal,
    its first two entries)."""
    config = Config(env="PointMaze_UMaze-v3", env_kwargs=MAZE_KWARGS, flatten_obs=True)
    made, stepped, horizon = envs.make_for_rollouts(config)
    assert horizon == 500 and stepped.observation_space.shape == (8,)
    envs.first_reset(made, 0)
    spec = spec_for_spaces(stepped.observation_space, stepped.action_space, config)
    actor = actor_for(spec)
    theta = initial_theta(spec, 0) + np.float32(0.5)
    obs, _ = stepped.reset(seed=3)
    start = obs[:2].copy()
    for _ in range(30):
        obs, *_ = stepped.step(actor.act(obs, theta))
    assert np.array_equal(behaviour.final_position(stepped), obs[:2].astype(np.float64))
    assert np.abs(start - [-2.0, 1.0]).max() <= 0.25  # the 'r' cell, with the maze's jitter


def test_the_maze_layout_puts_cells_where_gymnasium_robotics_does():
    config = Config(env="PointMaze_UMaze-v3", env_kwargs=MAZE_KWARGS, flatten_obs=True)
    made, _, _ = envs.make_for_rollouts(config)
    own = made.unwrapped.maze
    layout = mazes.from_config(config.env, config.env_kwargs)
    assert layout is not None and layout.shape == (5, 7)
    for row in range(5):
        for col in range(7):
            assert layout.centre(row, col) == pytest.approx(own.cell_rowcol_to_xy((row, col)))
    assert layout.of_kind("r") == [(-2.0, 1.0)] and layout.of_kind("g") == [(-2.0, -1.0)]
    inside = layout.in_goal(np.array([[-2.0, -1.0], [-1.55, -0.55], [-2.0, 1.0], [-1.4, -1.0]]))
    assert inside.tolist() == [True, True, False, False]
    assert mazes.from_config("AntMaze_UMaze-v5", {"maze_map": [[1, "g"]]}).scaling == 4.0
    assert mazes.from_config("PointMaze_UMaze-v3", {}) is None


@pytest.mark.mpi
def test_novelty_search_trains_in_the_deceptive_maze_and_the_plot_shows_where_it_went(runs):
    checked(
        esmpi(
            *("train", "--env", "PointMaze_UMaze-v3", "--env-kwargs", DECEPTIVE_MAZE),
            *("--flatten-obs", "--behaviour", "position", "--popsize", "8", "--hidden", "8"),
            *("--strategy", "ns-es", "--parents", "2", "--max-steps", "100"),
            *("--generations", "3", "--final-episodes", "3", *SMALL_TABLE),
            *("--folder", str(runs), "--run-name", "maze"),
            ranks=2,
        )
    )
    _, members, evaluations, counts = stored(runs / "maze")
    assert counts.tolist() == [8, 8, 8] and members.shape == (24, 2)
    assert evaluations.shape == (3, 2)
    assert (np.abs(members) < 3.5).all()  # inside the maze's walls
    with h5py.File(runs / "maze" / "checkpoint.h5") as h5:
        final = h5["final/behaviours"][...]
        assert final.shape == (2, 3, 2) and (np.abs(final) < 3.5).all()
        assert h5["strategy/archive"].shape == (3, 2)  # one BC per generation
    shown = checked(esmpi("plot", str(runs), "--behaviours", "-o", str(runs / "maze.png")))
    assert (runs / "maze.png").read_bytes()[:4] == b"\x89PNG"
    assert "ns-es: goal reached in 0 of 1 seeds" in shown.stdout  # 100 steps cannot get there
