"""``raftdb.cli``: every config key's flag and ``--help`` line come from the key's field."""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

import raftdb.cli.serve
from raftdb.cli import build_parser
from raftdb.config import KEYS, ConfigKey, NodeConfig, config_keys

COMMANDS = ("serve", "config")


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    sub: argparse.ArgumentParser = commands.choices[command]
    return sub


def _actions(command: str) -> dict[str, argparse.Action]:
    return {action.dest: action for action in _subparser(command)._actions}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_key_has_a_flag_with_help(command: str) -> None:
    actions = _actions(command)
    for key in config_keys():
        action = actions[key.name]
        assert key.flag in action.option_strings
        if key.is_bool:
            assert action.option_strings == [key.flag, "--no-" + key.flag[2:]]
        assert key.help.strip(), key.name
        assert action.help is not None
        assert action.help.startswith(key.help), key.name
        assert action.help.endswith(f"[{key.env}]"), key.name


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_each_fields_default(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping within a help text
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    # "  --flag ARG  help", or "  --long-flag ARG" and the help on the next line.
    entries = re.split(r"\n(?=  -)", capsys.readouterr().out)
    lines = {entry.split()[0].rstrip(","): " ".join(entry.split()) for entry in entries}
    # Computed here from the dataclass, apart from config_keys().
    for spec in fields(NodeConfig):
        line = lines[f"--{spec.name.replace('_', '-')}"]
        help_text = spec.metadata["help"]
        assert help_text in line
        if spec.default is MISSING or spec.metadata["required"]:
            assert "(required)" in line
        elif spec.metadata["shown"]:
            assert f"(default: {spec.metadata['shown']})" in line
        elif isinstance(spec.default, bool):
            assert f"(default: {'on' if spec.default else 'off'})" in line
        elif isinstance(spec.default, float):
            assert f"(default: {spec.default:g})" in line
        else:
            assert f"(default: {spec.default})" in line


def test_cli_hard_codes_no_config_default() -> None:
    source = Path(raftdb.cli.serve.__file__).read_text()
    for key in config_keys():
        if isinstance(key.default, int) and not isinstance(key.default, bool) and key.default >= 10:
            for text in {str(key.default), f"{key.default:_}"}:
                assert not re.search(rf"\b{text}\b", source), (key.name, text)
    assert "_HELP" not in source


@pytest.mark.parametrize(
    "key", [key for key in config_keys() if key.is_bool], ids=lambda key: key.name
)
def test_bool_flags_come_in_pairs(key: ConfigKey) -> None:
    parser = build_parser()
    assert getattr(parser.parse_args(["config", key.flag]), key.name) is True
    assert getattr(parser.parse_args(["config", "--no-" + key.flag[2:]]), key.name) is False
    assert getattr(parser.parse_args(["config"]), key.name) is None


def test_other_flags_stay_text_for_load_config() -> None:
    # load_config parses them by the field's type, naming the flag in its error.
    args = build_parser().parse_args(["config", "--tick-ms", "50", "--request-timeout-s", "x"])
    assert args.tick_ms == "50"
    assert args.request_timeout_s == "x"
    unset = build_parser().parse_args(["serve"])
    assert all(getattr(unset, key) is None for key in KEYS)
