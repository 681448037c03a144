"""The damage the bit-rot trials found neither detected nor harmless, each pinned.

- LevelDB reads a record of its write-ahead log (or manifest) whose length
  runs past the end of the file as a crash's torn tail, and drops it and every
  record after it without a word: a damaged length byte made a node come back
  with an older hard state (``raftdb_leveldb._logcheck``).
- SQLite's schema is text it parses as it reads: a damaged byte in it that
  still parsed made ``idx`` an ordinary column read as NULL, and the storage
  failed with a ``TypeError``; text that is not UTF-8 (a damaged schema in an
  error message) raised ``UnicodeDecodeError`` (``raftdb_sqlite.storage``).
- SQLite's write-ahead log: ``test_sqlite_wal``.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import plyvel
import pytest

from raftdb.codec import CorruptionError
from raftdb.plugins import open_storage
from raftdb.raft.messages import Entry, EntryType, HardState
from raftdb_leveldb._db import open_db
from raftdb_leveldb._logcheck import check_log_file
from raftdb_sqlite.storage import FILE_NAME

WRITES = 20


def _leveldb_with_log(tmp: Path) -> tuple[Path, Path]:
    """A LevelDB database whose write-ahead log holds :data:`WRITES` records."""
    path = tmp / "db"
    db = plyvel.DB(str(path), create_if_missing=True)
    for n in range(WRITES):
        db.put(f"k{n:02d}".encode(), bytes([n]) * 100, sync=True)
    db.close()  # the log stays: LevelDB replays it at the next open
    (log,) = path.glob("*.log")
    return path, log


def _record_offsets(data: bytes) -> list[int]:
    at, offsets = 0, []
    while at + 7 <= len(data):
        offsets.append(at)
        at += 7 + struct.unpack_from("<H", data, at + 4)[0]
    return offsets


@pytest.mark.parametrize("payload_too", [False, True])
def test_a_leveldb_record_whose_length_runs_past_the_end_is_refused(
    tmp_path: Path, payload_too: bool
) -> None:
    path, log = _leveldb_with_log(tmp_path)
    data = bytearray(log.read_bytes())
    third = _record_offsets(bytes(data))[2]
    data[third + 5] ^= 0x80  # the length's high byte: now past the end of the file
    if payload_too:
        data[third + 20] ^= 0x01
    log.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="LevelDB would drop it and everything after it"):
        open_db(path)


def test_leveldb_alone_would_drop_the_records_silently(tmp_path: Path) -> None:
    """What the check stands in front of (so the test above means something)."""
    path, log = _leveldb_with_log(tmp_path)
    data = bytearray(log.read_bytes())
    data[_record_offsets(bytes(data))[2] + 5] ^= 0x80
    log.write_bytes(bytes(data))
    db = plyvel.DB(str(path), paranoid_checks=True)
    try:
        assert len(list(db.iterator())) == 2  # 18 synced writes gone, no error
    finally:
        db.close()


def test_a_torn_last_record_is_still_read_as_a_crash(tmp_path: Path) -> None:
    path, log = _leveldb_with_log(tmp_path)
    data = log.read_bytes()
    last = _record_offsets(data)[-1]
    log.write_bytes(data[: last + 50])  # the writer died inside its last record
    assert check_log_file(log) is None
    db = open_db(path)
    try:
        assert len(list(db.iterator())) == WRITES - 1
    finally:
        db.close()


def _sqlite_log(tmp: Path) -> Path:
    storage = open_storage("sqlite", tmp / "log")
    try:
        storage.save(HardState(term=1), [Entry(1, n, EntryType.NORMAL, b"x") for n in (1, 2, 3)])
    finally:
        storage.close()  # checkpointed: everything is in the database file
    return tmp / "log" / FILE_NAME


def _replace_in_file(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1, old
    path.write_bytes(data.replace(old, new))


def test_a_sqlite_schema_that_still_parses_is_refused(tmp_path: Path) -> None:
    file = _sqlite_log(tmp_path)
    # The space after INTEGER becomes 0x90 (seed 7, trial 276 of the long run):
    # "INTEGER\x90PRIMARY KEY" still parses, quick_check finds nothing, but idx
    # is no longer the rowid, and every entry's index reads as NULL.
    _replace_in_file(file, b"idx INTEGER PRIMARY KEY", b"idx INTEGER\x90PRIMARY KEY")
    conn = sqlite3.connect(file)
    try:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT idx FROM entries").fetchall() == [(None,)] * 3
    finally:
        conn.close()
    with pytest.raises(CorruptionError, match="the schema is damaged"):
        open_storage("sqlite", file.parent)


def test_sqlite_text_that_is_not_utf8_is_corruption(tmp_path: Path) -> None:
    file = _sqlite_log(tmp_path)
    # A syntax error near a byte that is not UTF-8: SQLite's error message holds it.
    _replace_in_file(file, b"name TEXT PRIMARY KEY", b"name TEXT PRIMARY \xa1EY")
    conn = sqlite3.connect(file)
    try:
        with pytest.raises(UnicodeDecodeError):  # what the storage met before
            conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    with pytest.raises(CorruptionError, match="damaged text"):
        open_storage("sqlite", file.parent)


def test_the_check_reads_the_last_block_of_a_long_log(tmp_path: Path) -> None:
    """A write-ahead log of several 32 KiB blocks: the record opening the last one."""
    path = tmp_path / "db"
    db = plyvel.DB(str(path), create_if_missing=True)
    for n in range(100):
        db.put(f"k{n:03d}".encode(), bytes([n]) * 1000, sync=True)
    db.close()
    (log,) = path.glob("*.log")
    data = bytearray(log.read_bytes())
    last_block = (len(data) - 1) // 32768 * 32768
    assert last_block >= 65536
    data[last_block + 5] ^= 0x80  # a block always opens with a record header
    log.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match=rf"offset {last_block} has a damaged length"):
        open_db(path)
