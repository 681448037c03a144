"""LevelDB state machine beyond the conformance suite: its directory switch and damage."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import plyvel
import pytest

from raftdb.codec import CorruptionError
from raftdb.kv.commands import Command, KeyValue
from raftdb.kv.snapshot import SnapshotAbortedError, SnapshotFormatError
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.raft.errors import StorageError
from raftdb.raft.messages import Entry
from raftdb_leveldb import LevelDBStateMachine


def puts(lo: int, hi: int, prefix: bytes = b"k") -> list[Entry]:
    return [
        Entry(1, i, data=Command.put(prefix + b"%05d" % i, b"v%d" % i).encode())
        for i in range(lo, hi)
    ]


def make(path: Path, n: int = 50) -> Path:
    machine = LevelDBStateMachine(path)
    machine.apply(puts(1, n + 1))
    db_path = machine.db_path
    machine.close()
    return db_path


def tamper(db_path: Path, key: bytes, value: bytes | None) -> None:
    db = plyvel.DB(str(db_path))
    if value is None:
        db.delete(key)
    else:
        db.put(key, value)
    db.close()


def test_layout(tmp_path: Path) -> None:
    db_path = make(tmp_path)
    assert (tmp_path / "CURRENT").read_text() == "db-000001\n"
    assert db_path == tmp_path / "db-000001"
    machine = LevelDBStateMachine(tmp_path)
    assert machine.applied_index == 50
    assert machine.get(b"k00007") == KeyValue(b"k00007", b"v7", 7, 7)
    machine.close()


def test_unreadable_current(tmp_path: Path) -> None:
    make(tmp_path)
    (tmp_path / "CURRENT").write_text("db-whatever")
    with pytest.raises(CorruptionError, match=f"{tmp_path / 'CURRENT'}: unreadable"):
        LevelDBStateMachine(tmp_path)
    (tmp_path / "CURRENT").write_text("db-000009\n")
    with pytest.raises(CorruptionError, match="names db-000009, which does not exist"):
        LevelDBStateMachine(tmp_path)


def test_missing_current(tmp_path: Path) -> None:
    make(tmp_path / "full")
    (tmp_path / "full" / "CURRENT").unlink()
    with pytest.raises(CorruptionError, match="CURRENT is missing, but db-000001 holds state"):
        LevelDBStateMachine(tmp_path / "full")
    # A crash during the very first open leaves an empty database and no CURRENT.
    machine = LevelDBStateMachine(tmp_path / "empty")
    machine.close()
    (tmp_path / "empty" / "CURRENT").unlink()
    machine = LevelDBStateMachine(tmp_path / "empty")
    assert machine.applied_index == 0
    machine.close()


def test_interrupted_restore_leftovers_are_removed(tmp_path: Path) -> None:
    make(tmp_path)
    leftover = tmp_path / "db-000002"
    plyvel.DB(str(leftover), create_if_missing=True).close()
    machine = LevelDBStateMachine(tmp_path)
    assert not leftover.exists()
    assert machine.applied_index == 50
    machine.close()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (b"m/state", b"\x06junk", "state_machine_meta record"),
        (b"m/state", None, "state record is missing"),
        (b"m/format", b"other", "not a raftdb state machine"),
        (b"sclient", b"\x07junk", "session record"),
    ],
)
def test_damaged_records_stop_the_open(
    tmp_path: Path, key: bytes, value: bytes | None, message: str
) -> None:
    db_path = make(tmp_path)
    tamper(db_path, key, value)
    with pytest.raises(CorruptionError, match=message):
        LevelDBStateMachine(tmp_path)


def test_damaged_key_record_is_reported_on_read(tmp_path: Path) -> None:
    db_path = make(tmp_path)
    tamper(db_path, b"dk00003", b"short")
    machine = LevelDBStateMachine(tmp_path)
    with pytest.raises(CorruptionError, match="k00003.* truncated"):
        machine.get(b"k00003")
    with pytest.raises(CorruptionError, match="truncated"):
        machine.range(b"k")
    machine.close()


def test_a_refused_restore_leaves_no_directory_behind(tmp_path: Path) -> None:
    make(tmp_path)
    machine = LevelDBStateMachine(tmp_path)
    source = MemoryStateMachine()
    source.apply(puts(1, 30, b"other"))
    chunks = list(source.snapshot(chunk_size=256))
    with pytest.raises(SnapshotFormatError):
        machine.restore(chunks[:-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "db-000001"]
    info = machine.restore(chunks)
    assert info.index == 29
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "db-000002"]
    assert machine.get(b"k00001") is None
    machine.close()


def test_a_restore_aborts_snapshots_being_read(tmp_path: Path) -> None:
    make(tmp_path, 3000)
    machine = LevelDBStateMachine(tmp_path)
    stream = machine.snapshot(chunk_size=1024)
    chunks = iter(stream)
    next(chunks)
    source = MemoryStateMachine()
    source.apply(puts(1, 5))
    machine.restore(source.snapshot())
    with pytest.raises(SnapshotAbortedError, match="restored or closed"):
        list(chunks)
    machine.close()


def test_reads_during_a_restore_see_old_or_new(tmp_path: Path) -> None:
    make(tmp_path, 200)
    machine = LevelDBStateMachine(tmp_path)
    source = MemoryStateMachine()
    source.apply(puts(1, 200, b"new"))
    chunks = list(source.snapshot(chunk_size=512))
    seen: set[int] = set()
    done = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not done.is_set():
                found = machine.range(limit=1)
                seen.add(0 if found[0].key.startswith(b"k") else 1)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        machine.restore(chunks)
        for _ in range(10**8):  # the reader picks up the new state on its next read
            if 1 in seen or errors:
                break
    finally:
        done.set()
        thread.join(10)
    assert not errors
    assert seen <= {0, 1}
    machine.close()


def test_a_failed_write_stops_the_state_machine(tmp_path: Path) -> None:
    machine = LevelDBStateMachine(tmp_path)
    machine.apply(puts(1, 3))
    machine.make_durable()  # the fake below writes batches only, no barrier
    real = machine._db

    class Batch:
        def put(self, key: bytes, value: bytes) -> None:
            pass

        def delete(self, key: bytes) -> None:
            pass

        def write(self) -> None:
            # Not ENOSPC: a full disk is survived (test_a_full_disk_* below).
            raise OSError(errno.EIO, "input/output error")

    class Db:
        def write_batch(self, **kwargs: object) -> Batch:
            return Batch()

        def get(self, key: bytes, **kwargs: object) -> bytes | None:
            value: bytes | None = real.get(key, **kwargs)
            return value

    machine._db = Db()
    with pytest.raises(OSError, match="input/output error"):
        machine.apply(puts(3, 4))
    with pytest.raises(StorageError, match="failed earlier"):
        machine.apply(puts(4, 5))
    machine._db = real
    machine.close()


def test_unsynced_snapshots_still_work(tmp_path: Path) -> None:
    machine = LevelDBStateMachine(tmp_path, sync=False)
    machine.apply(puts(1, 100))
    chunks = list(machine.snapshot())
    copy = MemoryStateMachine()
    assert copy.restore(chunks).index == 99
    machine.close()
    reopened = LevelDBStateMachine(tmp_path)
    assert reopened.applied_index == 99
    reopened.close()
