"""Fixtures of the CLI's tests: real raftdb server processes on 127.0.0.1, and the
``raftdb`` command run in this process (``cli``) or as a process (``cli_process``).

``shared`` is one 3-node cluster for the directory's non-destructive tests (each test
uses keys of its own, e.g. under its ``prefix``); tests that kill or restore members
start their own with ``cluster_factory``. ``cli(...)`` and ``cli_process(...)`` talk to
``shared`` through ``RAFTDB_ENDPOINTS`` unless given ``--endpoints``;
``offline_cli(...)`` has no cluster (offline commands, or a cluster of the test's own).
The user's own client config file is never read: ``HOME`` is a temporary directory.
Every test has a time bound (``@pytest.mark.deadline``).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import raftdb.cli
from tests.cluster_fixtures import cluster_factory_fixture, remember_cluster
from tests.deadline import deadline_fixture
from tests.integration.harness import ProcessCluster

DEFAULT_DEADLINE = 30.0
#: The longest a ``cli_process`` may run.
PROCESS_TIMEOUT = 20.0

ClusterFactory = Callable[..., ProcessCluster]


_deadline = deadline_fixture(DEFAULT_DEADLINE)


cluster_factory = cluster_factory_fixture(ProcessCluster)


@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """A started, ready 3-node cluster shared by the directory's tests."""
    c = ProcessCluster(tmp_path_factory.mktemp("cli-cluster"), size=3)
    with c.closing():
        c.start_all()
        c.wait_leader()
        yield c


def endpoints(c: ProcessCluster) -> str:
    """Every node's API URL, in id order, as ``--endpoints`` takes them."""
    return ",".join(n.api_url for n in c.nodes.values())


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """Keys of this test's own: ``<test name>/``."""
    name: str = request.node.name
    return name.replace("[", "-").rstrip("]") + "/"


@dataclass(frozen=True)
class Result:
    """A ``raftdb`` run: its exit status, stdout's bytes and stderr's text."""

    status: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        """stdout as text."""
        return self.out.decode()

    @property
    def lines(self) -> list[str]:
        """stdout's lines."""
        return self.text.splitlines()


Cli = Callable[..., Result]


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user client config and no ``RAFTDB_*`` setting of the machine (``HOME`` is a
    temporary directory); tables not wrapped."""
    for name in list(os.environ):
        if name.startswith("RAFTDB_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def shared_env(
    request: pytest.FixtureRequest,
    shared: ProcessCluster,
    isolated_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``isolated_env``, and ``RAFTDB_ENDPOINTS`` = ``shared``'s members."""
    remember_cluster(request, shared)
    monkeypatch.setenv("RAFTDB_ENDPOINTS", endpoints(shared))


def run_in_process(monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``run(*argv, stdin=b"")``: ``raftdb.cli.main(argv)`` in this process, with its own
    stdin, stdout and stderr (bytes in and out, so binary values stay exact)."""

    def run(*argv: str, stdin: bytes | str = b"") -> Result:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
        err = io.StringIO()
        with monkeypatch.context() as m:
            m.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
            m.setattr(sys, "stdout", out)
            m.setattr(sys, "stderr", err)
            try:
                status = raftdb.cli.main(list(argv))
            except SystemExit as e:  # argparse's usage errors
                status = e.code if isinstance(e.code, int) else 2
            out.flush()
        buffer = out.buffer
        assert isinstance(buffer, io.BytesIO)
        return Result(status, buffer.getvalue(), err.getvalue())

    return run


def run_as_process(*argv: str, stdin: bytes | str = b"") -> Result:
    """``python -m raftdb.cli *argv`` as a process, in this process's environment."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run(
        [sys.executable, "-m", "raftdb.cli", *argv],
        input=data,
        capture_output=True,
        timeout=PROCESS_TIMEOUT,
        env=dict(os.environ),
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr.decode(errors="replace"))


@pytest.fixture
def cli(shared_env: None, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``cli(*argv, stdin=b"")``: ``raftdb`` in this process, against ``shared``."""
    return run_in_process(monkeypatch)


@pytest.fixture
def cli_process(shared_env: None) -> Cli:
    """``cli_process(*argv, stdin=b"")``: ``python -m raftdb.cli``, against ``shared``."""
    return run_as_process


@pytest.fixture
def offline_cli(isolated_env: None, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``raftdb`` in this process without a cluster (offline commands; or give
    ``--endpoints`` of a cluster of the test's own)."""
    return run_in_process(monkeypatch)
