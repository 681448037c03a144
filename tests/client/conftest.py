"""Fixtures of the client's tests: real raftdb server processes on 127.0.0.1.

``shared`` is one 3-node cluster for the whole directory's non-destructive tests (each
test uses keys of its own); tests that kill members start their own with
``cluster_factory``. Every test has a time bound (``@pytest.mark.deadline``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from raftdb.client import Client
from tests.cluster_fixtures import attach_cluster_logs, clusters_of_test, remember_cluster
from tests.deadline import MARKER as DEADLINE_MARKER
from tests.deadline import deadline
from tests.integration.harness import ProcessCluster

DEFAULT_DEADLINE = 30.0

ClusterFactory = Callable[..., ProcessCluster]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", DEADLINE_MARKER)


@pytest.fixture(autouse=True)
def _deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    with deadline(request, DEFAULT_DEADLINE):
        yield


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClusterFactory]:
    """``cluster_factory(size=3)`` → a :class:`ProcessCluster` (not started), closed after."""
    yield from clusters_of_test(request, tmp_path, ProcessCluster)


@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """A started, ready 3-node cluster shared by the directory's tests."""
    c = ProcessCluster(tmp_path_factory.mktemp("client-cluster"), size=3)
    with c.closing():
        c.start_all()
        c.wait_leader()
        yield c


def endpoints(c: ProcessCluster) -> list[str]:
    """Every node's API URL, in id order."""
    return [n.api_url for n in c.nodes.values()]


@pytest.fixture
def client(request: pytest.FixtureRequest, shared: ProcessCluster) -> Iterator[Client]:
    """A :class:`Client` over every member of ``shared`` (whose logs a failure shows)."""
    remember_cluster(request, shared)
    with Client(endpoints(shared), timeout=10.0) as c:
        yield c


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach_cluster_logs(item, report)
    return report
