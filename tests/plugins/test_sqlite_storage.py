"""SQLite storage beyond the conformance suite: WAL settings, damage detection, locking."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from raftdb.codec import CorruptionError
from raftdb.raft.messages import ConfState, Entry, HardState
from raftdb_sqlite import SQLiteStorage
from raftdb_sqlite.storage import FILE_NAME, GARBAGE_PER_WRITE


def entries(lo: int, hi: int, term: int = 1, size: int = 50) -> list[Entry]:
    return [Entry(term, i, data=bytes([i % 251]) * size) for i in range(lo, hi)]


def make_log(path: Path, n: int = 100) -> Path:
    storage = SQLiteStorage(path)
    storage.save(HardState(1, 1, n // 2), entries(1, n + 1))
    storage.close()
    return path / FILE_NAME


def execute(file: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(file)
    with conn:
        conn.execute(sql, args)
    conn.close()


def test_wal_and_full_sync(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path)
    conn = storage._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    storage.close()
    unsynced = SQLiteStorage(tmp_path, sync=False)
    assert unsynced._conn.execute("PRAGMA synchronous").fetchone()[0] == 0
    unsynced.close()


def test_damaged_record_is_named(tmp_path: Path) -> None:
    file = make_log(tmp_path)
    execute(file, "UPDATE entries SET rec = ? WHERE idx = 42", b"\x01\x00\x00\x00\x00junk")
    with pytest.raises(CorruptionError, match=rf"{file}, entry 42: .*checksum"):
        SQLiteStorage(tmp_path)


def test_record_of_the_wrong_type(tmp_path: Path) -> None:
    file = make_log(tmp_path)
    execute(file, "UPDATE entries SET rec = 'text' WHERE idx = 7")
    with pytest.raises(CorruptionError, match="entry 7: the record is not a blob"):
        SQLiteStorage(tmp_path)


def test_gap_and_missing_tail(tmp_path: Path) -> None:
    file = make_log(tmp_path / "a")
    execute(file, "DELETE FROM entries WHERE idx = 42")
    with pytest.raises(CorruptionError, match="entry 42 is missing"):
        SQLiteStorage(tmp_path / "a")
    file = make_log(tmp_path / "b")
    execute(file, "DELETE FROM entries WHERE idx > 97")
    with pytest.raises(CorruptionError, match="entries 98..100 are missing"):
        SQLiteStorage(tmp_path / "b")


def test_missing_bounds(tmp_path: Path) -> None:
    file = make_log(tmp_path)
    execute(file, "DELETE FROM meta WHERE name = 'log_bounds'")
    with pytest.raises(CorruptionError, match="log bounds record is missing"):
        SQLiteStorage(tmp_path)


def test_not_a_database_or_not_ours(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / FILE_NAME).write_bytes(b"not a database at all " * 100)
    with pytest.raises(CorruptionError, match="file is not a database"):
        SQLiteStorage(tmp_path / "a")
    (tmp_path / "b").mkdir()
    execute(tmp_path / "b" / FILE_NAME, "CREATE TABLE other (x)")
    with pytest.raises(CorruptionError, match="not a raftdb log"):
        SQLiteStorage(tmp_path / "b")


def test_damaged_pages(tmp_path: Path) -> None:
    file = make_log(tmp_path, 3000)
    data = bytearray(file.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 100] = bytes(b ^ 0xFF for b in data[middle : middle + 100])
    file.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match=str(file)) as info:
        SQLiteStorage(tmp_path)
    assert "\n" not in str(info.value)


def test_a_second_open_fails_clearly(tmp_path: Path) -> None:
    first = SQLiteStorage(tmp_path)
    try:
        with pytest.raises(OSError, match="locked"):
            SQLiteStorage(tmp_path)
    finally:
        first.close()


def test_compaction_deletes_lazily(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path)
    total = 2 * GARBAGE_PER_WRITE + 10
    storage.save(HardState(1, 1, total), entries(1, total + 1, size=8))
    storage.create_snapshot(total, ConfState((1,)))
    storage.compact(total)
    assert len(storage.stored_indexes()) == total
    storage.save(None, entries(total + 1, total + 2))
    assert len(storage.stored_indexes()) == total + 1 - GARBAGE_PER_WRITE
    storage.close()
    storage = SQLiteStorage(tmp_path)
    assert storage.stored_indexes() == [total + 1]
    assert (storage.first_index(), storage.term(total)) == (total + 1, 1)
    storage.close()


def test_reads_beyond_the_cache_come_from_disk(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path, cache_entries=4)
    want = entries(1, 101)
    storage.save(HardState(1, 1, 1), want)
    assert storage.entries(1, 101) == want
    assert storage.entries(90, 101, max_bytes=200) == want[89:92]
    storage.close()
