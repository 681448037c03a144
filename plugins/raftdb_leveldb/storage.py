"""LevelDB storage for the Raft log, hard state and snapshot metadata.

Layout of the database (one LevelDB directory)::

    b"e" + index (8 bytes, big-endian)  ->  sealed entry (raftdb.codec)
    b"m/format"                         ->  b"raftdb.leveldb.storage/1"
    b"m/hard_state"                     ->  sealed hard state
    b"m/snapshot"                       ->  sealed snapshot (metadata + data)
    b"m/log_bounds"                     ->  sealed (dummy index, dummy term, last index)

Big-endian index keys sort in log order, so a range of entries is one
iterator. Every ``save`` is one ``WriteBatch`` written with ``sync=True``:
LevelDB appends the batch to its log as one checksummed record and fsyncs
it, so the batch survives a crash whole or (torn) not at all, and any number
of entries costs one fsync (group commit). All writes are synced when
``sync`` is on: LevelDB does not fsync a log file it rotates away from, so
mixing synced and unsynced writes could lose an older unsynced write while
keeping a newer synced one.

Compaction and tail truncation only move the bounds in memory; the entries
they drop are deleted :data:`GARBAGE_PER_WRITE` at a time inside later saves
(see :mod:`raftdb.logindex`). At open every stored entry is read and checked
(checksum, index, no gap); anything wrong stops the open with a
:class:`~raftdb.codec.CorruptionError` naming the directory and the entry.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

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
from raftdb_leveldb._db import leveldb_errors, open_db

__all__ = ["GARBAGE_PER_WRITE", "LevelDBStorage"]

#: Dropped entries deleted per write, at most: bounds the cost compaction adds to a save.
GARBAGE_PER_WRITE: Final = 1024

_FORMAT: Final = b"raftdb.leveldb.storage/1"
_FORMAT_KEY: Final = b"m/format"
_HARD_STATE: Final = b"m/hard_state"
_SNAPSHOT: Final = b"m/snapshot"
_BOUNDS: Final = b"m/log_bounds"
_ENTRY_PREFIX: Final = b"e"
_KEY = struct.Struct(">cQ")


def _key(index: int) -> bytes:
    return _KEY.pack(_ENTRY_PREFIX, index)


class LevelDBStorage:
    """A :class:`~raftdb.storage.Storage` in a LevelDB database: the ``leveldb`` plugin.

    Thread-safe (one lock); the core's reads are served from memory except
    for entries older than the cache.

    Args:
        path: the database directory (created if missing).
        sync: fsync every write (the default). Off, a process crash loses
            nothing but a machine crash may lose the latest saves.
        cache_entries, cache_bytes: bounds of the recent-entry cache.

    Raises:
        CorruptionError: the database or the log in it is damaged.
        OSError: the database cannot be opened (e.g. in use by another process).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        sync: bool = True,
        cache_entries: int = 8192,
        cache_bytes: int = 32 << 20,
    ) -> None:
        self._path = Path(path)
        self._path.mkdir(parents=True, exist_ok=True)
        self._sync = sync
        self._lock = threading.RLock()
        self._failed: BaseException | None = None
        self._closed = False
        self._db = open_db(self._path)
        try:
            self._load(cache_entries, cache_bytes)
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"LevelDBStorage({str(self._path)!r})"

    def _where(self, index: int) -> str:
        return f"LevelDB storage {self._path}, entry {index}"

    def _load(self, cache_entries: int, cache_bytes: int) -> None:
        db = self._db
        where = f"LevelDB storage {self._path}"
        with leveldb_errors(where):
            marker = db.get(_FORMAT_KEY)
            if marker is None:
                if next(db.iterator(include_value=False), None) is not None:
                    raise CorruptionError(f"{where}: not a raftdb log (no format marker)")
                with db.write_batch(sync=True) as batch:
                    batch.put(_FORMAT_KEY, _FORMAT)
                    batch.put(_BOUNDS, encode_log_bounds(LogBounds(0, 0, 0)))
                marker = _FORMAT
            if marker != _FORMAT:
                raise CorruptionError(f"{where}: unknown format {marker!r}")
            try:
                raw = db.get(_HARD_STATE)
                self._hard_state = HardState() if raw is None else decode_hard_state(raw)
                raw = db.get(_SNAPSHOT)
                self._snapshot = Snapshot() if raw is None else decode_snapshot(raw)
                raw = db.get(_BOUNDS)
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
            self._log: LogIndex
            self._log, garbage = load_log(
                bounds,
                self._stored_entries(),
                self._where,
                cache_entries=cache_entries,
                cache_bytes=cache_bytes,
            )
            if garbage:
                # Leftovers of a compaction or truncation: finish deleting them.
                with db.write_batch(sync=self._sync) as batch:
                    for lo, hi in garbage:
                        for i in range(lo, hi + 1):
                            batch.delete(_key(i))
        self._written_bounds = bounds

    def _stored_entries(self) -> Iterator[tuple[int, bytes]]:
        for key, value in self._db.iterator(
            prefix=_ENTRY_PREFIX, fill_cache=False, verify_checksums=True
        ):
            if len(key) != _KEY.size:
                raise CorruptionError(f"LevelDB storage {self._path}: malformed entry key {key!r}")
            yield _KEY.unpack(key)[1], value

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
                with leveldb_errors(self._where(lo)):
                    for key, value in self._db.iterator(
                        start=_key(lo), stop=_key(disk_hi), verify_checksums=True
                    ):
                        index = _KEY.unpack(key)[1]
                        if index != expected:
                            break
                        try:
                            entry = decode_entry(value, index)
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

    def _write(self, batch_puts: Sequence[tuple[bytes, bytes]], garbage_limit: int | None) -> None:
        """One synced WriteBatch: lazy deletes, ``batch_puts``, and the log bounds.

        Any failure leaves memory ahead of disk, so the storage refuses every
        later call (the node must stop, as etcd panics on a storage error).
        """
        try:
            with leveldb_errors(f"LevelDB storage {self._path}"):
                batch: Any = self._db.write_batch(sync=self._sync)
                for lo, hi in self._log.take_garbage(garbage_limit):
                    for i in range(lo, hi + 1):
                        batch.delete(_key(i))
                for key, value in batch_puts:
                    batch.put(key, value)
                bounds = self._log.bounds()
                batch.put(_BOUNDS, encode_log_bounds(bounds))
                batch.write()
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
            puts = [(_key(e.index), encode_entry(e)) for e in entries]
            if snapshot is not None:
                puts.append((_SNAPSHOT, encode_snapshot(snapshot)))
            if hard_state is not None:
                puts.append((_HARD_STATE, encode_hard_state(hard_state)))
            self._log.save(entries, snapshot)
            self._write(puts, GARBAGE_PER_WRITE)
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
            self._write([(_SNAPSHOT, encode_snapshot(snapshot))], GARBAGE_PER_WRITE)
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
                    self._write((), None)
            finally:
                self._closed = True
                self._db.close()

    # -- inspection (tests) ------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The database directory."""
        return self._path

    def stored_indexes(self) -> list[int]:
        """Every entry index on disk, garbage included (tests of lazy deletion)."""
        with self._lock:
            self._check()
            keys = self._db.iterator(prefix=_ENTRY_PREFIX, include_value=False)
            return [_KEY.unpack(k)[1] for k in keys]
