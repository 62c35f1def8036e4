"""The training configuration: one frozen dataclass, its TOML form and its validation.

Every option of `esmpi train` is a field here with its default and a one-line description; the
command line (`cli.py`) and the TOML file are two spellings of the same fields. The resolved TOML
text is stored in each checkpoint, so a run can be continued exactly.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from typing import Any

import tomli_w
import tomllib


class UsageError(Exception):
    """A mistake the user can fix: printed as one sentence, never as a traceback."""


def _option(default: Any, help: str, *aliases: str) -> Any:
    """A config field with its help text and the old program's flag names that also set it."""
    kwargs: dict[str, Any] = {"metadata": {"help": help, "aliases": aliases}}
    if isinstance(default, (list, dict)):
        kwargs["default_factory"] = lambda: type(default)(default)
    else:
        kwargs["default"] = default
    return field(**kwargs)


@dataclass(frozen=True)
class Config:
    """Everything that determines a training run. Same config and seed: same result."""

    # The environment
    env: str = _option(
        "CartPole-v1",
        "Environment id: a registered Gymnasium id (MuJoCo v5, Box2D, PyBullet "
        "'*BulletEnv-v0') or 'module:EnvClass'",
        "--environment",
    )
    env_kwargs: dict = _option({}, "Keyword arguments for the environment, as a JSON object")
    max_steps: int = _option(0, "Episode cap in steps; 0 keeps the environment's own time limit")
    seed: int = _option(0, "Root seed: noise table, perturbations and episode seeds derive from it")
    native: bool = _option(
        True,
        "Step Gymnasium's MuJoCo v5 environments (HalfCheetah, Hopper, Walker2d, Swimmer, Ant, "
        "Humanoid, InvertedPendulum, InvertedDoublePendulum, Reacher) with mujoco.mj_step and a "
        "compiled observation and reward, bit for bit what env.step gives; where that is not "
        "known to be exact they step through Gymnasium, and training says which and why. "
        "--no-native always steps through Gymnasium",
    )

    # Observations (pixel pipelines: Gymnasium's wrappers, applied beneath the API checks)
    flatten_obs: bool = _option(
        False,
        "Flatten Dict and Tuple observations into one vector (FlattenObservation), as goal "
        "environments such as Gymnasium-Robotics' mazes need",
    )
    obs_keep: list = _option(
        [],
        "Keep only these indices of the (flattened) Box observation, e.g. '0,2' for CartPole's "
        "positions without their velocities: a partially observed task (TransformObservation); "
        "empty keeps all",
    )
    grayscale: bool = _option(False, "Turn RGB observations into grayscale (GrayscaleObservation)")
    resize: int = _option(
        0, "Resize image observations to RESIZE x RESIZE pixels (ResizeObservation); 0 keeps them"
    )
    frame_stack: int = _option(
        1, "Stack the last FRAME_STACK observations (FrameStackObservation); 1 stacks nothing"
    )
    scale_obs: bool = _option(
        False, "CNN policy: multiply pixels by 1/255, so that they are in [0, 1]"
    )
    atari: bool = _option(
        False,
        "Atari preprocessing (AtariPreprocessing, the env made with frameskip=1): up to 30 no-op "
        "starts, frame skip 4 with max-pooling, --resize (84 when 0), --grayscale; FIRE after "
        "reset and after a lost life in games with a FIRE action",
    )
    end_on_life_loss: bool = _option(False, "Atari: end the episode when a life is lost")

    # Episodes
    burn_in: int = _option(
        0, "Steps of zero action at the start of each episode; their rewards do not count"
    )
    early_stop: int = _option(
        0, "End an episode after more than EARLY_STOP consecutive negative rewards; 0: never"
    )
    early_stop_after: int = _option(
        0, "The --early-stop rule ends episodes only after this many steps"
    )
    episode_cap: int = _option(
        0,
        "Adaptive episode cap (the OpenAI ES starter's adaptive time limit): the population's "
        "episodes start capped at EPISODE_CAP steps, and the cap grows by --cap-raise after each "
        "generation in which at least --cap-share of them reached it, up to the episode horizon; "
        "evaluation episodes are never capped; 0: off",
    )
    cap_share: float = _option(0.2, "--episode-cap: the share of capped episodes that raises it")
    cap_raise: float = _option(1.2, "--episode-cap: the factor it grows by (above 1)")
    reward_shift: float = _option(
        0.0,
        "Subtract this from every step's reward in the population's episodes only (not in "
        "evaluations): ARS's shift, pgpelib's decrease_rewards_by, removing an alive bonus that "
        "makes standing still a local optimum",
    )
    ignore_terminated: bool = _option(
        False,
        "Go on after the environment says an episode terminated (the time limit and --early-stop "
        "still end it): PyBullet's Ant terminates when its body is below 0.26, as a resting ant is",
    )
    fitness: str = _option(
        "return",
        "What an episode scores: 'return' (sum of rewards) or 'progress' (PyBullet locomotion: "
        "the sum of the progress term, the distance walked towards the target per time step)",
    )
    behaviour: str = _option(
        "",
        "What each episode reports besides its score, kept in the checkpoint's /behaviour: "
        "'position' (the final (x, y) of the agent's main body, MuJoCo or PyBullet), "
        "'info:KEY' (the last step's info[KEY]) or 'module:function' (function(env, info) -> a "
        "few numbers); empty: nothing",
    )

    # The search strategy (defaults are OpenAI-ES's; each strategy sets its own: README,
    # "Search strategies", and `esmpi train --strategy NAME --help`)
    strategy: str = _option(
        "openai-es",
        "Search strategy: 'openai-es' (Salimans et al. 2017), 'pgpe' (Sehnke et al. 2010 with "
        "ClipUp), 'snes' (Schaul et al. 2011), 'ars' (Mania et al. 2018), 'sep-cma-es' (Ros and "
        "Hansen 2008), 'ns-es', 'nsr-es', 'nsra-es' (Conti et al. 2018: novelty search, needs "
        "--behaviour)",
    )
    popsize: int = _option(
        64,
        "Population members per generation (antithetic pairs: even); 0 for snes and sep-cma-es: "
        "their papers' 4 + 3 ln(parameters)",
    )
    generations: int = _option(
        100,
        "Generations to run, counted from the start of the run; 0: no limit, --total-steps ends "
        "it (the default when --total-steps is given and --generations is not)",
    )
    total_steps: int = _option(
        0,
        "Also end the run after the generation in which its environment steps (all episodes, "
        "counted from the start of the run) reach TOTAL_STEPS; 0: --generations alone ends it",
    )
    population_steps: int = _option(
        0,
        "Grow the population within a generation (EvoTorch's num_interactions): after the "
        "--popsize members, add rounds of --popsize new members until the population's episodes "
        "have taken this many environment steps or --popsize-max members ran; 0: a fixed "
        "population. openai-es, pgpe, snes, ars",
    )
    popsize_max: int = _option(
        0,
        "With --population-steps: the most members a generation grows to; 0 gives 8 x --popsize",
    )
    member_episodes: int = _option(
        1,
        "Episodes each member plays (a GA's rechecked candidates too), on reset seeds both "
        "members of a pair share; its return and BC are their means (estool's num_episode, "
        "gymnax-blines' num_rollouts): a less noisy ranking where starts differ, for K times the "
        "steps",
    )
    optimizer: str = _option(
        "adam",
        "openai-es, pgpe: 'adam' (Salimans et al.), 'sgd' (with --momentum) or 'clipup' "
        "(Toklu et al. 2020: the normalised gradient times lr, plus momentum, speed clipped)",
    )
    lr: float = _option(
        0.03,
        "Learning rate: of the optimizer (openai-es, pgpe: with clipup the length of a step), "
        "ARS's step size alpha, SNES's centre learning rate",
    )
    momentum: float = _option(0.9, "sgd and clipup optimizers: momentum of the velocity")
    max_speed: float = _option(
        0.0, "clipup optimizer: the longest step (velocity norm); 0 gives twice --lr"
    )
    stdev_lr: float = _option(
        0.0,
        "pgpe, snes: learning rate of the per-parameter sigma; 0 in snes gives the paper's "
        "(3 + ln d) / (5 sqrt d) for d parameters, 0 in pgpe keeps sigma fixed",
    )
    stdev_max_change: float = _option(
        0.2, "pgpe: the largest relative change of each sigma in one generation"
    )
    mirrored: bool = _option(False, "snes: evaluate antithetic pairs +-eps (popsize even)")
    top_directions: int = _option(
        0,
        "ars: update along the best b directions, ranked by max(r+, r-) (ARS V1-t/V2-t); 0 "
        "uses them all",
    )
    parents: int = _option(
        5,
        "ns-es, nsr-es, nsra-es: the meta-population, M parents (each its own parameters, "
        "optimizer and observation normalisation); one of them is perturbed per generation",
    )
    neighbours: int = _option(
        10, "ns-es, nsr-es, nsra-es: novelty is the mean distance to this many nearest archive BCs"
    )
    reward_weight: float = _option(
        0.5,
        "nsr-es: the weight of the reward rank in the update (the novelty rank gets the rest); "
        "nsra-es: its starting value (1.0 by default there)",
    )
    weight_step: float = _option(
        0.05,
        "nsra-es: --reward-weight rises by this when the evaluation return sets a record and "
        "falls by it after --weight-patience generations without one",
    )
    weight_patience: int = _option(
        10, "nsra-es: generations without a record evaluation return before the weight falls"
    )
    truncation: int = _option(
        8, "ga: the parents, T: the elite and the best T - 1 children of the last generation"
    )
    elite_candidates: int = _option(
        4,
        "ga: the best children by their one episode that are evaluated again, with the elite, "
        "on --elite-episodes episodes each; the best mean is the next elite",
    )
    elite_episodes: int = _option(4, "ga: episodes of each elite candidate's evaluation")
    lr_decay: float = _option(
        1.0, "Multiply lr by this each generation while lr > lr_min", "--decay"
    )
    lr_min: float = _option(0.001, "lr stops decaying at this value")
    sigma: float = _option(0.1, "Perturbation standard deviation")
    sigma_decay: float = _option(
        0.999, "Multiply sigma by this each generation while above sigma_min"
    )
    sigma_min: float = _option(0.01, "sigma stops decaying at this value")
    weight_decay: float = _option(
        0.01, "Subtract weight_decay * mean(w**2) of each member's weights from its return"
    )
    noise_table_size: int = _option(
        1 << 26, "Float32 entries in the shared Gaussian noise table (one copy per node)"
    )

    # The policy
    policy: str = _option(
        "mlp",
        "'mlp'; 'linear': the action from (normalised obs) @ M (+ b with --bias), no hidden "
        "layers (--hidden is ignored), M = 0 at the start (ARS's); 'cnn' for image "
        "observations: conv 6@3x3, max-pool 2, conv 8@5x5 stride 2, max-pool 2, then the "
        "--hidden layers; 'rnn': the first --hidden layer recurrent (Elman), its state zero at "
        "each episode's start; 'hebbian': the --hidden network without biases whose weights "
        "start random in each episode and change at every step by an evolved per-synapse rule "
        "(Najarro & Risi 2020); or 'module:Class', your own class (README: 'Your own policy')",
    )
    hidden: list = _option([128, 64], "Hidden layer sizes of the MLP (of the CNN's dense part)")
    activation: str = _option("tanh", "Hidden activation: 'tanh' or 'relu'")
    plastic_norm: bool = _option(
        True,
        "--policy hebbian: divide each layer's weights by their largest magnitude after every "
        "update (the paper's choice outside PyBullet)",
    )
    bias: bool = _option(False, "Give every layer a bias")
    action_map: str = _option(
        "clip",
        "Box actions: 'clip' the output to the bounds, or 'tanh' or 'sigmoid' rescale it into "
        "them; one per dimension with commas, e.g. 'tanh,sigmoid,sigmoid'",
    )
    obs_norm: bool = _option(
        True, "Normalise Box observations by running mean/std (merged across ranks)"
    )
    obs_clip: float = _option(5.0, "Clip normalised observations to +-obs_clip")

    # Evaluation of the unperturbed policy
    eval_episodes: int = _option(
        1,
        "Episodes of the unperturbed policy in each generation, spread over ranks like the "
        "population's; their mean is the history's eval_return and chooses the kept best "
        "parameters",
    )
    final_episodes: int = _option(
        10,
        "At the end of the run, evaluate theta and best/theta over this many episodes on seeds "
        "no training episode uses, into the checkpoint's /final; 0 skips it",
    )

    # Failed episodes (a non-finite reward or observation, or reset/step raising)
    max_failed_share: float = _option(
        0.25,
        "Stop the run (after writing the checkpoint) when more than this share of a "
        "generation's episodes fail; 1 never stops. A failed member ranks worst either way",
    )

    # Bookkeeping
    print_every: int = _option(
        10, "Print progress and write the checkpoint every this many generations", "--print_every"
    )
    check_every: int = _option(
        10,
        "Compare a checksum of the search state (parameters and strategy state) across ranks this "
        "often",
    )
    folder: str = _option("runs", "Folder that holds the run folders")
    run_name: str = _option(
        "", "Run folder name; empty gives '{env}__{seed}__{SLURM job id or time}'"
    )

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


