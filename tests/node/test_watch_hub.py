"""``raftdb.node.watch``: the hub and its watchers over a real in-memory state machine.

Entries are applied to a :class:`MemoryStateMachine` (the real Applier and
history) and their results published as the node does after each batch.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from raftdb.kv.changes import Change
from raftdb.kv.commands import Command, KVResult
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.kv.txn import Txn, TxnOp
from raftdb.node.errors import (
    CompactedError,
    NotReadyError,
    TooManyRequestsError,
)
from raftdb.node.handle import WatchEvent
from raftdb.node.watch import Watcher, WatchHub
from raftdb.raft import Entry


class Feed:
    """A state machine and a hub fed the way the node feeds it."""

    def __init__(
        self,
        *,
        history: int = 1000,
        max_watchers: int = 100,
        buffer: int = 100,
        progress_s: float = 60.0,
        page: int = 4,
    ) -> None:
        self.sm = MemoryStateMachine(watch_history=history)
        self.hub = WatchHub(
            lambda: self.sm,
            max_watchers=max_watchers,
            buffer=buffer,
            progress_s=progress_s,
            page=page,
        )
        self._index = itertools.count(1)
        self.hub.start(self.sm.applied_index)

    def apply(self, *commands: Command, publish: bool = True) -> list[KVResult]:
        """Apply one batch; publish its changes unless told not to (yet)."""
        entries = [Entry(1, next(self._index), data=cmd.encode()) for cmd in commands]
        results = self.sm.apply(entries)
        out = [r for r in results if isinstance(r, KVResult)]
        if publish:
            self.publish(entries, out)
        return out

    def publish(self, entries: list[Entry], results: list[KVResult]) -> None:
        for result in results:
            if result.changes:
                self.hub.publish(result.changes)
        self.hub.advance(entries[-1].index)

    def put(self, key: bytes, value: bytes = b"v", **kwargs: Any) -> KVResult:
        return self.apply(Command.put(key, value, **kwargs))[0]

    def delete(self, key: bytes) -> KVResult:
        return self.apply(Command.delete(key))[0]


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 10))


async def take(watcher: Watcher, n: int) -> list[WatchEvent]:
    """The next ``n`` events (fails the test if they do not come)."""
    return [await asyncio.wait_for(anext(watcher), 5) for _ in range(n)]


def keys(events: list[WatchEvent]) -> list[tuple[str, int, bytes]]:
    out: list[tuple[str, int, bytes]] = []
    for e in events:
        assert e.change is not None
        out.append((e.kind, e.index, e.change.key))
    return out


def history_of(feed: Feed, match: Callable[[bytes], bool], after: int = 0) -> list[Change]:
    _, changes = feed.sm.history(after, 1_000_000)
    return [c for c in changes if match(c.key)]


def test_a_live_watcher_gets_matching_puts_and_deletes_in_order() -> None:
    async def body() -> None:
        feed = Feed()
        by_prefix = await feed.hub.watch(prefix=b"a/", since=0)
        by_key = await feed.hub.watch(key=b"a/1", since=0)
        everything = await feed.hub.watch(since=0)
        assert by_prefix.live
        feed.put(b"a/1")
        feed.put(b"b/1")
        feed.put(b"a/2")
        feed.delete(b"a/1")
        feed.delete(b"a/3")  # absent: no change
        assert keys(await take(by_prefix, 3)) == [
            ("put", 1, b"a/1"),
            ("put", 3, b"a/2"),
            ("delete", 4, b"a/1"),
        ]
        assert keys(await take(by_key, 2)) == [("put", 1, b"a/1"), ("delete", 4, b"a/1")]
        assert [e.index for e in await take(everything, 4)] == [1, 2, 3, 4]
        assert feed.hub.count == 3
        for w in (by_prefix, by_key, everything):
            await w.aclose()
        assert feed.hub.count == 0

    run(body)


def test_a_transaction_arrives_together_under_its_index() -> None:
    async def body() -> None:
        feed = Feed()
        watcher = await feed.hub.watch(prefix=b"t/", since=0)
        txn = Txn(success=(TxnOp.put(b"t/a", b"1"), TxnOp.put(b"x", b"2"), TxnOp.put(b"t/b", b"3")))
        feed.apply(Command.txn(txn.encode()))
        events = await take(watcher, 2)
        assert keys(events) == [("put", 1, b"t/a"), ("put", 1, b"t/b")]
        assert [e.change.value for e in events if e.change] == [b"1", b"3"]

    run(body)


def test_catch_up_from_the_history_joins_the_live_feed_without_gap_or_duplicate() -> None:
    async def body() -> None:
        feed = Feed(page=3)
        for i in range(20):
            feed.put(f"k/{i % 4}".encode(), str(i).encode())
        watcher = await feed.hub.watch(prefix=b"k/", since=5)
        assert watcher.position < feed.hub.applied  # catching up from the history
        got = await take(watcher, 4)
        # A write applied but not published yet (the apply thread is ahead of
        # the loop), then published: delivered once, from the history or live.
        entries_before = feed.sm.applied_index
        pending = feed.apply(Command.put(b"k/9", b"late"), publish=False)
        got += await take(watcher, 15 - 4)
        feed.publish([Entry(1, entries_before + 1)], pending)
        for i in range(3):
            feed.put(b"k/live", str(i).encode())
        got += await take(watcher, 1 + 3)
        assert watcher.live
        expected = history_of(feed, lambda k: k.startswith(b"k/"), after=5)
        assert [e.change for e in got] == expected
        assert [e.index for e in got] == sorted({c.index for c in expected})

    run(body)


def test_since_before_the_history_floor_is_compacted() -> None:
    async def body() -> None:
        feed = Feed(history=5)
        for i in range(12):
            feed.put(f"k{i}".encode())
        floor, _ = feed.sm.history(0, 1)
        assert floor == 7
        with pytest.raises(CompactedError) as info:
            await feed.hub.watch(since=3)
        assert info.value.oldest_index == floor
        assert feed.hub.count == 0  # the refused watcher holds no slot
        watcher = await feed.hub.watch(since=floor)
        assert [e.index for e in await take(watcher, 5)] == [8, 9, 10, 11, 12]

    run(body)


def test_a_watcher_overtaken_by_the_history_while_catching_up_is_closed_compacted() -> None:
    async def body() -> None:
        feed = Feed(history=6, page=2)
        for i in range(6):
            feed.put(f"k{i}".encode())
        watcher = await feed.hub.watch(since=0)
        first = await take(watcher, 1)
        assert first[0].index == 1
        for i in range(10):  # the window moves past what the watcher has read
            feed.put(f"n{i}".encode())
        events = []
        async for event in watcher:
            events.append(event)
        closed = events[-1]
        assert closed.kind == "closed"
        assert closed.data == {"error": "compacted", "oldest_index": 10}
        assert all(e.kind == "put" for e in events[:-1])
        assert watcher.closed
        assert feed.hub.count == 0

    run(body)


def test_a_slow_watcher_gets_a_final_event_with_the_index_to_resume_from() -> None:
    async def body() -> None:
        feed = Feed(buffer=3)
        slow = await feed.hub.watch(prefix=b"s/", since=0)
        for i in range(6):
            feed.put(f"s/{i}".encode())
            feed.put(b"other")
        events = [e async for e in slow]
        assert [e.kind for e in events] == ["put", "put", "put", "closed"]
        closed = events[-1]
        assert closed.data is not None
        assert closed.data["error"] == "watcher_too_slow"
        since = closed.data["since"]
        assert isinstance(since, int)
        assert closed.index == since
        assert events[2].index <= since < 7  # the 4th put of s/ is at index 7
        resumed = await feed.hub.watch(prefix=b"s/", since=since)
        rest = await take(resumed, 3)
        got = [e.change for e in events[:-1] + rest]
        assert got == history_of(feed, lambda k: k.startswith(b"s/"))

    run(body)


def test_an_index_larger_than_the_buffer_is_still_delivered_whole() -> None:
    async def body() -> None:
        feed = Feed(buffer=2)
        watcher = await feed.hub.watch(since=0)
        txn = Txn(success=tuple(TxnOp.put(f"k{i}".encode(), b"v") for i in range(5)))
        feed.apply(Command.txn(txn.encode()))
        assert [e.kind for e in await take(watcher, 5)] == ["put"] * 5
        feed.put(b"after")
        assert [e.index for e in await take(watcher, 1)] == [2]

    run(body)


def test_max_watchers_is_a_429_and_closing_frees_the_slot() -> None:
    async def body() -> None:
        feed = Feed(max_watchers=2)
        first = await feed.hub.watch(since=0)
        await feed.hub.watch(key=b"k", since=0)
        with pytest.raises(TooManyRequestsError):
            await feed.hub.watch(since=0)
        with pytest.raises(TooManyRequestsError):
            await feed.hub.wait(key=b"k", after=0, timeout=0.01)
        await first.aclose()
        third = await feed.hub.watch(since=0)
        assert feed.hub.count == 2
        await third.aclose()
        await third.aclose()  # idempotent
        assert feed.hub.count == 1

    run(body)


def test_an_idle_watcher_gets_progress_events_with_the_applied_index() -> None:
    async def body() -> None:
        feed = Feed(progress_s=0.02)
        feed.put(b"unwatched")
        watcher = await feed.hub.watch(key=b"k", since=0)
        progress = (await take(watcher, 1))[0]
        assert progress.kind == "progress"
        assert progress.index == 1
        assert progress.data == {"applied_index": 1}
        feed.put(b"unwatched")
        feed.put(b"k")
        event = (await take(watcher, 1))[0]
        assert (event.kind, event.index) == ("put", 3)
        progress = (await take(watcher, 1))[0]
        assert (progress.kind, progress.index) == ("progress", 3)

    run(body)


def test_prev_is_the_value_before_the_change_while_the_history_holds_it() -> None:
    async def body() -> None:
        feed = Feed(history=4)
        feed.put(b"k", b"one")
        watcher = await feed.hub.watch(key=b"k", since=0, prev=True)
        feed.put(b"k", b"two")
        feed.delete(b"k")
        events = await take(watcher, 3)
        assert [e.prev.value if e.prev else None for e in events] == [None, b"one", b"two"]
        assert events[2].prev is not None
        assert events[2].prev.mod_index == 2
        feed.put(b"k", b"three")  # at 4
        for i in range(4):  # 5..8: the window (4 changes) no longer holds 4
            feed.put(f"x{i}".encode())
        feed.put(b"k", b"four")
        event = (await take(watcher, 2))[1]
        assert event.change is not None
        assert (event.change.value, event.change.prev_mod_index) == (b"four", 4)
        assert event.prev is None

    run(body)


def test_prev_within_one_transaction_is_the_earlier_write() -> None:
    async def body() -> None:
        feed = Feed()
        feed.put(b"k", b"zero")
        watcher = await feed.hub.watch(key=b"k", since=1, prev=True)
        txn = Txn(success=(TxnOp.put(b"k", b"one"), TxnOp.put(b"k", b"two")))
        feed.apply(Command.txn(txn.encode()))
        events = await take(watcher, 2)
        assert [(e.change.value if e.change else None) for e in events] == [b"one", b"two"]
        assert [e.prev.value if e.prev else None for e in events] == [b"zero", b"one"]

    run(body)


def test_wait_returns_on_a_matching_change_or_when_time_is_up() -> None:
    async def body() -> None:
        feed = Feed()
        feed.put(b"a")
        waiting = asyncio.ensure_future(feed.hub.wait(prefix=b"p/", after=1, timeout=5))
        await asyncio.sleep(0)
        feed.put(b"other")
        await asyncio.sleep(0)
        assert not waiting.done()
        feed.put(b"p/1")
        await asyncio.wait_for(waiting, 5)
        # Already changed after index 1: at once, from the history.
        await asyncio.wait_for(feed.hub.wait(prefix=b"p/", after=1, timeout=60), 5)
        # Nothing matching after 3: returns when the wait ends, without error.
        await feed.hub.wait(key=b"a", after=1, timeout=0.01)
        assert feed.hub.count == 0

    run(body)


def test_a_snapshot_restore_makes_watchers_catch_up_from_its_history_or_close() -> None:
    async def body() -> None:
        feed = Feed(history=100)
        leader = MemoryStateMachine(watch_history=100)
        behind = await feed.hub.watch(since=0)
        feed.put(b"k", b"1")
        assert keys(await take(behind, 1)) == [("put", 1, b"k")]
        # The leader's state machine went on: 1 and then 2..5.
        commands = [Command.put(f"k{i}".encode(), b"v") for i in range(5)]
        leader.apply([Entry(1, 1, data=Command.put(b"k", b"1").encode())])
        leader.apply([Entry(1, i + 2, data=c.encode()) for i, c in enumerate(commands[1:])])
        stream = leader.snapshot()
        feed.sm.restore(list(stream))
        feed.hub.restored(feed.sm.applied_index)
        assert not behind.live
        got = await take(behind, 4)
        assert [e.index for e in got] == [2, 3, 4, 5]
        assert behind.live

    run(body)


def test_stopping_the_hub_ends_watchers_and_waits_and_refuses_new_ones() -> None:
    async def body() -> None:
        feed = Feed()
        watcher = await feed.hub.watch(since=0)
        waiting = asyncio.ensure_future(feed.hub.wait(key=b"k", after=0, timeout=30))
        await asyncio.sleep(0)
        feed.put(b"k")
        feed.put(b"j")
        stop = NotReadyError("the node is stopping")
        # The wait already returned (k changed); a new one sees the stop.
        await waiting
        waiting = asyncio.ensure_future(feed.hub.wait(key=b"z", after=2, timeout=30))
        await asyncio.sleep(0)
        feed.hub.stop(stop)
        with pytest.raises(NotReadyError):
            await waiting
        events = [e async for e in watcher]
        assert [e.kind for e in events] == ["put", "put", "closed"]
        assert events[-1].data == {"error": "not_ready", "message": stop.message, "since": 2}
        with pytest.raises(NotReadyError):
            await feed.hub.watch(since=0)

    run(body)


def test_publish_reaches_only_matching_watchers() -> None:
    async def body() -> None:
        feed = Feed()
        watchers = [await feed.hub.watch(prefix=f"p{i}/".encode(), since=0) for i in range(50)]
        near = await feed.hub.watch(prefix=b"p1", since=0)  # p1/, p10/ ... p19/
        feed.put(b"p7/x")
        feed.put(b"p17/x")
        assert keys(await take(watchers[7], 1)) == [("put", 1, b"p7/x")]
        assert keys(await take(watchers[17], 1)) == [("put", 2, b"p17/x")]
        assert keys(await take(near, 1)) == [("put", 2, b"p17/x")]
        assert all(not w._queue for w in watchers)  # nothing queued for the others
        assert feed.hub._lengths == [2, 3, 4]  # one lookup per distinct prefix length

    run(body)


def test_a_restore_past_a_watchers_position_closes_it_compacted() -> None:
    async def body() -> None:
        feed = Feed(history=100)
        watcher = await feed.hub.watch(since=0)
        feed.put(b"k", b"1")
        assert keys(await take(watcher, 1)) == [("put", 1, b"k")]
        leader = MemoryStateMachine(watch_history=2)  # its window starts at 4
        leader.apply(
            [Entry(1, i, data=Command.put(b"k%d" % i, b"v").encode()) for i in range(1, 6)]
        )
        feed.sm.restore(list(leader.snapshot()))
        feed.hub.restored(feed.sm.applied_index)
        (closed,) = [e async for e in watcher]
        assert closed.kind == "closed"
        assert closed.data == {"error": "compacted", "oldest_index": 3}
        assert feed.hub.count == 0

    run(body)


def test_previous_values_of_a_large_index_are_all_looked_up() -> None:
    async def body() -> None:
        feed = Feed()
        names = [b"k%03d" % i for i in range(100)]  # more than one burst of lookups
        feed.apply(*(Command.put(name, b"old " + name) for name in names))
        watcher = await feed.hub.watch(since=feed.sm.applied_index, prev=True)
        feed.apply(Command.txn(Txn(success=tuple(TxnOp.put(n, b"new") for n in names)).encode()))
        events = await take(watcher, 100)
        assert [e.prev.value if e.prev else None for e in events] == [b"old " + n for n in names]
        assert {e.index for e in events} == {101}

    run(body)
