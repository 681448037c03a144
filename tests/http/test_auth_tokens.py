"""The tokens file: what a bad one says, and what the node says at start about its API."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from raftdb.app import RaftdbApp, app_from_environment
from raftdb.cli import main
from raftdb.config import ConfigError, NodeConfig
from raftdb.http.tokens import Role, hash_token, load_tokens, match_token
from tests.http.conftest import CLUSTER
from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient

GOOD = f'[[token]]\nname = "bot"\nsha256 = "{hash_token("secret-1")}"\nrole = "write"\n'
DIGEST = hash_token("secret-2")


def test_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    extra = f'[[token]]\nname = "ro"\nsha256 = "{DIGEST.upper()}"\nrole = "read"\n'
    path.write_text(GOOD + extra + 'prefixes = ["app/", "é/"]\n')
    bot, ro = load_tokens(path)
    assert (bot.name, bot.role, bot.prefixes) == ("bot", Role.WRITE, None)
    assert (ro.role, ro.prefixes) == (Role.READ, (b"app/", "é/".encode()))
    assert match_token((bot, ro), b"secret-2") is ro
    assert match_token((bot, ro), b"secret-3") is None


@pytest.mark.parametrize(
    ("text", "where", "why"),
    [
        ("not toml [", "", "not valid TOML"),
        ("", "", "no [[token]]"),
        ("[token]\nname = 'x'\n", "", "no [[token]]"),
        ("other = 1\n", "", "unknown key 'other'"),
        ('[[token]]\nname = "a"\nrole = "read"\n', "#1 ('a')", "'sha256'"),
        (f'[[token]]\nsha256 = "{DIGEST}"\nrole = "read"\n', "#1", "'name'"),
        (f'[[token]]\nname = ""\nsha256 = "{DIGEST}"\nrole = "read"\n', "#1", "'name'"),
        (f'[[token]]\nname = "a"\nsha256 = "{DIGEST}"\n', "#1 ('a')", "'role'"),
        (
            GOOD + '[[token]]\nname = "b"\nsha256 = "secret-2"\nrole = "read"\n',
            "#2 ('b')",
            "'sha256'",
        ),
        (
            GOOD + f'[[token]]\nname = "b"\nsha256 = "{DIGEST}"\nrole = "root"\n',
            "#2 ('b')",
            "'role'",
        ),
        (GOOD + "prefixes = []\n", "#1 ('bot')", "'prefixes'"),
        (GOOD + 'prefixes = [""]\n', "#1 ('bot')", "'prefixes'"),
        (GOOD + 'prefixes = "app/"\n', "#1 ('bot')", "'prefixes'"),
        (GOOD + 'roles = "admin"\n', "#1 ('bot')", "unknown field 'roles'"),
        (GOOD + GOOD.replace("secret-1", "other"), "#2 ('bot')", "name of an earlier"),
        (GOOD + GOOD.replace('"bot"', '"bot2"'), "#2 ('bot2')", "sha256 of an earlier"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_entry_and_field(
    tmp_path: Path, text: str, where: str, why: str
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_tokens(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("raftdb: config key 'tokens_file'")
    assert str(path) in message
    assert where in message
    assert why in message
    assert "secret-2" not in message  # a token pasted as its hash is not repeated


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RAFTDB_"):
            monkeypatch.delenv(name)


def test_serve_with_a_bad_tokens_file_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _clean_env(monkeypatch)
    path = tmp_path / "t.toml"
    path.write_text(GOOD.replace('"write"', '"writer"'))
    argv = ["serve", "--id", "1", "--cluster", CLUSTER[0], "--data-dir", str(tmp_path / "d")]
    assert main([*argv, "--tokens-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "tokens_file" in err
    assert "'role'" in err
    assert "('bot')" in err
    assert not (tmp_path / "d").exists()  # the node never started


def test_uvicorn_entry_point_with_a_bad_tokens_file_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _clean_env(monkeypatch)
    path = tmp_path / "t.toml"
    path.write_text("[[token]]\n")
    monkeypatch.setenv("RAFTDB_ID", "1")
    monkeypatch.setenv("RAFTDB_CLUSTER", CLUSTER[0])
    monkeypatch.setenv("RAFTDB_TOKENS_FILE", str(path))
    with pytest.raises(SystemExit) as caught:
        app_from_environment(lambda config: FakeNode())
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "tokens_file" in err


def _start(app: RaftdbApp) -> None:
    with TestClient(app):  # the lifespan: startup, then shutdown
        pass


def _security_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "raftdb.app" and "started (data_dir" not in r.msg
    ]


def test_an_open_api_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    app = RaftdbApp(NodeConfig(id=1, cluster=CLUSTER), lambda config: FakeNode())
    with caplog.at_level(logging.INFO, logger="raftdb"):
        _start(app)
    lines = _security_lines(caplog)
    assert [r.levelname for r in lines] == ["WARNING"]
    assert "no tokens_file" in lines[0].getMessage()
    assert "open" in lines[0].getMessage()


def test_with_tokens_the_start_says_so_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(GOOD)
    config = NodeConfig(id=1, cluster=CLUSTER, tokens_file=str(path))
    with caplog.at_level(logging.INFO, logger="raftdb"):
        _start(RaftdbApp(config, lambda config: FakeNode()))
    lines = _security_lines(caplog)
    assert [r.levelname for r in lines] == ["INFO"]
    assert "1 bearer tokens" in lines[0].getMessage()
    assert "secret-1" not in caplog.text
