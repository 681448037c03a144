"""Fixtures of the bit-rot tests: a time bound on each, and the runs' summary lines.

The pristine data directories (``tests.bitrot.datadir``) are built once per
module and combination; each trial damages its own copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bitrot.datadir import COMBINATIONS, build_data_dir
from tests.cluster_fixtures import attach_cluster_logs, clusters_of_test
from tests.deadline import MARKER as DEADLINE_MARKER
from tests.deadline import deadline
from tests.integration.harness import ProcessCluster

ClusterFactory = Callable[..., ProcessCluster]

DEFAULT_DEADLINE = 120.0
_SUMMARIES: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", DEADLINE_MARKER)


@pytest.fixture(autouse=True)
def _bitrot_deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    with deadline(request, DEFAULT_DEADLINE):
        yield


@pytest.fixture(scope="module", params=COMBINATIONS, ids=lambda c: f"{c[0]}-{c[1]}")
def pristine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, str]:
    """``(data_dir, storage, state_machine)``: a stopped node's directory after traffic."""
    storage, state_machine = request.param
    tmp = tmp_path_factory.mktemp(f"pristine-{storage}-{state_machine}")
    return build_data_dir(tmp, storage, state_machine), storage, state_machine


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClusterFactory]:
    """``cluster_factory(size=3, **kwargs)`` → a :class:`ProcessCluster` (not started),
    stopped at the end of the test whatever happens."""
    yield from clusters_of_test(request, tmp_path, ProcessCluster)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach_cluster_logs(item, report)
    return report


@pytest.fixture(scope="module")
def leveldb_pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine directory with the default plugins (LevelDB storage and state machine)."""
    return build_data_dir(tmp_path_factory.mktemp("pristine-leveldb"), "leveldb", "leveldb")


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
        terminalreporter.section("raftdb bit-rot runs")
        for line in _SUMMARIES:
            terminalreporter.write_line(line)
