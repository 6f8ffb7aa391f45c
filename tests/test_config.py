import glob
import os
import subprocess
import sys

import pytest
from absl import flags

from kcaptcha.config import Config
from kcaptcha.flags import config_from_flags, define_flags, parse_flagfile
from kcaptcha.reading.vocab import Vocab


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "experiments",
                                                               "*.flags"))))
def test_every_flagfile_parses_into_a_valid_config(path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    config = parse_flagfile(os.path.relpath(path, repo_root))
    assert config.name
    assert config == config.validate()


def test_digits_and_alnum_flagfiles_hold_their_documented_tasks(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    digits = parse_flagfile("experiments/digits.flags")
    alnum = parse_flagfile("experiments/alnum.flags")
    assert (digits.charset, digits.min_length, digits.max_length, digits.width, digits.height) == (
        "0123456789", 4, 4, 100, 60)
    assert (alnum.charset, alnum.min_length, alnum.max_length, alnum.width, alnum.height) == (
        "0123456789abcdefghijklmnopqrstuvwxyz", 4, 6, 160, 60)
    assert alnum.style == "varied" and digits.architecture == alnum.architecture == "ctc"


def test_every_config_field_has_a_flag_of_the_same_name():
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["prog"])
    assert config_from_flags(flag_values) == Config()


def test_flags_override_and_tuples_parse():
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["prog", "--conv_filters=8,16,32", "--min_length=3", "--max_length=6", "--fonts="])
    config = config_from_flags(flag_values)
    assert config.conv_filters == (8, 16, 32) and config.fonts == () and not config.fixed_length


def test_json_and_flagfile_round_trips(tmp_path):
    config = Config(name="x", charset="abc", min_length=2, max_length=3, conv_filters=(4, 8))
    assert Config.from_json(config.to_json()) == config
    path = tmp_path / "x.flags"
    path.write_text(config.to_flagfile())
    assert parse_flagfile(str(path)) == config


@pytest.mark.parametrize("changes, message", [
    ({"charset": "aab"}, "repeated characters"),
    ({"charset": ""}, "charset must not be empty"),
    ({"min_length": 5, "max_length": 4}, "max_length must be >= min_length"),
    ({"width": 4}, "width must be between"),
    ({"architecture": "resnet"}, "architecture must be one of"),
    ({"label_from": "(?P<lbl>.*)"}, "group named 'label'"),
    ({"data_workers": -1}, "data_workers must be >= 0"),
    ({"dropout_rate": 1.5}, "dropout_rate must be in"),
    ({"extra_blocks": 5}, "extra_blocks must be between 0 and 4"),
    ({"extra_blocks": 1, "architecture": "heads"}, "extra_blocks applies to the ctc architecture only"),
    ({"train_dir": "/no/such/folder"}, "train_dir is not a folder"),
    ({"fonts": ("/no/font.ttf",)}, "font file not found"),
])
def test_validate_names_the_field_and_the_value(changes, message):
    with pytest.raises(ValueError, match=message):
        Config(**changes).validate()


@pytest.mark.parametrize("lines, message", [
    ("--name=x\n--not_a_flag=3\n", "not_a_flag"),  # an unknown flag
    ("--charset=aa\n", "repeated characters"),  # a value that fails validation
])
def test_a_bad_flagfile_exits_2_with_the_reason_alone(tmp_path, repo_root, lines, message):
    flagfile = tmp_path / "bad.flags"
    flagfile.write_text(lines)
    result = subprocess.run([sys.executable, os.path.join(repo_root, "bin", "train"), f"--flagfile={flagfile}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) <= 3, result.stderr  # no help text
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["train", "tune", "generate", "prepare", "predict", "evaluate", "export", "serve",
                                     "collect"])
def test_every_command_answers_help_with_0_and_an_unknown_flag_with_2(repo_root, command):
    run = [sys.executable, os.path.join(repo_root, "bin", command)]
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and f"bin/{command}" in helped.stdout
    wrong = subprocess.run([*run, "--no_such_flag=1"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "no_such_flag" in wrong.stderr, wrong.stderr


def test_field_groups_are_declared_once_and_cover_every_field():
    groups = {group: set(Config.field_names(group)) for group in ("task", "model", "training", "run")}
    assert set().union(*groups.values()) == set(Config.field_names())
    assert sum(len(names) for names in groups.values()) == len(Config.field_names())
    assert groups["task"] == {"charset", "min_length", "max_length", "width", "height", "colour", "gif_frames"}
    assert {"name", "data_workers", "checkpoint_every_steps", "jit_compile"} == groups["run"]
    with pytest.raises(ValueError, match="groups must be among"):
        Config.field_names("nonsense")


def test_vocab_round_trip_fixed_and_variable_length():
    fixed = Vocab("0123456789", 4, 4)
    assert fixed.blank_id is None and fixed.num_classes == 10
    assert fixed.decode(fixed.encode("0429")) == "0429"
    variable = Vocab("abc", 2, 4)
    assert variable.num_classes == 4
    assert list(variable.encode("ab")) == [0, 1, 3, 3]
    assert variable.decode(variable.encode("cab")) == "cab"
    assert "not in the charset" in variable.check("abz")
    assert "length 1" in variable.check("a")
    with pytest.raises(ValueError, match="'A'"):
        variable.encode("Ab")
