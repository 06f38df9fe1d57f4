"""Every ``--seed`` flag takes [0, 2**32 - 1] (numpy's range) and refuses more up front, naming itself."""

from __future__ import annotations

import argparse

import pytest
from tests.helpers.cli import run_sepconv

from sepconv.cli.main import build_parser

MAX_SEED = 2**32 - 1


def _seed_actions() -> dict[str, argparse.Action]:
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    found = {}
    for name, subparser in commands.choices.items():
        for action in subparser._actions:
            if "--seed" in action.option_strings:
                found[name] = action
    return found


def test_every_command_with_a_seed_uses_the_same_range():
    actions = _seed_actions()
    # The commands that draw random numbers; a new one must be listed here (and use the same type).
    # train's flags are derived from TrainConfig, whose validate() checks the same range (below).
    assert sorted(actions) == ["animate", "demo", "evaluate", "export", "optimize", "train"]
    del actions["train"]
    for name, action in actions.items():
        assert action.type(str(MAX_SEED)) == MAX_SEED, name
        assert action.type("0") == 0, name
        for bad in (str(MAX_SEED + 1), str(2**64), "-1"):
            with pytest.raises(argparse.ArgumentTypeError) as refused:
                action.type(bad)
            assert str(refused.value) == f"must be an integer in [0, {MAX_SEED:,}], got {bad!r}", name


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "model.safetensors", "--seed", str(2**70)],
        ["export", "standard_cnn", "--onnx", "x.onnx", "--seed", str(2**70)],
        ["animate", "--seed", str(2**70)],
        ["demo", "--seed", str(2**70)],
        ["optimize", "standard_cnn", "--speedup", "2", "--out", "o", "--seed", str(2**70)],
        ["train", "--seed", str(2**70)],
    ],
    ids=lambda args: args[0],
)
def test_a_huge_seed_is_one_line_naming_the_flag_before_any_work(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_sepconv(args, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    if args[0] == "train":
        assert err == f"sepconv train: error: --seed must be an integer in [0, {MAX_SEED:,}], got {2**70}\n"
    else:
        assert f"argument --seed: must be an integer in [0, {MAX_SEED:,}], got '{2**70}'" in err
    assert list(tmp_path.iterdir()) == []  # nothing written, no run folder claimed
