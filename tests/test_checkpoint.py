"""The checkpoint file: layout, round trip, atomic replacement, and refusing what is not ours."""

import os

import h5py
import numpy as np
import pytest

from esmpi import checkpoint
from esmpi.config import Config, UsageError, to_toml
from esmpi.policies import PolicySpec
from esmpi.strategies import openai_es
from esmpi.strategies.base import state_from_items, state_items
from esmpi.strategies.optimizers import OptimizerState


def _state(generation=3):
    spec = PolicySpec(
        sizes=(4, 8, 2), activation="tanh", bias=False, output="argmax", obs_encoding="box"
    )
    n = spec.n_params
    history = np.zeros(generation, dtype=checkpoint.HISTORY_DTYPE)
    history["generation"] = np.arange(1, generation + 1)
    history["eval_return"] = [10.0, 30.0, 20.0][:generation]
    return checkpoint.Checkpoint(
        config_toml=to_toml(Config(popsize=8)),
        env_id="CartPole-v1",
        seed=0,
        generation=generation,
        n_ranks=2,
        theta=np.arange(n, dtype=np.float32),
        policy=spec,
        strategy="openai-es",
        strategy_state=state_items(
            openai_es.State(
                theta=np.arange(n, dtype=np.float32),
                optimizer=OptimizerState(generation, np.ones(n), np.full(n, 2.0)),
                lr=0.01,
                sigma=0.1,
            )
        ),
        obs_count=50.0,
        obs_mean=np.zeros(4),
        obs_var=np.ones(4),
        best_theta=np.zeros(n, dtype=np.float32),
        best_return=30.0,
        best_generation=2,
        best_obs_mean=np.zeros(4),
        best_obs_var=np.ones(4),
        history=history,
    )


def test_round_trip(tmp_path):
    path = str(tmp_path / checkpoint.FILENAME)
    state = _state()
    checkpoint.save(path, state)
    loaded = checkpoint.load(str(tmp_path))
    assert loaded.policy == state.policy and loaded.config_toml == state.config_toml
    assert np.array_equal(loaded.theta, state.theta) and loaded.theta.dtype == np.float32
    assert np.array_equal(loaded.history, state.history)
    assert (loaded.generation, loaded.best_return, loaded.strategy) == (3, 30.0, "openai-es")
    restored = state_from_items(openai_es.State, loaded.strategy_state, loaded.theta)
    assert restored.optimizer.step == 3 and (restored.lr, restored.sigma) == (0.01, 0.1)
    assert np.array_equal(restored.optimizer.second_moment, np.full(state.theta.size, 2.0))


def test_layout_is_the_documented_one(tmp_path):
    path = str(tmp_path / checkpoint.FILENAME)
    checkpoint.save(path, _state())
    with h5py.File(path) as h5:
        for name in (
            "format",
            "format_version",
            "esmpi_version",
            "env_id",
            "seed",
            "generation",
            "n_ranks",
            "config",
            "versions",
        ):
            assert name in h5.attrs
        assert h5.attrs["format"] == "esmpi" and h5["strategy"].attrs["name"] == "openai-es"
        assert "units squared" in h5["strategy/optimizer/second_moment"].attrs["unit"]
        for name in (
            "theta",
            "policy",
            "strategy/optimizer/first_moment",
            "strategy/optimizer/step",
            "strategy/lr",
            "strategy/sigma",
            "obs_norm/count",
            "obs_norm/mean",
            "obs_norm/var",
            "best/theta",
            "history",
        ):
            assert name in h5
        assert h5["best"].attrs["eval_return"] == 30.0
        columns = h5["history"].dtype.names
        assert columns == tuple(name for name, *_ in checkpoint.HISTORY_COLUMNS)
        assert h5["history"].attrs["wall_s.unit"] == "s"


def test_replacement_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / checkpoint.FILENAME)
    checkpoint.save(path, _state(2))
    checkpoint.save(path, _state(3))
    assert os.listdir(tmp_path) == [checkpoint.FILENAME]
    assert checkpoint.load(path).generation == 3


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / checkpoint.FILENAME)
    checkpoint.save(path, _state(2))
    broken = _state(3)
    broken.history = "not a table"
    with pytest.raises(AttributeError):
        checkpoint.save(path, broken)
    assert checkpoint.load(path).generation == 2
    assert os.listdir(tmp_path) == [checkpoint.FILENAME]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "There is no checkpoint"),
        (b"not hdf5 at all", "is not a readable HDF5 file"),
        ("foreign", "is an HDF5 file but not an esmpi checkpoint"),
        ("future", "newer than this esmpi"),
    ],
)
def test_unreadable_or_foreign_files_are_refused(tmp_path, content, message):
    path = tmp_path / "file.h5"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "foreign":
        with h5py.File(path, "w") as h5:
            h5["data"] = [1, 2, 3]
    elif content == "future":
        checkpoint.save(str(path), _state())
        with h5py.File(path, "a") as h5:
            h5.attrs["format_version"] = 99
    with pytest.raises(UsageError, match=message):
        checkpoint.load(str(path))
