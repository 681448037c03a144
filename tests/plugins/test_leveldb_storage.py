"""LevelDB storage beyond the conformance suite: damage detection, lazy deletion, cache."""

from __future__ import annotations

import os
from pathlib import Path

import plyvel
import pytest

from raftdb.codec import CorruptionError
from raftdb.raft.errors import StorageError
from raftdb.raft.messages import ConfState, Entry, HardState
from raftdb.storage.records import LogBounds, encode_log_bounds
from raftdb_leveldb import LevelDBStorage
from raftdb_leveldb.storage import GARBAGE_PER_WRITE, _key


def entries(lo: int, hi: int, term: int = 1, size: int = 50) -> list[Entry]:
    return [Entry(term, i, data=bytes([i % 251]) * size) for i in range(lo, hi)]


def make_log(path: Path, n: int = 100) -> None:
    storage = LevelDBStorage(path)
    storage.save(HardState(1, 1, n // 2), entries(1, n + 1))
    storage.close()


def tamper(path: Path, **ops: bytes | None) -> None:
    """Change raw keys of a closed database (hex key names in ``ops``)."""
    db = plyvel.DB(str(path))
    for key_hex, value in ops.items():
        key = bytes.fromhex(key_hex)
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)
    db.close()


def test_damaged_record_is_named(tmp_path: Path) -> None:
    make_log(tmp_path)
    tamper(tmp_path, **{_key(42).hex(): b"\x01\x00\x00\x00\x00garbage"})
    with pytest.raises(CorruptionError, match=rf"LevelDB storage {tmp_path}, entry 42: .*checksum"):
        LevelDBStorage(tmp_path)


def test_record_under_another_key_is_caught(tmp_path: Path) -> None:
    make_log(tmp_path)
    db = plyvel.DB(str(tmp_path))
    db.put(_key(42), db.get(_key(43)))
    db.close()
    with pytest.raises(
        CorruptionError, match="entry 42: entry stored at index 42 says it is entry 43"
    ):
        LevelDBStorage(tmp_path)


def test_gap_in_the_log(tmp_path: Path) -> None:
    make_log(tmp_path)
    tamper(tmp_path, **{_key(42).hex(): None})
    with pytest.raises(
        CorruptionError, match="entry 42 is missing .*gap.* next stored entry is 43"
    ):
        LevelDBStorage(tmp_path)


def test_missing_tail(tmp_path: Path) -> None:
    make_log(tmp_path)
    tamper(tmp_path, **{_key(100).hex(): None})
    with pytest.raises(CorruptionError, match="entries 100..100 are missing"):
        LevelDBStorage(tmp_path)


def test_missing_or_bad_metadata(tmp_path: Path) -> None:
    make_log(tmp_path / "a")
    tamper(tmp_path / "a", **{b"m/log_bounds".hex(): None})
    with pytest.raises(CorruptionError, match="log bounds record is missing"):
        LevelDBStorage(tmp_path / "a")
    make_log(tmp_path / "b")
    tamper(tmp_path / "b", **{b"m/hard_state".hex(): b"\x02junk"})
    with pytest.raises(CorruptionError, match="hard_state record"):
        LevelDBStorage(tmp_path / "b")
    make_log(tmp_path / "c")
    tamper(tmp_path / "c", **{b"m/log_bounds".hex(): encode_log_bounds(LogBounds(5, 1, 100))})
    with pytest.raises(CorruptionError, match="snapshot at 0"):
        LevelDBStorage(tmp_path / "c")


def test_foreign_database(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path), create_if_missing=True)
    db.put(b"user", b"data")
    db.close()
    with pytest.raises(CorruptionError, match="not a raftdb log"):
        LevelDBStorage(tmp_path)
    tamper(tmp_path, **{b"m/format".hex(): b"raftdb.leveldb.storage/99"})
    with pytest.raises(CorruptionError, match="format raftdb.leveldb.storage/99 is not one"):
        LevelDBStorage(tmp_path)


