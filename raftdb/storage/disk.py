"""What every disk Storage plugin shares: :class:`DiskStorage`, a base class.

A disk plugin keeps its log's bounds, terms and recent entries in a
:class:`~raftdb.storage.logindex.LogIndex`, and the hard state and snapshot in
memory, so that the core's reads cost no I/O except for entries older than
the cache. Everything around that index is the same whatever the database,
and lives here: the locks, refusing calls after ``close()`` or a failed write,
the reads, the checks of ``save``, ``create_snapshot`` and ``compact``, the
lazy deletion of garbage inside later writes, loading and checking the log at
open, and the locking that lets the core read from memory while a write waits
for its fsync (see :class:`DiskStorage`). A plugin (a subclass) adds only what
depends on its database, in five small methods:

- :meth:`DiskStorage._read_meta`: read one metadata record by name;
- :meth:`DiskStorage._stored_entries`: every stored entry, for the check at open;
- :meth:`DiskStorage._stored_range`: the stored entries of a range, for reads
  older than the cache;
- :meth:`DiskStorage._write_batch`: one atomic, durable write;
- :meth:`DiskStorage._close_db`: close the database;
- optionally :meth:`DiskStorage._reopen_db`: make the database writable again
  after a write refused for lack of space (LevelDB refuses every write after
  one failed; SQLite rolls the transaction back and goes on, so it needs none).

**A full disk is survived.** A write that fails with an ``OSError`` whose
errno is ``ENOSPC``/``EDQUOT`` (:mod:`raftdb.storage.nospace`) did not reach
the database (the write is atomic), so it does not break the storage: reads
go on, and the next write first makes memory match the disk again
(:meth:`DiskStorage._recover`: :meth:`_reopen_db`, then the log index is rebuilt
from what is stored) and then tries. Any other failed write still makes
the storage refuse every later call.

Entries and metadata are stored as :mod:`raftdb.codec` records, the metadata
under the names of :data:`MetaName`. LevelDB (``raftdb_leveldb``) and SQLite
(``raftdb_sqlite``) are the two plugins built this way.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final, Literal, NamedTuple

from raftdb.codec import CorruptionError
from raftdb.raft.errors import StorageError, UsageError
from raftdb.raft.messages import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    entry_size,
)
from raftdb.storage.durable import durable_mkdir
from raftdb.storage.logindex import LogIndex, load_log
from raftdb.storage.nospace import is_no_space
from raftdb.storage.records import (
    LogBounds,
    decode_entry,
    decode_hard_state,
    decode_log_bounds,
    decode_snapshot,
    encode_entry,
    encode_hard_state,
    encode_log_bounds,
    encode_snapshot,
)

__all__ = ["GARBAGE_PER_WRITE", "DiskStorage", "MetaName"]

#: Dropped entries deleted per write, at most: bounds the cost compaction adds to a save.
GARBAGE_PER_WRITE: Final = 1024

#: The metadata records a disk plugin stores beside the entries.
MetaName = Literal["hard_state", "snapshot", "log_bounds"]


class _Batch(NamedTuple):
    """What step 1 of a write hands to step 2: the database write, ready to go."""

    garbage: list[tuple[int, int]]
    entries: Sequence[tuple[int, bytes]]
    meta: list[tuple[MetaName, bytes]]
    bounds: LogBounds


class DiskStorage(ABC):
    """A :class:`~raftdb.storage.protocol.Storage` over a database a subclass reaches.

    Thread-safe, built for one writer and readers on other threads: the
    driver's I/O thread saves while its event loop reads through the core.
    The reads the core makes all the time (``term``, ``first_index``,
    ``last_index``, ``snapshot``, cached ``entries``) are answered from
    memory and never wait for a write's fsync.

    **Locks.** Three, always taken in this order (an outer one may be held
    while taking an inner one, never the reverse):

    1. ``_write_lock`` serializes the writers (``save``, ``create_snapshot``,
       ``compact``, ``close``). The Storage protocol promises a single writer
       (the driver calls them on its I/O thread only), so it is never
       contended there; it makes the argument below hold for any caller.
    2. ``_lock``, the memory lock, guards the in-memory state: the
       :class:`~raftdb.storage.logindex.LogIndex`, ``_hard_state``, ``_snapshot``,
       ``_written_bounds``, ``_failed``, ``_nospace``, ``_closed``. Every public method
       takes it, briefly: never across a database write (a read from the
       database is done under it, see below).
    3. ``_db_lock`` guards the database handle, ``_db_error`` and
       ``_db_nospace``. Every
       database access after ``__init__`` holds it: the write
       (:meth:`_write_batch`), reads older than the cache
       (:meth:`_stored_range`, under the memory lock), :meth:`_close_db`,
       a plugin's inspection methods. So the handle is never used by two
       threads at once, which SQLite's connection requires.

    No deadlock: no thread ever waits for a lock while holding an inner one.
    Readers never take the write lock, and take the db lock only while
    holding the memory lock (order 2 then 3). The writer takes the write
    lock first; it takes the db lock while still holding the memory lock,
    writes holding the db lock alone, and takes the memory lock again only
    after releasing the db lock.

    **A write in three steps** (``save``, ``create_snapshot``; ``close``
    has only the first two):

    1. Under the memory lock: the checks, the update of the LogIndex,
       garbage and bounds taken for the write; then the db lock is taken
       *before* the memory lock is released (see below why).
    2. Under the db lock alone: :meth:`_write_batch`, with its fsync.
       Readers of memory go on meanwhile (unless a reader that needs the
       database is waiting for this write: it waits holding the memory
       lock, the rare path of a follower far behind). A failure is kept in
       ``_db_error`` before the db lock is released.
    3. Under the memory lock: on success, ``_written_bounds``,
       ``_snapshot`` and ``_hard_state`` become the written ones; on
       failure ``_failed`` is set, so every later call refuses (memory is
       ahead of the disk: the node must stop, as etcd panics here), unless
       the database refused the write for lack of space: then ``_nospace``
       is set instead, reads go on (below), and the next write starts with
       :meth:`_recover`.

    **Reads while a write is refused for lack of space.** Memory is ahead of
    the disk by that one write, exactly as during its step 2, so the
    argument below still holds: the core reads only entries saved by
    earlier writes, which are on disk and unchanged. A database read is
    refused (the ``OSError``) only if it reaches the entries of the refused
    write (``_db_nospace``), which no reader of the core asks for.

    **Why readers may go on during step 2.** From step 1 on, memory answers
    for the log as the write in flight will leave it. Of the live log, only
    the entries that write brings (from its first entry's index on) are
    not on disk yet; the rest is unchanged by it and durable (had an
    earlier write failed, the storage would refuse every call). The
    entries it deletes (garbage: compacted or truncated away) are outside
    the live log, so the in-memory bounds refuse them (CompactedError,
    UnavailableError) before any database read.

    - The Raft core never reads what is in flight. :class:`RaftLog
      <raftdb.raft.log.RaftLog>` reads Storage only below its unstable
      part's ``offset`` (``term``, ``slice``), and asks Storage's
      ``first_index``/``last_index``/``snapshot`` only while its unstable
      part holds no snapshot / no entries. Entries being saved stay in the
      unstable part until ``advance()``, which the driver calls after
      ``save`` returned; a new leader's entries arriving meanwhile can only
      lower ``offset`` (``Unstable.truncate_and_append``). So the core reads
      only entries saved by earlier writes, and its bounds questions get the
      same answers before and after the write.
    - Any other reader is safe from wrong data too: ``entries`` that must
      come from the database (older than the cache; a save larger than the
      cache pushes even its own entries out) take the db lock while holding
      the memory lock. If a write is in flight they wait for it (its step 1
      took the db lock before releasing the memory lock, so there is no
      moment where memory is ahead and the db lock free), then read the
      database as memory describes it; no later write can begin meanwhile,
      since it needs the memory lock. If the write failed they refuse
      (``_db_error``) instead of reporting stale or missing entries.
    - What such a reader may see during step 2: ``term``, ``last_index``
      and cached ``entries`` already describe the entries in flight, and
      during a save carrying a snapshot ``first_index`` is already past it
      while ``snapshot`` and ``initial_state`` still give the older, durable
      snapshot and hard state (they change in step 3). The core asks none
      of these then (its unstable part answers), which is what the
      protocol's "reads see durable state" rests on.

    A subclass's ``__init__`` calls ``super().__init__(path, location)``,
    opens its database, then calls :meth:`_load` (and closes the database if
    that raises). Until ``__init__`` returns the object is not shared, so
    :meth:`_read_meta`, :meth:`_stored_entries` and the writes of
    :meth:`_load` run without locks.

    Args:
        path: the plugin's directory (created if missing).
        location: names the database in error messages, e.g.
            ``"LevelDB storage /data/raft"``; entries add ``", entry 42"``.
    """

    _log: LogIndex
    _hard_state: HardState
    _snapshot: Snapshot
    _written_bounds: LogBounds

    def __init__(self, path: Path | str, location: str) -> None:
        self._path = Path(path)
        durable_mkdir(self._path)
        self._location = location
        self._write_lock = threading.RLock()
        self._lock = threading.RLock()
        self._db_lock = threading.Lock()
        self._failed: BaseException | None = None
        # The last write was refused for lack of space: memory is ahead of the
        # disk by that write, and the next write first calls _recover().
        self._nospace: OSError | None = None
        self._closed = False
        # The failure of the last database write, for readers holding the db
        # lock between the write's step 2 and step 3 (``_failed`` is set then).
        self._db_error: BaseException | None = None
        # The last write was refused for lack of space: the error, and the
        # first entry index it carried (database reads from there on would
        # not find what memory describes).
        self._db_nospace: tuple[OSError, int] | None = None
        self._cache_entries = 8192
        self._cache_bytes = 32 << 20

    # -- what a subclass provides ----------------------------------------------

    @abstractmethod
    def _read_meta(self, name: MetaName) -> bytes | None:
        """The record stored under ``name``, or ``None`` if there is none.

        Called only by :meth:`_load`, during ``__init__``.

        Raises:
            CorruptionError: the record is unreadable (the message need not
                name the database: :meth:`_load` adds it).
        """

    @abstractmethod
    def _stored_entries(self) -> Iterator[tuple[int, bytes]]:
        """``(index, record)`` for every stored entry, ascending, garbage included.

        Called only by :meth:`_load`, during ``__init__``.

        Raises:
            CorruptionError: a stored key or record is malformed.
        """

    @abstractmethod
    def _stored_range(
        self, lo: int, hi: int
    ) -> AbstractContextManager[Iterable[tuple[int, bytes]]]:
        """A context giving ``(index, record)`` for the stored entries in ``[lo, hi)``.

        The rows come in ascending order, unchecked: the caller stops at the
        first missing index and decodes (and checksums) each record, all
        inside the context, which turns database errors, raised while
        iterating, into :class:`CorruptionError` or ``OSError`` naming the
        database. (A context rather than a generator, so that a plugin can
        hand over its database's own iterator: this is the read path of
        followers that fell behind the cache.) Entered with the memory lock
        and the db lock held.
        """

    @abstractmethod
    def _write_batch(
        self,
        garbage: Sequence[tuple[int, int]],
        entries: Sequence[tuple[int, bytes]],
        meta: Sequence[tuple[MetaName, bytes]],
    ) -> None:
        """One atomic write, durable when it returns if the storage syncs.

        Deletes the stored entries in the inclusive ranges ``garbage``, then
        stores ``(index, record)`` entries and ``(name, record)`` metadata,
        each replacing what is stored under the same index or name. A crash
        leaves all of it or none. Called with the db lock held and the
        memory lock not held (except from :meth:`_load`, without locks).

        Raises:
            CorruptionError, OSError: the database failed; the message names it.
        """

    @abstractmethod
    def _close_db(self) -> None:
        """Close the database (called once, with the db lock held)."""

    def _reopen_db(self) -> None:
        """Make the database take writes again after one was refused for lack of space.

        Called with the db lock (and the memory lock) held, before the next
        write, while memory may be ahead of the disk; :meth:`_recover` then
        rebuilds memory from what is stored. A database that goes on after a
        refused write (SQLite rolls the transaction back) needs nothing: the
        default does nothing.

        Raises:
            OSError: with errno ``ENOSPC``/``EDQUOT``, there is still no room to
                reopen; the database must then still serve reads as before.
                Anything else is fatal.
        """
        return None  # a hook: nothing to do for a database that goes on

    # -- opening -----------------------------------------------------------------

    def _where(self, index: int) -> str:
        return f"{self._location}, entry {index}"

    def _load(self, cache_entries: int, cache_bytes: int) -> None:
        """Read the metadata and check every stored entry; delete leftovers.

        Raises:
            CorruptionError: a record is damaged, the bounds are missing, the
                snapshot does not cover the start of the log, or an entry is
                damaged or missing (see :func:`~raftdb.storage.logindex.load_log`).
        """
        self._cache_entries, self._cache_bytes = cache_entries, cache_bytes
        self._hard_state, self._snapshot, self._log, garbage = self._read_stored()
        if garbage:
            # Leftovers of a compaction or truncation: finish deleting them.
            self._write_batch(garbage, (), ())
        self._written_bounds = self._log.bounds()

    def _read_stored(self) -> tuple[HardState, Snapshot, LogIndex, list[tuple[int, int]]]:
        """What the database holds: hard state, snapshot, the log index rebuilt
        from every stored entry (checked), and the garbage ranges found."""
        where = self._location
        try:
            raw = self._read_meta("hard_state")
            hard_state = HardState() if raw is None else decode_hard_state(raw)
            raw = self._read_meta("snapshot")
            snapshot = Snapshot() if raw is None else decode_snapshot(raw)
            raw = self._read_meta("log_bounds")
            if raw is None:
                raise CorruptionError("the log bounds record is missing")
            bounds = decode_log_bounds(raw)
        except CorruptionError as exc:
            raise CorruptionError(f"{where}: {exc}") from None
        snap = snapshot.metadata
        if bounds.dummy_index > snap.index or (
            bounds.dummy_index == snap.index and bounds.dummy_term != snap.term
        ):
            raise CorruptionError(
                f"{where}: the log starts after index {bounds.dummy_index} (term "
                f"{bounds.dummy_term}), which the snapshot at {snap.index} (term "
                f"{snap.term}) does not cover"
            )
        log, garbage = load_log(
            bounds,
            self._stored_entries(),
            self._where,
            cache_entries=self._cache_entries,
            cache_bytes=self._cache_bytes,
        )
        return hard_state, snapshot, log, garbage

    def _recover(self) -> None:
        """Before a write, after one was refused for lack of space (write lock held):
        reopen the database if it needs it, then make memory what the disk holds.

        The refused write is not on disk (it is atomic), and memory described
        the log as if it were; the retried write (the node saves the same Ready
        again) recomputes everything from the rebuilt index. A compaction
        done in memory meanwhile is kept (it is only ever made durable with a
        later write anyway).

        Raises:
            OSError: still no room to reopen (the storage stays as it was:
                reads go on, the next write tries again).
        """
        with self._lock:
            self._check()
            compacted_to = self._log.dummy_index
            with self._db_lock:
                try:
                    self._reopen_db()
                    hard_state, snapshot, log, garbage = self._read_stored()
                except BaseException as exc:
                    if not (isinstance(exc, OSError) and is_no_space(exc)):
                        self._failed = self._db_error = exc
                    raise
                self._db_nospace = None
            written = log.bounds()
            snap_index = snapshot.metadata.index
            if log.dummy_index < compacted_to <= min(snap_index, log.last_index):
                log.compact(compacted_to, snap_index)
            log.add_garbage(garbage)
            self._hard_state, self._snapshot, self._log = hard_state, snapshot, log
            self._written_bounds = written
            self._nospace = None

    def _check(self) -> None:
        """Refuse calls after ``close()`` or a failed write (memory lock held)."""
        if self._closed:
            raise UsageError("the storage is closed")
        if self._failed is not None:
            raise StorageError(f"the storage failed earlier: {self._failed!r}") from self._failed

    def _check_db(self, hi: int | None = None) -> None:
        """Refuse a database read after a failed write (db lock held).

        The memory lock is held too, so ``_check`` passed; but a write that
        failed may not have reached its step 3 yet, and its entries are in
        memory and not on disk: reading the database would report them
        missing (a false CorruptionError) or give back the ones they replace.
        After a write refused for lack of space, only a read that reaches its
        entries (``[lo, hi)`` with ``hi`` past its first one) is refused, with
        that ``OSError``; ``hi=None`` reaches everything.
        """
        if self._db_error is not None:
            raise StorageError(
                f"the storage failed earlier: {self._db_error!r}"
            ) from self._db_error
        nospace = self._db_nospace
        if nospace is not None and (hi is None or hi > nospace[1]):
            exc, _ = nospace
            raise OSError(exc.errno, f"{exc.strerror} (a write was refused; retry later)")

    # -- read side -------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        with self._lock:
            self._check()
            return self._hard_state, self._snapshot.metadata.conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        with self._lock:
            self._check()
            log = self._log
            log.check_range(lo, hi)
            if lo >= hi:
                return []
            cache_first = log.cache_first
            out: list[Entry] = []
            size = 0
            if lo < cache_first:
                # Older than the cache: from the database, under the db lock,
                # which waits out a write in flight (see the class docstring).
                disk_hi = min(hi, cache_first)
                expected = lo
                with self._db_lock:
                    self._check_db(disk_hi)
                    with self._stored_range(lo, disk_hi) as rows:
                        for index, record in rows:
                            if index != expected:
                                break
                            try:
                                entry = decode_entry(record, index)
                            except CorruptionError as exc:
                                raise CorruptionError(f"{self._where(index)}: {exc}") from None
                            size += entry_size(entry)
                            if max_bytes is not None and size > max_bytes and out:
                                return out
                            out.append(entry)
                            expected += 1
                if expected != disk_hi:
                    raise CorruptionError(f"{self._where(expected)}: the entry is missing")
                lo = disk_hi
            for entry in log.cached(lo, hi):
                size += entry_size(entry)
                if max_bytes is not None and size > max_bytes and out:
                    break
                out.append(entry)
            return out

    def term(self, index: int) -> int:
        with self._lock:
            self._check()
            return self._log.term(index)

    def first_index(self) -> int:
        with self._lock:
            self._check()
            return self._log.first_index

    def last_index(self) -> int:
        with self._lock:
            self._check()
            return self._log.last_index

    def snapshot(self) -> Snapshot:
        with self._lock:
            self._check()
            return self._snapshot

    # -- write side ------------------------------------------------------------------

    def _prepare(
        self,
        entries: Sequence[tuple[int, bytes]],
        meta: Sequence[tuple[MetaName, bytes]],
        garbage_limit: int | None,
    ) -> _Batch:
        """Step 1's end (memory lock held): take garbage and bounds, then the db lock.

        The db lock is taken here, before the caller releases the memory
        lock, so that no reader can see the updated memory and reach the
        database before the write does. It is free: only a reader holding the
        memory lock, or the (single, serialized) writer, ever holds it.

        The LogIndex was already updated: a failure here leaves memory ahead
        of disk, so the storage refuses every later call.
        """
        try:
            garbage = self._log.take_garbage(garbage_limit)
            bounds = self._log.bounds()
            batch = _Batch(
                garbage, entries, [*meta, ("log_bounds", encode_log_bounds(bounds))], bounds
            )
        except BaseException as exc:
            self._failed = exc
            raise
        self._db_lock.acquire()
        return batch

    def _write_held(self, batch: _Batch) -> None:
        """Step 2 of a write, called holding the db lock (not the memory lock).

        Writes, then releases the db lock. On failure it also does step 3:
        ``_db_error`` is set before the db lock is released (for readers
        that get it next), ``_failed`` after, under the memory lock, so that
        it never waits for the memory lock while holding the db lock (the
        lock order). On success the caller does step 3.
        """
        try:
            try:
                self._write_recording_failure(batch)
            finally:
                self._db_lock.release()
        except BaseException as exc:
            with self._lock:
                if isinstance(exc, OSError) and is_no_space(exc):
                    self._nospace = exc
                else:
                    self._failed = exc
            raise

    def _write_recording_failure(self, batch: _Batch) -> None:
        """``_write_batch(batch)``, db lock held; a failure is kept in ``_db_error``
        (or ``_db_nospace``, for lack of space) while the db lock is still held,
        before it propagates."""
        try:
            self._write_batch(batch.garbage, batch.entries, batch.meta)
        except BaseException as exc:
            if isinstance(exc, OSError) and is_no_space(exc):
                first = batch.entries[0][0] if batch.entries else batch.bounds.last_index + 1
                self._db_nospace = (exc, first)
            else:
                self._db_error = exc
            raise

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        if hard_state is None and not entries and snapshot is None:
            return
        with self._write_lock:
            if self._nospace is not None:
                self._recover()
            # Encoding needs no state: done before taking the memory lock, so
            # that readers wait only for the LogIndex update.
            records = [(e.index, encode_entry(e)) for e in entries]
            meta: list[tuple[MetaName, bytes]] = []
            if snapshot is not None:
                meta.append(("snapshot", encode_snapshot(snapshot)))
            if hard_state is not None:
                meta.append(("hard_state", encode_hard_state(hard_state)))
            with self._lock:  # step 1
                self._check()
                self._log.check_save(entries, snapshot, self._snapshot.metadata.index)
                self._log.save(entries, snapshot)
                batch = self._prepare(records, meta, GARBAGE_PER_WRITE)
            self._write_held(batch)  # step 2
            with self._lock:  # step 3
                self._written_bounds = batch.bounds
                if snapshot is not None:
                    self._snapshot = snapshot
                if hard_state is not None:
                    self._hard_state = hard_state

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes = b"") -> Snapshot:
        with self._write_lock:
            if self._nospace is not None:
                self._recover()
            with self._lock:  # step 1
                self._check()
                current = self._snapshot.metadata.index
                if index <= current:
                    raise UsageError(
                        f"snapshot at {index} is not newer than the stored one at {current}"
                    )
                if index > self._log.last_index:
                    raise UsageError(
                        f"snapshot at {index} is beyond the last index {self._log.last_index}"
                    )
                metadata = SnapshotMetadata(index, self._log.term(index), conf_state)
            # Encoding (``data`` may be large) needs no lock: the write lock
            # keeps the log, and what was checked, as it is until step 1 goes on.
            snapshot = Snapshot(metadata, data)
            record = encode_snapshot(snapshot)
            with self._lock:  # step 1, end
                batch = self._prepare((), [("snapshot", record)], GARBAGE_PER_WRITE)
            self._write_held(batch)  # step 2
            with self._lock:  # step 3
                self._written_bounds = batch.bounds
                self._snapshot = snapshot
            return snapshot

    def compact(self, index: int) -> None:
        with self._write_lock, self._lock:
            self._check()
            self._log.compact(index, self._snapshot.metadata.index)

    def close(self) -> None:
        with self._write_lock:
            with self._lock:  # step 1; from now on every call is refused
                if self._closed:
                    return
                self._closed = True
                batch: _Batch | None = None
                try:
                    # After a refused write memory is ahead of the disk: its
                    # bounds would name entries that are not stored.
                    if (
                        self._failed is None
                        and self._nospace is None
                        and (self._log.has_garbage or self._log.bounds() != self._written_bounds)
                    ):
                        batch = self._prepare((), (), None)  # takes the db lock
                    else:
                        self._db_lock.acquire()
                except BaseException:
                    with self._db_lock:
                        self._close_db()
                    raise
            # Step 2, db lock held: the last write (compaction and deletions
            # not yet on disk), then close the database whatever happens.
            try:
                if batch is not None:
                    self._write_recording_failure(batch)
            finally:
                try:
                    self._close_db()
                finally:
                    self._db_lock.release()
