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
from collections.abc import Callable
from typing import Any

import pytest

from tests.chaos.cluster import ChaosCluster
from tests.cluster_fixtures import cluster_factory_fixture
from tests.deadline import deadline_fixture

#: Seconds a chaos test may run unless it says otherwise.
DEFAULT_DEADLINE = 120.0

_SUMMARIES: list[str] = []

ChaosFactory = Callable[..., ChaosCluster]


_deadline = deadline_fixture(DEFAULT_DEADLINE)


#: ``chaos_cluster(size=3, **kwargs)`` → a :class:`ChaosCluster` (not started).
chaos_cluster = cluster_factory_fixture(ChaosCluster)


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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SUMMARIES:
        terminalreporter.section("raftdb chaos runs")
        for line in _SUMMARIES:
            terminalreporter.write_line(line)
