"""`fwlab --help` and every subcommand's: a description of fwlab, every option described, with its
choices and default."""
import argparse
import dataclasses
import subprocess
import sys

import pytest

from fwlab import cli
from fwlab.config import FIELD_HELP, TrainConfig


def all_parsers() -> dict:
    parser = cli.build_parser()
    return {"fwlab": parser} | cli.subparsers(parser)


def test_every_subcommand_is_reached():
    names = set(all_parsers())
    assert {"fwlab train", "fwlab sweep", "fwlab plan", "fwlab sample", "fwlab export",
            "fwlab eval hellaswag", "fwlab import", "fwlab demo", "fwlab report",
            "fwlab check-claims", "fwlab prepare"} <= names


@pytest.mark.parametrize("name", sorted(all_parsers()))
def test_every_option_of_every_command_has_a_help(name):
    p = all_parsers()[name]
    text = p.format_help()  # formats every %(default)s: a stray % would raise here
    assert p.description, f"{name}: no description"
    for a in p._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            continue
        label = "/".join(a.option_strings) or a.dest
        assert a.help and a.help.strip() and not a.help.startswith("default:"), \
            f"{name} {label}: no help"
        if a.choices and not isinstance(a, argparse._SubParsersAction):
            assert "{" + ",".join(map(str, a.choices)) + "}" in text, f"{name} {label}: choices"


def test_every_training_setting_is_described():
    assert set(FIELD_HELP) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(v.strip() for v in FIELD_HELP.values())


def test_train_help_shows_choices_and_defaults():
    text = " ".join(all_parsers()["fwlab train"].format_help().split())  # unwrapped
    for shown in ("--preset {tiny,mini,40m,124m}", "--schedule {cosine,wsd,constant}",
                  "--cooldown-shape {linear,1-sqrt}", "--device {auto,cpu,cuda,mps}",
                  "(default: 40m)", "(default: 6000)", "(default: 524,288)", "(default: cosine)",
                  "unset = 5% of max_iters", "unset = max_iters/24, between 1 and 250",
                  "tensorboard, wandb"):
        assert shown in text, shown
    plan = " ".join(all_parsers()["fwlab plan"].format_help().split())
    assert "--budgets BUDGETS comma-separated iteration budgets to plan, e.g. 6000,10000 (default: " \
           "the --from sweep's own budgets, else 6000,10000,15000,20000)" in plan


def test_fwlab_help_describes_fwlab_first(repo_root):
    r = subprocess.run([sys.executable, "-m", "fwlab.cli", "--help"], capture_output=True,
                       text=True, cwd=repo_root, timeout=60)
    assert r.returncode == 0
    body = r.stdout.split("\n\n", 1)[1]  # after the usage lines
    assert body.startswith('fwlab answers "how many iterations should I train a small GPT')
    assert "typical session:" in body and "fwlab demo" in body
