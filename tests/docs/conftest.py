"""Fixtures of the docs' example tests: a cluster of real processes, always stopped.

Each test has a time bound (``@pytest.mark.deadline``, default :data:`DEFAULT_DEADLINE`),
and a failing test's report carries the tails of its nodes' logs.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.cluster_fixtures import attach_cluster_logs, remember_cluster
from tests.deadline import MARKER as DEADLINE_MARKER
from tests.deadline import deadline
from tests.docs.cluster import DocsCluster

#: Seconds one page's examples may take.
DEFAULT_DEADLINE = 60.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", DEADLINE_MARKER)


@pytest.fixture(autouse=True)
def _deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    with deadline(request, DEFAULT_DEADLINE):
        yield


@pytest.fixture
def docs_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DocsCluster]:
    """A :class:`DocsCluster` under ``tmp_path`` (no node started); stopped at the end."""
    docs = DocsCluster(tmp_path / "docs-cluster")
    remember_cluster(request, docs.cluster)
    try:
        yield docs
    finally:
        docs.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach_cluster_logs(item, report)
    return report
