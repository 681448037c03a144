"""Watch through real in-process nodes: every member's stream is the committed history."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftdb.kv.changes import Change
from raftdb.kv.txn import Txn, TxnOp
from raftdb.node import Node
from raftdb.node.errors import BadRequestError, CompactedError, TooManyRequestsError
from raftdb.node.handle import Watcher, WatchEvent

from .cluster import LocalCluster, eventually


async def collect(watcher: Watcher, count: int, within: float = 10) -> list[WatchEvent]:
    """The next ``count`` put and delete events (fails if they do not come)."""
    events: list[WatchEvent] = []

    async def read() -> None:
        if not count:
            return
        async for event in watcher:
            if event.kind in ("put", "delete"):
                events.append(event)
                if len(events) == count:
                    return
            elif event.kind == "closed":
                raise AssertionError(f"the stream closed: {event.data}")

    await asyncio.wait_for(read(), within)
    return events


def committed(node: Node, prefix: bytes = b"", after: int = 0) -> list[Change]:
    assert node._sm is not None
    _, changes = node._sm.history(after, 1_000_000)
    return [c for c in changes if c.key.startswith(prefix)]


async def mixed_writes(c: LocalCluster) -> int:
    """Puts, deletes and transactions through every member; the last index."""
    last = 0
    for i in range(12):
        node = c.nodes[1 + i % len(c.nodes)]
        if i % 4 == 3:
            txn = Txn(success=(TxnOp.put(b"w/t1", str(i).encode()), TxnOp.delete(b"w/0")))
            last = (await node.txn(txn)).index
        elif i % 4 == 2:
            last = (await node.delete(b"w/1")).index
        else:
            last = (await node.put(f"w/{i % 3}".encode(), str(i).encode())).index
        await node.put(b"unwatched", b"x")
    return last


@pytest.mark.parametrize("plugin", ["memory", "leveldb"])
def test_a_watch_from_since_on_each_member_is_the_committed_history(
    tmp_path: Path, plugin: str
) -> None:
    async def body(c: LocalCluster) -> None:
        first = (await c.nodes[1].put(b"w/start", b"0")).index
        live = {i: await node.watch(prefix=b"w/", since=first) for i, node in c.nodes.items()}
        last = await mixed_writes(c)
        expected = committed(c.nodes[1], b"w/", after=first)
        assert expected[-1].index <= last
        for i, node in c.nodes.items():
            got = await collect(live[i], len(expected))
            assert [e.change for e in got] == expected, f"live on node {i}"
            # From the history, after the fact, on each member.
            late = await node.watch(prefix=b"w/", since=first - 1)
            got = await collect(late, 1 + len(expected))
            assert [e.change for e in got][1:] == expected, f"history on node {i}"
            assert got[0].change is not None
            assert got[0].change.key == b"w/start"
            await late.aclose()
            await live[i].aclose()

    LocalCluster(tmp_path, 3, plugin).run(body)


def test_a_watch_without_since_starts_now_and_since_ahead_is_refused(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        before = await c.nodes[1].put(b"k", b"before")
        watcher = await c.nodes[2].watch(key=b"k")
        after = await c.nodes[3].put(b"k", b"after")
        (event,) = await collect(watcher, 1)
        assert event.change is not None
        assert (event.index, event.change.value) == (after.index, b"after")
        assert before.index < after.index
        status = c.nodes[2].status()
        with pytest.raises(BadRequestError, match="after the last index"):
            await c.nodes[2].watch(since=status.commit_index + 100)
        with pytest.raises(BadRequestError):
            await c.nodes[2].watch(key=b"")
        with pytest.raises(BadRequestError):
            await c.nodes[2].watch(since=-1)

    LocalCluster(tmp_path, 3, "memory").run(body)


def test_since_older_than_the_history_is_compacted(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        for i in range(12):
            await c.nodes[1].put(f"k{i}".encode(), b"v")
        node = c.nodes[2]
        await eventually(lambda: node._hub.applied >= c.nodes[1]._hub.applied, "caught up")
        assert node._sm is not None
        floor, _ = node._sm.history(0, 1)
        assert floor > 0
        with pytest.raises(CompactedError) as info:
            await node.watch(since=1)
        assert info.value.oldest_index == floor
        assert info.value.status == 410
        watcher = await node.watch(since=floor)
        await watcher.aclose()

    LocalCluster(tmp_path, 3, "memory", watch_history=4).run(body)


def test_a_slow_watcher_is_closed_with_where_to_resume(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        node = c.nodes[3]
        slow = await node.watch(prefix=b"s/")
        for i in range(10):
            await c.nodes[1].put(f"s/{i}".encode(), b"v")
        await eventually(lambda: node._hub.applied >= c.nodes[1]._hub.applied, "applied")
        events = [e async for e in slow if e.kind != "progress"]
        closed = events[-1]
        assert closed.kind == "closed"
        assert closed.data is not None
        assert closed.data["error"] == "watcher_too_slow"
        assert len(events) == 1 + 3  # the buffer's worth, then the end
        since = closed.data["since"]
        assert isinstance(since, int)
        resumed = await node.watch(prefix=b"s/", since=since)
        expected = committed(node, b"s/")
        rest = await collect(resumed, len(expected) - 3)
        assert [e.change for e in events[:-1] + rest] == expected
        await resumed.aclose()

    LocalCluster(tmp_path, 3, "memory", watch_buffer=3).run(body)


def test_max_watchers_and_progress_events(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        node = c.nodes[2]
        first = await node.watch(key=b"quiet")
        second = await node.watch(prefix=b"q/")
        with pytest.raises(TooManyRequestsError):
            await node.watch()
        assert "raftdb_watchers 2.0" in node.metrics_text()
        written = await c.nodes[1].put(b"elsewhere", b"v")
        await eventually(lambda: node._hub.applied >= written.index, "applied")
        progress = await asyncio.wait_for(anext(first), 5)
        assert progress.kind == "progress"
        assert progress.index >= written.index
        assert progress.data == {"applied_index": progress.index}
        await first.aclose()
        third = await node.watch()
        await third.aclose()
        await second.aclose()
        assert "raftdb_watchers 0.0" in node.metrics_text()

    LocalCluster(tmp_path, 3, "memory", max_watchers=2, watch_progress_s=0.05).run(body)


def test_wait_for_change_returns_on_a_change_after_the_index(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        node = c.nodes[2]
        _, index = await node.get(b"cfg/a")
        waiting = asyncio.create_task(node.wait_for_change(prefix=b"cfg/", index=index, timeout=30))
        await c.nodes[1].put(b"other", b"v")
        await c.nodes[1].put(b"cfg/a", b"1")
        await asyncio.wait_for(waiting, 10)
        # Changed after index already: at once. Nothing after now: when time is up.
        await asyncio.wait_for(node.wait_for_change(key=b"cfg/a", index=index, timeout=60), 5)
        _, now = await node.get(b"cfg/a")
        await node.wait_for_change(key=b"cfg/a", index=now, timeout=0.05)

    LocalCluster(tmp_path, 3, "memory").run(body)


def test_a_watch_resumes_after_a_restart_with_the_leveldb_plugin(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        node = c.nodes[3]
        watcher = await node.watch(prefix=b"r/")
        first = [(await c.nodes[1].put(f"r/{i}".encode(), b"v")).index for i in range(5)]
        got = await collect(watcher, 3)
        resume_at = got[-1].index
        await watcher.aclose()
        await c.stop(3)
        for i in range(5, 8):
            await c.nodes[1].put(f"r/{i}".encode(), b"v")
        node = await c.start(3)
        await c.wait_ready()
        resumed = await node.watch(prefix=b"r/", since=resume_at)
        expected = committed(c.nodes[1], b"r/", after=resume_at)
        rest = await collect(resumed, len(expected))
        assert [e.change for e in rest] == expected
        assert [e.index for e in got + rest] == sorted({*first, *(c.index for c in expected)})
        await resumed.aclose()

    LocalCluster(tmp_path, 3, "leveldb").run(body)


def test_a_follower_restored_from_a_snapshot_keeps_its_watchers_gapless(tmp_path: Path) -> None:
    """A member far behind gets the leader's snapshot: a watcher it serves catches up
    from the snapshot's history, so its stream is still the committed history."""

    async def body(c: LocalCluster) -> None:
        await c.nodes[1].put(b"s/start", b"0")
        await c.stop(3)
        for i in range(40):
            await c.nodes[1].put(f"s/{i % 5}".encode(), str(i).encode())
        # The memory state machine keeps nothing: node 3 starts from 0 (its log
        # holds the start), and the leader's log is compacted past its end, so
        # it gets a snapshot, after its watcher is open.
        node = await c.start(3)
        assert node._hub.applied == 0
        watcher = await node.watch(prefix=b"s/", since=0)
        await eventually(lambda: node.metrics.snapshots_restored._value.get() >= 1, "snapshot")
        expected = committed(c.nodes[1], b"s/")
        got = await collect(watcher, len(expected))
        assert [e.change for e in got] == expected
        await watcher.aclose()

    LocalCluster(
        tmp_path,
        3,
        "leveldb",
        state_machine="memory",
        snapshot_entries=10,
        snapshot_keep_entries=0,
        watch_history=1000,
    ).run(body)
