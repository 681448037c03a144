"""Suite-wide pytest options.

- ``--rewrite``: regenerate the expected output of scenario files in place
  (review the diff before committing).
- ``--sim-seeds=N``: how many seeds the deterministic simulation runs
  (default: 300, the CI budget), from ``--sim-first=F`` (default 0: seeds
  F..F+N-1, so that a long run can be split into chunks); ``--sim-seed=S``:
  run only seed S (the one-line replay a failing seed prints);
  ``--sim-summary=FILE``: append each passing seed's figures (operations,
  elections, faults, seconds) to FILE as one JSON line.

A ``SIGTERM`` (``timeout``, a CI runner giving up) interrupts the run as Ctrl-C
does, so that fixtures and ``finally`` blocks still stop the servers they
started and unmount the filesystems they mounted.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import pytest


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
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
