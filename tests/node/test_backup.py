"""Backups (raftdb.node.backup): a snapshot after a read point, streamed from worker
threads, limited in number, and released however its reader ends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftdb.kv.snapshot import SnapshotInfo, SnapshotReader, SnapshotStream, check_stream
from raftdb.node.backup import MAX_BACKUPS, BackupGate, BackupStream
from raftdb.node.errors import TooManyRequestsError
from raftdb.raft.messages import ConfState
from tests.node.cluster import LocalCluster

_INFO = SnapshotInfo(7, 2, ConfState(voters=(1,)), {1: "http://127.0.0.1:1"})


def test_the_gate_refuses_one_backup_too_many_and_each_leaves_once() -> None:
    gate = BackupGate(limit=2)
    first, second = gate.enter(), gate.enter()
    with pytest.raises(TooManyRequestsError, match="at most 2 at a time"):
        gate.enter()
    first()
    first()  # a second call gives back nothing more
    assert gate.active == 1
    gate.enter()
    second()
    assert gate.active == 1


def test_chunks_come_in_order_then_the_stream_reports_it_was_whole() -> None:
    closes: list[tuple[int, bool]] = []
    released = threading.Event()

    async def scenario() -> list[bytes]:
        stream = BackupStream(
            SnapshotStream(_INFO, iter([b"ab", b"cde"]), released.set),
            lambda sent, whole: closes.append((sent, whole)),
        )
        got = [chunk async for chunk in stream]
        await stream.aclose()  # idempotent after the end
        return got

    assert asyncio.run(scenario()) == [b"ab", b"cde"]
    assert closes == [(5, True)]
    assert released.is_set()


def test_closing_while_a_chunk_is_read_waits_for_the_thread_then_releases() -> None:
    """A generator cannot be closed while a worker thread runs it: aclose waits."""
    reading, go_on, released = threading.Event(), threading.Event(), threading.Event()
    closes: list[tuple[int, bool]] = []

    def chunks() -> Iterator[bytes]:
        yield b"first"
        reading.set()
        go_on.wait(5)
        yield b"second"
        yield b"never read"

    async def scenario() -> None:
        stream = BackupStream(
            SnapshotStream(_INFO, chunks(), released.set),
            lambda sent, whole: closes.append((sent, whole)),
        )
        assert await anext(stream) == b"first"
        reader = asyncio.ensure_future(anext(stream))
        await asyncio.to_thread(reading.wait, 5)
        reader.cancel()  # the client went away while the next chunk was read
        closing = asyncio.ensure_future(stream.aclose())
        await asyncio.sleep(0)
        assert not closing.done()
        assert not released.is_set()
        go_on.set()
        await asyncio.wait_for(closing, 5)
        assert released.is_set()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

    asyncio.run(scenario())
    assert closes == [(5, False)]


@pytest.mark.parametrize("plugin", ["leveldb", "memory"])
def test_a_follower_backup_holds_every_acknowledged_write(tmp_path: Path, plugin: str) -> None:
    """Taken through a follower after a read point: every write acknowledged before it
    is in it, whichever member took it; writes during the stream do not disturb it."""
    cluster = LocalCluster(tmp_path, 3, plugin)

    async def main(c: LocalCluster) -> None:
        leader = c.leader()
        assert leader is not None
        follower = next(n for n in c.nodes.values() if n is not leader)
        last = 0
        for i in range(200):
            node = leader if i % 2 else follower
            last = (await node.put(f"k{i:03d}".encode(), b"x" * 100)).index
        backup = await follower.snapshot()
        assert backup.info.index >= last
        chunks: list[bytes] = []
        late = 0
        async for chunk in backup:
            chunks.append(chunk)
            late = (await leader.put(b"k-late", b"written while the backup is read")).index
        await backup.aclose()
        info = check_stream(chunks)
        assert info == backup.info
        assert set(info.members) == {1, 2, 3}
        reader = SnapshotReader(chunks)
        keys = [k for batch in reader.kv_batches() for k, *_ in batch]
        # The point in time was fixed when snapshot() returned: the late write is after it.
        assert late > info.index
        assert keys == [f"k{i:03d}".encode() for i in range(200)]

    cluster.run(main)


def test_a_node_streams_a_limited_number_of_backups(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 1, "leveldb")

    async def main(c: LocalCluster) -> None:
        node = c.nodes[1]
        await node.put(b"k", b"v")
        open_ones = [await node.snapshot() for _ in range(MAX_BACKUPS)]
        with pytest.raises(TooManyRequestsError):
            await node.snapshot()
        await open_ones[0].aclose()  # given up early: its place is free again
        again = await node.snapshot()
        assert check_stream([chunk async for chunk in again]).index >= 1
        for backup in open_ones[1:]:
            await backup.aclose()

    cluster.run(main)
