"""What every disk Storage plugin shares: :class:`DiskStorage`, a base class.

A disk plugin keeps its log's bounds, terms and recent entries in a
:class:`~raftdb.logindex.LogIndex`, and the hard state and snapshot in
memory, so that the core's reads cost no I/O except for entries older than
the cache. Everything around that index is the same whatever the database,
and lives here: the lock, refusing calls after ``close()`` or a failed write,
the reads, the checks of ``save``, ``create_snapshot`` and ``compact``, the
lazy deletion of garbage inside later writes, loading and checking the log at
open. A plugin (a subclass) adds only what depends on its database, in five
small methods:

- :meth:`DiskStorage._read_meta`: read one metadata record by name;
- :meth:`DiskStorage._stored_entries`: every stored entry, for the check at open;
- :meth:`DiskStorage._stored_range`: the stored entries of a range, for reads
  older than the cache;
- :meth:`DiskStorage._write_batch`: one atomic, durable write;
- :meth:`DiskStorage._close_db`: close the database.

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
from typing import Final, Literal

from raftdb.codec import (
    CorruptionError,
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
from raftdb.logindex import LogIndex, load_log
from raftdb.raft.errors import StorageError, UsageError
from raftdb.raft.messages import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    entry_size,
)

__all__ = ["GARBAGE_PER_WRITE", "DiskStorage", "MetaName"]

#: Dropped entries deleted per write, at most: bounds the cost compaction adds to a save.
GARBAGE_PER_WRITE: Final = 1024

#: The metadata records a disk plugin stores beside the entries.
MetaName = Literal["hard_state", "snapshot", "log_bounds"]


class DiskStorage(ABC):
    """A :class:`~raftdb.storage.Storage` over a database a subclass reaches.

    Thread-safe: one lock, held by every public method and around every call
    of the subclass's methods (except during ``__init__``).

    A subclass's ``__init__`` calls ``super().__init__(path, location)``,
    opens its database, then calls :meth:`_load` (and closes the database if
    that raises).

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
        self._path.mkdir(parents=True, exist_ok=True)
        self._location = location
        self._lock = threading.RLock()
        self._failed: BaseException | None = None
        self._closed = False

    # -- what a subclass provides ----------------------------------------------

    @abstractmethod
    def _read_meta(self, name: MetaName) -> bytes | None:
        """The record stored under ``name``, or ``None`` if there is none.

        Raises:
            CorruptionError: the record is unreadable (the message need not
                name the database: :meth:`_load` adds it).
        """

    @abstractmethod
    def _stored_entries(self) -> Iterator[tuple[int, bytes]]:
        """``(index, record)`` for every stored entry, ascending, garbage included.

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
        followers that fell behind the cache.)
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
        leaves all of it or none.

        Raises:
            CorruptionError, OSError: the database failed; the message names it.
        """

    @abstractmethod
    def _close_db(self) -> None:
        """Close the database (called once)."""

    # -- opening -----------------------------------------------------------------

    def _where(self, index: int) -> str:
        return f"{self._location}, entry {index}"

    def _load(self, cache_entries: int, cache_bytes: int) -> None:
        """Read the metadata and check every stored entry; delete leftovers.

        Raises:
            CorruptionError: a record is damaged, the bounds are missing, the
                snapshot does not cover the start of the log, or an entry is
                damaged or missing (see :func:`~raftdb.logindex.load_log`).
        """
        where = self._location
        try:
            raw = self._read_meta("hard_state")
            self._hard_state = HardState() if raw is None else decode_hard_state(raw)
            raw = self._read_meta("snapshot")
            self._snapshot = Snapshot() if raw is None else decode_snapshot(raw)
            raw = self._read_meta("log_bounds")
            if raw is None:
                raise CorruptionError("the log bounds record is missing")
            bounds = decode_log_bounds(raw)
        except CorruptionError as exc:
            raise CorruptionError(f"{where}: {exc}") from None
        snap = self._snapshot.metadata
        if bounds.dummy_index > snap.index or (
            bounds.dummy_index == snap.index and bounds.dummy_term != snap.term
        ):
            raise CorruptionError(
                f"{where}: the log starts after index {bounds.dummy_index} (term "
                f"{bounds.dummy_term}), which the snapshot at {snap.index} (term "
                f"{snap.term}) does not cover"
            )
        self._log, garbage = load_log(
            bounds,
            self._stored_entries(),
            self._where,
            cache_entries=cache_entries,
            cache_bytes=cache_bytes,
        )
        if garbage:
            # Leftovers of a compaction or truncation: finish deleting them.
            self._write_batch(garbage, (), ())
        self._written_bounds = bounds

    def _check(self) -> None:
        if self._closed:
            raise UsageError("the storage is closed")
        if self._failed is not None:
            raise StorageError(f"the storage failed earlier: {self._failed!r}") from self._failed

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
                disk_hi = min(hi, cache_first)
                expected = lo
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

    def _write(
        self,
        entries: Sequence[tuple[int, bytes]],
        meta: Sequence[tuple[MetaName, bytes]],
        garbage_limit: int | None,
    ) -> None:
        """One :meth:`_write_batch`: lazy deletes, ``entries``, ``meta`` and the log bounds.

        Any failure leaves memory ahead of disk, so the storage refuses every
        later call (the node must stop, as etcd panics on a storage error).
        """
        try:
            garbage = self._log.take_garbage(garbage_limit)
            bounds = self._log.bounds()
            self._write_batch(garbage, entries, [*meta, ("log_bounds", encode_log_bounds(bounds))])
        except BaseException as exc:
            self._failed = exc
            raise
        self._written_bounds = bounds

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        if hard_state is None and not entries and snapshot is None:
            return
        with self._lock:
            self._check()
            self._log.check_save(entries, snapshot, self._snapshot.metadata.index)
            records = [(e.index, encode_entry(e)) for e in entries]
            meta: list[tuple[MetaName, bytes]] = []
            if snapshot is not None:
                meta.append(("snapshot", encode_snapshot(snapshot)))
            if hard_state is not None:
                meta.append(("hard_state", encode_hard_state(hard_state)))
            self._log.save(entries, snapshot)
            self._write(records, meta, GARBAGE_PER_WRITE)
            if snapshot is not None:
                self._snapshot = snapshot
            if hard_state is not None:
                self._hard_state = hard_state

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes = b"") -> Snapshot:
        with self._lock:
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
            snapshot = Snapshot(SnapshotMetadata(index, self._log.term(index), conf_state), data)
            self._write((), [("snapshot", encode_snapshot(snapshot))], GARBAGE_PER_WRITE)
            self._snapshot = snapshot
            return snapshot

    def compact(self, index: int) -> None:
        with self._lock:
            self._check()
            self._log.compact(index, self._snapshot.metadata.index)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                if self._failed is None and (
                    self._log.has_garbage or self._log.bounds() != self._written_bounds
                ):
                    self._write((), (), None)
            finally:
                self._closed = True
                self._close_db()
