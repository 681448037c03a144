"""Fixtures of the chaos tests: clusters behind link proxies, always stopped.

- ``chaos_cluster`` makes :class:`ChaosCluster` objects under the test's
  ``tmp_path``; a finalizer stops every node process and proxy they started,
  pass or fail, and a failing test gets the tails of the node logs.
- Every chaos test has a time bound (``@pytest.mark.deadline(seconds)``, as
  in ``tests/integration``): a SIGALRM raises in the test, whose finalizers
  then stop the processes.
- Each run's one-line summary (see ``tests.chaos.runner``) is shown in the
  terminal summary, and appended to the file named by ``CHAOS_SUMMARY`` if set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.cluster import ChaosCluster
from tests.cluster_fixtures import attach_cluster_logs, clusters_of_test
from tests.deadline import MARKER as DEADLINE_MARKER
from tests.deadline import deadline

#: Seconds a chaos test may run unless it says otherwise.
DEFAULT_DEADLINE = 120.0

_SUMMARIES: list[str] = []

ChaosFactory = Callable[..., ChaosCluster]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", DEADLINE_MARKER)


@pytest.fixture(autouse=True)
def _chaos_deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    with deadline(request, DEFAULT_DEADLINE):
        yield


@pytest.fixture
def chaos_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChaosFactory]:
    """``chaos_cluster(size=3, **kwargs)`` → a :class:`ChaosCluster` (not started)."""
    yield from clusters_of_test(request, tmp_path, ChaosCluster)


@pytest.fixture
def summary() -> Callable[[str], None]:
    """Record a run's summary line (terminal summary, and ``$CHAOS_SUMMARY``)."""

    def record(line: str) -> None:
        print(line)
        _SUMMARIES.append(line)
        path = os.environ.get("CHAOS_SUMMARY")
        if path:
            with open(path, "a") as f:
                f.write(line + "\n")

    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach_cluster_logs(item, report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SUMMARIES:
        terminalreporter.section("raftdb chaos runs")
        for line in _SUMMARIES:
            terminalreporter.write_line(line)
