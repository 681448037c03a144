"""The apply thread: a batch applies while the log thread saves the next Ready."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path

from raftdb.config import NodeConfig
from raftdb.kv.commands import ApplyResult
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.raft import Entry

from .cluster import LocalCluster, eventually


class GatedMemory(MemoryStateMachine):
    """The memory state machine; while ``gate`` is closed, ``apply`` waits for it."""

    gate = threading.Event()
    entered = threading.Event()

    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        if not GatedMemory.gate.is_set():
            GatedMemory.entered.set()
            if not GatedMemory.gate.wait(timeout=30):
                raise TimeoutError("the test never opened the gate")
        return super().apply(entries)


def gated_memory(path: Path | None = None, *, sync: bool = True) -> MemoryStateMachine:
    return GatedMemory(path, sync=sync)


class _GatedCluster(LocalCluster):
    def config(self, node_id: int, join: bool = False) -> NodeConfig:
        config = super().config(node_id, join)
        return dataclasses.replace(config, state_machine=f"{__name__}:gated_memory")


def test_writes_are_saved_and_committed_while_a_batch_applies(tmp_path: Path) -> None:
    """With the apply thread held inside a batch, later writes are still saved and
    committed (the log thread is not behind the apply), none is answered before
    its batch is applied, and once the apply resumes all are answered in order."""
    GatedMemory.gate.set()
    GatedMemory.entered.clear()

    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        await node.put(b"k", b"0")
        GatedMemory.gate.clear()
        first = asyncio.create_task(node.put(b"k", b"1"))
        await eventually(GatedMemory.entered.is_set, "the apply thread to hold a batch", 10)
        before = node.status().last_index
        later = [asyncio.create_task(node.put(b"k", str(i).encode())) for i in (2, 3)]
        await eventually(
            lambda: node.status().commit_index >= before + 2,
            "later writes committed while a batch applies",
            10,
        )
        assert not first.done()
        assert not any(task.done() for task in later)
        GatedMemory.gate.set()
        results = [await first, *[await task for task in later]]
        assert [r.index for r in results] == sorted(r.index for r in results)
        kv, _ = await node.get(b"k")
        assert kv is not None
        assert kv.value == b"3"

    try:
        _GatedCluster(tmp_path, 1, "memory").run(body)
    finally:
        GatedMemory.gate.set()
