"""The node driver: runs a Raft core against real storage, a state machine and
the peer transport, and serves the REST API's requests (``NodeHandle``).

Theory of operation
-------------------
Everything that touches the core runs on one asyncio loop. Two tasks drive it:
the *ticker* calls ``tick()`` every ``tick_ms``, and the *Ready loop* handles
one Ready at a time, in the order ``node.py`` requires::

    rd = raw.ready()
    send rd.messages                  (a leader's appends leave before its own save)
    on the log thread: [restore a received snapshot], save, then
        send rd.messages_after_save   (votes, acks: only once durable)
    hand rd.committed_entries to the apply thread (one state machine batch)
    raw.advance(rd); answer waiting reads

The apply thread applies a batch while the log thread saves the next Ready
(as etcd's server applies beside the raft loop): a Ready costs the longer of
the two fsyncs, not their sum. At most one batch is applying; the next waits
for it, and a snapshot to install waits for every batch before it. Requests
are answered when their batch is applied. Every ``snapshot_entries`` applied
entries, the log thread records a snapshot and compacts the log: it is the
storage's only writer.

While the threads save and apply, the loop keeps stepping peer messages and
taking proposals; they go into the next Ready, so one fsync covers every
write that arrived meanwhile (group commit).

A save that fails with an ``OSError`` (a full disk) is not fatal: the same
Ready is saved again with backoff while the node answers ``503`` (nothing of
it is applied or acknowledged before its save succeeds, and its entries are
applied once, after). Any other storage or state machine error, including
damage found by a read, stops the node for good (``_fail``).

Requests wait on plain futures; their time limits are entries of one heap
(``raftdb.deadlines``) that the ticker sweeps. Writes are queued and proposed
together at the top of the Ready loop (``propose_many``): one append message
per follower per Ready, however many writes arrived meanwhile. A write carries this node's client
session (``client_id`` + ``seq``, Raft thesis §6.3), so it is found again when
applied — even when proposed through another leader — and may be proposed
again safely if a forwarded proposal was lost: the state machine answers a
repeated ``seq`` from the session instead of applying it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from raftdb.deadlines import Deadlines
from raftdb.errors import (
    BadRequestError,
    ConditionFailedError,
    MemberNotFoundError,
    NodeRemovedError,
    NotReadyError,
    OutcomeUnknownError,
    UnavailableError,
)
from raftdb.handle import Consistency, Member, NodeStatus, WriteResult
from raftdb.kv import Command, ConfChangeResult, InvalidCommandError, KeyValue, KVResult, Status
from raftdb.metrics import NodeMetrics
from raftdb.plugins import open_state_machine, open_storage
from raftdb.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    Entry,
    InvalidMessageError,
    Message,
    NotLeaderError,
    ProposalDroppedError,
    RawNode,
    Ready,
    Role,
)
from raftdb.raft.errors import StorageError
from raftdb.transport import Transport

if TYPE_CHECKING:
    from raftdb.config import NodeConfig
    from raftdb.snapshot_format import SnapshotStream
    from raftdb.state_machine import StateMachine
    from raftdb.storage import Storage

__all__ = ["Node"]

log = logging.getLogger("raftdb.node")

_T = TypeVar("_T")

# A write or conf change waiting this many ticks is proposed again (safe: see
# the module docstring), in case a forwarded proposal was dropped on the way.
_REPROPOSE_TICKS_FACTOR = 2
# A learner is promoted only when it is at most this many entries behind.
_PROMOTION_LAG = 1000


# A save that failed with an OSError is tried again after this many seconds,
# doubling up to the cap.
_SAVE_RETRY_FIRST = 0.05
_SAVE_RETRY_CAP = 2.0


class _SaveFailedError(Exception):
    """Saving a Ready failed with an ``OSError``; ``reason`` says why. Retryable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _PendingWrite:
    data: bytes
    future: asyncio.Future[KVResult]
    proposed_at: int  # tick


@dataclass(slots=True)
class _PendingConf:
    change: ConfChange
    future: asyncio.Future[ConfChangeResult]
    proposed_at: int


