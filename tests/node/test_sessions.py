"""The driver's own client session (``client_id``/``seq``/``ack`` on every write)."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from raftdb.config import NodeConfig
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.node.errors import OutcomeUnknownError

from .cluster import LocalCluster

SHORT_TTL = 20


def short_ttl_memory(path: Path | None = None, *, sync: bool = True) -> MemoryStateMachine:
    """The memory state machine with sessions that expire after ``SHORT_TTL`` entries."""
    return MemoryStateMachine(path, sync=sync, session_ttl=SHORT_TTL)


def test_a_node_writes_again_after_its_session_expired(tmp_path: Path) -> None:
    """Before the fix, a node whose session had expired (unused while others wrote
    ``session_ttl`` entries) had every later write answered SESSION_EXPIRED (504)."""

    async def body(c: LocalCluster) -> None:
        n1, n2 = c.nodes[1], c.nodes[2]
        await n1.put(b"a", b"1")
        for i in range(SHORT_TTL + 5):
            await n2.put(b"b", str(i).encode())
        with contextlib.suppress(OutcomeUnknownError):
            await n1.put(b"a", b"2")  # finds the session expired: not applied, 504
        for value in (b"3", b"4"):
            result = await n1.put(b"a", value)
            kv, _ = await n2.get(b"a")
            assert kv is not None
            assert (kv.value, kv.mod_index) == (value, result.index)

    _ShortTTLCluster(tmp_path, 3, "memory").run(body)


class _ShortTTLCluster(LocalCluster):
    def config(self, node_id: int, join: bool = False) -> NodeConfig:
        config = super().config(node_id, join)
        return dataclasses.replace(config, state_machine=f"{__name__}:short_ttl_memory")
