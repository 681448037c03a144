"""Test support shipped with raftdb: conformance checks and the linearizability checker.

Plugin authors: :func:`check_storage` and :func:`check_state_machine` run the
whole conformance suite against a factory; ``raftdb.testing.pytest_plugin``
runs it as one pytest command (see ``docs/plugins.md``).
"""

from __future__ import annotations

from raftdb.testing.conformance.checks import ConformanceError
from raftdb.testing.conformance.state_machine import STATE_MACHINE_CHECKS, check_state_machine
from raftdb.testing.conformance.storage import STORAGE_CHECKS, check_storage

__all__ = [
    "STATE_MACHINE_CHECKS",
    "STORAGE_CHECKS",
    "ConformanceError",
    "check_state_machine",
    "check_storage",
]
