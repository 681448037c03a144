"""Fixtures of the power-loss tests: mounts always unmounted, a deadline per test.

- ``mounts(name, mode=...)`` makes a :class:`PowerLossMount` under the test's
  ``tmp_path``, mounted; every one is unmounted when the test ends, pass or fail
  (after the clusters using it are stopped: fixtures end in reverse order).
- Without FUSE the tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster_fixtures import attach_cluster_logs, clusters_of_test
from tests.deadline import MARKER as DEADLINE_MARKER
from tests.deadline import deadline
from tests.powerloss.cluster import PowerCluster
from tests.powerloss.mount import PowerLossMount, require_fuse

DEFAULT_DEADLINE = 60.0

MountFactory = Callable[..., PowerLossMount]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", DEADLINE_MARKER)


@pytest.fixture(autouse=True)
def _powerloss_deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    with deadline(request, DEFAULT_DEADLINE):
        yield


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[MountFactory]:
    """``mounts("n1", mode="strict")`` → a mounted :class:`PowerLossMount`."""
    require_fuse()
    made: list[PowerLossMount] = []

    def make(name: str = "fs", **kwargs: Any) -> PowerLossMount:
        m = PowerLossMount(tmp_path, name, **kwargs)
        made.append(m)
        m.start()
        return m

    try:
        yield make
    finally:
        for m in reversed(made):
            m.close()


@pytest.fixture
def power_cluster(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., PowerCluster]]:
    """``power_cluster(size=3, **kwargs)`` → a :class:`PowerCluster` (mounted, not
    started); closed at the end: nodes stopped, then every mount unmounted."""
    require_fuse()
    yield from clusters_of_test(request, tmp_path, PowerCluster)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach_cluster_logs(item, report)
    return report


# The chaos runs' one-line summaries (terminal summary and $CHAOS_SUMMARY).
from tests.chaos.conftest import summary  # noqa: E402

__all__ = ["MountFactory", "summary"]
