"""Fixtures of the soak's tests: a time bound on each (``@pytest.mark.deadline``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deadline import MARKER as DEADLINE_MARKER
from tests.deadline import deadline

#: Seconds a soak test may run unless it says otherwise.
DEFAULT_DEADLINE = 60.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", DEADLINE_MARKER)


@pytest.fixture(autouse=True)
def _soak_deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    with deadline(request, DEFAULT_DEADLINE):
        yield
