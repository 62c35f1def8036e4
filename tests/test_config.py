"""Config: defaults, TOML round trip, command-line parsing with the old flag names, validation."""

import re

import pytest

from esmpi import cli
from esmpi.config import (
    Config,
    UsageError,
    from_mapping,
    from_toml,
    load_toml,
    option_arguments,
    to_toml,
)


def parse_train(*argv):
    args = cli.build_parser().parse_args(["train", *argv])
    return cli._explicit_config(args)


def test_toml_round_trip_keeps_every_field():
    config = Config(env="Pendulum-v1", hidden=[32, 16], env_kwargs={"g": 9.81}, bias=True, seed=7)
    assert from_toml(to_toml(config)) == config


def test_option_arguments_are_a_command_line_that_sets_the_values():
    """Suites, `esmpi envs` and --help write settings as option_arguments does; the parser reads
    back every kind: numbers, lists, JSON objects and both spellings of a boolean."""
    values = dict(
        env="Pendulum-v1", hidden=[32, 16], env_kwargs={"g": 9.81, "mode": "a b"}, bias=True,
        obs_norm=False, sigma=0.025, popsize=40, total_steps=2_000_000,
    )  # fmt: skip
    arguments = option_arguments(values)
    assert arguments[arguments.index("--hidden") + 1] == "32,16"
    assert "--bias" in arguments and "--no-obs-norm" in arguments
    assert from_mapping(parse_train(*arguments)) == from_mapping(values)


def test_old_program_flags_are_aliases():
    values = parse_train(
        "--environment",
        "Hopper-v5",
        "--popsize",
        "32",
        "--print_every",
        "5",
        "--lr",
        "0.1",
        "--decay",
        "0.99",
        "--sigma",
        "0.2",
        "--generations",
        "7",
        "--folder",
        "out",
    )
    config = from_mapping(values)
    assert (config.env, config.popsize, config.print_every, config.lr) == ("Hopper-v5", 32, 5, 0.1)
    assert (config.lr_decay, config.sigma, config.generations, config.folder) == (
        0.99,
        0.2,
        7,
        "out",
    )


def test_command_line_overrides_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('env = "Pendulum-v1"\npopsize = 8\nhidden = [16]\nobs_norm = false\n')
    values = load_toml(str(path))
    values.update(parse_train("--popsize", "12", "--hidden", "8,4"))
    config = from_mapping(values)
    assert (config.env, config.popsize, config.hidden, config.obs_norm) == (
        "Pendulum-v1",
        12,
        [8, 4],
        False,
    )


def test_boolean_flags_have_negations():
    assert parse_train("--no-obs-norm", "--bias") == {"obs_norm": False, "bias": True}


def test_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in Config.fields():
        assert "--" + option.name.replace("_", "-") in text
    assert "(default: CartPole-v1)" in text and "(default: 128,64)" in text
    assert "--resume" in text and "--threads" in text and "--config" in text


@pytest.mark.parametrize(
    "values, message",
    [
        ({"popsize": -2}, "--popsize must be 0 or positive"),
        ({"optimizer": "rmsprop"}, "--optimizer must be one of adam, sgd, clipup"),
        ({"momentum": 1.0}, "--momentum must be in [0, 1)"),
        ({"sigma": 0}, "--sigma must be positive"),
        ({"lr": -1}, "--lr must be positive"),
        ({"hidden": "a,b"}, "--hidden takes sizes"),
        ({"env_kwargs": "{nope"}, "--env-kwargs is not valid JSON"),
        ({"colour": "red"}, "Unknown option(s) colour"),
        ({"popsize": "many"}, "--popsize takes a whole number"),
        ({"member_episodes": 0}, "--member-episodes must be at least 1; got 0"),
    ],
)
def test_invalid_settings_are_one_clear_sentence(values, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        from_mapping(values)


def test_bad_toml_is_reported(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("popsize = = 3")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_toml(str(path))
