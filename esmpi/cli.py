"""The `esmpi` command line: argument parsing only; the work happens in train.py and evaluate.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

import esmpi
from esmpi.config import Config, UsageError, flag, load_toml, value_text

# Set by MPI launchers to the process's rank; read before MPI starts, to print errors once.
_RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")


class _Parser(argparse.ArgumentParser):
    """Argument errors become UsageError, printed once by main() instead of once per rank."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in Config.fields():
        group_name = "policy" if option.name in _POLICY_OPTIONS else "training"
        group = groups.get(group_name) or parser.add_argument_group(f"{group_name} options")
        groups[group_name] = group
        default = option.default_factory() if callable(option.default_factory) else option.default
        shown = value_text(default)
        help_text = f"{option.metadata['help']} (default: {shown})"
        # The old program's flag names (--environment, --print_every, --decay) follow ours.
        names = [flag(option.name), *option.metadata["aliases"]]
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


_POLICY_OPTIONS = {
    "policy",
    "hidden",
    "activation",
    "plastic_norm",
    "bias",
    "action_map",
    "obs_norm",
    "obs_clip",
    "obs_keep",
    "grayscale",
    "resize",
    "frame_stack",
    "scale_obs",
    "atari",
    "end_on_life_loss",
}


class _DefaultsAndEpilog(
    argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter
):
    """Defaults after each option's help; the epilog's lines kept as written."""


def _strategy_defaults() -> str:
    """The --help epilog: each strategy's options and the defaults it sets."""
    from esmpi import strategies
    from esmpi.presets import describe

    lines = ["strategies (--strategy), the options each reads and the defaults each sets:"]
    for name, strategy in strategies.REGISTRY.items():
        options = " ".join(flag(option) for option in strategy.OPTIONS)
        lines.append(f"  {name:<11} reads {options or 'no option of its own'}")
        lines.append(f"  {'':<11} sets  {describe(strategy.DEFAULTS) or 'nothing: the defaults'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="esmpi",
        description="Train policies with Evolution Strategies (OpenAI-ES, PGPE, SNES, ARS, "
        "sep-CMA-ES) across MPI ranks.",
    )
    parser.add_argument("--version", action="version", version=f"esmpi {esmpi.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser(
        "train",
        help="train a policy (under mpiexec/srun, or with --threads N)",
        description="Train a policy. Run under `mpiexec -n N` or `srun`, or give --threads N. "
        "Options come from the defaults (shown below: OpenAI-ES's), then the strategy's own "
        "defaults (listed at the end), then the environment's preset (`esmpi envs`), then "
        "--config FILE, then the command line.",
        epilog=_strategy_defaults(),
        formatter_class=_DefaultsAndEpilog,
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
    evaluate.add_argument(
        "--episode-seed",
        type=int,
        help="run one episode with exactly this reset seed (replaying a training episode)",
    )
    evaluate.add_argument(
        "--member",
        type=int,
        metavar="OFFSET",
        help="run the population member with this noise offset in the generation after the "
        "checkpoint's (as a run stopped for failed episodes names it), not theta",
    )
    evaluate.add_argument(
        "--sign", type=int, default=1, choices=(1, -1), help="the --member's sign: 1 or -1"
    )
    evaluate.add_argument("--render", action="store_true", help="show the episodes in a window")
    _add_eval_extras(evaluate)
    _add_results_commands(commands)
    _add_suite_command(commands)
    _add_bench_command(commands)
    commands.add_parser(
        "envs",
        help="list the per-environment presets and what each sets",
        description="List the presets that `esmpi train` applies by environment id (CarRacing, "
        "PyBullet locomotion, Atari), what each sets and why; any option given overrides them.",
    )
    return parser


def _add_suite_command(commands) -> None:
    suite = commands.add_parser(
        "suite",
        help="run a results suite (a TOML list of runs) and make its table and figure",
        description="A results suite is a TOML file of runs: environment, strategies, options, "
        "seeds and step budget (its format: the docstring of esmpi/suite.py, and the README). "
        "`run` trains what is neither finished nor in the suite's record, here one run after "
        "another or as a Slurm array; `table` adds the finished runs to the record "
        "(SUITE.results.jsonl beside the TOML file), prints the markdown table of final "
        "evaluations and draws the learning curves, both from the record.",
    )
    actions = suite.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run", help="train every run of the suite neither finished nor recorded"
    )
    run.add_argument("file", help="the suite's TOML file")
    run.add_argument("--threads", type=int, help="ranks per run (default: the file's threads)")
    run.add_argument("--envs", nargs="+", metavar="ID", help="run only these environments' rows")
    run.add_argument(
        "--slurm",
        nargs=argparse.REMAINDER,
        metavar="SBATCH_OPTION",
        help="submit the unfinished runs as a job array of jobs/sweep.sbatch instead; options "
        "after --slurm go to sbatch (e.g. --slurm --time=08:00:00 --partition=cpu)",
    )
    table = actions.add_parser(
        "table", help="record the finished runs; the markdown table (and figure) of the record"
    )
    table.add_argument("file", help="the suite's TOML file")
    table.add_argument("-o", "--output", help="write the table to this file instead of stdout")
    table.add_argument("--figure", help="learning curves over env steps to this .png/.svg/.pdf")


