"""The conformance tests the pytest plugin parametrizes (see ``pytest_plugin``).

Run with ``pytest -p raftdb.testing.pytest_plugin --pyargs raftdb.testing.suite
--raftdb-storage=NAME --raftdb-state-machine=NAME``.
"""

from __future__ import annotations

from pathlib import Path

from raftdb.plugins import load_state_machine, load_storage
from raftdb.testing.conformance.checks import Check

__all__ = ["test_state_machine", "test_storage"]


def test_storage(storage_case: tuple[str, Check], tmp_path: Path) -> None:
    """One storage check against one plugin."""
    name, check = storage_case
    check(load_storage(name), tmp_path / "check", name)


def test_state_machine(state_machine_case: tuple[str, Check], tmp_path: Path) -> None:
    """One state machine check against one plugin."""
    name, check = state_machine_case
    check(load_state_machine(name), tmp_path / "check", name)
