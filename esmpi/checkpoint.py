"""The HDF5 checkpoint: its layout, atomic writing and checked reading. The only h5py importer.

Layout (format_version 1; README "Checkpoint format" shows the same):

    /                 attrs: format="esmpi", format_version, esmpi_version, env_id, seed,
                      generation, n_ranks, config (resolved TOML), versions (JSON of libraries)
    /theta            float32 (n_params,)  current mean parameters
    /policy           attrs: sizes, activation, bias, output, obs_encoding, action_low,
                      action_high, action_shape, action_start, n_params
    /optimizer        attrs: name, step, lr, sigma; datasets first_moment, second_moment
    /obs_norm         datasets count (scalar), mean, var
    /best             attrs: eval_return, generation; datasets theta, obs_mean, obs_var
    /history          table, one row per generation (columns in HISTORY_COLUMNS)

A checkpoint is written to a temporary file in the run folder, flushed to disk, then renamed over
the previous one, so a crash at any moment leaves a complete file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, fields

import numpy as np

import esmpi
from esmpi.config import UsageError
from esmpi.policy import PolicySpec

FORMAT = "esmpi"
FORMAT_VERSION = 1
FILENAME = "checkpoint.h5"

# name, dtype, unit, meaning
HISTORY_COLUMNS = (
    ("generation", "i8", "1", "generations completed, counting this one"),
    ("timesteps", "i8", "steps", "environment steps taken since the run started"),
    ("episodes", "i8", "episodes", "episodes run since the run started"),
    ("return_mean", "f8", "return", "mean episode return of this generation's population"),
    ("return_std", "f8", "return", "standard deviation of the population's returns"),
    ("return_min", "f8", "return", "lowest return in the population"),
    ("return_max", "f8", "return", "highest return in the population"),
    ("eval_return", "f8", "return", "return of the unperturbed policy (theta before the update)"),
    ("lr", "f8", "1", "learning rate used in this generation's update"),
    ("sigma", "f8", "1", "perturbation standard deviation used in this generation"),
    ("wall_s", "f8", "s", "wall-clock seconds since the run started, over all resumptions"),
    ("steps_per_s", "f8", "steps/s", "environment steps per second in this generation, all ranks"),
)
HISTORY_DTYPE = np.dtype([(name, kind) for name, kind, _, _ in HISTORY_COLUMNS])


@dataclass
class Checkpoint:
    """Everything a run needs to continue, in the file's terms."""

    config_toml: str
    env_id: str
    seed: int
    generation: int
    n_ranks: int
    theta: np.ndarray
    policy: PolicySpec
    optimizer: str
    optimizer_step: int
    first_moment: np.ndarray
    second_moment: np.ndarray
    lr: float
    sigma: float
    obs_count: float
    obs_mean: np.ndarray
    obs_var: np.ndarray
    best_theta: np.ndarray
    best_return: float
    best_generation: int
    best_obs_mean: np.ndarray
    best_obs_var: np.ndarray
    history: np.ndarray  # HISTORY_DTYPE rows


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("numpy", "numba", "mpi4py", "h5py", "gymnasium", "mujoco", "pybullet"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def save(path: str, state: Checkpoint) -> None:
    """Write `state` to `path` atomically: a temporary file, fsync, then rename over `path`."""
    import h5py

    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with h5py.File(temporary, "w") as h5:
            _write(h5, state)
            h5.flush()
            os.fsync(h5.id.get_vfd_handle())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write(h5, state: Checkpoint) -> None:
    h5.attrs.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        esmpi_version=esmpi.__version__,
        env_id=state.env_id,
        seed=state.seed,
        generation=state.generation,
        n_ranks=state.n_ranks,
        config=state.config_toml,
        versions=json.dumps(library_versions()),
    )
    _dataset(h5, "theta", state.theta, "mean policy parameters, layout in /policy")
    policy = h5.create_group("policy")
    for spec_field in fields(PolicySpec):
        value = getattr(state.policy, spec_field.name)
        policy.attrs[spec_field.name] = np.asarray(value) if isinstance(value, tuple) else value
    policy.attrs["n_params"] = state.policy.n_params
    optimizer = h5.create_group("optimizer")
    optimizer.attrs.update(name=state.optimizer, step=state.optimizer_step)
    optimizer.attrs.update(lr=state.lr, sigma=state.sigma)
    _dataset(optimizer, "first_moment", state.first_moment, "Adam first moment")
    _dataset(optimizer, "second_moment", state.second_moment, "Adam second moment")
    obs_norm = h5.create_group("obs_norm")
    _dataset(obs_norm, "count", np.float64(state.obs_count), "observations seen")
    _dataset(obs_norm, "mean", state.obs_mean, "running observation mean")
    _dataset(obs_norm, "var", state.obs_var, "running observation variance")
    best = h5.create_group("best")
    best.attrs.update(eval_return=state.best_return, generation=state.best_generation)
    _dataset(best, "theta", state.best_theta, "parameters with the best evaluation return")
    _dataset(best, "obs_mean", state.best_obs_mean, "observation mean used with best/theta")
    _dataset(best, "obs_var", state.best_obs_var, "observation variance used with best/theta")
    history = h5.create_dataset(
        "history", data=state.history.astype(HISTORY_DTYPE), maxshape=(None,), chunks=True
    )
    history.attrs["description"] = "one row per generation"
    for name, _, unit, meaning in HISTORY_COLUMNS:
        history.attrs[f"{name}.unit"] = unit
        history.attrs[f"{name}.description"] = meaning


