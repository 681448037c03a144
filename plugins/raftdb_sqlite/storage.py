"""SQLite storage for the Raft log: the ``sqlite`` plugin (stdlib ``sqlite3``).

It exists to prove the Storage interface is not LevelDB-shaped: a relational
store with transactions instead of write batches passes the same conformance
suite. One file, ``<path>/raft.sqlite3``::

    entries(idx INTEGER PRIMARY KEY, rec BLOB)   -- sealed entries (raftdb.codec)
    meta(name TEXT PRIMARY KEY, rec BLOB)         -- hard_state, snapshot, log_bounds

``PRAGMA application_id`` marks the file as a raftdb log, ``user_version`` is
the format version.

Durability: WAL journal with ``synchronous=FULL``, so each ``save`` is one
transaction whose commit fsyncs the WAL: one fsync per save however many
entries it carries, and a crash leaves each transaction whole or absent.
``locking_mode=EXCLUSIVE`` holds the file's lock for the life of the
connection, so a second process (or a second open) cannot write the same log.

SQLite does not checksum its pages, so the entries carry raftdb's own
checksums; at open ``PRAGMA quick_check`` checks the file's structure and every
entry is read back and checked, as for LevelDB.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

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

__all__ = ["FILE_NAME", "GARBAGE_PER_WRITE", "SQLiteStorage"]

FILE_NAME: Final = "raft.sqlite3"
#: Dropped entries deleted per write, at most (see raftdb.logindex).
GARBAGE_PER_WRITE: Final = 1024

_APPLICATION_ID: Final = 0x52_44_42_4C  # "RDBL"
_FORMAT: Final = 1
_SCHEMA: Final = (
    "CREATE TABLE entries (idx INTEGER PRIMARY KEY, rec BLOB NOT NULL)",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, rec BLOB NOT NULL)",
)


class SQLiteStorage:
    """A :class:`~raftdb.storage.Storage` in one SQLite file.

    Thread-safe (one lock; the connection is shared across threads).

    Args:
        path: the directory holding ``raft.sqlite3`` (created if missing).
        sync: ``synchronous=FULL`` (the default) or ``OFF``.
        cache_entries, cache_bytes: bounds of the recent-entry cache.

    Raises:
        CorruptionError: the file is damaged, not a raftdb log, or the log in
            it is inconsistent.
        OSError: the file cannot be opened or is in use by another process.
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
        self._file = self._path / FILE_NAME
        self._lock = threading.RLock()
        self._failed: BaseException | None = None
        self._closed = False
        with self._errors():
            # timeout=0: the file is ours alone (EXCLUSIVE locking), so a lock
            # held by someone else is an error to report now, not to wait out.
            self._conn = sqlite3.connect(
                self._file, isolation_level=None, check_same_thread=False, timeout=0
            )
        try:
            with self._errors():
                self._open(sync)
                self._load(cache_entries, cache_bytes)
        except BaseException:
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteStorage({str(self._path)!r})"

    @contextmanager
    def _errors(self, what: str = "") -> Iterator[None]:
        where = f"SQLite storage {self._file}{what}"
        try:
            yield
        except sqlite3.OperationalError as exc:
            # Locking, I/O and permission problems: the data may be fine.
            raise OSError(f"{where}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            # "file is not a database", "database disk image is malformed", ...
            raise CorruptionError(f"{where}: {exc}") from exc

    def _open(self, sync: bool) -> None:
        conn = self._conn
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise OSError(f"SQLite storage {self._file}: cannot use WAL (journal mode {mode})")
        conn.execute(f"PRAGMA synchronous={'FULL' if sync else 'OFF'}")
        # Take the exclusive lock now, so that a second opener fails at open.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
        check = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            problems = "; ".join(" ".join(str(line).split()) for line in check[:5])
            raise CorruptionError(f"SQLite storage {self._file}: {problems}")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and version == 0 and tables == 0:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO meta(name, rec) VALUES ('log_bounds', ?)",
                (encode_log_bounds(LogBounds(0, 0, 0)),),
            )
            conn.execute(f"PRAGMA application_id={_APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={_FORMAT}")
            conn.execute("COMMIT")
        elif app_id != _APPLICATION_ID or version != _FORMAT:
            raise CorruptionError(
                f"SQLite storage {self._file}: not a raftdb log "
                f"(application_id {app_id:#x}, user_version {version})"
            )

    def _meta(self, name: str) -> bytes | None:
        row = self._conn.execute("SELECT rec FROM meta WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        value = row[0]
        if not isinstance(value, bytes):
            raise CorruptionError(f"meta {name} is not a blob")
        return value

    def _where(self, index: int) -> str:
        return f"SQLite storage {self._file}, entry {index}"

    def _load(self, cache_entries: int, cache_bytes: int) -> None:
        where = f"SQLite storage {self._file}"
        try:
            raw = self._meta("hard_state")
            self._hard_state = HardState() if raw is None else decode_hard_state(raw)
            raw = self._meta("snapshot")
            self._snapshot = Snapshot() if raw is None else decode_snapshot(raw)
            raw = self._meta("log_bounds")
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
            self._conn.execute("BEGIN IMMEDIATE")
            for lo, hi in garbage:
                self._conn.execute("DELETE FROM entries WHERE idx BETWEEN ? AND ?", (lo, hi))
            self._conn.execute("COMMIT")
        self._written_bounds = bounds

    def _stored_entries(self) -> Iterator[tuple[int, bytes]]:
        for index, record in self._conn.execute("SELECT idx, rec FROM entries ORDER BY idx"):
            if not isinstance(record, bytes):
                raise CorruptionError(f"{self._where(index)}: the record is not a blob")
            yield index, record

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
            out: list[Entry] = []
            size = 0
            cache_first = log.cache_first
            if lo < cache_first:
                disk_hi = min(hi, cache_first)
                expected = lo
                with self._errors():
                    rows = self._conn.execute(
                        "SELECT idx, rec FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                        (lo, disk_hi),
                    )
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
        rows: Sequence[tuple[int, bytes]],
        meta: Sequence[tuple[str, bytes]],
        garbage_limit: int | None,
    ) -> None:
        """One transaction: lazy deletes, entry rows, meta rows and the log bounds.

        Any failure leaves memory ahead of disk, so the storage refuses every
        later call (the node must stop).
        """
        conn = self._conn
        try:
            with self._errors():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for lo, hi in self._log.take_garbage(garbage_limit):
                        conn.execute("DELETE FROM entries WHERE idx BETWEEN ? AND ?", (lo, hi))
                    if rows:
                        conn.executemany(
                            "INSERT OR REPLACE INTO entries(idx, rec) VALUES (?, ?)", rows
                        )
                    bounds = self._log.bounds()
                    conn.executemany(
                        "INSERT OR REPLACE INTO meta(name, rec) VALUES (?, ?)",
                        [*meta, ("log_bounds", encode_log_bounds(bounds))],
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
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
            rows = [(e.index, encode_entry(e)) for e in entries]
            meta: list[tuple[str, bytes]] = []
            if snapshot is not None:
                meta.append(("snapshot", encode_snapshot(snapshot)))
            if hard_state is not None:
                meta.append(("hard_state", encode_hard_state(hard_state)))
            self._log.save(entries, snapshot)
            self._write(rows, meta, GARBAGE_PER_WRITE)
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
                self._conn.close()

    # -- inspection (tests) ----------------------------------------------------------

    @property
    def path(self) -> Path:
        """The directory holding the database file."""
        return self._path

    def stored_indexes(self) -> list[int]:
        """Every entry index on disk, garbage included (tests of lazy deletion)."""
        with self._lock:
            self._check()
            return [row[0] for row in self._conn.execute("SELECT idx FROM entries ORDER BY idx")]
