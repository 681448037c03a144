"""The driver's own client session (``client_id``/``seq``/``ack`` on every write)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path

from raftdb.config import NodeConfig
from raftdb.kv.commands import ApplyResult
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.node.errors import OutcomeUnknownError
from raftdb.raft import Entry

from .cluster import LocalCluster, eventually

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


class _HeldApply(MemoryStateMachine):
    """The memory state machine; on node 3, ``apply`` waits while ``open`` is clear."""

    open = threading.Event()

    def __init__(self, path: Path | None = None, *, sync: bool = True) -> None:
        super().__init__(path, sync=sync)
        self._held = path is not None and "node3" in path.parts

    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        if self._held and not _HeldApply.open.wait(timeout=30):
            raise TimeoutError("the test never let node 3 apply")
        return super().apply(entries)


def held_apply_memory(path: Path | None = None, *, sync: bool = True) -> MemoryStateMachine:
    return _HeldApply(path, sync=sync)


class _HeldApplyCluster(LocalCluster):
    def config(self, node_id: int, join: bool = False) -> NodeConfig:
        config = super().config(node_id, join)
        return dataclasses.replace(config, state_machine=f"{__name__}:held_apply_memory")


def test_a_retry_through_a_node_that_has_not_applied_the_first_attempt_is_a_duplicate(
    tmp_path: Path,
) -> None:
    """The race of ``test_idempotency_key_applies_a_retried_write_once``: the retry
    reached a node that had not applied the first attempt yet, and was answered by
    the first attempt's own entry (``duplicate=False``) instead of its own (the
    first attempt's answer, ``duplicate=True``). Node 3 is held from applying
    until its retry is waiting."""
    _HeldApply.open.set()

    async def body(c: LocalCluster) -> None:
        n1, n3 = c.nodes[1], c.nodes[3]
        _HeldApply.open.clear()
        first = await n1.put(b"counter", b"1", idempotency_key=b"req-42")
        retry_task = asyncio.create_task(n3.put(b"counter", b"1", idempotency_key=b"req-42"))
        requests = n3._requests
        await eventually(
            lambda: bool(requests._idem or requests._applied_waiters),
            "node 3 to hold the retry",
        )
        assert n3._applied_index() < first.index  # the first attempt is not applied there
        _HeldApply.open.set()
        retry = await retry_task
        assert retry.duplicate
        assert retry.index == first.index

    try:
        _HeldApplyCluster(tmp_path, 3, "memory").run(body)
    finally:
        _HeldApply.open.set()
