"""Fixtures of the docs' example tests: a cluster of real processes, always stopped.

Each test has a time bound (``@pytest.mark.deadline``, default :data:`DEFAULT_DEADLINE`),
and a failing test's report carries the tails of its nodes' logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_fixtures import remember_cluster
from tests.deadline import deadline_fixture
from tests.docs.cluster import DocsCluster

#: Seconds one page's examples may take.
DEFAULT_DEADLINE = 60.0


_deadline = deadline_fixture(DEFAULT_DEADLINE)


@pytest.fixture
def docs_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DocsCluster]:
    """A :class:`DocsCluster` under ``tmp_path`` (no node started); stopped at the end."""
    docs = DocsCluster(tmp_path / "docs-cluster")
    remember_cluster(request, docs.cluster)
    try:
        yield docs
    finally:
        docs.close()
