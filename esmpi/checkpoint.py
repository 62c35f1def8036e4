"""The HDF5 checkpoint: its layout, atomic writing and checked reading. The only h5py importer.

Layout (format_version 2; README "Checkpoint format" shows the same):

    /                 attrs: format="esmpi", format_version, esmpi_version, env_id, seed,
                      generation, n_ranks, config (resolved TOML), versions (JSON of libraries)
    /theta            float32 (n_params,)  current mean parameters (the strategy's centre)
    /policy           attrs: sizes, activation, bias, output, obs_encoding, action_low,
                      action_high, action_shape, action_start, kind, obs_shape, obs_scale,
                      plastic_norm, user_params, n_params
    /strategy         attrs: name; the rest of the strategy's state as datasets (scalars too),
                      nested state (the optimizer's) as groups, each with description and unit
    /obs_norm         datasets count (scalar), mean, var
    /best             attrs: eval_return, generation; datasets theta, obs_mean, obs_var
    /history          table, one row per generation (columns in HISTORY_COLUMNS)
    /final            attrs: generation, theta_mean, best_mean; datasets seeds, returns, lengths
                      (and behaviours with --behaviour)
                      (the end-of-run evaluation; absent before a run has finished once)

Every group and dataset carries a `description` attribute, every dataset a `unit`, and each history
column `NAME.unit` and `NAME.description`, so that `h5ls -v`, h5py or pandas users need no manual.
Files without `format_version`, or with a newer one, are refused with one sentence. Format 1 files
(OpenAI-ES only, its state in /optimizer: attrs name, step, lr, sigma; datasets first_moment,
second_moment) are read as an openai-es state.

A checkpoint is written to a temporary file in the run folder, flushed to disk, then renamed over
the previous one, so a crash at any moment leaves a complete file behind.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import re
import time
from dataclasses import dataclass, fields

import numpy as np

import esmpi
from esmpi.config import UsageError
from esmpi.policies import PolicySpec

FORMAT = "esmpi"
FORMAT_VERSION = 2
FILENAME = "checkpoint.h5"
OBS, OBS2 = "observation units", "observation units squared"  # units of obs statistics

# name, dtype, unit, meaning
HISTORY_COLUMNS = (
    ("generation", "i8", "1", "generations completed, counting this one"),
    ("timesteps", "i8", "steps", "environment steps taken since the run started"),
    ("episodes", "i8", "episodes", "episodes run since the run started"),
    (
        "members",
        "i8",
        "members",
        "population members evaluated in this generation (above --popsize where it grew: "
        "--population-steps; 0 in runs older than this column)",
    ),
    ("return_mean", "f8", "return", "mean episode return of this generation's population"),
    ("return_std", "f8", "return", "standard deviation of the population's returns"),
    ("return_min", "f8", "return", "lowest return in the population"),
    ("return_max", "f8", "return", "highest return in the population"),
    ("eval_return", "f8", "return", "return of the unperturbed policy (theta before the update)"),
    (
        "lr",
        "f8",
        "1",
        "step size of this generation's update: --lr (snes: eta_mu; sep-cma-es: its sigma)",
    ),
    (
        "sigma",
        "f8",
        "1",
        "perturbation standard deviation in this generation, the mean over parameters where "
        "each has its own",
    ),
    ("wall_s", "f8", "s", "wall-clock seconds since the run started, over all resumptions"),
    ("steps_per_s", "f8", "steps/s", "environment steps per second in this generation, all ranks"),
    ("rollout_s", "f8", "s", "seconds the busiest rank spent running episodes this generation"),
    ("idle_s", "f8", "s", "mean seconds a rank waited for the busiest one (load imbalance)"),
    ("update_s", "f8", "s", "seconds rank 0 spent on the ES update and normalisation update"),
    (
        "checkpoint_s",
        "f8",
        "s",
        "seconds rank 0 spent writing the checkpoint after the previous row",
    ),
    ("failed_reward", "i8", "episodes", "episodes of this generation with a NaN or inf reward"),
    (
        "failed_observation",
        "i8",
        "episodes",
        "episodes of this generation with a NaN or inf observation",
    ),
    ("failed_raised", "i8", "episodes", "episodes of this generation whose reset or step raised"),
    (
        "next_episode_cap",
        "i8",
        "steps",
        "--episode-cap: the cap on the next generation's population episodes, after this "
        "generation's raise (0: no adaptive cap)",
    ),
)
HISTORY_DTYPE = np.dtype([(name, kind) for name, kind, _, _ in HISTORY_COLUMNS])
# The counts of failed episodes, one column per kind (rollout.FAILURE_KINDS, in order).
FAILED_COLUMNS = ("failed_reward", "failed_observation", "failed_raised")


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
    strategy: str  # a name in esmpi.strategies.REGISTRY
    # the strategy's state but theta: name -> (value, description, unit), or a nested dict
    strategy_state: dict
    obs_count: float
    obs_mean: np.ndarray
    obs_var: np.ndarray
    best_theta: np.ndarray
    best_return: float
    best_generation: int
    best_obs_mean: np.ndarray
    best_obs_var: np.ndarray
    history: np.ndarray  # HISTORY_DTYPE rows
    final: FinalEvaluation | None = None  # the end-of-run evaluation, once a run has one
    behaviours: Behaviours | None = None  # with --behaviour: every episode's BC


@dataclass
class Behaviours:
    """The behaviour characterisation (--behaviour) of every episode of a run, generation after
    generation: `members` holds history["members"] rows a generation (the population's tasks in
    order, + before - in a pair), `evaluations` eval_episodes rows a generation; NaN rows are
    failed episodes."""

    name: str
    members: np.ndarray  # float64 (members of all generations, size)
    evaluations: np.ndarray  # float64 (generations x eval_episodes, size)


@dataclass
class FinalEvaluation:
    """theta and best/theta, each over the same episodes (seeds no training episode used), at
    the end of the run after `generation` generations; NaN returns are failed episodes."""

    generation: int
    seeds: np.ndarray  # int64 (episodes,)
    returns: np.ndarray  # float64 (2, episodes): theta's, then best/theta's
    lengths: np.ndarray  # int64 (2, episodes)
    behaviours: np.ndarray | None = None  # float64 (2, episodes, B) with --behaviour

    @property
    def means(self) -> tuple[float, float]:
        """Mean return of theta and of best/theta (NaN if an episode failed)."""
        return float(self.returns[0].mean()), float(self.returns[1].mean())


def final_at(final: FinalEvaluation | None, generation: int) -> FinalEvaluation | None:
    """`final` if it evaluated the run at `generation` (a resumed run's is from an earlier end)."""
    return final if final is not None and final.generation == generation else None


@functools.cache  # reading the packages' metadata took ~15 ms, half of a checkpoint write
def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("numpy", "numba", "mpi4py", "h5py", "gymnasium", "mujoco", "pybullet"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


# Tests kill a job in the middle of a checkpoint write: set to a generation, this makes the writer
# stop inside the write of that generation's checkpoint (after printing a line saying so).
PAUSE_VARIABLE = "ESMPI_TEST_PAUSE_IN_CHECKPOINT"


def save(path: str, state: Checkpoint) -> None:
    """Write `state` to `path` atomically: a temporary file, fsync, then rename over `path` and
    fsync the folder, so that the rename too survives a crash. The previous checkpoint stays in
    place until the new one is complete. Temporary files of a killed writer are removed first."""
    import h5py

    for stale in glob.glob(glob.escape(path) + ".tmp*"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with h5py.File(temporary, "w") as h5:
            _write(h5, state)
            _pause_for_tests(state.generation, temporary)
            h5.flush()
            os.fsync(h5.id.get_vfd_handle())
        os.replace(temporary, path)
        _fsync_folder(os.path.dirname(path) or ".")
    except (OSError, RuntimeError) as error:  # h5py reports a failed write as either
        raise OSError(
            f"Cannot write the checkpoint {path}: {_write_failure(error)}; the previous "
            "checkpoint, if any, is kept."
        ) from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_failure(error: BaseException | None) -> str:
    """The system's reason for a failed write (say 'No space left on device'), found in `error`
    or the errors it happened during (HDF5 puts it inside its own message)."""
    while error is not None:
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
        found = re.search(r"error message = '([^']+)'", str(error))
        if found:
            return found.group(1)
        error = error.__context__
    return "unknown error"


def _fsync_folder(folder: str) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _pause_for_tests(generation: int, temporary: str) -> None:
    if os.environ.get(PAUSE_VARIABLE) == str(generation):
        print(f"esmpi: {PAUSE_VARIABLE}: pausing inside the write of {temporary}", flush=True)
        time.sleep(3600)


def _write(h5, state: Checkpoint) -> None:
    h5.attrs["description"] = (
        "esmpi checkpoint of one evolution-strategies run: the mean policy parameters, their "
        "layout, the search strategy's state, the observation statistics, the best parameters "
        "and one history row per generation"
    )
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
    policy.attrs["description"] = _POLICY_DESCRIPTION
    for spec_field in fields(PolicySpec):
        value = getattr(state.policy, spec_field.name)
        policy.attrs[spec_field.name] = np.asarray(value) if isinstance(value, tuple) else value
    policy.attrs["n_params"] = state.policy.n_params
    strategy = h5.create_group("strategy")
    strategy.attrs["description"] = (
        f"state of the {state.strategy} search strategy (esmpi.strategies), apart from /theta"
    )
    strategy.attrs["name"] = state.strategy
    _write_items(strategy, state.strategy_state)
    obs_norm = h5.create_group("obs_norm")
    obs_norm.attrs["description"] = (
        "running observation statistics; policies see clip((obs - mean) / max(sqrt(var), 0.01), "
        "-obs_clip, obs_clip) with obs_clip from the config"
    )
    _dataset(obs_norm, "count", np.float64(state.obs_count), "observations seen", "observations")
    _dataset(obs_norm, "mean", state.obs_mean, "running observation mean", OBS)
    _dataset(obs_norm, "var", state.obs_var, "running observation variance", OBS2)
    best = h5.create_group("best")
    best.attrs["description"] = (
        "the parameters with the best evaluation return (attrs eval_return, generation) and the "
        "normalisation they ran with"
    )
    best.attrs.update(eval_return=state.best_return, generation=state.best_generation)
    _dataset(best, "theta", state.best_theta, "parameters with the best evaluation return")
    _dataset(best, "obs_mean", state.best_obs_mean, "observation mean used with best/theta", OBS)
    _dataset(best, "obs_var", state.best_obs_var, "observation variance used with best/theta", OBS2)
    history = h5.create_dataset(
        "history", data=state.history.astype(HISTORY_DTYPE), maxshape=(None,), chunks=True
    )
    history.attrs["description"] = (
        "one row per generation; each column's unit and meaning are the attributes NAME.unit and "
        "NAME.description"
    )
    history.attrs["unit"] = "per column"
    for name, _, unit, meaning in HISTORY_COLUMNS:
        history.attrs[f"{name}.unit"] = unit
        history.attrs[f"{name}.description"] = meaning
    if state.final is not None:
        _write_final(h5, state.final)
    if state.behaviours is not None:
        _write_behaviours(h5, state.behaviours)


def _write_behaviours(h5, behaviours: Behaviours) -> None:
    group = h5.create_group("behaviour")
    group.attrs["description"] = (
        "the behaviour characterisation of every episode (attr name: the --behaviour that read "
        "it): members, history/members rows per generation (tasks in order, + before -), and "
        "evaluations, eval_episodes rows per generation; NaN rows are failed episodes"
    )
    group.attrs["name"] = behaviours.name
    _dataset(group, "members", behaviours.members, "BC of each population member", "per BC")
    _dataset(group, "evaluations", behaviours.evaluations, "BC of each evaluation", "per BC")


def _write_final(h5, final: FinalEvaluation) -> None:
    group = h5.create_group("final")
    group.attrs["description"] = (
        "the evaluation at the end of the run (after `generation` generations): row 0 theta, "
        "row 1 best/theta, over the same episodes, on seeds no training episode used; NaN "
        "returns are failed episodes"
    )
    theta_mean, best_mean = final.means
    group.attrs.update(generation=final.generation, theta_mean=theta_mean, best_mean=best_mean)
    _dataset(group, "seeds", final.seeds, "reset seed of each episode", "1")
    _dataset(group, "returns", final.returns, "episode returns: theta, best/theta", "return")
    _dataset(group, "lengths", final.lengths, "episode lengths: theta, best/theta", "steps")
    if final.behaviours is not None:
        _dataset(group, "behaviours", final.behaviours, "BC of each episode", "per BC")


_POLICY_DESCRIPTION = (
    "kind 'mlp', 'linear' (sizes (n_in, n_out): one layer), 'cnn' (convolutions first, see "
    "esmpi.policies.cnn.cnn_step; obs_shape, obs_scale), 'rnn' (the first W is (n_in + hidden, "
    "hidden): the layer reads its own previous output), 'hebbian' (theta is the plastic rule, "
    "eta, A, B, C, D per synapse, see esmpi.policies.hebbian; plastic_norm) or a user's "
    "'module:Class' (user_params parameters; obs_encoding 'raw'). "
    "MLP layout of theta: per layer the weights (n_in, n_out) row-major, then the bias (n_out,) if "
    "bias; a layer computes x @ W + b, hidden layers apply activation; output 'argmax' picks "
    "action_start + argmax, 'clip' clips to [action_low, action_high], 'tanh' maps to "
    "low + (tanh(y) + 1) / 2 * (high - low); obs_encoding 'onehot' encodes Discrete observations"
)


def _write_items(group, items: dict) -> None:
    for name, item in items.items():
        if isinstance(item, dict):
            subgroup = group.create_group(name)
            subgroup.attrs["description"] = f"state of the {name}"
            _write_items(subgroup, item)
        else:
            _dataset(group, name, *item)


def _read_items(group) -> dict:
    import h5py

    items: dict = {}
    for name, node in group.items():
        if isinstance(node, h5py.Group):
            items[name] = _read_items(node)
        else:
            value = node[()]
            items[name] = (value, str(node.attrs["description"]), str(node.attrs["unit"]))
    return items


def _format1_strategy(h5) -> tuple[str, dict]:
    """The openai-es state of a format 1 file, whose /optimizer held it."""
    optimizer = h5["optimizer"]

    def item(value, description, unit="1"):
        return (value, description, unit)

    return "openai-es", {
        "optimizer": {
            "step": item(int(optimizer.attrs["step"]), "updates applied so far"),
            "first_moment": item(optimizer["first_moment"][...], "first moment"),
            "second_moment": item(optimizer["second_moment"][...], "second moment"),
        },
        "lr": item(float(optimizer.attrs["lr"]), "learning rate"),
        "sigma": item(float(optimizer.attrs["sigma"]), "sigma"),
    }


def _dataset(group, name: str, data, description: str, unit: str = "1") -> None:
    dataset = group.create_dataset(name, data=data)
    dataset.attrs["description"] = description
    dataset.attrs["unit"] = unit


def load(path: str) -> Checkpoint:
    """Read a checkpoint; UsageError with one sentence if it is missing, unreadable or foreign."""
    with _opened(path) as (h5, path):
        try:
            return _read(h5)
        except KeyError as error:
            raise UsageError(f"{path} is an incomplete esmpi checkpoint ({error}).") from None


def metadata(path: str) -> dict:
    """The root attributes of a checkpoint (format, versions, config, ...) with `versions` parsed
    from its JSON and `path` the file's path; checked like load()."""
    with _opened(path) as (h5, path):
        found = {name: _plain(value) for name, value in h5.attrs.items()}
    found["versions"] = json.loads(found.get("versions") or "{}")
    found["path"] = path
    return found


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


@contextlib.contextmanager
def _opened(path: str):
    """(open h5py.File, file path) of an esmpi checkpoint of a format this esmpi reads."""
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
        version = int(h5.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise UsageError(
                f"{path} has checkpoint format {version}, newer than this esmpi "
                f"({esmpi.__version__}) reads ({FORMAT_VERSION}); upgrade esmpi."
            )
        if version < 1:
            raise UsageError(
                f"{path} has no valid checkpoint format_version ({version}); it was not written by "
                "a released esmpi and cannot be read."
            )
        yield h5, path


def _read(h5) -> Checkpoint:
    policy_attrs = dict(h5["policy"].attrs)
    spec_values = {}
    for spec_field in fields(PolicySpec):
        if spec_field.name not in policy_attrs:  # added later (kind, obs_shape): the default
            continue
        value = policy_attrs[spec_field.name]
        if isinstance(value, np.ndarray):
            value = tuple(value.tolist())
        elif isinstance(value, np.generic):
            value = value.item()
        spec_values[spec_field.name] = value
    best, obs_norm = h5["best"], h5["obs_norm"]
    if "strategy" in h5:
        strategy, strategy_state = str(h5["strategy"].attrs["name"]), _read_items(h5["strategy"])
    else:
        strategy, strategy_state = _format1_strategy(h5)
    return Checkpoint(
        config_toml=str(h5.attrs["config"]),
        env_id=str(h5.attrs["env_id"]),
        seed=int(h5.attrs["seed"]),
        generation=int(h5.attrs["generation"]),
        n_ranks=int(h5.attrs["n_ranks"]),
        theta=h5["theta"][...],
        policy=PolicySpec(**spec_values),
        strategy=strategy,
        strategy_state=strategy_state,
        obs_count=float(obs_norm["count"][()]),
        obs_mean=obs_norm["mean"][...],
        obs_var=obs_norm["var"][...],
        best_theta=best["theta"][...],
        best_return=float(best.attrs["eval_return"]),
        best_generation=int(best.attrs["generation"]),
        best_obs_mean=best["obs_mean"][...],
        best_obs_var=best["obs_var"][...],
        history=current_history(h5["history"][...]),
        final=_read_final(h5),
        behaviours=_read_behaviours(h5),
    )


def _read_behaviours(h5) -> Behaviours | None:
    if "behaviour" not in h5:
        return None
    group = h5["behaviour"]
    return Behaviours(str(group.attrs["name"]), group["members"][...], group["evaluations"][...])


def _read_final(h5) -> FinalEvaluation | None:
    if "final" not in h5:
        return None
    group = h5["final"]
    return FinalEvaluation(
        int(group.attrs["generation"]),
        group["seeds"][...],
        group["returns"][...],
        group["lengths"][...],
        group["behaviours"][...] if "behaviours" in group else None,
    )


def current_history(rows: np.ndarray) -> np.ndarray:
    """History rows in today's columns; columns a file predates are zero."""
    if rows.dtype == HISTORY_DTYPE:
        return rows
    converted = np.zeros(rows.shape, dtype=HISTORY_DTYPE)
    for name in set(rows.dtype.names or ()) & set(HISTORY_DTYPE.names or ()):
        converted[name] = rows[name]
    return converted
