"""The conformance suite on the shipped plugins: memory, leveldb, sqlite.

Every check runs as its own test. ``memory`` keeps nothing across a restart,
so its restart and crash checks are left out. The last tests prove the suite
has teeth: plugins with one broken promise each fail the right check.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raftdb.kv.applier import Applier
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.plugins import load_state_machine, load_storage
from raftdb.raft.messages import Entry
from raftdb.storage.memory import MemoryStorage
from raftdb.testing import (
    STATE_MACHINE_CHECKS,
    STORAGE_CHECKS,
    ConformanceError,
    check_storage,
)
from raftdb.testing.conformance.checks import Check

DURABLE_STORAGE = ("leveldb", "sqlite")
DURABLE_STATE_MACHINES = ("leveldb",)


def _cases(suite: list[Check], plugins: tuple[str, ...], durable: tuple[str, ...]) -> list[object]:
    return [
        pytest.param(name, check, id=f"{name}-{check.name}")
        for name in plugins
        for check in suite
        if name in durable or not check.durable
    ]


@pytest.mark.parametrize(
    ("plugin", "check"), _cases(STORAGE_CHECKS, ("memory", *DURABLE_STORAGE), DURABLE_STORAGE)
)
def test_storage_conformance(plugin: str, check: Check, tmp_path: Path) -> None:
    check(load_storage(plugin), tmp_path, plugin)


@pytest.mark.parametrize(
    ("plugin", "check"),
    _cases(STATE_MACHINE_CHECKS, ("memory", *DURABLE_STATE_MACHINES), DURABLE_STATE_MACHINES),
)
def test_state_machine_conformance(plugin: str, check: Check, tmp_path: Path) -> None:
    check(load_state_machine(plugin), tmp_path, plugin)


def test_every_check_has_a_docstring() -> None:
    for check in [*STORAGE_CHECKS, *STATE_MACHINE_CHECKS]:
        assert check.run.__doc__, check.name


# -- the suite has teeth ------------------------------------------------------------


class KeepsConflictingTail(MemoryStorage):
    """Appends over a conflicting tail without dropping what follows the new entries."""

    def _append(self, entries) -> None:  # type: ignore[no-untyped-def]
        offset = self._entries[0].index
        for entry in entries:
            position = entry.index - offset
            if position < len(self._entries):
                self._entries[position] = entry
            else:
                self._entries.append(entry)


class IgnoresMaxBytes(MemoryStorage):
    """Returns everything whatever max_bytes says."""

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return super().entries(lo, hi, None)


class ForgetsSessions(MemoryStateMachine):
    """Applies retried commands again: no session table."""

    def __init__(self, path: Path | None = None, *, sync: bool = True) -> None:
        super().__init__(path)
        self._applier = _NoSessions()


class _NoSessions(Applier):
    def _apply_command(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.sessions.clear()
        return super()._apply_command(*args, **kwargs)


@pytest.mark.parametrize(
    ("broken", "check_name"),
    [
        (KeepsConflictingTail, "conflicting_tail"),
        (IgnoresMaxBytes, "max_bytes"),
    ],
)
def test_broken_storage_fails_its_check(broken: type, check_name: str, tmp_path: Path) -> None:
    check = next(c for c in STORAGE_CHECKS if c.name == check_name)
    with pytest.raises(ConformanceError):
        check(broken, tmp_path)


def test_broken_state_machine_fails_the_session_check(tmp_path: Path) -> None:
    check = next(c for c in STATE_MACHINE_CHECKS if c.name == "sessions")
    with pytest.raises(ConformanceError, match="retry"):
        check(ForgetsSessions, tmp_path)


def test_check_storage_names_the_failing_check(tmp_path: Path) -> None:
    with pytest.raises(ConformanceError, match="check 'max_bytes' failed"):
        check_storage(IgnoresMaxBytes, durable=False, directory=tmp_path)


def test_crash_checks_need_an_importable_factory(tmp_path: Path) -> None:
    check = next(c for c in STORAGE_CHECKS if c.name == "crash_recovery")
    with pytest.raises(ConformanceError, match="child process"):
        check(lambda path: MemoryStorage(path), tmp_path)


def test_one_pytest_command_runs_the_suite(tmp_path: Path) -> None:
    """The command docs/plugins.md gives plugin authors works as written."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "raftdb.testing.pytest_plugin",
            "--pyargs",
            "raftdb.testing.suite",
            "--raftdb-storage=raftdb.storage:MemoryStorage",
            "--raftdb-volatile=raftdb.storage:MemoryStorage",
            "--raftdb-state-machine=memory",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    storage = sum(1 for c in STORAGE_CHECKS if not c.durable)
    machine = sum(1 for c in STATE_MACHINE_CHECKS if not c.durable)
    # memory has no make_durable: the checks of that promise skip.
    deferred = sum(1 for c in STATE_MACHINE_CHECKS if not c.durable and "make_durable" in c.name)
    assert deferred == 1
    assert f"{storage + machine - deferred} passed, {deferred} skipped" in result.stdout
