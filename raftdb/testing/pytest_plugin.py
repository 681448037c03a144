"""A pytest plugin that runs raftdb's conformance suite against any plugin.

One command, from any project that has raftdb installed::

    pytest -p raftdb.testing.pytest_plugin --pyargs raftdb.testing.suite \\
        --raftdb-storage=mypkg.store:MyStorage --raftdb-state-machine=mysm

Each ``--raftdb-storage`` / ``--raftdb-state-machine`` (repeatable) is an
entry-point name or ``module:attr``; every check runs as its own test, named
``test_storage[<plugin>-<check>]``. ``--raftdb-volatile=NAME`` declares a
plugin that keeps nothing across a restart (like ``memory``): its restart and
crash checks are left out.
"""

from __future__ import annotations

import pytest

from raftdb.testing.conformance.state_machine import STATE_MACHINE_CHECKS
from raftdb.testing.conformance.storage import STORAGE_CHECKS

__all__ = ["pytest_addoption", "pytest_generate_tests"]

_VOLATILE_BUILTINS = ("memory",)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``--raftdb-*`` options."""
    group = parser.getgroup("raftdb", "raftdb plugin conformance")
    group.addoption(
        "--raftdb-storage",
        action="append",
        default=[],
        metavar="NAME",
        help="storage plugin to check: entry-point name or module:attr (repeatable)",
    )
    group.addoption(
        "--raftdb-state-machine",
        action="append",
        default=[],
        metavar="NAME",
        help="state machine plugin to check: entry-point name or module:attr (repeatable)",
    )
    group.addoption(
        "--raftdb-volatile",
        action="append",
        default=list(_VOLATILE_BUILTINS),
        metavar="NAME",
        help="a plugin that keeps nothing across restarts: skip its durability checks",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``storage_case`` / ``state_machine_case`` over plugins x checks."""
    config = metafunc.config
    volatile = set(config.getoption("--raftdb-volatile"))
    for fixture, option, suite in (
        ("storage_case", "--raftdb-storage", STORAGE_CHECKS),
        ("state_machine_case", "--raftdb-state-machine", STATE_MACHINE_CHECKS),
    ):
        if fixture not in metafunc.fixturenames:
            continue
        names = config.getoption(option)
        cases = [
            pytest.param((name, check), id=f"{name}-{check.name}")
            for name in names
            for check in suite
            if not (check.durable and name in volatile)
        ]
        if not cases:
            cases = [pytest.param(None, marks=pytest.mark.skip(reason=f"no {option} given"))]
        metafunc.parametrize(fixture, cases)