def run_suite(args: argparse.Namespace) -> int:
    from esmpi import suite

    loaded = suite.load(args.file)
    if args.action == "run" and args.envs:
        loaded = suite.only(loaded, args.envs)
    if args.action == "run" and args.slurm is not None:
        jobs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jobs")
        print(f"esmpi suite: {suite.submit(loaded, args.slurm, jobs)}")
    elif args.action == "run":
        ran = suite.run_here(loaded, args.threads)
        print(f"esmpi suite: {ran} run(s) trained; `esmpi suite table {args.file}` shows them")
    else:
        record = suite.update_record(loaded)
        text = suite.markdown_table(loaded, record)
        if args.output:
            with open(args.output, "w") as handle:
                handle.write(text + "\n")
        else:
            print(text)
        if args.figure:
            suite.figure(loaded, record, args.figure)
    return 0


def _add_bench_command(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure env-steps/s against a bare env.step loop (make bench)",
        description="Measure training throughput against single-core loops of env.step with and "
        "without the policy, the policy forward, the split of a generation, strong scaling, "
        "noise-table memory and a model of larger runs. Prints a table and writes JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from esmpi.bench import DEFAULT_ENVS

    bench.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS), help="environment ids")
    bench.add_argument("--ranks", type=int, default=2, help="ranks of the training runs")
    bench.add_argument("--popsize", type=int, default=64, help="population of the training runs")
    bench.add_argument(
        "--train-seconds",
        type=float,
        default=2.0,
        help="about how long each block of training generations lasts (its generations are "
        "estimated from the bare loop; at least 1)",
    )
    bench.add_argument(
        "--loop-seconds",
        type=float,
        default=1.0,
        help="duration of each loop of env.step (with and without the policy)",
    )
    bench.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="blocks of training generations per environment, each between two measurements of "
        "the loops (the median is reported), and 2-rank/1-rank pairs of strong-scaling blocks",
    )
    bench.add_argument(
        "--max-steps", type=int, default=250, help="episode cap in the loops and training runs"
    )
    bench.add_argument(
        "--big-popsize",
        type=int,
        default=256,
        help="population of the HalfCheetah run that measures update and collective overhead",
    )
    bench.add_argument("--json", default="bench.json", metavar="FILE", help="JSON report file")


