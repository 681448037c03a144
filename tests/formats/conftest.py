"""Fixtures of the format tests: real server processes on 127.0.0.1, always stopped.

``cluster_factory(size, ...)`` makes :class:`ProcessCluster` objects under the
test's ``tmp_path`` and stops every process they started, pass or fail; each
test has a time bound (``@pytest.mark.deadline``), and a failing test's report
carries its nodes' log tails.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.cluster_fixtures import attach_cluster_logs, clusters_of_test
from tests.deadline import MARKER as DEADLINE_MARKER
from tests.deadline import deadline
from tests.integration.harness import ProcessCluster

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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach_cluster_logs(item, report)
    return report
