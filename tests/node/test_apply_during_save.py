"""The Ready loop's order of save and apply (``raftdb/node/ready_loop.py``): what
earlier saves made durable applies while a Ready saves; what the Ready itself
brings applies only once its save is done.

A real follower core is driven by a real ``ReadyLoop`` against a recording disk
whose saves wait for the test to let them finish, so the order of every save
and apply is seen exactly, with no timing in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from random import Random
from typing import cast

from raftdb.node.disk import NodeDisk
from raftdb.node.ready_loop import ReadyLoop
from raftdb.node.requests import WaitingRequests
from raftdb.raft import Config, Entry, Message, MessageType, RawNode, ReadState, Ready
from raftdb.storage.memory import MemoryStorage
from raftdb.transport.transport import Transport

from .cluster import eventually

MT = MessageType
LEADER, FOLLOWER, TERM = 1, 2, 2


class HeldDisk:
    """The part of ``NodeDisk`` the Ready loop calls. Each save waits for a permit
    from the test; every save and apply is recorded, in order."""

    def __init__(self, storage: MemoryStorage) -> None:
        self.storage = storage
        self.events: list[tuple[str, list[int]]] = []
        self.permits = asyncio.Semaphore(0)
        self.saving: list[int] | None = None  # the indexes of a save held now

    @property
    def applied(self) -> list[int]:
        return [i for kind, indexes in self.events if kind == "apply" for i in indexes]

    async def applies_done(self) -> None:
        pass

    async def apply_room(self) -> None:
        pass

    def start_apply(self, entries: list[Entry]) -> None:
        self.events.append(("apply", [e.index for e in entries]))

    def defer_hard_state(self, hard_state: object) -> None:
        pass

    async def save(self, rd: Ready, send: Callable[[list[Message]], None]) -> None:
        indexes = [e.index for e in rd.entries]
        self.events.append(("save", indexes))
        self.saving = indexes
        await self.permits.acquire()
        self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        self.saving = None
        self.events.append(("saved", indexes))
        if rd.messages_after_save:
            send(rd.messages_after_save)


class NoRequests:
    """No client is waiting: the part of ``WaitingRequests`` the loop calls."""

    queued = 0
    unasked = 0

    def answer_reads(self, read_states: list[ReadState]) -> None:
        pass

    def reissue_reads(self, raw: RawNode) -> None:
        pass

    def expire(self, now: float) -> None:
        pass

    def tick(self, raw: RawNode) -> None:
        pass


class Outbox:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, messages: list[Message]) -> None:
        self.sent.extend(messages)


def append(prev: int, prev_term: int, index: int, commit: int) -> Message:
    """The leader's append of the entry at ``index``, telling commit index ``commit``."""
    entry = Entry(TERM, index, data=b"v%d" % index)
    return Message(
        MT.APP,
        to=FOLLOWER,
        frm=LEADER,
        term=TERM,
        log_term=prev_term,
        index=prev,
        entries=(entry,),
        commit=commit,
    )


def test_durable_entries_apply_while_a_save_holds_and_new_ones_wait_for_it() -> None:
    """A follower saving entry 4 learns of entry 5 and of commit index 5. Its next
    Ready saves 5 and commits 4 and 5: entry 4 (durable since the last save)
    applies while that save is held; entry 5 only after it, never ahead of the log.
    """

    async def body() -> None:
        storage = MemoryStorage()
        raw = RawNode(Config(id=FOLLOWER, storage=storage, rng=Random(0)))
        raw.bootstrap([(1, b""), (2, b""), (3, b"")])  # entries 1..3, committed
        disk = HeldDisk(storage)
        outbox = Outbox()
        wake = asyncio.Event()
        failures: list[str] = []
        loop = ReadyLoop(
            raw,
            cast(NodeDisk, disk),
            cast(Transport, outbox),
            cast(WaitingRequests, NoRequests()),
            wake,
            tick_ms=600_000,  # no tick (and so no election) within the test
            fail=failures.append,
            failed=lambda: bool(failures),
        )
        loop.start()
        try:
            disk.permits.release()  # the bootstrap's Ready
            await eventually(lambda: disk.applied == [1, 2, 3], "the bootstrap entries applied")

            raw.step(append(3, 1, 4, commit=3))
            wake.set()
            await eventually(lambda: disk.saving == [4], "entry 4's save held")
            raw.step(append(4, TERM, 5, commit=5))  # the leader committed 5 meanwhile
            assert disk.applied == [1, 2, 3]

            disk.permits.release()  # entry 4 is durable
            await eventually(lambda: disk.saving == [5], "entry 5's save held")
            await eventually(lambda: disk.applied == [1, 2, 3, 4], "entry 4 applied")
            assert disk.events[-2:] == [("apply", [4]), ("save", [5])]

            disk.permits.release()
            await eventually(lambda: disk.applied == [1, 2, 3, 4, 5], "entry 5 applied")
            assert disk.events[-2:] == [("saved", [5]), ("apply", [5])]
            acks = [m.index for m in outbox.sent if m.type == MT.APP_RESP]
            assert acks == [4, 5]
            assert not failures
        finally:
            disk.permits.release()
            await loop.stop()

    asyncio.run(body())


def test_a_ready_that_saves_nothing_new_applies_before_its_save() -> None:
    """A save of only a new term or vote (no entries) makes nothing applicable, so
    the entries it commits, all saved by earlier Readies, apply before it."""

    async def body() -> None:
        storage = MemoryStorage()
        raw = RawNode(Config(id=FOLLOWER, storage=storage, rng=Random(0)))
        raw.bootstrap([(1, b""), (2, b""), (3, b"")])
        disk = HeldDisk(storage)
        wake = asyncio.Event()
        failures: list[str] = []
        loop = ReadyLoop(
            raw,
            cast(NodeDisk, disk),
            cast(Transport, Outbox()),
            cast(WaitingRequests, NoRequests()),
            wake,
            tick_ms=600_000,
            fail=failures.append,
            failed=lambda: bool(failures),
        )
        loop.start()
        try:
            disk.permits.release()
            await eventually(lambda: disk.applied == [1, 2, 3], "the bootstrap entries applied")
            raw.step(append(3, 1, 4, commit=3))
            wake.set()
            await eventually(lambda: disk.saving == [4], "entry 4's save held")
            disk.permits.release()
            await eventually(lambda: disk.saving is None, "entry 4 saved")
            # A leader of a newer term tells commit 4 in a heartbeat: the new term
            # must be saved (synced), and entry 4 is committed by the same Ready.
            raw.step(Message(MT.HEARTBEAT, to=FOLLOWER, frm=3, term=TERM + 1, commit=4))
            wake.set()
            await eventually(lambda: disk.saving == [], "the new term's save held")
            await eventually(lambda: disk.applied == [1, 2, 3, 4], "entry 4 applied")
            assert disk.events[-2:] == [("apply", [4]), ("save", [])]
            assert not failures
        finally:
            disk.permits.release()
            await loop.stop()

    asyncio.run(body())
