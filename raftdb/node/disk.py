"""The disk half of a node's Ready loop: the Raft log's storage and the state
machine, and the two threads that write them (``raftdb.node.ready_loop`` runs the loop).

Theory of operation
-------------------
The *log thread* opens and closes the storage and the state machine, saves
each Ready (:meth:`NodeDisk.save`), installs a leader's snapshot just before
the save that records it, and records snapshots: it is the storage's only
writer. The *apply thread* applies committed entries to the state machine,
batch after batch, in order (:meth:`NodeDisk.start_apply`).

The apply thread applies a batch while the log thread saves the next Ready
(as etcd's server applies beside the raft loop): a Ready costs the longer of
the two, not their sum. Up to :data:`MAX_APPLYING` batches wait for
the apply thread, in order (one thread: first in, first applied); the Ready
loop waits only when that many are queued (:meth:`NodeDisk.apply_room`), and
for all of them before a snapshot is installed (:meth:`NodeDisk.applies_done`),
so that the restore follows every batch before it. Once a batch is applied,
the node answers its requests (``after_apply``); every ``snapshot_entries``
applied entries, the log thread then records a snapshot and compacts the log.

A state machine that makes a batch durable after ``apply`` returns
(:class:`~raftdb.kv.state_machine.DefersDurability`, the LevelDB one) gets its
``make_durable`` call on the apply thread right after the batch's results are
posted to the loop and before the next batch: the requests are answered while
the state machine fsyncs. Nothing is lost by answering first: the entries are
in the Raft log, fsynced on a majority before they were committed, and a
batch a power cut takes from the state machine (the last one, whole, by its
promise) is replayed from the log at the next start. Reads are served from
the visible state, which includes the batch, so none sees less than what was
answered. The log is compacted only up to a snapshot's point, which
``snapshot`` makes durable.

A state machine durable at ``make_durable`` only
(:class:`~raftdb.kv.state_machine.BatchesDurability`, the LevelDB one) shares
one ``make_durable`` among all the batches of ``state_sync_interval_ms``
(etcd's backend commits every 100 ms the same way): the first batch
applied after one arms a timer, which then runs the call on a third thread, the
*sync thread*, while the apply thread goes on applying (the call covers every
batch applied before it). A power cut takes at most the batches since, the
newest first, and the next start replays them from the log, as above. At one
write in flight that is three fsyncs less per write across a cluster of three
(one on each node), and no apply ever waits for one.
:meth:`NodeDisk.applies_done` makes every batch durable before a restore or a
close, and no timer's call runs until the restore is installed.

A full disk makes the node read-only, never dead. A save refused for lack
of space (an ``OSError`` with errno ``ENOSPC``/``EDQUOT``,
:mod:`raftdb.storage.nospace`) is saved again, the same Ready, with backoff
while :attr:`NodeDisk.save_error` says why and :attr:`NodeDisk.alarms` holds
``"nospace"`` (the node answers writes ``507``); nothing of it is applied or
acknowledged before its save succeeds, and its entries are applied once,
after. A batch the state machine refuses for lack of space was not applied:
the apply thread applies the same batch again with backoff, so later batches
wait behind it (never skipped, never reordered) and reads see the state
before it meanwhile. Once a retry succeeds the alarm clears by itself.

Any other ``OSError`` from a save is retried the same way (``503``; a plugin
that cannot tell what reached its disk refuses the retry, and the node
stops). Any other storage or state machine error stops the node for good
(``fail``).

While the log's save is retried the Ready loop waits for it, so the core
makes no new Ready: this node sends nothing, confirms no read index and
applies nothing; while a batch is retried, nothing after it is applied.
Either way a linearizable read cannot be answered here (its read index is at
or past what is stuck): the node refuses it at once, and serves stale reads
(``raftdb.node.node``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from raftdb.kv.snapshot import SnapshotFormatError, check_stream
from raftdb.kv.state_machine import BatchesDurability, DefersDurability
from raftdb.node.disk_thread import DiskThread, Inbox
from raftdb.node.handle import Alarm
from raftdb.plugins import open_state_machine, open_storage
from raftdb.storage import durable_mkdir, is_no_space

if TYPE_CHECKING:
    from raftdb.config import NodeConfig
    from raftdb.kv.state_machine import StateMachine
    from raftdb.node.metrics import NodeMetrics
    from raftdb.raft import Entry, HardState, Message, Ready, SnapshotMetadata
    from raftdb.storage.protocol import Storage

__all__ = ["LOG_DIR", "MAX_APPLYING", "NOSPACE", "STATE_DIR", "NodeDisk"]

log = logging.getLogger("raftdb.node")

# A save that failed with an OSError is tried again after this many seconds,
# doubling up to the cap.
_SAVE_RETRY_FIRST = 0.05
#: Batches of committed entries queued to the apply thread, at most, before the
#: Ready loop waits for the oldest: enough that a slow apply does not hold the
#: next save back, few enough to bound what is committed but not yet applied.
MAX_APPLYING = 4
_SAVE_RETRY_CAP = 2.0
# Entries (and bytes) read and applied per batch when a state machine behind the
# log's snapshot point is brought up to it at open.
_REPLAY_BATCH: Final = 512
_REPLAY_BYTES: Final = 16 << 20
#: Where in a data directory the storage plugin keeps the log, and the state
#: machine plugin its state (``raftdb.node.rebuild`` builds data directories too).
LOG_DIR: Final = "log"
STATE_DIR: Final = "state"
#: The alarm a full disk raises (``/v1/status`` ``alarms``, ``raftdb_alarm``).
NOSPACE: Final[Alarm] = "nospace"


class _SaveFailedError(Exception):
    """Saving a Ready failed with an ``OSError``; ``reason`` says why. Retryable.

    ``no_space``: the disk (or a quota) is full: the node is read-only meanwhile.
    """

    def __init__(self, reason: str, no_space: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.no_space = no_space


class _ApplyAbandonedError(Exception):
    """The node stopped while a batch waited for space: it stays unapplied
    (it is in the log, and is applied after the restart), and so does every
    batch behind it."""


class NodeDisk:
    """A node's storage and state machine, and its log and apply threads: see the
    module docstring. Every method is called on the node's event loop, except
    those that say they run on a thread."""

    def __init__(
        self,
        config: NodeConfig,
        data_dir: Path,
        metrics: NodeMetrics,
        *,
        after_apply: Callable[[list[Entry], list[Any]], None],
        restored: Callable[[], None] = lambda: None,
        fail: Callable[[str], None],
        stopping: Callable[[], bool],
        failed: Callable[[], bool],
    ) -> None:
        """Args:
        config: the node's settings (plugins, ``sync``, snapshot intervals).
        data_dir: the node's data directory; the log and the state are in it.
        metrics: where saves and snapshots are counted.
        after_apply: called on the loop with each applied batch and its results,
            to answer the requests that wait for them.
        restored: called on the loop once a leader's snapshot is installed in the
            state machine, before any entry after it is applied: what the node
            derives from applied batches (watchers, lease deadlines) starts again
            from the restored state.
        fail: called on the loop when a storage or state machine error must
            stop the node.
        stopping: whether the node is stopping (no snapshot is started then).
        failed: whether the node has failed (then closing writes nothing).
        """
        self.config = config
        self.node_id = config.id
        self.data_dir = data_dir
        self.metrics = metrics
        self.storage: Storage | None = None  # both set by open()
        self.sm: StateMachine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # What the disk asks of its node.
        self._after_apply = after_apply
        self._restored_callback = restored
        self._fail = fail
        self._stopping = stopping
        self._failed = failed
        # The log thread (saves, snapshots, open and close) and the apply thread,
        # handing their results back through one inbox: a save and an apply that
        # end close together wake the loop once.
        inbox = Inbox()
        self._log_thread = DiskThread(f"raftdb-io-{self.node_id}", inbox)
        self._apply_thread = DiskThread(f"raftdb-apply-{self.node_id}", inbox)
        # make_durable of a state machine durable at make_durable only (started
        # at its first call).
        self._sync_thread = DiskThread(f"raftdb-sync-{self.node_id}", inbox)
        # Batches handed to the apply thread and not applied yet, oldest first.
        self._applying: collections.deque[asyncio.Future[list[Any]]] = collections.deque()
        self._snapshotting = False
        self._incoming_snapshots: dict[tuple[int, int], Path] = {}
        self._unsaved_hard_state: HardState | None = None
        self._restored: Ready | None = None  # the Ready whose snapshot is installed
        self._save_error: str | None = None  # saving fails now (retried): why
        self._save_no_space = False  # ... for lack of space
        # Applying fails now for lack of space (retried on the apply thread): why.
        # Written by the apply thread, read on the loop (one reference: atomic).
        self._apply_no_space: str | None = None
        self._stop_retrying = threading.Event()  # set by close(): give up waiting for space
        self._abandoned = False  # a batch was given up: so is every later one
        self._last_snapshot_index = 0
        # The state machine's make_durable (DefersDurability), set by open().
        self._make_durable: Callable[[], None] | None = None
        # A state machine durable at make_durable only (BatchesDurability): many
        # batches share one, state_sync_interval_ms after the first of them.
        self._batches_durable = False
        self._durable_timer: asyncio.TimerHandle | None = None
        # applies_done ran (a restore follows, or close): no timer's make_durable
        # until the restore is installed.
        self._quiet = False

    @property
    def save_error(self) -> str | None:
        """Why saving fails now (it is being retried), or None while saves succeed."""
        return self._save_error

    @property
    def no_space(self) -> str | None:
        """Why the disk refuses writes for lack of space now (the log's save or the
        state machine's apply is being retried), or None."""
        if self._save_no_space and self._save_error is not None:
            return self._save_error
        return self._apply_no_space

    @property
    def alarms(self) -> list[Alarm]:
        """The alarms raised now: ``["nospace"]`` while :attr:`no_space`, else ``[]``."""
        return [NOSPACE] if self.no_space is not None else []

    @property
    def applied_index(self) -> int:
        """The state machine's applied index (0 before it is open)."""
        return self.sm.applied_index if self.sm is not None else 0

    @property
    def last_snapshot_index(self) -> int:
        """The index of the last snapshot recorded or installed."""
        return self._last_snapshot_index

    # -- open and close --------------------------------------------------------------

    async def open(self) -> tuple[Storage, StateMachine]:
        """Open the storage and the state machine (on the log thread).

        Raises:
            RuntimeError: the state machine is behind the log's first index, so
                it cannot catch up from this log.
        """
        self._loop = asyncio.get_running_loop()
        durable_mkdir(self.data_dir)
        storage, sm = await self._log_thread.submit(self._open_disk)
        self.storage, self.sm = storage, sm
        if isinstance(sm, DefersDurability):
            self._make_durable = sm.make_durable
            self._batches_durable = isinstance(sm, BatchesDurability)
        if sm.applied_index < storage.first_index() - 1:
            raise RuntimeError(
                f"raftdb: the state machine in {self.data_dir} is at index {sm.applied_index}, "
                f"before the log's first index {storage.first_index()}: it cannot catch up "
                "from this log; wipe the data directory and re-add the node"
            )
        self._last_snapshot_index = storage.snapshot().metadata.index
        if sm.applied_index < self._last_snapshot_index:
            await self._log_thread.submit(self._replay_to_snapshot, storage, sm)
        return storage, sm

    def _replay_to_snapshot(self, storage: Storage, sm: StateMachine) -> None:
        """On the log thread: apply the entries up to the log's snapshot point to a
        state machine behind it, while the log still holds them.

        The core takes everything up to the snapshot point as applied (the state
        machine restarts from its snapshot), which holds for a state machine that
        keeps its state on disk. One that keeps nothing (``memory``) restarts
        empty: without this, the core applied the entries after the point to it,
        and the node stopped (``entries start at 121, applied index is 0``).
        """
        lo, hi = sm.applied_index + 1, self._last_snapshot_index + 1
        log.info(
            "node %d replays entries %d..%d into its state machine (behind the log's "
            "snapshot point)",
            self.node_id,
            lo,
            hi - 1,
        )
        while lo < hi:
            batch = storage.entries(lo, min(hi, lo + _REPLAY_BATCH), _REPLAY_BYTES)
            sm.apply(batch)
            lo += len(batch)
        if isinstance(sm, DefersDurability):
            sm.make_durable()

    def _open_disk(self) -> tuple[Storage, StateMachine]:
        cfg = self.config
        storage = open_storage(cfg.storage, self.data_dir / LOG_DIR, sync=cfg.sync)
        try:
            sm = open_state_machine(
                cfg.state_machine,
                self.data_dir / STATE_DIR,
                sync=cfg.sync,
                watch_history=cfg.watch_history,
            )
        except BaseException:
            storage.close()
            raise
        return storage, sm

    async def close(self) -> None:
        """Once the Ready loop has stopped: let the batches being applied finish, then
        (on the log thread) save a commit index still unsaved and close the files.
        A batch waiting for space gives up (it is applied after the restart)."""
        self._stop_retrying.set()
        if self._durable_timer is not None:
            self._durable_timer.cancel()
            self._durable_timer = None
        await self.applies_done()
        await asyncio.to_thread(self._apply_thread.shutdown)
        await asyncio.to_thread(self._sync_thread.shutdown)
        await self._log_thread.submit(self._close_disk)
        await asyncio.to_thread(self._log_thread.shutdown)

    def _close_disk(self) -> None:
        if self.storage is not None and self._unsaved_hard_state is not None and not self._failed():
            with contextlib.suppress(Exception):
                self.storage.save(self._unsaved_hard_state, [])
        for closer in (self.sm, self.storage):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer.close()

    # -- the apply thread ------------------------------------------------------------

    async def applies_done(self) -> None:
        """Wait until every batch handed over is applied, and made durable by a
        state machine that defers it (a restore never runs beside ``make_durable``:
        none starts until the restore is installed); never cancels one."""
        self._quiet = True
        await self._applied_down_to(0)
        if self._batches_durable:
            await self._sync_thread.submit(self._settle)  # after a timer's, if one runs
        elif self._make_durable is not None:
            await self._apply_thread.submit(_nothing)  # after the last follow-up

    async def apply_room(self) -> None:
        """Wait until fewer than :data:`MAX_APPLYING` batches are queued to apply."""
        await self._applied_down_to(MAX_APPLYING - 1)

    async def _applied_down_to(self, most: int) -> None:
        """Wait, oldest first, until at most ``most`` batches are not applied yet."""
        applying = self._applying
        while applying and (applying[0].done() or len(applying) > most):
            if not applying[0].done():
                await asyncio.wait((applying[0],))
            applying.popleft()

    def start_apply(self, entries: list[Entry]) -> None:
        """Apply ``entries`` on the apply thread; :meth:`_on_applied` answers their requests."""
        sm = self.sm
        assert sm is not None
        if self._batches_durable:  # made durable later, with others (_on_applied)
            applying = self._apply_thread.submit(self._apply_batch, sm, entries)
        else:
            settle = self._settle if self._make_durable is not None else None
            applying = self._apply_thread.submit_then(self._apply_batch, settle, sm, entries)
        applying.add_done_callback(functools.partial(self._on_applied, entries))
        self._applying.append(applying)

    def _durable_due(self) -> None:
        """On the loop, ``state_sync_interval_ms`` after the first batch applied
        since the last call: make every batch applied so far durable, on the sync
        thread (one fsync for all, while the apply thread goes on). A batch applied
        after it arms the next. Not during a restore or a close:
        :meth:`applies_done` does it."""
        self._durable_timer = None
        if self._quiet or self._stopping():
            return
        with contextlib.suppress(RuntimeError):  # the thread is shut down: closing
            self._sync_thread.submit(self._settle)

    def _apply_batch(self, sm: StateMachine, entries: list[Entry]) -> list[Any]:
        """On the apply thread: apply one batch; while the state machine refuses it
        for lack of space, apply it again with backoff (see the module docstring).

        The later batches queue behind this one on the same thread, so none is
        applied before it, and none is skipped.

        Raises:
            _ApplyAbandonedError: the node is stopping while this batch (or one
                before it) waits for space.
        """
        if self._abandoned:
            raise _ApplyAbandonedError()
        delay = _SAVE_RETRY_FIRST
        failures = 0
        while True:
            try:
                results = sm.apply(entries)
            except OSError as e:
                if not is_no_space(e):
                    raise
                failures += 1
                if self._apply_no_space is None:
                    log.error(
                        "node %d cannot apply entries %d..%d: %s; read-only (507) and retrying",
                        self.node_id,
                        entries[0].index,
                        entries[-1].index,
                        e,
                    )
                    self._apply_no_space = f"{type(e).__name__}: {e}"
                if self._stop_retrying.wait(delay):
                    self._abandoned = True
                    raise _ApplyAbandonedError() from e
                delay = min(delay * 2, _SAVE_RETRY_CAP)
                continue
            if self._apply_no_space is not None:
                log.warning(
                    "node %d: applying works again after %d failed tries",
                    self.node_id,
                    failures,
                )
                self._apply_no_space = None
            return results

    def _settle(self) -> None:
        """On the apply thread, once a batch's results are posted (the loop answers
        them meanwhile): make the batch durable before the next one; or, for a
        state machine durable at ``make_durable``, on the sync thread: every batch
        applied so far.

        Refused for lack of space, the state machine tries again at the next
        ``apply``, which is retried while the disk is full (see
        :meth:`_apply_batch`). Any other failure stops the node.
        """
        make_durable = self._make_durable
        assert make_durable is not None
        try:
            make_durable()
        except OSError as e:
            if is_no_space(e):
                log.warning("node %d: making a batch durable was refused: %s", self.node_id, e)
                return
            self._fail_from_thread(e)
        except Exception as e:
            self._fail_from_thread(e)

    def _fail_from_thread(self, error: BaseException) -> None:
        log.error("node %d: making a batch durable failed", self.node_id, exc_info=error)
        loop = self._loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: the node is gone anyway
            loop.call_soon_threadsafe(self._fail, f"{type(error).__name__}: {error}")

    def _on_applied(self, entries: list[Entry], applying: asyncio.Future[list[Any]]) -> None:
        """On the loop, once a batch is applied: answer its requests; start a snapshot
        on the log thread when ``snapshot_entries`` more entries were applied."""
        if applying.cancelled():
            return
        error = applying.exception()
        if isinstance(error, _ApplyAbandonedError):
            return  # stopping: the entries stay in the log, applied after the restart
        if error is not None:  # a state machine error: stop, never serve a state that lags
            log.error("node %d: applying entries failed", self.node_id, exc_info=error)
            self._fail(f"{type(error).__name__}: {error}")
            return
        self._after_apply(entries, applying.result())
        if self._batches_durable and self._durable_timer is None:
            assert self._loop is not None
            self._durable_timer = self._loop.call_later(
                self.config.state_sync_interval_ms / 1000, self._durable_due
            )
        if (
            not self._snapshotting
            and not self._stopping()
            and self.applied_index - self._last_snapshot_index >= self.config.snapshot_entries
        ):
            assert self._loop is not None
            self._snapshotting = True
            job = self._log_thread.submit(self._snapshot_job)
            job.add_done_callback(self._on_snapshot_job)

    # -- the log thread --------------------------------------------------------------

    def _snapshot_job(self) -> None:
        """On the log thread: record a snapshot; a storage refusing writes is retried
        after the next batch (any other error stops the node)."""
        try:
            self._take_snapshot()
        except OSError as e:
            log.warning("node %d could not record a snapshot: %s", self.node_id, e)

    def _on_snapshot_job(self, job: asyncio.Future[None]) -> None:
        self._snapshotting = False
        if not job.cancelled() and job.exception() is not None:
            error = job.exception()
            log.error("node %d: taking a snapshot failed", self.node_id, exc_info=error)
            self._fail(f"{type(error).__name__}: {error}")

    def defer_hard_state(self, hard_state: HardState) -> None:
        """Keep a hard state that need not be durable yet (only its commit index
        moved): it is saved with the next Ready that is saved, or on close."""
        self._unsaved_hard_state = hard_state

    async def save(self, rd: Ready, send: Callable[[list[Message]], None]) -> None:
        """Run ``_save(rd)`` on the log thread, which hands ``rd.messages_after_save``
        to ``send`` once ``rd`` is durable; while saving ``rd`` fails with an
        ``OSError``, set :attr:`save_error` (and for a full disk :attr:`alarms`:
        the node answers writes ``507``, else ``503``) and try again with backoff.

        Nothing moves meanwhile: ``rd`` is not advanced, so the core keeps it (and
        stacks new work behind it), none of the entries it saves is applied, and
        no message that waits for the save is sent (what earlier saves made
        durable may be applying: ``raftdb.node.ready_loop``). The same Ready is
        saved again, and its entries are applied once, after the save that
        succeeded. A storage that refuses
        every call after a failed write (LevelDB's, which cannot tell what
        reached the disk) answers the retry with a ``StorageError``: it
        propagates, and the node stops serving, as for any other storage error.
        """
        assert self._loop is not None
        delay = _SAVE_RETRY_FIRST
        failures = 0
        while True:
            try:
                await self._log_thread.submit(self._save, rd)
                if rd.messages_after_save:
                    send(rd.messages_after_save)  # votes and acks: only once durable
                if rd.snapshot is not None:
                    # Installed by _save (a save that fails after it is retried
                    # without installing it again, and ends here once).
                    self._quiet = False
                    self._restored_callback()
            except _SaveFailedError as e:
                failures += 1
                if self._save_error is None or self._save_no_space != e.no_space:
                    log.error(
                        "node %d cannot save to its storage: %s; %s and retrying",
                        self.node_id,
                        e.reason,
                        "read-only (507)" if e.no_space else "answering 503",
                    )
                    self._save_error = e.reason
                    self._save_no_space = e.no_space
                await asyncio.sleep(delay)
                delay = min(delay * 2, _SAVE_RETRY_CAP)
                continue
            if self._save_error is not None:
                log.warning(
                    "node %d: saving to its storage works again after %d failed tries",
                    self.node_id,
                    failures,
                )
                self._save_error = None
                self._save_no_space = False
            return

    def _save(self, rd: Ready) -> None:
        """On the log thread: make ``rd`` durable (:meth:`save` then sends its acks,
        on the loop: one wake-up of the loop per save, not two).

        Raises:
            _SaveFailedError: saving failed with an ``OSError``; nothing after the
                save was done, and calling again with the same ``rd`` retries it.
        """
        storage = self.storage
        assert storage is not None
        try:
            if rd.snapshot is not None and self._restored is not rd:
                # A restore refused for lack of space left the old state whole
                # (StateMachine.restore is atomic): it is tried again, only it.
                self._restore_snapshot(rd)
                self._restored = rd  # a retried save must not install it again
            started = time.perf_counter()
            storage.save(rd.hard_state or self._unsaved_hard_state, rd.entries, rd.snapshot)
        except OSError as e:
            if rd.snapshot is not None and self._restored is not rd and not is_no_space(e):
                raise  # restoring failed otherwise: fatal, as before
            raise _SaveFailedError(f"{type(e).__name__}: {e}", is_no_space(e)) from e
        self.metrics.fsync_seconds.observe(time.perf_counter() - started)
        self._unsaved_hard_state = None
        self._restored = None

    def _restore_snapshot(self, rd: Ready) -> None:
        """Install a leader's snapshot: state machine first, then the log.

        In that order a crash between the two leaves a state machine ahead of
        its log, which replays nothing it already has; the other order could
        leave a log that starts after what the state machine holds.
        """
        assert rd.snapshot is not None
        assert self.sm is not None
        meta = rd.snapshot.metadata
        path = self._incoming_snapshots.get((meta.index, meta.term))
        if path is None:
            raise RuntimeError(f"snapshot {meta.index}/{meta.term} to install was not received")
        try:
            info = self.sm.restore(_chunks(path))
        except BaseException as e:
            if not (isinstance(e, OSError) and is_no_space(e)):
                self._drop_received(meta)
            raise  # refused for lack of space: kept for the retry (the old state is whole)
        self.metrics.snapshots_restored.inc()  # at once: the restored state is visible
        self._drop_received(meta)
        self._last_snapshot_index = meta.index
        log.info(
            "node %d installed snapshot %d (state machine at %d)",
            self.node_id,
            meta.index,
            info.index,
        )

    def _drop_received(self, meta: SnapshotMetadata) -> None:
        path = self._incoming_snapshots.pop((meta.index, meta.term), None)
        if path is not None:
            path.unlink(missing_ok=True)

    def _take_snapshot(self) -> None:
        """Record a snapshot point at the applied index and compact the log behind it."""
        assert self.sm is not None
        assert self.storage is not None
        stream = self.sm.snapshot()
        stream.close()  # only the durable point matters; peers get a fresh stream
        info = stream.info
        storage = self.storage
        if info.index <= storage.snapshot().metadata.index or info.index > storage.last_index():
            return
        storage.create_snapshot(info.index, info.conf_state)
        keep = self.config.snapshot_keep_entries
        storage.compact(max(storage.first_index() - 1, info.index - keep))
        self._last_snapshot_index = info.index
        self.metrics.snapshots_taken.inc()
        log.info("node %d took a snapshot at %d", self.node_id, info.index)

    # -- received snapshots ----------------------------------------------------------

    def check_received_snapshot(self, meta: SnapshotMetadata, path: Path) -> str | None:
        """What is wrong with the snapshot stream in ``path`` for ``meta``, or None.

        Blocking (it reads the whole file): call it in a worker thread. The
        stream must be whole (every frame, checksum, order and count, as a
        restore checks them) and reach at least ``meta``'s index: the leader
        streams its state machine as it is when the transfer starts, which
        may be ahead of the log snapshot the message names (installing it
        leaves the state machine ahead of the log, which replays nothing it
        already holds), never behind.
        """
        try:
            info = check_stream(_chunks(path))
        except (SnapshotFormatError, OSError) as exc:
            return str(exc)
        if info.index < meta.index:
            return f"the stream holds the state at index {info.index}, before {meta.index}"
        return None

    def drop_received_snapshot(self, path: Path) -> None:
        """Delete a received snapshot stream that will not be installed."""
        path.unlink(missing_ok=True)

    def keep_received_snapshot(self, meta: SnapshotMetadata, path: Path) -> None:
        """A leader's snapshot stream arrived in ``path``: keep it until the Ready
        that installs it is saved (the node then steps its message)."""
        old = self._incoming_snapshots.pop((meta.index, meta.term), None)
        if old is not None and old != path:
            old.unlink(missing_ok=True)
        # Older received snapshots will never be installed: drop their files.
        for key in [k for k in self._incoming_snapshots if k[0] < meta.index]:
            self._incoming_snapshots.pop(key).unlink(missing_ok=True)
        self._incoming_snapshots[(meta.index, meta.term)] = path


def _nothing() -> None:
    """A job that only waits its turn on a disk thread."""


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(1 << 20), b"")
