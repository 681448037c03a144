"""Helpers for the kv tests: the conformance suite's log builder and one-entry applies.

The same helpers serve the plugin conformance checks
(``raftdb.testing.conformance.machines``), so the kv tests use them as they are.
"""

from __future__ import annotations

from raftdb.testing.conformance.machines import Log, delete_change, put_change
from raftdb.testing.conformance.machines import kv_result as one

__all__ = ["Log", "delete_change", "one", "put_change"]
