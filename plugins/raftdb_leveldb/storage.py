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

A save refused for lack of space left nothing of its batch in the database;
before the next write the database is reopened (:func:`raftdb_leveldb._db.reopen`:
LevelDB refuses every write after a failed one until then) and the base class
rebuilds its memory from what is stored (``DiskStorage._recover``).

Compaction and tail truncation only move the bounds in memory; the entries
they drop are deleted :data:`GARBAGE_PER_WRITE` at a time inside later saves
(see :mod:`raftdb.storage.logindex`). At open every stored entry is read and checked
(checksum, index, no gap); anything wrong stops the open with a
:class:`~raftdb.codec.CorruptionError` naming the directory and the entry.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import plyvel

from raftdb.storage import (
    GARBAGE_PER_WRITE,
    CorruptionError,
    DiskStorage,
    LogBounds,
    MetaName,
    encode_log_bounds,
)
from raftdb_leveldb._db import NewNames, leveldb_errors, open_db, reopen
from raftdb_leveldb._marker import unknown_format

__all__ = ["GARBAGE_PER_WRITE", "LevelDBStorage"]

_FORMAT: Final = b"raftdb.leveldb.storage/1"
_FORMAT_KEY: Final = b"m/format"
_META: Final[dict[MetaName, bytes]] = {
    "hard_state": b"m/hard_state",
    "snapshot": b"m/snapshot",
    "log_bounds": b"m/log_bounds",
}
_ENTRY_PREFIX: Final = b"e"
_KEY = struct.Struct(">cQ")


def _key(index: int) -> bytes:
    return _KEY.pack(_ENTRY_PREFIX, index)


class LevelDBStorage(DiskStorage):
    """A :class:`~raftdb.storage.protocol.Storage` in a LevelDB database: the ``leveldb`` plugin.

    Thread-safe, for one writer and readers on other threads (see
    :class:`~raftdb.storage.disk.DiskStorage`): the core's reads are served
    from memory, without waiting for a write's fsync, except for entries
    older than the cache.

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
        path = Path(path)
        super().__init__(path, f"LevelDB storage {path}")
        self._sync = sync
        self._new_names = NewNames(self._path)
        self._db = open_db(self._path)
        try:
            with leveldb_errors(self._location):
                self._init_format()
                self._load(cache_entries, cache_bytes)
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"LevelDBStorage({str(self._path)!r})"

    def _init_format(self) -> None:
        db = self._db
        marker = db.get(_FORMAT_KEY)
        if marker is None:
            if next(db.iterator(include_value=False), None) is not None:
                raise CorruptionError(f"{self._location}: not a raftdb log (no format marker)")
            with db.write_batch(sync=True) as batch:
                batch.put(_FORMAT_KEY, _FORMAT)
                batch.put(_META["log_bounds"], encode_log_bounds(LogBounds(0, 0, 0)))
            marker = _FORMAT
        if marker != _FORMAT:
            raise CorruptionError(unknown_format(self._location, marker, _FORMAT, "log"))

    # -- the database calls of DiskStorage --------------------------------------------

    def _read_meta(self, name: MetaName) -> bytes | None:
        value: bytes | None = self._db.get(_META[name])
        return value

    def _stored_entries(self) -> Iterator[tuple[int, bytes]]:
        for key, value in self._db.iterator(
            prefix=_ENTRY_PREFIX, fill_cache=False, verify_checksums=True
        ):
            if len(key) != _KEY.size:
                raise CorruptionError(f"{self._location}: malformed entry key {key!r}")
            yield _KEY.unpack(key)[1], value

    @contextmanager
    def _stored_range(self, lo: int, hi: int) -> Iterator[Iterable[tuple[int, bytes]]]:
        with leveldb_errors(self._where(lo)):
            if self._db is None:
                raise self._unopened()
            rows = self._db.iterator(start=_key(lo), stop=_key(hi), verify_checksums=True)
            try:
                yield ((_KEY.unpack(key)[1], value) for key, value in rows)
            finally:
                # Now, under the db lock, not whenever the iterator is collected.
                rows.close()

    def _write_batch(
        self,
        garbage: Sequence[tuple[int, int]],
        entries: Sequence[tuple[int, bytes]],
        meta: Sequence[tuple[MetaName, bytes]],
    ) -> None:
        """One ``WriteBatch``, synced if ``sync`` is on.

        On the path of every Ready: plyvel's errors are translated only once
        one is raised (:func:`~raftdb_leveldb._db.leveldb_errors`), not by
        entering a context manager on every write.
        """
        try:
            batch: Any = self._db.write_batch(sync=self._sync)
            put = batch.put
            for lo, hi in garbage:
                delete = batch.delete
                for i in range(lo, hi + 1):
                    delete(_key(i))
            for index, record in entries:
                put(_KEY.pack(_ENTRY_PREFIX, index), record)
            for name, record in meta:
                put(_META[name], record)
            batch.write()
        except plyvel.Error:
            with leveldb_errors(self._location):
                raise
        if self._sync:
            self._new_names.after_write()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()

    def _reopen_db(self) -> None:
        """Close and reopen the database (LevelDB keeps a failed write's error and
        refuses every write after it), once the filesystem has room for it."""
        with leveldb_errors(self._location):
            try:
                self._db = reopen(self._db, self._path)
            except OSError:
                if self._db is not None and self._db.closed:
                    self._db = None  # closed, and the open ran out of space: next time
                raise

    def _unopened(self) -> OSError:
        return OSError(
            errno.ENOSPC,
            f"{self._location}: {os.strerror(errno.ENOSPC)} (reopening the database failed)",
        )

    # -- inspection (tests) ------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The database directory."""
        return self._path

    def stored_indexes(self) -> list[int]:
        """Every entry index on disk, garbage included (tests of lazy deletion)."""
        with self._lock, self._db_lock:
            self._check()
            self._check_db()
            assert self._db is not None
            keys = self._db.iterator(prefix=_ENTRY_PREFIX, include_value=False)
            try:
                return [_KEY.unpack(k)[1] for k in keys]
            finally:
                keys.close()