def run_bench(args: argparse.Namespace) -> int:
    import json

    from esmpi import bench

    if args.popsize < 2 or args.popsize % 2 or min(args.ranks, args.repeats) < 1:
        raise UsageError("esmpi bench needs an even --popsize >= 2 and positive --ranks/--repeats.")
    if args.train_seconds <= 0 or args.loop_seconds <= 0:
        raise UsageError("esmpi bench needs positive --train-seconds and --loop-seconds.")
    report = bench.run(
        args.envs,
        args.ranks,
        args.popsize,
        args.train_seconds,
        args.loop_seconds,
        args.max_steps,
        args.big_popsize,
        args.repeats,
    )
    with open(args.json, "w") as handle:
        json.dump(report, handle, indent=2)
    print(bench.table(report))
    print(f"\n(written to {args.json})")
    return 0


def _add_eval_extras(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument(
        "--video",
        metavar="FILE",
        help="record the episodes offscreen to FILE (.mp4 or .gif); no display needed",
    )
    evaluate.add_argument(
        "--json", action="store_true", help="print the returns and lengths as JSON"
    )


def _add_results_commands(commands) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="summarise runs: returns, steps, speed, versions",
        description="Summarise checkpoints (files, run folders or folders of run folders): one "
        "line per run, best final evaluation return first.",
    )
    inspect.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint or folder")
    inspect.add_argument(
        "--history", action="store_true", help="also print each run's per-generation table"
    )
    output = inspect.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="CSV for scripts")
    output.add_argument("--json", action="store_true", help="JSON for scripts")

    plot = commands.add_parser(
        "plot",
        help="plot learning curves (mean and range over seeds)",
        description="Plot return against generation, steps or wall time: one panel per "
        "environment, one colour per configuration, the mean over seeds with a band from the "
        "lowest to the highest seed; evaluation return solid, population mean dashed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    plot.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint or folder")
    plot.add_argument("-o", "--output", default="curves.png", help="plot file: .png, .svg or .pdf")
    plot.add_argument(
        "--x", default="generation", choices=("generation", "timesteps", "wall"), help="x axis"
    )
    plot.add_argument("--dpi", type=int, default=100, help="resolution of a PNG")
    plot.add_argument(
        "--behaviours",
        action="store_true",
        help="plot where the episodes ended instead (runs trained with --behaviour): the "
        "evaluation episodes' BCs, best/theta's final evaluation, and the maze of a maze_map; "
        "prints in how many seeds best/theta reached the goal",
    )

    export = commands.add_parser(
        "export",
        help="write a policy as a numpy .npz (runs without esmpi, see README)",
        description="Write the layer weights, biases, activation, action mapping and observation "
        "normalisation (MLP, linear, recurrent), the plasticity rule (Hebbian), or scaling and "
        "convolutions (CNN) of a checkpoint's policy to a .npz file; for a user class, its "
        "parameters.",
    )
    export.add_argument("path", help="checkpoint file or run folder")
    export.add_argument("-o", "--output", default="policy.npz", help="the .npz file to write")
    export.add_argument("--best", action="store_true", help="export best/theta, not theta")


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
    from esmpi import presets

    values = load_toml(args.config) if args.config else {}
    values.update(_explicit_config(args))
    config, notes = presets.resolve(values)
    if _launcher_rank() == 0 and not args.resume:
        for note in notes:
            print(f"esmpi: {note}", file=sys.stderr, flush=True)
    comm = parallel.world()
    parallel.abort_on_uncaught_exception(comm)
    if args.threads is not None and args.threads != comm.Get_size():
        raise UsageError(
            f"--threads {args.threads} does not match the {comm.Get_size()} rank(s) the MPI "
            "launcher started; drop --threads or make them equal."
        )
    from esmpi.train import EXIT_EPISODES_FAILED, EXIT_STOPPED, EpisodesFailed, StoppedEarly, train

    try:
        train(config, comm, resume=args.resume, explicit=frozenset(values))
    except StoppedEarly:  # a stop signal; the checkpoint is written and rank 0 said so
        return EXIT_STOPPED
    except EpisodesFailed:  # likewise, for too many failed episodes
        return EXIT_EPISODES_FAILED
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from esmpi.evaluate import evaluate

    path = args.path or args.path_weights
    if not path:
        raise UsageError("esmpi eval needs a checkpoint: `esmpi eval PATH` or --path_weights PATH.")
    if args.episodes < 1:
        raise UsageError(f"--episodes must be at least 1; got {args.episodes}.")
    from esmpi.rollout import EpisodeFailed

    try:
        result = evaluate(
            path,
            args.episodes,
            args.seed,
            args.environment,
            args.best,
            args.render,
            video=args.video,
            progress=not args.json,
            member=None if args.member is None else (args.member, args.sign),
            episode_seed=args.episode_seed,
        )
    except EpisodeFailed as failed:
        if failed.__cause__ is not None and failed.kind == "raised":  # the environment's error
            traceback.print_exception(failed.__cause__, file=sys.stderr)
        print(f"esmpi: the episode failed: {failed}", file=sys.stderr)
        return 1
    returns = result.returns
    if args.json:
        print(json.dumps(_evaluation_record(args, path, result), indent=2))
        return 0
    print(
        f"esmpi: {len(returns)} episode(s): return mean {returns.mean():.2f} "
        f"std {returns.std():.2f} min {returns.min():.2f} max {returns.max():.2f}, "
        f"{result.lengths.mean():.0f} steps per episode"
    )
    if args.video:
        print(f"esmpi: video of {result.frames} frames in {args.video}")
    return 0