def _dataset(group, name: str, data, description: str) -> None:
    group.create_dataset(name, data=data).attrs["description"] = description


def load(path: str) -> Checkpoint:
    """Read a checkpoint; UsageError with one sentence if it is missing, unreadable or foreign."""
    import h5py

    if os.path.isdir(path):
        path = os.path.join(path, FILENAME)
    if not os.path.exists(path):
        raise UsageError(f"There is no checkpoint at {path}.")
    try:
        h5 = h5py.File(path, "r")
    except OSError:
        raise UsageError(f"{path} is not a readable HDF5 file (truncated or not HDF5).") from None
    with h5:
        if h5.attrs.get("format") != FORMAT:
            raise UsageError(f"{path} is an HDF5 file but not an esmpi checkpoint.")
        version = int(h5.attrs["format_version"])
        if version > FORMAT_VERSION:
            raise UsageError(
                f"{path} has checkpoint format {version}, newer than this esmpi "
                f"({esmpi.__version__}) reads ({FORMAT_VERSION}); upgrade esmpi."
            )
        try:
            return _read(h5)
        except KeyError as error:
            raise UsageError(f"{path} is an incomplete esmpi checkpoint ({error}).") from None


def _read(h5) -> Checkpoint:
    policy_attrs = dict(h5["policy"].attrs)
    spec_values = {}
    for spec_field in fields(PolicySpec):
        value = policy_attrs[spec_field.name]
        if isinstance(value, np.ndarray):
            value = tuple(value.tolist())
        elif isinstance(value, np.generic):
            value = value.item()
        spec_values[spec_field.name] = value
    optimizer, best, obs_norm = h5["optimizer"], h5["best"], h5["obs_norm"]
    return Checkpoint(
        config_toml=str(h5.attrs["config"]),
        env_id=str(h5.attrs["env_id"]),
        seed=int(h5.attrs["seed"]),
        generation=int(h5.attrs["generation"]),
        n_ranks=int(h5.attrs["n_ranks"]),
        theta=h5["theta"][...],
        policy=PolicySpec(**spec_values),
        optimizer=str(optimizer.attrs["name"]),
        optimizer_step=int(optimizer.attrs["step"]),
        first_moment=optimizer["first_moment"][...],
        second_moment=optimizer["second_moment"][...],
        lr=float(optimizer.attrs["lr"]),
        sigma=float(optimizer.attrs["sigma"]),
        obs_count=float(obs_norm["count"][()]),
        obs_mean=obs_norm["mean"][...],
        obs_var=obs_norm["var"][...],
        best_theta=best["theta"][...],
        best_return=float(best.attrs["eval_return"]),
        best_generation=int(best.attrs["generation"]),
        best_obs_mean=best["obs_mean"][...],
        best_obs_var=best["obs_var"][...],
        history=h5["history"][...],
    )
