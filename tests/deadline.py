"""A wall-clock limit per test, for the suites that start real processes.

``@pytest.mark.deadline(seconds)`` sets it (the marker is registered suite-wide, in
``tests/conftest.py``); each suite's conftest gives its own default with
``_deadline = deadline_fixture(DEFAULT_DEADLINE)``. SIGALRM interrupts the test
wherever it waits, so its finalizers still stop every process it started.
"""

from __future__ import annotations

import signal
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

#: The ``deadline`` marker's registration line.
MARKER = "deadline(seconds): fail a test that runs longer than this"


class DeadlineExceeded(Exception):
    """The test ran past its ``deadline``."""


@contextmanager
def deadline(request: pytest.FixtureRequest, default: float) -> Iterator[None]:
    """Fail the running test with :class:`DeadlineExceeded` after its deadline."""
    marker = request.node.get_closest_marker("deadline")
    seconds = float(marker.args[0]) if marker else default

    def expire(signum: int, frame: types.FrameType | None) -> None:
        raise DeadlineExceeded(f"the test ran longer than its deadline of {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def deadline_fixture(default: float) -> Callable[[pytest.FixtureRequest], Iterator[None]]:
    """An autouse fixture that bounds every test of a suite: its ``deadline`` marker's
    seconds, else ``default``."""

    @pytest.fixture(autouse=True)
    def _deadline(request: pytest.FixtureRequest) -> Iterator[None]:
        with deadline(request, default):
            yield

    return _deadline
