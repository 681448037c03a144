"""Fixtures of the integration tests: real server processes, always stopped.

- ``cluster_factory`` makes :class:`ProcessCluster` objects under the test's
  ``tmp_path``; a finalizer stops every process they started, pass or fail.
- Each integration test has a time bound (``@pytest.mark.deadline(seconds)``,
  default :data:`DEFAULT_DEADLINE`): a SIGALRM raises in the test, whose
  finalizers then stop the servers. Every wait inside has its own deadline too.
- When a test fails, the tails of its nodes' logs are attached to the report.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.cluster_fixtures import attach_cluster_logs, clusters_of_test, remember_cluster
from tests.deadline import MARKER as DEADLINE_MARKER
from tests.deadline import deadline
from tests.integration.harness import ProcessCluster

#: Seconds an integration test may run unless it says otherwise.
DEFAULT_DEADLINE = 60.0


ClusterFactory = Callable[..., ProcessCluster]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", DEADLINE_MARKER)


@pytest.fixture(autouse=True)
def _deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    with deadline(request, DEFAULT_DEADLINE):
        yield


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClusterFactory]:
    """``cluster_factory(size=3, **kwargs)`` → a :class:`ProcessCluster` (not started)."""
    yield from clusters_of_test(request, tmp_path, ProcessCluster)


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach_cluster_logs(item, report)
    return report