class Node:
    """A raftdb server node: see the module docstring. Implements ``NodeHandle``."""

    def __init__(
        self, config: NodeConfig, *, on_fatal: Callable[[str], None] | None = None
    ) -> None:
        """Args:
        config: the node's settings.
        on_fatal: called once, on the loop, when the node stops serving for good
            (broken storage or invariant); the server uses it to exit, so that
            a process manager sees the failure.
        """
        self.config = config
        self._on_fatal = on_fatal
        self._id: int = config.id
        self.data_dir = Path(config.data_dir)
        self._timeout = float(config.request_timeout_s)
        self.metrics = NodeMetrics(config.id)
        self._storage: Storage | None = None
        self._sm: StateMachine | None = None
        self._raw: RawNode | None = None
        self._transport: Transport | None = None
        # The log thread (saves, snapshots, open and close) and the apply thread.
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"raftdb-io-{self._id}"
        )
        self._apply_executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"raftdb-apply-{self._id}"
        )
        self._applying: asyncio.Future[list[Any]] | None = None  # the batch being applied
        self._snapshotting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._failed: str | None = None
        self._removed = False
        self._ticks = 0
        # Client session of this node's writes: a new id per start (and after the
        # state machine expired it). ``seq`` keeps counting across sessions, so a
        # pending write is found by ``seq`` whichever session it was sent in.
        self._session = self._new_session_id()
        self._sessions = {self._session}
        # Whether the state machine has applied a write of the current session:
        # until then it has no record of it, and ``ack`` must stay 1 (see _write).
        self._session_open = False
        self._seq = itertools.count(1)
        self._writes: dict[int, _PendingWrite] = {}  # seq -> pending (insertion = seq order)
        self._queued: list[_PendingWrite] = []  # not proposed yet: see _propose_queued
        self._deadlines = Deadlines()
        self._idem: dict[bytes, _PendingWrite] = {}  # idempotency client id -> pending
        self._confs: list[_PendingConf] = []
        self._read_ctx = itertools.count(1)
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_seq = itertools.count()
        self._incoming_snapshots: dict[tuple[int, int], Path] = {}
        self._unsaved_hard_state: Any = None
        self._restored: Ready | None = None  # the Ready whose snapshot is installed
        self._disk_error: str | None = None  # saving fails now (retried): why
        self._last_snapshot_index = 0
        self._members: dict[int, str] = {}
        self._learners: frozenset[int] = frozenset()
        self._was_member = False
        self._known_urls: dict[int, str] = {}

    # -- life ------------------------------------------------------------------------

    @property
    def id(self) -> int:
        """This node's id."""
        return self._id

    async def start(self) -> None:
        """Open storage and state machine, start the core, the transport and the loops."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        self.data_dir.mkdir(parents=True, exist_ok=True)
        storage, sm = await self._loop.run_in_executor(self._executor, self._open_disk)
        self._storage, self._sm = storage, sm
        hard_state, _ = storage.initial_state()
        fresh = storage.last_index() == 0 and hard_state.is_empty()
        if sm.applied_index < storage.first_index() - 1:
            raise RuntimeError(
                f"raftdb: the state machine in {self.data_dir} is at index {sm.applied_index}, "
                f"before the log's first index {storage.first_index()}: it cannot catch up "
                "from this log; wipe the data directory and re-add the node"
            )
        self._last_snapshot_index = storage.snapshot().metadata.index
        applied = min(sm.applied_index, hard_state.commit)
        self._raw = RawNode(
            Config(
                id=self._id,
                storage=storage,
                election_tick=cfg.election_ticks,
                heartbeat_tick=cfg.heartbeat_ticks,
                applied=max(applied, self._last_snapshot_index),
                max_size_per_msg=1 << 20,
                max_uncommitted_entries_size=256 << 20,
                max_inflight_msgs=256,
                check_quorum=True,
                pre_vote=True,
                rng=random.Random(),
                logger=logging.getLogger(f"raftdb.raft.{self._id}"),
            )
        )
        urls = {i + 1: url for i, url in enumerate(cfg.cluster)}
        if fresh and not cfg.join:
            self._raw.bootstrap([(i, url.encode()) for i, url in sorted(urls.items())])
            log.info("node %d bootstrapped a cluster of %d", self._id, len(urls))
        self._members = sm.members() or dict(urls)
        self._learners = frozenset(sm.conf_state().learners)
        applied_members = sm.members()
        self._was_member = self._id in applied_members
        if applied_members and not self._was_member and not cfg.join:
            self._removed = True
            log.warning(
                "node %d is not a member of its cluster (removed); it will not serve", self._id
            )
        own_url = urls.get(self._id) or self._members.get(self._id)
        if not own_url:
            raise RuntimeError(f"raftdb: no peer URL for node {self._id} in 'cluster'")
        self._transport = Transport(
            self._id,
            cfg.listen_peer_url or own_url,
            self._peers(urls),
            self,
            cluster_token=cfg.cluster_token,
            snapshot_dir=self.data_dir / "snapshots-in",
        )
        await self._transport.start()
        self._tasks = [
            asyncio.create_task(self._ready_loop(), name=f"raftdb-ready-{self._id}"),
            asyncio.create_task(self._ticker(), name=f"raftdb-ticker-{self._id}"),
        ]
        log.info(
            "node %d started: term %d, commit %d, applied %d, members %s",
            self._id,
            self._raw.term,
            self._raw.commit_index,
            sm.applied_index,
            sorted(self._members),
        )

    def _open_disk(self) -> tuple[Storage, StateMachine]:
        cfg = self.config
        storage = open_storage(cfg.storage, self.data_dir / "log", sync=cfg.sync)
        try:
            sm = open_state_machine(cfg.state_machine, self.data_dir / "state", sync=cfg.sync)
        except BaseException:
            storage.close()
            raise
        return storage, sm

    def _peers(self, fallback: dict[int, str]) -> dict[int, str]:
        self._known_urls.update({i: u for i, u in self._members.items() if u})
        peers = dict(fallback)
        peers.update({i: u for i, u in self._members.items() if u})
        peers.pop(self._id, None)
        return peers

    async def stop(self) -> None:
        """Stop serving: fail waiting requests, stop the loops and transport, close files."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._transport is not None:
            await self._transport.stop()
        self._fail_waiters(NotReadyError("the node is stopping"))
        await self._applies_done()
        self._apply_executor.shutdown(wait=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_disk)
        self._executor.shutdown(wait=True)
        log.info("node %d stopped", self._id)

    def _close_disk(self) -> None:
        if self._storage is not None and self._unsaved_hard_state is not None and not self._failed:
            with contextlib.suppress(Exception):
                self._storage.save(self._unsaved_hard_state, [])
        for closer in (self._sm, self._storage):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer.close()

    def _fail(self, why: str) -> None:
        """Broken storage or invariant: stop driving the core, answer 503 from now on."""
        if self._failed is None:
            self._failed = why
            log.critical("node %d stopped serving: %s", self._id, why)
            self._fail_waiters(UnavailableError(f"node failed: {why}", retry_after=5))
            if self._on_fatal is not None:
                self._on_fatal(why)

    def _fail_waiters(self, error: UnavailableError) -> None:
        """Answer every waiting request: reads with ``error``; writes and membership
        changes with ``504``, as they were proposed and may still commit through
        the other members (``error``'s ``503`` would say that nothing was done)."""
        unknown = OutcomeUnknownError(
            f"{error.message}; the request was proposed before, and may still commit"
        )
        proposed: list[asyncio.Future[Any]] = [w.future for w in self._writes.values()]
        proposed += [w.future for w in self._idem.values()]
        proposed += [c.future for c in self._confs]
        reads: list[asyncio.Future[Any]] = list(self._reads.values())
        reads += [f for _, _, f in self._applied_waiters]
        for futures, exc in ((proposed, unknown), (reads, error)):
            for f in futures:
                if not f.done():
                    f.set_exception(exc)
        self._writes.clear()
        self._idem.clear()
        self._queued.clear()
        self._confs.clear()
        self._reads.clear()
        self._applied_waiters.clear()
        self._deadlines.clear()

    # -- the loops -------------------------------------------------------------------

    async def _ticker(self) -> None:
        interval = self.config.tick_ms / 1000
        next_at = time.monotonic()
        loop = asyncio.get_running_loop()
        while True:
            next_at += interval
            now = time.monotonic()
            if next_at < now - interval:
                # We were paused (SIGSTOP, a long GC): drop the missed ticks rather
                # than fire them back to back and time out every election at once.
                next_at = now
            await asyncio.sleep(max(0.0, next_at - now))
            self._deadlines.sweep(loop.time())
            if self._failed or self._raw is None:
                continue
            self._raw.tick()
            self._ticks += 1
            if self._ticks % (_REPROPOSE_TICKS_FACTOR * self.config.election_ticks) == 0:
                self._repropose()
            self._wake.set()

    async def _ready_loop(self) -> None:
        raw = self._raw
        assert raw is not None
        assert self._loop is not None
        loop = self._loop
        while not self._stopping and not self._failed:
            if self._queued:
                self._propose_queued(raw)
            if not raw.has_ready():
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._handle_ready(raw, loop)
            except Exception as e:  # a broken invariant: stop, loudly, never half-serve
                log.exception("node %d: Ready handling failed", self._id)
                self._fail(f"{type(e).__name__}: {e}")

    async def _handle_ready(self, raw: RawNode, loop: asyncio.AbstractEventLoop) -> None:
        """One Ready, in the order of ``node.py``'s contract (see the module docstring)."""
        rd = raw.ready()
        self._observe(rd)
        transport = self._transport
        assert transport is not None
        if rd.messages:
            transport.send(rd.messages)
        if rd.snapshot is not None:
            await self._applies_done()  # the restore must follow every earlier batch
        if rd.entries or rd.snapshot is not None or rd.must_sync:
            # An OSError saving rd is retried (_save_until_done); any other storage
            # error propagates: the node stops (_fail).
            await self._save_until_done(rd, loop)
        else:
            if rd.hard_state is not None:
                # Only the commit index moved: it need not be durable (it is
                # volatile state in Raft), so it rides along with the next save.
                self._unsaved_hard_state = rd.hard_state
            if rd.messages_after_save:
                transport.send(rd.messages_after_save)
        if rd.committed_entries:
            await self._applies_done()  # one batch applying at a time, in order
            self._start_apply(rd.committed_entries, loop)
        raw.advance(rd)
        for rs in rd.read_states:
            fut = self._reads.pop(rs.context, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)

    async def _applies_done(self) -> None:
        """Wait until the batch being applied (if any) is applied; never cancels it."""
        applying = self._applying
        if applying is not None and not applying.done():
            await asyncio.wait((applying,))

    def _start_apply(self, entries: list[Entry], loop: asyncio.AbstractEventLoop) -> None:
        """Apply ``entries`` on the apply thread; :meth:`_on_applied` answers their requests."""
        sm = self._sm
        assert sm is not None
        applying = loop.run_in_executor(self._apply_executor, sm.apply, entries)
        applying.add_done_callback(functools.partial(self._on_applied, entries))
        self._applying = applying

    def _on_applied(self, entries: list[Entry], applying: asyncio.Future[list[Any]]) -> None:
        """On the loop, once a batch is applied: answer its requests; start a snapshot
        on the log thread when ``snapshot_entries`` more entries were applied."""
        if applying.cancelled():
            return
        error = applying.exception()
        if error is not None:  # a state machine error: stop, never serve a state that lags
            log.error("node %d: applying entries failed", self._id, exc_info=error)
            self._fail(f"{type(error).__name__}: {error}")
            return
        self._after_apply(entries, applying.result())
        if (
            not self._snapshotting
            and not self._stopping
            and self._applied_index() - self._last_snapshot_index >= self.config.snapshot_entries
        ):
            assert self._loop is not None
            self._snapshotting = True
            job = self._loop.run_in_executor(self._executor, self._snapshot_job)
            job.add_done_callback(self._on_snapshot_job)

    def _snapshot_job(self) -> None:
        """On the log thread: record a snapshot; a storage refusing writes is retried
        after the next batch (any other error stops the node)."""
        try:
            self._take_snapshot()
        except OSError as e:
            log.warning("node %d could not record a snapshot: %s", self._id, e)

    def _on_snapshot_job(self, job: asyncio.Future[None]) -> None:
        self._snapshotting = False
        if not job.cancelled() and job.exception() is not None:
            error = job.exception()
            log.error("node %d: taking a snapshot failed", self._id, exc_info=error)
            self._fail(f"{type(error).__name__}: {error}")

    async def _save_until_done(self, rd: Ready, loop: asyncio.AbstractEventLoop) -> None:
        """Run ``_save(rd)`` on the log thread; while saving ``rd`` fails with an
        ``OSError`` (a full disk), answer requests ``503`` and try again with backoff.

        Nothing moves meanwhile: ``rd`` is not advanced, so the core keeps it (and
        stacks new work behind it) and no entry is applied, nor any message that
        waits for the save sent. The same Ready is saved again, and its entries
        are applied once, after the save that succeeded. A storage that refuses
        every call after a failed write (LevelDB's, which cannot tell what
        reached the disk) answers the retry with a ``StorageError``: the node
        then stops serving (``_fail``), as for any other storage error.
        """
        delay = _SAVE_RETRY_FIRST
        failures = 0
        while True:
            try:
                await loop.run_in_executor(self._executor, self._save, rd)
            except _SaveFailedError as e:
                failures += 1
                if self._disk_error is None:
                    log.error(
                        "node %d cannot save to its storage: %s; answering 503 and retrying",
                        self._id,
                        e.reason,
                    )
                    self._disk_error = e.reason
                await asyncio.sleep(delay)
                delay = min(delay * 2, _SAVE_RETRY_CAP)
                continue
            if self._disk_error is not None:
                log.warning(
                    "node %d: saving to its storage works again after %d failed tries",
                    self._id,
                    failures,
                )
                self._disk_error = None
            return

    def _save(self, rd: Ready) -> None:
        """On the log thread: make ``rd`` durable, then release its acks.

        Raises:
            _SaveFailedError: saving failed with an ``OSError``; nothing after the
                save was done, and calling again with the same ``rd`` retries it.
        """
        storage, loop = self._storage, self._loop
        assert storage is not None
        assert loop is not None
        if rd.snapshot is not None and self._restored is not rd:
            self._restore_snapshot(rd)
            self._restored = rd  # a retried save must not install it again
        started = time.perf_counter()
        try:
            storage.save(rd.hard_state or self._unsaved_hard_state, rd.entries, rd.snapshot)
        except OSError as e:
            raise _SaveFailedError(f"{type(e).__name__}: {e}") from e
        self.metrics.fsync_seconds.observe(time.perf_counter() - started)
        self._unsaved_hard_state = None
        self._restored = None
        if rd.messages_after_save:
            assert self._transport is not None
            loop.call_soon_threadsafe(self._transport.send, rd.messages_after_save)

    def _restore_snapshot(self, rd: Ready) -> None:
        """Install a leader's snapshot: state machine first, then the log.

        In that order a crash between the two leaves a state machine ahead of
        its log, which replays nothing it already has; the other order could
        leave a log that starts after what the state machine holds.
        """
        assert rd.snapshot is not None
        assert self._sm is not None
        meta = rd.snapshot.metadata
        path = self._incoming_snapshots.pop((meta.index, meta.term), None)
        if path is None:
            raise RuntimeError(f"snapshot {meta.index}/{meta.term} to install was not received")
        try:
            info = self._sm.restore(_chunks(path))
        finally:
            path.unlink(missing_ok=True)
        self._last_snapshot_index = meta.index
        self.metrics.snapshots_restored.inc()
        log.info(
            "node %d installed snapshot %d (state machine at %d)", self._id, meta.index, info.index
        )

    def _take_snapshot(self) -> None:
        """Record a snapshot point at the applied index and compact the log behind it."""
        assert self._sm is not None
        assert self._storage is not None
        stream = self._sm.snapshot()
        stream.close()  # only the durable point matters; peers get a fresh stream
        info = stream.info
        storage = self._storage
        if info.index <= storage.snapshot().metadata.index or info.index > storage.last_index():
            return
        storage.create_snapshot(info.index, info.conf_state)
        keep = self.config.snapshot_keep_entries
        storage.compact(max(storage.first_index() - 1, info.index - keep))
        self._last_snapshot_index = info.index
        self.metrics.snapshots_taken.inc()
        log.info("node %d took a snapshot at %d", self._id, info.index)

    def _observe(self, rd: Ready) -> None:
        raw = self._raw
        assert raw is not None
        if rd.soft_state is not None:
            log.info(
                "node %d: %s, leader %d, term %d",
                self._id,
                rd.soft_state.role.value,
                rd.soft_state.lead,
                raw.term,
            )
            if rd.soft_state.lead:
                # Reads sent to a former leader will not be answered: ask the new one.
                self._reissue_reads()

    def _reissue_reads(self) -> None:
        """Ask for the read index of every waiting read again (same context).

        Whichever answer comes first serves the read; a later one finds no
        waiter. Safe: any confirmed read index at or after the request's start
        gives a linearizable read.
        """
        raw = self._raw
        if raw is None or raw.lead == 0:
            return
        for ctx, fut in self._reads.items():
            if not fut.done():
                with contextlib.suppress(ProposalDroppedError):
                    raw.read_index(ctx)

    def _after_apply(self, entries: list[Entry], results: list[Any]) -> None:
        """Answer the requests whose entries were applied; wake reads waiting for them."""
        conf_changed = False
        for entry, result in zip(entries, results, strict=False):
            if isinstance(result, KVResult):
                self._resolve_write(entry, result)
            elif isinstance(result, ConfChangeResult):
                conf_changed = True
                self._resolve_conf(result)
        self.metrics.applied.set(self._applied_index())
        if conf_changed:
            self._on_conf_change()
        self._wake_applied()

    def _resolve_write(self, entry: Entry, result: KVResult) -> None:
        try:
            cmd = Command.decode(entry.data)
        except InvalidCommandError:
            return
        if cmd.client_id in self._sessions:
            if cmd.client_id == self._session:
                if result.status == Status.SESSION_EXPIRED:
                    self._rotate_session()
                else:
                    self._session_open = True
            pending = self._writes.pop(cmd.seq, None)
        elif cmd.client_id is not None:
            pending = self._idem.pop(cmd.client_id, None)
        else:
            return
        if pending is not None and not pending.future.done():
            pending.future.set_result(result)

    def _new_session_id(self) -> bytes:
        return f"node-{self._id}-{os.urandom(6).hex()}".encode()

    def _rotate_session(self) -> None:
        """The state machine expired this node's session (unused for too long):
        write under a new one from now on. Writes still pending in the old one
        are answered from the old one's results (``504`` for the expired)."""
        old, self._session = self._session, self._new_session_id()
        self._sessions.add(self._session)
        self._session_open = False
        log.info("node %d: session %s expired; writes go on in a new one", self._id, old)

    def _resolve_conf(self, result: ConfChangeResult) -> None:
        keep: list[_PendingConf] = []
        for pending in self._confs:
            if result.change == pending.change:
                if not pending.future.done():
                    pending.future.set_result(result)
            else:
                keep.append(pending)
        self._confs = keep

    def _on_conf_change(self) -> None:
        sm = self._sm
        assert sm is not None
        old = set(self._members)
        self._members = sm.members()
        self._learners = frozenset(sm.conf_state().learners)
        if self._id in self._members:
            self._was_member = True
            self._removed = False
        elif self._was_member and not self._removed:
            self._removed = True
            log.warning("node %d was removed from the cluster; it no longer serves", self._id)
            self._fail_waiters(NodeRemovedError("this node was removed from the cluster"))
        if old - set(self._members) and self._loop is not None:
            # Keep talking to a removed member for a while, so that it learns
            # the commit of its own removal and stops by itself.
            grace = 4 * self.config.election_ticks * self.config.tick_ms / 1000
            self._loop.call_later(grace, self._sync_peers)
        self._sync_peers(keep=old)

    def _sync_peers(self, keep: set[int] | None = None) -> None:
        if self._transport is None or self._stopping:
            return
        peers = self._peers({})
        for node_id in keep or ():
            url = self._known_urls.get(node_id)
            if url and node_id != self._id:
                peers.setdefault(node_id, url)
        self._transport.set_peers(peers)

    def _applied_index(self) -> int:
        return self._sm.applied_index if self._sm is not None else 0

    def _wake_applied(self) -> None:
        applied = self._applied_index()
        waiters = self._applied_waiters
        while waiters and waiters[0][0] <= applied:
            _, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)

    def _repropose(self) -> None:
        """Propose again what has waited long: a forwarded proposal may have been lost."""
        raw = self._raw
        if raw is None or raw.lead == 0:
            return
        horizon = self._ticks - _REPROPOSE_TICKS_FACTOR * self.config.election_ticks
        for pending in itertools.chain(self._writes.values(), self._idem.values()):
            if pending.proposed_at <= horizon and not pending.future.done():
                with contextlib.suppress(ProposalDroppedError):
                    raw.propose(pending.data)
                    pending.proposed_at = self._ticks
        for conf in self._confs:
            if conf.proposed_at <= horizon and not conf.future.done():
                with contextlib.suppress(ProposalDroppedError):
                    raw.propose_conf_change(conf.change)
                    conf.proposed_at = self._ticks
        # A read index request or its answer may have been lost the same way.
        self._reissue_reads()

    # -- transport handler ----------------------------------------------------------

    def on_messages(self, messages: list[Message]) -> None:
        """Step messages from peers into the core."""
        raw = self._raw
        if raw is None or self._failed:
            return
        for m in messages:
            try:
                raw.step(m)
            except InvalidMessageError as e:
                log.warning("node %d dropped a message from %d: %s", self._id, m.frm, e)
            except Exception as e:  # a broken invariant: stop, never serve on
                log.exception("node %d: stepping a message failed", self._id)
                self._fail(f"{type(e).__name__}: {e}")
                return
        self._wake.set()

    def on_unreachable(self, peer_id: int) -> None:
        """The transport could not deliver to ``peer_id``."""
        if self._raw is not None:
            self._raw.report_unreachable(peer_id)

    def open_snapshot(self, message: Message) -> SnapshotStream:
        """A fresh state machine snapshot to stream with a SNAP message.

        The state machine is at or past the snapshot the core names (snapshots
        are taken from it), and applying skips what it already holds.
        """
        assert self._sm is not None
        self.metrics.snapshots_sent.inc()
        return self._sm.snapshot()

    def on_snapshot_sent(self, peer_id: int, ok: bool) -> None:
        """The transport finished streaming a snapshot to ``peer_id``."""
        if self._raw is not None:
            self._raw.report_snapshot(peer_id, ok)
            self._wake.set()

    def on_snapshot_received(self, message: Message, path: Path) -> None:
        """A whole snapshot stream arrived in ``path``: keep it, then step its message."""
        if message.snapshot is None:
            path.unlink(missing_ok=True)
            return
        meta = message.snapshot.metadata
        old = self._incoming_snapshots.pop((meta.index, meta.term), None)
        if old is not None and old != path:
            old.unlink(missing_ok=True)
        # Older received snapshots will never be installed: drop their files.
        for key in [k for k in self._incoming_snapshots if k[0] < meta.index]:
            self._incoming_snapshots.pop(key).unlink(missing_ok=True)
        self._incoming_snapshots[(meta.index, meta.term)] = path
        self.on_messages([message])

    # -- requests --------------------------------------------------------------------

    def _check_serving(self) -> RawNode:
        raw = self._raw
        if self._failed:
            raise UnavailableError(f"node failed: {self._failed}", retry_after=5)
        if self._removed:
            raise NodeRemovedError("this node was removed from the cluster")
        if raw is None or self._stopping:
            raise NotReadyError("the node is starting or stopping")
        if self._disk_error is not None:
            raise UnavailableError(
                f"this node cannot write to its storage ({self._disk_error}); "
                "it retries, and serves again once a write succeeds",
                retry_after=2,
            )
        return raw

    def _no_leader(self, raw: RawNode, what: str) -> UnavailableError:
        retry = self.config.election_ticks * self.config.tick_ms / 1000
        return UnavailableError(f"no leader is known to {what}; retry shortly", retry, raw.lead)

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        if_match: int | None = None,
        if_none_match: bool = False,
        idempotency_key: bytes | None = None,
    ) -> WriteResult:
        """See ``NodeHandle.put``."""
        try:
            if if_none_match:
                cmd = Command.put(key, value, create_only=True)
            else:
                cmd = Command.put(key, value, if_mod=if_match)
        except InvalidCommandError as e:
            raise BadRequestError(str(e)) from None
        result = await self._write(cmd, idempotency_key)
        # mod_index is the put's own index, or the first attempt's for a duplicate.
        return WriteResult(result.mod_index, result.prev_mod_index > 0, result.duplicate)

    async def delete(
        self,
        key: bytes,
        *,
        if_match: int | None = None,
        idempotency_key: bytes | None = None,
    ) -> WriteResult:
        """See ``NodeHandle.delete``."""
        try:
            cmd = Command.delete(key, if_mod=if_match)
        except InvalidCommandError as e:
            raise BadRequestError(str(e)) from None
        result = await self._write(cmd, idempotency_key)
        return WriteResult(result.index, result.prev_mod_index > 0, result.duplicate)

    async def _write(self, cmd: Command, idempotency_key: bytes | None) -> KVResult:
        raw = self._check_serving()
        if raw.lead == 0:
            raise self._no_leader(raw, "take the write")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[KVResult] = loop.create_future()
        pending: _PendingWrite
        if idempotency_key is not None:
            # Each key is a session of one request: a retry is answered from it.
            client_id = b"idem:" + idempotency_key
            if client_id in self._idem:
                raise UnavailableError("a request with this Idempotency-Key is in progress")
            try:
                data = _with_session(cmd, client_id, 1, 1).encode()
            except InvalidCommandError as e:
                raise BadRequestError(f"Idempotency-Key: {e}") from None
            pending = _PendingWrite(data, future, self._ticks)
            self._idem[client_id] = pending
        else:
            seq = next(self._seq)
            # ``ack``: the lowest seq this node has no answer for. A write that
            # timed out was dropped from _writes unanswered; once the session is
            # known to the state machine, moving past it only lets it forget
            # answers. Before that, nothing of the session was answered, and an
            # ``ack`` above 1 would tell the state machine that its record of
            # the session was lost (SESSION_EXPIRED, every write refused).
            ack = next(iter(self._writes), seq) if self._session_open else 1
            data = _with_session(cmd, self._session, seq, ack).encode()
            pending = _PendingWrite(data, future, self._ticks)
            self._writes[seq] = pending
        self._queued.append(pending)
        token = self._deadlines.add(
            loop.time() + self._timeout, future, lambda: self._write_timed_out(pending)
        )
        self.metrics.proposals.inc()
        started = time.perf_counter()
        self._wake.set()
        try:
            result = await future
        finally:
            self._deadlines.discard(token)
        self.metrics.proposal_seconds.observe(time.perf_counter() - started)
        if result.status == Status.CONDITION_FAILED:
            raise ConditionFailedError(
                f"the key's modify index is {result.mod_index}", result.mod_index
            )
        if result.status == Status.INVALID:
            raise BadRequestError(result.message or "invalid command")
        if result.status != Status.OK:
            raise OutcomeUnknownError(f"the write's session answered {result.status.name}")
        return result

    def _propose_queued(self, raw: RawNode) -> None:
        """Propose every queued write in one message (see the module docstring).

        A refusal (no leader, too much uncommitted) answers each of them ``503``:
        none of them was proposed.
        """
        batch, self._queued = self._queued, []
        try:
            raw.propose_many([pending.data for pending in batch])
        except (NotLeaderError, ProposalDroppedError) as e:
            for pending in batch:
                self._forget(pending)
                if not pending.future.done():
                    if isinstance(e, NotLeaderError):
                        error = self._no_leader(raw, f"take the write ({e.reason})")
                    else:
                        error = UnavailableError(f"the write was refused: {e.reason}", 1)
                    pending.future.set_exception(error)

    def _write_timed_out(self, pending: _PendingWrite) -> BaseException:
        self._forget(pending)
        return OutcomeUnknownError(
            f"the write was not applied within {self._timeout:g}s; it may still be. "
            "Retry with an Idempotency-Key to learn the outcome safely"
        )

    def _forget(self, pending: _PendingWrite) -> None:
        for seq in [k for k, v in self._writes.items() if v is pending]:
            del self._writes[seq]
        for client in [k for k, v in self._idem.items() if v is pending]:
            del self._idem[client]
        if pending in self._queued:
            self._queued.remove(pending)

    async def read_index(self) -> int:
        """Confirm leadership (ReadIndex) and wait until this node applied the read index."""
        raw = self._check_serving()
        if raw.lead == 0:
            raise self._no_leader(raw, "confirm the read")
        ctx = next(self._read_ctx).to_bytes(8, "big")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        try:
            raw.read_index(ctx)
        except ProposalDroppedError as e:
            raise self._no_leader(raw, f"confirm the read ({e.reason})") from None
        self._reads[ctx] = future
        self._wake.set()
        deadline = loop.time() + self._timeout
        token = self._deadlines.add(deadline, future, lambda: self._read_timed_out(ctx))
        try:
            index = await future
        finally:
            self._deadlines.discard(token)
        await self._wait_applied(index, deadline)
        return index

    def _read_timed_out(self, ctx: bytes) -> BaseException:
        self._reads.pop(ctx, None)
        return UnavailableError("could not confirm leadership with a quorum in time", 1)

    async def _wait_applied(self, index: int, deadline: float) -> None:
        if self._applied_index() >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied_waiters, (index, next(self._waiter_seq), fut))
        token = self._deadlines.add(
            deadline,
            fut,
            lambda: UnavailableError(
                f"this node has not applied up to the read index {index} in time", 1
            ),
        )
        try:
            await fut
        finally:
            self._deadlines.discard(token)

    async def get(
        self, key: bytes, consistency: Consistency = "linearizable"
    ) -> tuple[KeyValue | None, int]:
        """See ``NodeHandle.get``."""
        index = await self._read_point(consistency)
        assert self._sm is not None
        sm = self._sm
        return self._read_state(lambda: sm.get(key)), index

    async def _read_point(self, consistency: Consistency) -> int:
        if consistency == "linearizable":
            return await self.read_index()
        self._check_serving()
        return self._applied_index()

    async def range(
        self,
        prefix: bytes = b"",
        *,
        start: bytes | None = None,
        limit: int | None = None,
        consistency: Consistency = "linearizable",
    ) -> tuple[list[KeyValue], int]:
        """See ``NodeHandle.range``."""
        index = await self._read_point(consistency)
        assert self._sm is not None
        sm = self._sm
        return self._read_state(lambda: sm.range(prefix, start or b"", limit)), index

    def _read_state(self, read: Callable[[], _T]) -> _T:
        """A read of the state machine. Damage found there (a ``StorageError``: the
        plugin verifies what it reads) stops the node as a failed write does;
        the read answers ``503``, never a wrong value."""
        try:
            return read()
        except StorageError as e:
            self._fail(f"{type(e).__name__}: {e}")
            raise UnavailableError(f"node failed: {type(e).__name__}: {e}", 5) from None

    # -- membership ------------------------------------------------------------------

    async def add_member(self, node_id: int, peer_url: str, learner: bool = False) -> Member:
        """See ``NodeHandle.add_member``."""
        raw = self._check_serving()
        if node_id <= 0:
            raise BadRequestError(f"member id must be a positive integer, got {node_id}")
        current = self._members.get(node_id)
        if current is not None and current != peer_url:
            raise BadRequestError(f"member {node_id} exists with peer URL {current!r}")
        if not learner and node_id in self._learners and raw.role == Role.LEADER:
            progress = raw.status().progress.get(node_id)
            if progress is None or progress.match + _PROMOTION_LAG < raw.commit_index:
                raise UnavailableError(
                    f"learner {node_id} is not caught up yet (at "
                    f"{progress.match if progress else 0} of {raw.commit_index}); retry later",
                    retry_after=2,
                )
        kind = ConfChangeType.ADD_LEARNER if learner else ConfChangeType.ADD_VOTER
        result = await self._change(raw, ConfChange(kind, node_id, peer_url.encode()))
        if result.error:
            raise BadRequestError(result.error)
        return Member(node_id, peer_url, learner)

    async def remove_member(self, node_id: int) -> None:
        """See ``NodeHandle.remove_member``."""
        raw = self._check_serving()
        if node_id not in self._members:
            raise MemberNotFoundError(f"no member with id {node_id}")
        result = await self._change(raw, ConfChange(ConfChangeType.REMOVE_NODE, node_id))
        if result.error:
            raise BadRequestError(result.error)

    async def _change(self, raw: RawNode, change: ConfChange) -> ConfChangeResult:
        if raw.lead == 0:
            raise self._no_leader(raw, "change the membership")
        try:
            raw.propose_conf_change(change)
        except NotLeaderError:
            raise self._no_leader(raw, "change the membership") from None
        except ProposalDroppedError as e:
            raise UnavailableError(f"membership change refused: {e.reason}", 2) from None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ConfChangeResult] = loop.create_future()
        pending = _PendingConf(change, future, self._ticks)
        self._confs.append(pending)
        self._wake.set()
        token = self._deadlines.add(
            loop.time() + self._timeout, future, lambda: self._conf_timed_out(pending)
        )
        try:
            return await future
        finally:
            self._deadlines.discard(token)

    def _conf_timed_out(self, pending: _PendingConf) -> BaseException:
        if pending in self._confs:
            self._confs.remove(pending)
        return OutcomeUnknownError("the membership change was not applied in time; it may still be")

    def members(self) -> list[Member]:
        """See ``NodeHandle.members``."""
        return [Member(i, url, i in self._learners) for i, url in sorted(self._members.items())]

    async def transfer_leader(self, node_id: int) -> None:
        """See ``NodeHandle.transfer_leader``."""
        raw = self._check_serving()
        if node_id not in self._members:
            raise MemberNotFoundError(f"no member with id {node_id}")
        if node_id in self._learners:
            raise BadRequestError(f"member {node_id} is a learner and cannot lead")
        if raw.lead == node_id:
            return
        if raw.lead == 0:
            raise self._no_leader(raw, "hand over leadership")
        try:
            raw.transfer_leader(node_id)
        except ProposalDroppedError as e:
            raise BadRequestError(e.reason) from None
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while loop.time() < deadline:
            await asyncio.sleep(self.config.tick_ms / 1000)
            if raw.lead == node_id:
                return
        raise UnavailableError(f"leadership did not move to {node_id} in time", retry_after=1)

    # -- inspection ------------------------------------------------------------------

    def status(self) -> NodeStatus:
        """See ``NodeHandle.status``."""
        raw = self._raw
        if raw is None:
            raise NotReadyError("the node is starting")
        st = raw.status()
        role: Any = "learner" if self._id in self._learners else st.role.value
        if role == "pre-candidate":
            role = "candidate"
        return NodeStatus(
            id=self._id,
            role=role,
            leader=st.lead,
            term=st.term,
            commit_index=st.commit,
            applied_index=self._applied_index(),
            first_index=st.first_index,
            last_index=st.last_index,
            members=self.members(),
        )

    def is_ready(self) -> bool:
        """See ``NodeHandle.is_ready``."""
        raw = self._raw
        return (
            raw is not None
            and not self._failed
            and self._disk_error is None
            and not self._removed
            and not self._stopping
            and raw.lead != 0
            # A joining node has applied nothing until the leader's log or
            # snapshot reaches it: 0 >= 0 would call it ready too early.
            and self._applied_index() > 0
            and self._applied_index() >= raw.commit_index
        )

    def metrics_text(self) -> str:
        """See ``NodeHandle.metrics_text``."""
        raw = self._raw
        if raw is not None:
            queues = self._transport.queue_lengths() if self._transport is not None else {}
            self.metrics.update(raw.status(), self._applied_index(), queues)
        return self.metrics.render()


def _with_session(cmd: Command, client_id: bytes, seq: int, ack: int) -> Command:
    return Command(cmd.op, cmd.key, cmd.value, cmd.expect, client_id, seq, ack)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(1 << 20), b"")
