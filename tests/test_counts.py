"""Whole numbers a user types (token counts, budgets, integer settings): one parser, utils.parse_count,
behind every door, so each accepts the same spellings and refuses the same mistakes by name."""
import argparse
import re

import numpy as np
import pytest

from fwlab import cli
from fwlab.config import add_train_args, config_from_params, parse_int_list
from fwlab.errors import FwlabError
from fwlab.prepare import prepare
from fwlab.utils import parse_count

# (value, what the error says about it); inf and nan used to pass float() and then crash in int()
BAD = [("inf", "not a whole number"), ("nan", "not a whole number"), ("-3", "must not be negative"),
       ("1.5", "not a whole number"), ("abc", "not a number"), ("", "not a number")]


def test_parse_count_accepts_every_spelling():
    assert parse_count("3.68e9") == 3_680_000_000
    assert parse_count("100_000_000") == parse_count("1e8") == parse_count(100_000_000) == 100_000_000
    assert parse_count(" 42 ") == 42 and parse_count(200.0) == 200 and parse_count(np.int64(7)) == 7
    assert parse_count("123456789012345678901") == 123456789012345678901  # exact, not via float


@pytest.mark.parametrize("value,why", BAD + [(True, "not a number"), (float("inf"), "not a whole number"),
                                             (float("nan"), "not a whole number"), (-1, "must not be negative")])
def test_parse_count_names_the_setting_and_the_value(value, why):
    with pytest.raises(FwlabError, match="^" + re.escape(f"max_tokens: {value!r}") + f".*{why}"):
        parse_count(value, "max_tokens")


@pytest.mark.parametrize("value,why", BAD)
def test_prepare_refuses_bad_counts_by_name(tmp_path, value, why):
    for name in ("max_tokens", "val_tokens", "shard_tokens"):
        with pytest.raises(FwlabError, match=f"{name}: '{value}'.*{why}"):
            prepare(str(tmp_path / "no-source.jsonl"), tmp_path / "out", progress=False, **{name: value})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value,why", BAD[:-1])  # an empty item is skipped: "6000,,10000" is fine
def test_int_lists_refuse_bad_items_by_name(value, why):
    assert parse_int_list("6000, 1e4,,10_000", "--budgets") == [6000, 10000, 10000]
    with pytest.raises(FwlabError, match=f"--budgets: '{value}'.*{why}"):
        parse_int_list(f"6000,{value}", "--budgets")


@pytest.mark.parametrize("value,why", BAD)
def test_integer_flags_refuse_bad_values_by_name(value, why, capsys):
    p = argparse.ArgumentParser()
    add_train_args(p)
    assert p.parse_args(["--max-iters", "1e3", "--seed", "1_000"]).max_iters == 1000
    with pytest.raises(SystemExit):
        p.parse_args([f"--max-iters={value}"])
    err = capsys.readouterr().err
    assert f"argument --max-iters: '{value}'" in err and why in err


@pytest.mark.parametrize("value,why", BAD + [(float("inf"), "not a whole number"),
                                             (float("nan"), "not a whole number"), (-3, "must not be negative"),
                                             (True, "not a number")])
def test_notebook_parameters_refuse_bad_counts_by_name(value, why):
    for name in ("max_iters", "ckpt_at") if value != "" else ("max_iters",):  # ckpt_at="": none
        v = [value] if name == "ckpt_at" and not isinstance(value, str) else value
        with pytest.raises(FwlabError, match=f"{name}.*{why}"):
            config_from_params({"data_dir": "d", "run_dir": "r", name: v})


def test_a_negative_seed_is_refused_by_validate():
    from fwlab.config import TrainConfig
    with pytest.raises(FwlabError, match="seed=-1"):
        TrainConfig(data="d", out="r", seed=-1).validate()


@pytest.mark.parametrize("argv", [["prepare", "--out", "{tmp}", "--max-tokens", "nan"],
                                  ["prepare", "--out", "{tmp}", "--val-tokens", "inf"],
                                  ["sweep", "--data", "d", "--out", "{tmp}", "--budgets", "10,nan"]])
def test_the_command_line_names_the_bad_value(tmp_path, argv, capsys):
    assert cli.main([a.format(tmp=tmp_path / "out") for a in argv]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("'nan'" in err or "'inf'" in err) and "Traceback" not in err
    assert not (tmp_path / "out").exists()
