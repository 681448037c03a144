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

A full disk. SQLite answers a write it has no room for with ``SQLITE_FULL``
and rolls the transaction back (or leaves it for :meth:`_write_batch`'s
``ROLLBACK``): nothing of it reached the database, and the connection goes
on serving reads and, once there is room, writes. So ``SQLITE_FULL`` is
reported as ``OSError(ENOSPC)``, the failure a node survives, and no reopen is
needed (``DiskStorage._recover`` only rebuilds memory from the file). SQLite
reports a quota (``EDQUOT``) as a plain I/O error, which stays fatal.

SQLite does not checksum its pages, so the entries carry raftdb's own
checksums; at open ``PRAGMA quick_check`` checks the file's structure and every
entry is read back and checked, as for LevelDB. SQLite does checksum the frames
of its write-ahead log, but reads a damaged frame as a crash's torn tail and
drops every later transaction with it: :mod:`raftdb_sqlite._wal` checks the log
first and refuses a damaged frame that later commits follow.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from raftdb.storage import (
    GARBAGE_PER_WRITE,
    CorruptionError,
    DiskStorage,
    LogBounds,
    MetaName,
    encode_log_bounds,
)
from raftdb_sqlite._wal import check_wal

__all__ = ["FILE_NAME", "GARBAGE_PER_WRITE", "SQLiteStorage"]

FILE_NAME: Final = "raft.sqlite3"

_APPLICATION_ID: Final = 0x52_44_42_4C  # "RDBL"
_FORMAT: Final = 1
_SCHEMA: Final = (
    "CREATE TABLE entries (idx INTEGER PRIMARY KEY, rec BLOB NOT NULL)",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, rec BLOB NOT NULL)",
)


class SQLiteStorage(DiskStorage):
    """A :class:`~raftdb.storage.protocol.Storage` in one SQLite file.

    Thread-safe, for one writer and readers on other threads (see
    :class:`~raftdb.storage.disk.DiskStorage`). The connection is shared
    across threads but used by one at a time: every use after ``__init__``
    holds the db lock.

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
        file = Path(path) / FILE_NAME
        super().__init__(path, f"SQLite storage {file}")
        self._file = file
        damage = check_wal(file.with_name(FILE_NAME + "-wal"))
        if damage is not None:  # before SQLite reads it as a torn tail and drops the rest
            raise CorruptionError(f"{self._location}: {damage}")
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
    def _errors(self) -> Iterator[None]:
        where = self._location
        try:
            yield
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise OSError(errno.ENOSPC, f"{where}: {exc}") from exc
            # Locking, I/O and permission problems: the data may be fine.
            raise OSError(f"{where}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            # "file is not a database", "database disk image is malformed", ...
            raise CorruptionError(f"{where}: {exc}") from exc
        except UnicodeDecodeError as exc:
            # Text SQLite hands back (a damaged schema, in an error message) that is
            # not UTF-8: raftdb writes only ASCII text, so the file is damaged.
            raise CorruptionError(f"{where}: damaged text in the file: {exc}") from exc

    def _open(self, sync: bool) -> None:
        conn = self._conn
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise OSError(f"{self._location}: cannot use WAL (journal mode {mode})")
        conn.execute(f"PRAGMA synchronous={'FULL' if sync else 'OFF'}")
        # Take the exclusive lock now, so that a second opener fails at open.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
        check = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            problems = "; ".join(" ".join(str(line).split()) for line in check[:5])
            raise CorruptionError(f"{self._location}: {problems}")
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
        elif app_id == _APPLICATION_ID and version != _FORMAT:
            newer = ": a newer raftdb wrote it; run that version on it" if version > _FORMAT else ""
            raise CorruptionError(
                f"{self._location}: format {version} (user_version) is not one this raftdb "
                f"reads ({_FORMAT}){newer} (see docs/formats.md)"
            )
        elif app_id != _APPLICATION_ID:
            raise CorruptionError(
                f"{self._location}: not a raftdb log "
                f"(application_id {app_id:#x}, user_version {version})"
            )
        else:
            # The schema is text in the file, which SQLite parses as it reads it:
            # a damaged byte there can still parse (an ``idx`` column that is no
            # longer the rowid reads as NULL). It must be exactly ours.
            tables = conn.execute(
                "SELECT CAST(sql AS BLOB) FROM sqlite_master WHERE type = 'table'"
            )
            if sorted(row[0] for row in tables) != sorted(t.encode() for t in _SCHEMA):
                raise CorruptionError(f"{self._location}: the schema is damaged")

    # -- the database calls of DiskStorage --------------------------------------------

    def _read_meta(self, name: MetaName) -> bytes | None:
        row = self._conn.execute("SELECT rec FROM meta WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        value = row[0]
        if not isinstance(value, bytes):
            raise CorruptionError(f"meta {name} is not a blob")
        return value

    def _stored_entries(self) -> Iterator[tuple[int, bytes]]:
        for index, record in self._conn.execute("SELECT idx, rec FROM entries ORDER BY idx"):
            if type(index) is not int:
                raise CorruptionError(f"{self._location}: an entry's index is {index!r}")
            if not isinstance(record, bytes):
                raise CorruptionError(f"{self._where(index)}: the record is not a blob")
            yield index, record

    @contextmanager
    def _stored_range(self, lo: int, hi: int) -> Iterator[Iterable[tuple[int, bytes]]]:
        with self._errors():
            cursor = self._conn.execute(
                "SELECT idx, rec FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (lo, hi)
            )
            try:
                yield cursor
            finally:
                # Ends the statement now, under the db lock: a caller that stops
                # early (max_bytes) or raises must not leave it running while the
                # writer's thread uses the connection.
                cursor.close()

    def _write_batch(
        self,
        garbage: Sequence[tuple[int, int]],
        entries: Sequence[tuple[int, bytes]],
        meta: Sequence[tuple[MetaName, bytes]],
    ) -> None:
        """One transaction; its commit fsyncs the WAL if ``sync`` is on."""
        conn = self._conn
        with self._errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                for lo, hi in garbage:
                    conn.execute("DELETE FROM entries WHERE idx BETWEEN ? AND ?", (lo, hi))
                if entries:
                    conn.executemany(
                        "INSERT OR REPLACE INTO entries(idx, rec) VALUES (?, ?)", entries
                    )
                if meta:
                    conn.executemany("INSERT OR REPLACE INTO meta(name, rec) VALUES (?, ?)", meta)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _close_db(self) -> None:
        self._conn.close()

    # -- inspection (tests) ----------------------------------------------------------

    @property
    def path(self) -> Path:
        """The directory holding the database file."""
        return self._path

    def stored_indexes(self) -> list[int]:
        """Every entry index on disk, garbage included (tests of lazy deletion)."""
        with self._lock, self._db_lock:
            self._check()
            self._check_db()
            return [row[0] for row in self._conn.execute("SELECT idx FROM entries ORDER BY idx")]
