"""The `esmpi` command line: argument parsing only; the work happens in train.py and evaluate.py."""

from __future__ import annotations

import argparse
import os
import sys

import esmpi
from esmpi.config import Config, UsageError, from_mapping, load_toml

# Set by MPI launchers to the process's rank; read before MPI starts, to print errors once.
_RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")


class _Parser(argparse.ArgumentParser):
    """Argument errors become UsageError, printed once by main() instead of once per rank."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    groups = {}
    for option in Config.fields():
        group_name = "policy" if option.name in _POLICY_OPTIONS else "training"
        group = groups.get(group_name) or parser.add_argument_group(f"{group_name} options")
        groups[group_name] = group
        default = option.default_factory() if callable(option.default_factory) else option.default
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        if isinstance(default, dict):
            shown = "{}"
        help_text = f"{option.metadata['help']} (default: {shown!s})"
        # The old program's flag names (--environment, --print_every, --decay) follow ours.
        names = [_flag(option.name), *option.metadata["aliases"]]
        if isinstance(default, bool):
            group.add_argument(
                *names,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            metavar = option.name.upper()
            group.add_argument(*names, default=argparse.SUPPRESS, help=help_text, metavar=metavar)


_POLICY_OPTIONS = {"hidden", "activation", "bias", "action_map", "obs_norm", "obs_clip"}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="esmpi",
        description="Train policies with OpenAI Evolution Strategies across MPI ranks.",
    )
    parser.add_argument("--version", action="version", version=f"esmpi {esmpi.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser(
        "train",
        help="train a policy (under mpiexec/srun, or with --threads N)",
        description="Train a policy. Run under `mpiexec -n N` or `srun`, or give --threads N. "
        "Options come from the defaults, then --config FILE, then the command line.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument("--config", metavar="FILE", help="TOML file holding any of the options")
    train.add_argument(
        "--resume",
        metavar="PATH",
        help="continue the run in this checkpoint or run folder; 'auto' continues the run folder "
        "that --folder and --run-name name when it holds a checkpoint and starts it otherwise",
    )
    train.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="ranks to run; without an MPI launcher esmpi starts N ranks itself with mpiexec, "
        "under one it must equal the number of ranks",
    )
    _add_config_options(train)

    evaluate = commands.add_parser(
        "eval",
        help="run a trained policy and print its returns",
        description="Run the policy of a checkpoint for a number of episodes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    evaluate.add_argument("path", nargs="?", help="checkpoint file or run folder")
    evaluate.add_argument("--path_weights", "--path-weights", help="the old spelling of PATH")
    evaluate.add_argument(
        "--environment",
        "--env",
        help="environment id to run the policy in instead of the run's own",
    )
    evaluate.add_argument("--episodes", type=int, default=10, help="episodes to run")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the episode seeds")
    evaluate.add_argument("--best", action="store_true", help="use best/theta, not theta")
    evaluate.add_argument("--render", action="store_true", help="show the episodes in a window")
    return parser


def _explicit_config(args: argparse.Namespace) -> dict:
    return {
        option.name: getattr(args, option.name)
        for option in Config.fields()
        if hasattr(args, option.name)
    }


def run_train(args: argparse.Namespace, argv: list[str]) -> int:
    from esmpi import parallel

    if not parallel.launched_by_mpi() and args.threads and args.threads > 1:
        parallel.relaunch(parallel.mpiexec_command(args.threads, argv))
    values = load_toml(args.config) if args.config else {}
    values.update(_explicit_config(args))
    config = from_mapping(values)
    comm = parallel.world()
    parallel.abort_on_uncaught_exception(comm)
    if args.threads is not None and args.threads != comm.Get_size():
        raise UsageError(
            f"--threads {args.threads} does not match the {comm.Get_size()} rank(s) the MPI "
            "launcher started; drop --threads or make them equal."
        )
    from esmpi.train import train

    train(config, comm, resume=args.resume, explicit=frozenset(values))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from esmpi.evaluate import evaluate

    path = args.path or args.path_weights
    if not path:
        raise UsageError("esmpi eval needs a checkpoint: `esmpi eval PATH` or --path_weights PATH.")
    if args.episodes < 1:
        raise UsageError(f"--episodes must be at least 1; got {args.episodes}.")
    returns = evaluate(path, args.episodes, args.seed, args.environment, args.best, args.render)
    print(
        f"esmpi: {len(returns)} episode(s): return mean {returns.mean():.2f} "
        f"std {returns.std():.2f} min {returns.min():.2f} max {returns.max():.2f}"
    )
    return 0


def _launcher_rank() -> int:
    for name in _RANK_VARIABLES:
        if name in os.environ:
            return int(os.environ[name])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        if args.command == "train":
            return run_train(args, argv)
        return run_eval(args)
    except UsageError as error:
        if _launcher_rank() == 0:
            print(f"esmpi: error: {error}", file=sys.stderr, flush=True)
        return 2
