"""Fixtures of the backup commands' tests (tests/cli/test_backup.py), which import them.

``backup_cluster`` is one 3-node cluster of server processes for the module (each test
uses keys of its own prefix); ``_backup_deadline`` bounds every test in time, so that a
hung command fails the test rather than the suite, and the processes are still stopped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from raftdb.client import Client
from tests.deadline import deadline
from tests.integration.harness import ProcessCluster

#: Seconds a backup test may take.
DEADLINE_S = 60.0


@pytest.fixture(autouse=True)
def _backup_deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    with deadline(request, DEADLINE_S):
        yield


@pytest.fixture(scope="module")
def backup_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """A started 3-node cluster with a leader."""
    c = ProcessCluster(tmp_path_factory.mktemp("backup-cluster"), size=3)
    with c.closing():
        c.start_all()
        c.wait_leader()
        yield c


def endpoints(c: ProcessCluster) -> str:
    """Every member's API URL, comma-separated (``--endpoints``)."""
    return ",".join(n.api_url for n in c.nodes.values())


@pytest.fixture
def backup_client(backup_cluster: ProcessCluster) -> Iterator[Client]:
    """A client over every member of ``backup_cluster``."""
    with Client(endpoints(backup_cluster), timeout=10.0) as c:
        yield c
