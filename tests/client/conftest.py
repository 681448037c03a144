"""Fixtures of the client's tests: real raftdb server processes on 127.0.0.1.

``shared`` is one 3-node cluster for the whole directory's non-destructive tests (each
test uses keys of its own); tests that kill members start their own with
``cluster_factory``. Every test has a time bound (``@pytest.mark.deadline``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from raftdb.client import Client
from tests.cluster_fixtures import cluster_factory_fixture, remember_cluster
from tests.deadline import deadline_fixture
from tests.integration.harness import ProcessCluster

DEFAULT_DEADLINE = 30.0

ClusterFactory = Callable[..., ProcessCluster]


_deadline = deadline_fixture(DEFAULT_DEADLINE)


cluster_factory = cluster_factory_fixture(ProcessCluster)


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
