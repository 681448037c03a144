"""The Ready loop: the two tasks that drive a node's Raft core against its disk,
the peer transport and the waiting requests (``raftdb.node.node.Node`` makes
one when it starts, and serves the API beside it).

Theory of operation
-------------------
Everything that touches the core runs on one asyncio loop. Two tasks drive it:
the *ticker* calls ``tick()`` every ``tick_ms``, and the *Ready loop* handles
one Ready at a time, in the order ``raftdb.raft.rawnode`` requires::

    rd = raw.ready()
    send rd.messages                  (a leader's appends leave before its own save;
                                       its commit notices may wait a little, below)
    hand the committed entries that earlier saves made durable to the apply thread
    on the log thread: [restore a received snapshot], save, then
        send rd.messages_after_save   (votes, acks: only once durable)
    hand the rest of rd.committed_entries (this save's own) to the apply thread
    raw.advance(rd); answer waiting reads

The log thread and the apply thread are the node's disk (``raftdb.node.disk``,
with the storage and the state machine they write): a batch applies while the
next Ready is saved (a few batches queued at most, applied in order), and a
snapshot to install waits for every batch before it. Requests are answered
when their batch is applied (the disk's ``after_apply``, the node's).

A Ready's committed entries that an earlier save made durable (on a leader,
all of them as a rule; on a follower, those the commit index reached after
their append was saved) start applying before this Ready's save, so that
their answers do not wait for its fsync. Those that this same Ready brings
(a follower told of an append and of its commit at once) apply only after
the save: the state machine never holds an entry that a power cut could take
from the log.

While the threads save and apply, the loop keeps stepping peer messages and
taking proposals; they go into the next Ready, so one fsync covers every
write that arrived meanwhile (group commit).

A save that fails with an ``OSError`` (a full disk) is not fatal: the same
Ready is saved again with backoff while the node answers ``503``
(``raftdb.node.disk``). Any other storage or state machine error, including
damage found by a read, stops the node for good (the node's ``fail``).

A leader's commit notices (an append of the commit index alone, to a
follower that waits on nothing) are held for ``commit_notice_delay_ms`` in
case the next Ready's appends carry the index instead
(``raftdb.node.commit_notices``).

Requests wait in ``raftdb.node.requests`` until they are answered or time out.
Writes are queued and proposed together at the top of the Ready loop
(``propose_many``), each in this node's client session, so that it is found
again when applied and may be proposed again safely; the linearizable reads
of the meantime share one ``read_index`` request there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from raftdb.node.commit_notices import CommitNotices
from raftdb.node.disk import NodeDisk
from raftdb.node.requests import WaitingRequests
from raftdb.raft import Entry, RawNode, Ready
from raftdb.transport.transport import Transport

__all__ = ["ReadyLoop"]

log = logging.getLogger("raftdb.node")


class ReadyLoop:
    """The ticker and the Ready loop of one started node: see the module docstring.

    The node makes it once the core and the transport exist and hands it
    everything it drives, so that a turn of the loop calls the core, the disk,
    the transport and the requests directly.
    """

    def __init__(
        self,
        raw: RawNode,
        disk: NodeDisk,
        transport: Transport,
        requests: WaitingRequests,
        wake: asyncio.Event,
        *,
        tick_ms: int,
        commit_notice_delay_ms: int = 0,
        fail: Callable[[str], None],
        failed: Callable[[], bool],
        observe: Callable[[int, int], None] | None = None,
    ) -> None:
        """Args:
        raw: the core to drive.
        disk: saves each Ready and applies its committed entries.
        transport: sends each Ready's messages to the peers.
        requests: the waiting requests, proposed at the top of each turn.
        wake: set when the core may have something new (a step, a request);
            the loop waits on it when there is no Ready.
        tick_ms: how long a tick is.
        commit_notice_delay_ms: how long a commit notice may be held for the
            next append to carry (``raftdb.node.commit_notices``; 0: not held).
        fail: called when handling a Ready breaks (a broken invariant or an
            unexpected storage error): the node stops serving for good.
        failed: whether the node has failed (the loop ends; the ticker then only
            expires requests).
        observe: told ``(term, leader)`` when the loop starts and after each
            Ready that changed soft or hard state (the node records changes).
        """
        self._raw = raw
        self._disk = disk
        self._transport = transport
        self._requests = requests
        self._wake = wake
        self._tick_ms = tick_ms
        self._notices = CommitNotices(transport.send, commit_notice_delay_ms / 1000)
        self._fail = fail
        self._failed = failed
        self._on_state = observe
        self._stopping = False  # set by stop()
        self._id = raw.id
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the Ready loop and the ticker on the running asyncio loop."""
        if self._on_state is not None:
            self._on_state(self._raw.term, self._raw.lead)
        self._tasks = [
            asyncio.create_task(self._handle_readies(), name=f"raftdb-ready-{self._id}"),
            asyncio.create_task(self._ticker(), name=f"raftdb-ticker-{self._id}"),
        ]

    async def stop(self) -> None:
        """Stop both tasks and wait until they have ended (the node is stopping)."""
        self._stopping = True
        self._notices.cancel()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _ticker(self) -> None:
        """Tick the core every ``tick_ms`` and expire the requests whose time is up."""
        interval = self._tick_ms / 1000
        next_at = time.monotonic()
        loop = asyncio.get_running_loop()
        raw = self._raw
        while True:
            next_at += interval
            now = time.monotonic()
            if next_at < now - interval:
                # We were paused (SIGSTOP, a long GC): drop the missed ticks rather
                # than fire them back to back and time out every election at once.
                next_at = now
            await asyncio.sleep(max(0.0, next_at - now))
            self._requests.expire(loop.time())
            if self._failed():
                continue
            raw.tick()
            self._requests.tick(raw)  # proposes again what waited long
            self._wake.set()

    async def _handle_readies(self) -> None:
        """Propose what waits, then handle the next Ready, or wait to be woken."""
        raw = self._raw
        while not self._stopping and not self._failed():
            if self._requests.queued:
                self._requests.propose_queued(raw)
            if self._requests.unasked:
                self._requests.ask_reads(raw)
            if not raw.has_ready():
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._handle_ready(raw)
            except Exception as e:  # a broken invariant: stop, loudly, never half-serve
                log.exception("node %d: Ready handling failed", self._id)
                self._fail(f"{type(e).__name__}: {e}")

    async def _handle_ready(self, raw: RawNode) -> None:
        """One Ready, in the order of ``RawNode``'s contract (see the module docstring)."""
        rd = raw.ready()
        self._observe(rd)
        transport = self._transport
        disk = self._disk
        if rd.messages:
            transport.send(self._notices.route(rd.messages))
        if rd.snapshot is not None:
            await disk.applies_done()  # the restore must follow every earlier batch
        committed = rd.committed_entries
        if rd.entries or rd.snapshot is not None or rd.must_sync:
            if committed and rd.snapshot is None:
                # What earlier saves made durable applies while this one saves.
                saved = _saved_before(rd)
                if saved:
                    await disk.apply_room()
                    disk.start_apply(saved)
                    committed = committed[len(saved) :]
            # An OSError saving rd is retried (NodeDisk.save); any other storage
            # error propagates: the node stops (fail).
            await disk.save(rd, transport.send)
        else:
            if rd.hard_state is not None:
                # Only the commit index moved: it need not be durable (it is
                # volatile state in Raft), so it rides along with the next save.
                disk.defer_hard_state(rd.hard_state)
            if rd.messages_after_save:
                transport.send(rd.messages_after_save)
        if committed:
            await disk.apply_room()  # a few batches queued at most, applied in order
            disk.start_apply(committed)
        raw.advance(rd)
        self._requests.answer_reads(rd.read_states)

    def _observe(self, rd: Ready) -> None:
        """Log a change of role or leader; re-ask the reads a former leader holds;
        report (term, leader) when either may have changed."""
        if self._on_state is not None and (rd.soft_state is not None or rd.hard_state is not None):
            self._on_state(self._raw.term, self._raw.lead)
        if rd.soft_state is not None:
            self._notices.cancel()  # a former leader's notices are news to nobody
            raw = self._raw
            log.info(
                "node %d: %s, leader %d, term %d",
                self._id,
                rd.soft_state.role.value,
                rd.soft_state.lead,
                raw.term,
            )
            if rd.soft_state.lead:
                # Reads sent to a former leader will not be answered: ask the new one.
                self._requests.reissue_reads(raw)


def _saved_before(rd: Ready) -> list[Entry]:
    """The committed entries of ``rd`` that earlier saves made durable: those
    before its first new entry, all of them if it has none.

    That holds because every earlier Ready was saved before this one was taken,
    and a committed entry is never replaced. A leader counts its own copy towards
    a commit only once saved, so only a quorum of followers can commit an entry
    it still saves; a follower may be told of an entry and of its commit in one
    Ready. Those apply after this save (the module docstring).
    """
    committed = rd.committed_entries
    if not rd.entries:
        return committed
    first_new = rd.entries[0].index
    if committed[-1].index < first_new:
        return committed
    return [e for e in committed if e.index < first_new]