def test_unreadable_database_files(tmp_path: Path) -> None:
    make_log(tmp_path / "a")
    (tmp_path / "a" / "CURRENT").write_bytes(b"garbage")
    with pytest.raises(CorruptionError, match=f"LevelDB database {tmp_path / 'a'}: .*CURRENT"):
        LevelDBStorage(tmp_path / "a")
    make_log(tmp_path / "b", 3000)
    db = plyvel.DB(str(tmp_path / "b"))
    db.compact_range()  # move everything into table files
    db.close()
    table = next(p for p in (tmp_path / "b").iterdir() if p.suffix == ".ldb")
    data = bytearray(table.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 16] = bytes(16)
    table.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match=f"LevelDB storage {tmp_path / 'b'}"):
        LevelDBStorage(tmp_path / "b")


def test_torn_log_record_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    storage = LevelDBStorage(tmp_path)
    storage.save(HardState(1, 1, 1), entries(1, 50, size=200))
    storage.save(HardState(1, 1, 1), entries(50, 100, size=200))
    storage._db.close()  # as a crash: no clean close
    log = next(p for p in tmp_path.iterdir() if p.suffix == ".log")
    data = bytearray(log.read_bytes())
    data[300] ^= 0xFF
    log.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="checksum mismatch"):
        LevelDBStorage(tmp_path)


def test_a_second_open_fails_clearly(tmp_path: Path) -> None:
    first = LevelDBStorage(tmp_path)
    try:
        with pytest.raises(OSError, match="lock"):
            LevelDBStorage(tmp_path)
    finally:
        first.close()


def test_compaction_deletes_lazily_in_bounded_slices(tmp_path: Path) -> None:
    storage = LevelDBStorage(tmp_path)
    total = 3 * GARBAGE_PER_WRITE + 10
    storage.save(HardState(1, 1, total), entries(1, total + 1, size=8))
    storage.create_snapshot(total - 5, ConfState((1,)))
    storage.compact(total - 5)
    assert storage.first_index() == total - 4
    assert len(storage.stored_indexes()) == total  # nothing deleted yet: compact is cheap
    storage.save(None, entries(total + 1, total + 2))
    assert len(storage.stored_indexes()) == total + 1 - GARBAGE_PER_WRITE
    storage.save(None, entries(total + 2, total + 3))
    assert len(storage.stored_indexes()) == total + 2 - 2 * GARBAGE_PER_WRITE
    storage.close()  # close finishes the job
    storage = LevelDBStorage(tmp_path)
    assert storage.stored_indexes() == list(range(total - 4, total + 3))
    storage.close()


def test_leftovers_are_deleted_at_open(tmp_path: Path) -> None:
    storage = LevelDBStorage(tmp_path)
    storage.save(HardState(1, 1, 10), entries(1, 21))
    storage.save(None, entries(15, 16, term=2))  # 16..20 become garbage
    storage._db.close()  # a crash before the next save deletes them
    storage = LevelDBStorage(tmp_path)
    assert storage.stored_indexes() == list(range(1, 16))
    assert storage.last_index() == 15
    storage.close()


def test_reads_beyond_the_cache_come_from_disk(tmp_path: Path) -> None:
    storage = LevelDBStorage(tmp_path, cache_entries=4, cache_bytes=1 << 20)
    want = entries(1, 101)
    storage.save(HardState(1, 1, 1), want)
    assert storage.entries(1, 101) == want
    assert storage.entries(90, 101, max_bytes=200) == want[89:92]
    assert storage.entries(95, 99) == want[94:98]
    storage.close()


def test_failed_write_stops_the_storage(tmp_path: Path) -> None:
    storage = LevelDBStorage(tmp_path)
    storage.save(HardState(1, 1, 1), entries(1, 5))
    real_db = storage._db

    class Failing:
        def write_batch(self, **kwargs: object) -> object:
            raise OSError(5, "disk on fire")

    storage._db = Failing()
    with pytest.raises(OSError, match="disk on fire"):
        storage.save(None, entries(5, 6))
    with pytest.raises(StorageError, match="failed earlier"):
        storage.last_index()
    storage._db = real_db
    storage.close()


def test_unsynced_mode_and_idempotent_close(tmp_path: Path) -> None:
    storage = LevelDBStorage(tmp_path, sync=False)
    storage.save(HardState(1, 1, 1), entries(1, 5))
    storage.close()
    storage.close()
    assert os.path.isdir(tmp_path)
    reopened = LevelDBStorage(tmp_path)
    assert reopened.last_index() == 4
    reopened.close()