_CHOICES = {
    "optimizer": ("adam", "sgd", "clipup"),
    "activation": ("tanh", "relu"),
    "fitness": ("return", "progress"),
}
ACTION_MAPS = ("clip", "tanh", "sigmoid")
# esmpi/policies/'s families (config sits below policies, so the names are kept here)
BUILT_IN_POLICIES = ("mlp", "linear", "cnn", "rnn", "hebbian")


def parse_value(name: str, value: Any) -> Any:
    """Convert a command-line string or TOML value to the type of field `name`."""
    if name in ("hidden", "obs_keep"):
        if isinstance(value, str):
            value = [part for part in value.replace(" ", "").split(",") if part]
        try:
            return [int(size) for size in value]
        except (TypeError, ValueError):
            example = "sizes like '128,64'" if name == "hidden" else "indices like '0,2'"
            raise UsageError(f"{flag(name)} takes {example}, not {value!r}.") from None
    if name == "env_kwargs":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise UsageError(f"--env-kwargs is not valid JSON ({error.msg}).") from None
        if not isinstance(value, dict):
            raise UsageError("--env-kwargs must be a JSON object such as '{\"gravity\": -9.8}'.")
        return value
    # The other fields have plain defaults (only the lists and env_kwargs have default factories).
    kind: type = type(Config.__dataclass_fields__[name].default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{flag(name)} takes true or false, not {value!r}.")
    try:
        if kind is int and isinstance(value, str):
            return int(float(value)) if "e" in value.lower() else int(value)
        return kind(value)
    except (TypeError, ValueError):
        noun = {int: "whole number", float: "number"}.get(kind, "text")
        raise UsageError(f"{flag(name)} takes a {noun}, not {value!r}.") from None


def named_attribute(name: str, what: str):
    """The attribute that 'module:attribute' names (None when the module has none), the module
    imported; UsageError in one sentence when it cannot be, `what` saying what named it
    ('environment NAME', '--policy NAME'). Users' environments and policies are loaded so."""
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(
            f"Cannot import {module_name} for {what}: {error} (is it on PYTHONPATH?)."
        ) from None
    return getattr(module, attribute, None)


def flag(name: str) -> str:
    """'--lr-decay' for the setting lr_decay: the option that sets it on the command line."""
    return "--" + name.replace("_", "-")


def option_arguments(values: dict[str, Any]) -> list[str]:
    """Settings as the command-line arguments that set them, what parse_value reads back:
    ['--hidden', '32,32', '--no-bias', '--env-kwargs', '{"gravity": -9.8}']."""
    arguments = []
    for name, value in values.items():
        if isinstance(value, bool):  # the command line spells booleans --X and --no-X
            arguments.append(flag(name) if value else "--no-" + flag(name)[2:])
        else:
            arguments += [flag(name), value_text(value)]
    return arguments


def value_text(value: Any) -> str:
    """One setting's value as the command line takes it: 32,32 for a list, JSON for a dict."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def validate(config: Config) -> Config:
    """Raise UsageError with one clear sentence for the first invalid setting."""
    for name in (
        "popsize",
        "top_directions",
        "max_speed",
        "stdev_lr",
        "total_steps",
        "population_steps",
        "popsize_max",
    ):
        if getattr(config, name) < 0:
            raise UsageError(f"{flag(name)} must be 0 or positive; got {getattr(config, name)}.")
    if config.parents < 1 or config.neighbours < 1 or config.weight_patience < 1:
        raise UsageError("--parents, --neighbours and --weight-patience must be at least 1.")
    if not 0 <= config.reward_weight <= 1 or not 0 <= config.weight_step <= 1:
        raise UsageError("--reward-weight and --weight-step must be in [0, 1].")
    if config.popsize_max and not config.population_steps:
        raise UsageError("--popsize-max bounds a growing population; give --population-steps too.")
    if config.popsize_max and config.popsize_max < config.popsize:
        raise UsageError(
            f"--popsize-max {config.popsize_max} is below --popsize {config.popsize}; a growing "
            "population starts at --popsize."
        )
    if not 0 <= config.momentum < 1 or not config.stdev_max_change > 0:
        raise UsageError("--momentum must be in [0, 1) and --stdev-max-change positive.")
    for name in ("sigma", "lr"):
        if not getattr(config, name) > 0:
            raise UsageError(f"--{name} must be positive; got {getattr(config, name)}.")
    if config.generations < 0 or not (config.generations or config.total_steps):
        raise UsageError(
            f"--generations must be at least 1, or 0 with a --total-steps budget; got "
            f"{config.generations}."
        )
    for name in ("print_every", "check_every", "eval_episodes", "member_episodes"):
        if getattr(config, name) < 1:
            raise UsageError(f"{flag(name)} must be at least 1; got {getattr(config, name)}.")
    if config.max_steps < 0:
        raise UsageError(f"--max-steps must be 0 (no cap) or positive; got {config.max_steps}.")
    for name in ("lr_decay", "sigma_decay"):
        if not 0 < getattr(config, name) <= 1:
            raise UsageError(f"{flag(name)} must be in (0, 1]; got {getattr(config, name)}.")
    if config.episode_cap < 0 or not 0 < config.cap_share <= 1 or not config.cap_raise > 1:
        raise UsageError(
            "--episode-cap must be 0 (off) or positive, --cap-share in (0, 1] and --cap-raise "
            "above 1."
        )
    if not 0 <= config.max_failed_share <= 1:
        raise UsageError(f"--max-failed-share must be in [0, 1]; got {config.max_failed_share}.")
    if config.weight_decay < 0 or config.obs_clip <= 0:
        raise UsageError("--weight-decay must be >= 0 and --obs-clip > 0.")
    if not config.hidden or min(config.hidden) < 1:
        raise UsageError(
            f"--hidden needs at least one layer of positive size; got {config.hidden}."
        )
    if config.policy not in BUILT_IN_POLICIES and ":" not in config.policy:
        raise UsageError(
            f"--policy must be one of {', '.join(BUILT_IN_POLICIES)} or 'module:Class'; got "
            f"{config.policy!r}."
        )
    for name, allowed in _CHOICES.items():
        if getattr(config, name) not in allowed:
            raise UsageError(
                f"{flag(name)} must be one of {', '.join(allowed)}; got {getattr(config, name)!r}."
            )
    for name in ("resize", "burn_in", "early_stop", "early_stop_after", "final_episodes"):
        if getattr(config, name) < 0:
            raise UsageError(f"{flag(name)} must be 0 or positive; got {getattr(config, name)}.")
    if config.frame_stack < 1:
        raise UsageError(f"--frame-stack must be at least 1; got {config.frame_stack}.")
    if not set(config.action_map.split(",")) <= set(ACTION_MAPS):
        raise UsageError(
            f"--action-map takes {', '.join(ACTION_MAPS)}, or one of them per action dimension "
            f"separated by commas; got {config.action_map!r}."
        )
    if config.noise_table_size < 1 << 16:
        raise UsageError("--noise-table-size must be at least 65536 entries.")
    return config


def from_mapping(values: dict[str, Any], base: Config | None = None) -> Config:
    """A Config from `base` (or the defaults) with `values` (TOML or CLI) applied and checked."""
    known = {f.name for f in Config.fields()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(
            f"Unknown option(s) {', '.join(unknown)}; `esmpi train --help` lists them all."
        )
    parsed = {name: parse_value(name, value) for name, value in values.items()}
    return validate((base or Config()).replace(**parsed))


def load_toml(path: str) -> dict[str, Any]:
    """The option table of a TOML config file (top level, or under a [train] table)."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"Config file {path} does not exist.") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"Config file {path} is not valid TOML ({error}).") from None
    table = document.get("train", document)
    return {key.replace("-", "_"): value for key, value in table.items()}


def to_toml(config: Config) -> str:
    return tomli_w.dumps(dataclasses.asdict(config))


# Fields added after the first checkpoints were written, with the value that reproduces a run
# stored without them (its SGD had no momentum).
ADDED_FIELDS = {"momentum": 0.0}


def from_toml(text: str) -> Config:
    """The Config stored in a checkpoint (or written by to_toml)."""
    return from_mapping({**ADDED_FIELDS, **tomllib.loads(text)})
