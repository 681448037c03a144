"""Fixtures of the integration tests: real server processes, always stopped.

- ``cluster_factory`` makes :class:`ProcessCluster` objects under the test's
  ``tmp_path``; a finalizer stops every process they started, pass or fail.
- Each integration test has a time bound (``@pytest.mark.deadline(seconds)``,
  default :data:`DEFAULT_DEADLINE`): a SIGALRM raises in the test, whose
  finalizers then stop the servers. Every wait inside has its own deadline too.
- When a test fails, the tails of its nodes' logs are attached to the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.cluster_fixtures import cluster_factory_fixture, remember_cluster
from tests.deadline import deadline_fixture
from tests.integration.harness import ProcessCluster

#: Seconds an integration test may run unless it says otherwise.
DEFAULT_DEADLINE = 60.0


ClusterFactory = Callable[..., ProcessCluster]


_deadline = deadline_fixture(DEFAULT_DEADLINE)


cluster_factory = cluster_factory_fixture(ProcessCluster)


@pytest.fixture
def cluster(cluster_factory: ClusterFactory) -> ProcessCluster:
    """A started, ready 3-node cluster."""
    c = cluster_factory(3)
    c.start_all()
    return c


@pytest.fixture(scope="module")
def _module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    c = ProcessCluster(tmp_path_factory.mktemp("shared-cluster"), size=3)
    try:
        c.start_all()
        yield c
    finally:
        c.close()


@pytest.fixture
def shared_cluster(
    request: pytest.FixtureRequest, _module_cluster: ProcessCluster
) -> ProcessCluster:
    """A started 3-node cluster shared by the tests of one module (they must leave it
    serving); its logs are attached to a failing test's report."""
    remember_cluster(request, _module_cluster)
    return _module_cluster
