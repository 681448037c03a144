"""Fixtures of the backup commands' tests (tests/cli/test_backup.py), which import them.

``backup_cluster`` is one 3-node cluster of server processes for the module (each test
uses keys of its own prefix). The time bound is tests/cli/conftest.py's ``deadline``
(test_backup.py marks its own).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from raftdb.client import Client
from tests.cli.conftest import endpoints
from tests.integration.harness import ProcessCluster


@pytest.fixture(scope="module")
def backup_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """A started 3-node cluster with a leader."""
    c = ProcessCluster(tmp_path_factory.mktemp("backup-cluster"), size=3)
    with c.closing():
        c.start_all()
        c.wait_leader()
        yield c


@pytest.fixture
def backup_client(backup_cluster: ProcessCluster) -> Iterator[Client]:
    """A client over every member of ``backup_cluster``."""
    with Client(endpoints(backup_cluster), timeout=10.0) as c:
        yield c
