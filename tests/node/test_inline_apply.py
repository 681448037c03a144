"""Small batches apply on the loop, large ones on the apply thread, all in order.

``NodeDisk`` applies a batch of at most ``INLINE_APPLY_ENTRIES`` entries on the
event loop when nothing is queued on the apply thread (a one-put batch costs less
than the hand-off); a batch behind a queued one waits its turn on the thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path

from raftdb.config import NodeConfig
from raftdb.kv.commands import ApplyResult
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.node.disk import INLINE_APPLY_ENTRIES
from raftdb.raft import Entry

from .cluster import LocalCluster, eventually


class Recording(MemoryStateMachine):
    """The memory state machine, recording each batch's indexes and thread."""

    batches: list[tuple[int, int, str]] = []
    gate = threading.Event()  # a large batch on the apply thread waits for it

    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        thread = threading.current_thread().name
        Recording.batches.append((entries[0].index, entries[-1].index, thread))
        if len(entries) > INLINE_APPLY_ENTRIES and thread.startswith("raftdb-apply"):
            assert Recording.gate.wait(10), "the test never opened the gate"
        return super().apply(entries)


def recording(path: Path | None = None, *, sync: bool = True) -> MemoryStateMachine:
    return Recording(path, sync=sync)


class _Cluster(LocalCluster):
    def config(self, node_id: int, join: bool = False) -> NodeConfig:
        config = super().config(node_id, join)
        return dataclasses.replace(config, state_machine=f"{__name__}:recording")


def test_small_batches_apply_on_the_loop_and_large_ones_on_the_thread_in_order(
    tmp_path: Path,
) -> None:
    Recording.batches.clear()
    Recording.gate.set()
    loop_thread = ""

    async def body(c: LocalCluster) -> None:
        nonlocal loop_thread
        loop_thread = threading.current_thread().name
        node = c.nodes[1]
        for i in range(5):
            await node.put(b"one-%d" % i, b"v")
        # Proposed in one loop turn: one Ready commits them all, one large batch.
        burst = [node.put(b"many-%d" % i, b"v") for i in range(4 * INLINE_APPLY_ENTRIES)]
        await asyncio.gather(*burst)
        for i in range(5):
            await node.put(b"after-%d" % i, b"v")
        kv, _ = await node.get(b"after-4")
        assert kv is not None

    _Cluster(tmp_path, 1, "memory").run(body)
    batches = [b for b in Recording.batches if b[0] > 0]
    # Every index once, in order, whichever thread applied it.
    assert [b[0] for b in batches[1:]] == [b[1] + 1 for b in batches[:-1]]
    small = [b for b in batches if b[1] - b[0] + 1 <= INLINE_APPLY_ENTRIES]
    large = [b for b in batches if b[1] - b[0] + 1 > INLINE_APPLY_ENTRIES]
    assert large, "the burst made no large batch"
    assert all(thread == "raftdb-apply-1" for _, _, thread in large)
    assert sum(thread == loop_thread for _, _, thread in small) >= 9  # the one-put writes


def test_a_small_batch_behind_a_large_one_waits_its_turn_on_the_thread(tmp_path: Path) -> None:
    Recording.batches.clear()
    Recording.gate.clear()

    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        await node.put(b"first", b"v")
        burst = asyncio.gather(
            *(node.put(b"many-%d" % i, b"v") for i in range(4 * INLINE_APPLY_ENTRIES))
        )
        await eventually(
            lambda: any(b[1] - b[0] >= INLINE_APPLY_ENTRIES for b in Recording.batches),
            "the large batch to start applying",
            10,
        )
        committed = node.status().commit_index
        behind = asyncio.ensure_future(node.put(b"behind", b"v"))
        await eventually(
            lambda: node.status().commit_index > committed, "the small write committed", 10
        )
        assert not behind.done()  # not applied on the loop past the held batch
        Recording.gate.set()
        await burst
        index = (await behind).index
        (batch,) = [b for b in Recording.batches if b[0] <= index <= b[1]]
        assert batch[2] == "raftdb-apply-1"

    try:
        _Cluster(tmp_path, 1, "memory").run(body)
    finally:
        Recording.gate.set()
