"""What the fixtures of the real-process suites share (``tests/integration``,
``tests/chaos``, ``tests/cli``, ...): clusters made under a test's ``tmp_path`` and
always closed, and their log tails attached to the report of a test that failed
(the suite-wide hook in ``tests/conftest.py`` does that for every test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from tests.integration.harness import ProcessCluster

__all__ = [
    "attach_cluster_logs",
    "cluster_factory_fixture",
    "clusters_of_test",
    "remember_cluster",
]

_C = TypeVar("_C", bound="ProcessCluster")

#: The clusters a test used, for its failure report.
_CLUSTERS = pytest.StashKey[list["ProcessCluster"]]()


def clusters_of_test(
    request: pytest.FixtureRequest, tmp_path: Path, kind: Callable[..., _C]
) -> Iterator[Callable[..., _C]]:
    """A factory fixture's body: ``make(size=3, **kwargs)`` → a ``kind`` cluster
    (not started) under ``tmp_path``; every one is closed when the test ends."""
    clusters: list[_C] = []

    def make(size: int = 3, **kwargs: Any) -> _C:
        c = kind(tmp_path / f"cluster-{len(clusters)}", size=size, **kwargs)
        clusters.append(c)
        remember_cluster(request, c)
        return c

    try:
        yield make
    finally:
        for c in clusters:
            c.close()


def cluster_factory_fixture(
    kind: Callable[..., _C],
) -> Callable[[pytest.FixtureRequest, Path], Iterator[Callable[..., _C]]]:
    """A suite's ``cluster_factory`` fixture: ``cluster_factory(size=3, **kwargs)`` → a
    ``kind`` cluster (not started) under the test's ``tmp_path``, closed when it ends.

    In a conftest: ``cluster_factory = cluster_factory_fixture(ProcessCluster)``.
    """

    @pytest.fixture
    def cluster_factory(
        request: pytest.FixtureRequest, tmp_path: Path
    ) -> Iterator[Callable[..., _C]]:
        yield from clusters_of_test(request, tmp_path, kind)

    return cluster_factory


def remember_cluster(request: pytest.FixtureRequest, cluster: ProcessCluster) -> None:
    """Attach ``cluster``'s logs to the test's report if it fails."""
    request.node.stash.setdefault(_CLUSTERS, []).append(cluster)


def attach_cluster_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    """For ``pytest_runtest_makereport``: a failed test's clusters' log tails."""
    if report.failed:
        clusters: list[ProcessCluster] = item.stash.get(_CLUSTERS, [])
        for i, c in enumerate(clusters):
            report.sections.append((f"raftdb cluster {i} logs ({report.when})", c.log_tails(60)))
