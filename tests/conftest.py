"""Suite-wide pytest options.

- ``--rewrite``: regenerate the expected output of scenario files in place
  (review the diff before committing).
- ``--sim-seeds=N``: how many seeds the deterministic simulation runs
  (default: 300, the CI budget), from ``--sim-first=F`` (default 0: seeds
  F..F+N-1, so that a long run can be split into chunks); ``--sim-seed=S``:
  run only seed S (the one-line replay a failing seed prints);
  ``--sim-summary=FILE``: append each passing seed's figures (operations,
  elections, faults, seconds) to FILE as one JSON line.

The ``deadline`` marker (:mod:`tests.deadline`) is registered here, and a failing test's
report gets the log tails of every cluster it used (:mod:`tests.cluster_fixtures`).

A ``SIGTERM`` (``timeout``, a CI runner giving up) interrupts the run as Ctrl-C
does, so that fixtures and ``finally`` blocks still stop the servers they
started and unmount the filesystems they mounted.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Generator
from types import FrameType

import pytest

from tests.cluster_fixtures import attach_cluster_logs
from tests.deadline import MARKER as DEADLINE_MARKER


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", DEADLINE_MARKER)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite the expected output of scenario test files",
    )
    parser.addoption(
        "--sim-seeds",
        type=int,
        default=300,
        help="number of seeds for the deterministic cluster simulation",
    )
    parser.addoption(
        "--sim-first",
        type=int,
        default=0,
        help="the first seed of the --sim-seeds range (default 0)",
    )
    parser.addoption(
        "--sim-summary",
        default=None,
        help="append each simulation seed's figures to this file (JSON lines)",
    )
    parser.addoption(
        "--sim-seed",
        type=int,
        default=None,
        help="run the simulation for this one seed only (replay)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach_cluster_logs(item, report)
    return report
