"""``raftdb.app``: the lifespan that runs the node, configuration from the environment,
and ``raftdb serve`` / ``raftdb config``."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

import raftdb.app
from raftdb.app import RaftdbApp, app_from_environment
from raftdb.cli import build_parser, main, make_server
from raftdb.config import KEYS, NodeConfig, env_name, flag_name
from raftdb.node.errors import NodeError
from raftdb.plugins import PluginError
from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient, error_of

CLUSTER = "http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379"


def _config() -> NodeConfig:
    return NodeConfig(id=1, cluster=CLUSTER.split(","))


async def _lifespan(app: RaftdbApp, *events: str) -> list[dict[str, Any]]:
    """Drive the ASGI lifespan protocol; returns what the app sent."""
    incoming = [{"type": f"lifespan.{event}"} for event in events]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)  # type: ignore[arg-type]
    return sent


class TestLifespan:
    def test_starts_serves_and_stops_the_node(self) -> None:
        node = FakeNode()
        app = RaftdbApp(_config(), lambda config: node)
        with TestClient(app) as client:
            assert node.started
            assert client.put("/v1/kv/k", content=b"v").status_code == 204
            assert client.get("/k").content == b"v"
            assert not node.stopped
        assert app.api is None
        assert node.stopped

    def test_answers_503_before_the_node_runs(self) -> None:
        app = RaftdbApp(_config(), lambda config: FakeNode())
        client = TestClient(app)  # no lifespan: nothing started
        response = client.get("/v1/kv/k")
        assert error_of(response, 503) == "not_ready"
        assert "lifespan" in response.json()["message"]

    @pytest.mark.parametrize(
        "exc",
        [
            PluginError("unknown storage plugin 'x'; known: leveldb, memory"),
            OSError(13, "Permission denied"),
            NodeError("cannot start"),
        ],
    )
    def test_a_failed_start_is_one_line(
        self, exc: Exception, caplog: pytest.LogCaptureFixture
    ) -> None:
        def factory(config: NodeConfig) -> FakeNode:
            raise exc

        with caplog.at_level(logging.ERROR):
            sent = asyncio.run(_lifespan(RaftdbApp(_config(), factory), "startup"))
        assert len(sent) == 1
        assert sent[0]["type"] == "lifespan.startup.failed"
        message = sent[0]["message"]
        assert message.startswith("raftdb: node 1 cannot start: ")
        assert "\n" not in message
        assert not [record for record in caplog.records if record.exc_info]

    def test_an_unexpected_start_failure_keeps_its_traceback_in_the_log(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        node = FakeNode()
        node.fail = RuntimeError("bug in start")
        with caplog.at_level(logging.ERROR, logger="raftdb.app"):
            sent = asyncio.run(_lifespan(RaftdbApp(_config(), lambda config: node), "startup"))
        assert sent[0]["type"] == "lifespan.startup.failed"
        assert "RuntimeError: bug in start" in sent[0]["message"]
        assert any(record.exc_info for record in caplog.records)
        assert node.stopped  # what did start is stopped again

    def test_shutdown_failure_is_reported(self) -> None:
        node = FakeNode()

        async def broken_stop() -> None:
            raise OSError("disk gone")

        node.stop = broken_stop  # type: ignore[method-assign]
        app = RaftdbApp(_config(), lambda config: node)
        sent = asyncio.run(_lifespan(app, "startup", "shutdown"))
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.failed",
        ]
        assert "disk gone" in sent[1]["message"]


class TestFromEnvironment:
    def test_reads_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RAFTDB_ID", "2")
        monkeypatch.setenv("RAFTDB_CLUSTER", CLUSTER)
        monkeypatch.setenv("RAFTDB_STORAGE", "memory")
        app = app_from_environment()
        assert app.config.id == 2
        assert app.config.storage == "memory"
        assert app.config.peer_url == "http://127.0.0.1:22379"

    def test_module_attribute_is_built_on_first_access(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("RAFTDB_ID", "3")
        monkeypatch.setenv("RAFTDB_CLUSTER", CLUSTER)
        monkeypatch.setattr(raftdb.app, "_app", None)
        app = raftdb.app.app
        assert isinstance(app, RaftdbApp)
        assert app.config.id == 3
        assert raftdb.app.app is app
        with pytest.raises(AttributeError):
            _ = raftdb.app.nothing

    def test_bad_setting_exits_with_one_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("RAFTDB_ID", "1")
        monkeypatch.setenv("RAFTDB_CLUSTER", CLUSTER)
        monkeypatch.setenv("RAFTDB_HEARTBEAT_TICKS", "20")
        with pytest.raises(SystemExit) as exited:
            app_from_environment()
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "'election_ticks'" in err

    def test_unknown_variables_are_warned_about(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("RAFTDB_ID", "1")
        monkeypatch.setenv("RAFTDB_CLUSTER", CLUSTER)
        monkeypatch.setenv("RAFTDB_ELECTON_TICKS", "20")
        app_from_environment()
        assert "RAFTDB_ELECTON_TICKS" in capsys.readouterr().err


def test_uvicorn_with_a_bad_config_prints_one_line(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("RAFTDB_") and key != "PYTHONWARNINGS"
    }
    env.update(RAFTDB_ID="4", RAFTDB_CLUSTER=CLUSTER)
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "raftdb.app:app", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("raftdb: config key 'id'")


class TestCli:
    def test_every_key_has_a_flag(self, capsys: pytest.CaptureFixture[str]) -> None:
        for command in ("serve", "config"):
            args = build_parser().parse_args([command])
            for key in KEYS:
                assert hasattr(args, key), (command, key)
        with pytest.raises(SystemExit):
            main(["serve", "--help"])
        help_text = capsys.readouterr().out
        for key in KEYS:
            assert flag_name(key) in help_text
            assert env_name(key) in help_text

    def test_config_prints_the_effective_settings(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        tmp_path: Path,
    ) -> None:
        toml = tmp_path / "node.toml"
        toml.write_text('id = 1\ncluster = ["http://127.0.0.1:1", "http://127.0.0.1:2"]\n')
        monkeypatch.setenv("RAFTDB_TICK_MS", "50")
        monkeypatch.setenv("RAFTDB_ID", "2")
        status = main(["config", "--config", str(toml), "--id", "1", "--no-sync", "--join"])
        assert status == 0
        printed = tomllib.loads(capsys.readouterr().out)
        assert printed["id"] == 1
        assert printed["tick_ms"] == 50
        assert printed["sync"] is False
        assert printed["join"] is True
        assert printed["cluster"] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]

    @pytest.mark.parametrize(
        ("argv", "key"),
        [
            (["serve", "--id", "zero", "--cluster", CLUSTER], "'id'"),
            (["serve", "--id", "1"], "'cluster'"),
            (["serve", "--id", "1", "--cluster", CLUSTER, "--storage", "nope"], "'storage'"),
            (["config", "--id", "1", "--cluster", "127.0.0.1:1"], "'cluster'"),
        ],
    )
    def test_bad_flags_exit_2_with_one_line(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        argv: list[str],
        key: str,
    ) -> None:
        for name in list(os.environ):
            if name.startswith("RAFTDB_"):
                monkeypatch.delenv(name)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert key in err

    def test_serve_runs_uvicorn_over_the_app(self) -> None:
        node = FakeNode()
        app = RaftdbApp(_config(), lambda config: node)
        args = build_parser().parse_args(
            ["serve", "--port", "0", "--log-level", "warning", "--id", "1", "--cluster", CLUSTER]
        )

        async def scenario() -> tuple[int, bytes, int]:
            server = make_server(app, args)
            task = asyncio.create_task(server.serve())
            for _ in range(200):
                if server.started:
                    break
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                put = await client.put("/my-key", content=b"bar")
                got = await client.get("/my-key")
            server.should_exit = True
            await task
            return put.status_code, got.content, got.status_code

        put_status, value, get_status = asyncio.run(scenario())
        assert (put_status, value, get_status) == (204, b"bar", 200)
        assert node.started
        assert node.stopped