def _evaluation_record(args: argparse.Namespace, path: str, result) -> dict:
    returns = result.returns
    return {
        "path": path,
        "parameters": "best/theta" if args.best else "theta",
        "environment": args.environment,
        "seed": args.seed,
        "episodes": len(returns),
        "returns": returns.tolist(),
        "lengths": result.lengths.tolist(),
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "min": float(returns.min()),
        "max": float(returns.max()),
        "video": args.video,
        "video_frames": result.frames,
    }


def run_inspect(args: argparse.Namespace) -> int:
    from esmpi import results

    summaries = results.summarise_all(args.paths)
    if args.json:
        print(results.summaries_json(summaries, args.history))
    elif args.csv:
        print(
            results.histories_csv(summaries) if args.history else results.summaries_csv(summaries)
        )
    else:
        print(results.summary_table(summaries))
        for summary in summaries if args.history else ():
            print(f"\n{results.history_table(summary)}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from esmpi import plotting, results

    if args.behaviours:
        runs = results.behaviour_runs(args.paths)
        plotting.save(plotting.behaviour_map(runs), args.output, args.dpi)
        print(f"esmpi: where the episodes of {len(runs)} run(s) ended, in {args.output}")
        summary = results.goal_summary(runs)
        if summary:
            print(summary)
        return 0
    summaries = results.summarise_all(args.paths)
    plotting.save(plotting.learning_curves(summaries, args.x), args.output, args.dpi)
    print(f"esmpi: {len(summaries)} run(s) plotted in {args.output}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from esmpi.export import export

    arrays = export(args.path, args.output, args.best)
    if "n_layers" in arrays:
        layers = int(arrays["n_layers"])
        shape = f"{layers} layers, {arrays['activation']} hidden" if layers > 1 else "one layer"
        what = f"{shape}, {arrays['output']} output"
    else:  # a user class: its parameters only
        what = f"{arrays['theta'].size} parameters (its class runs them)"
    print(f"esmpi: {arrays['env_id']} {arrays['kind']} policy, {what}, written to {args.output}")
    return 0


def run_envs(args: argparse.Namespace) -> int:
    from esmpi import presets

    print(presets.table())
    return 0


_RESULTS_COMMANDS = {
    "inspect": run_inspect,
    "plot": run_plot,
    "export": run_export,
    "envs": run_envs,
    "suite": run_suite,
}


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
        if args.command == "bench":
            return run_bench(args)
        if args.command in _RESULTS_COMMANDS:
            return _RESULTS_COMMANDS[args.command](args)
        return run_eval(args)
    except UsageError as error:
        if _launcher_rank() == 0:
            print(f"esmpi: error: {error}", file=sys.stderr, flush=True)
        return 2
