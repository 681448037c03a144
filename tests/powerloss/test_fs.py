"""The power-loss filesystem itself: what a cut keeps and what it drops, in both modes.

Each test mounts a fresh filesystem (unmounted at the end, pass or fail) and checks
one rule of :mod:`tests.powerloss.model` through real system calls, plus that SQLite
and LevelDB work on it at all.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import plyvel

from tests.powerloss.conftest import MountFactory
from tests.powerloss.mount import PowerLossMount


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path: Path, data: bytes, *, sync: bool = False, append: bool = False) -> None:
    with open(path, "ab" if append else "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def durable_file(m: PowerLossMount, name: str, data: bytes) -> Path:
    """A file whose data and name are durable."""
    path = m.path / name
    write(path, data, sync=True)
    fsync_path(m.path)
    return path


def test_unsynced_write_is_dropped_and_synced_one_kept(mounts: MountFactory) -> None:
    m = mounts()
    path = durable_file(m, "f", b"durable")
    write(path, b" tail", append=True)
    assert path.read_bytes() == b"durable tail"  # reads see everything written
    dropped = m.cut()
    assert path.read_bytes() == b"durable"
    assert dropped["bytes_dropped"] == 5
    write(path, b" tail", append=True, sync=True)
    m.cut()
    assert path.read_bytes() == b"durable tail"


def test_overwritten_range_goes_back_to_its_synced_bytes(mounts: MountFactory) -> None:
    m = mounts()
    path = durable_file(m, "f", bytes(range(256)) * 64)  # 16 KiB, four pages
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, b"X" * 5000, 3000)  # across a page boundary
        os.ftruncate(fd, 9000)  # and a cut-off tail
        os.pwrite(fd, b"Y" * 100, 12000)  # a hole, then new bytes
    finally:
        os.close(fd)
    m.cut()
    assert path.read_bytes() == bytes(range(256)) * 64


def test_new_name_without_directory_fsync_is_gone(mounts: MountFactory) -> None:
    m = mounts()
    write(m.path / "new", b"data", sync=True)  # the data is synced, its name is not
    (m.path / "dir").mkdir()
    assert m.cut()["names_reverted"] == 2
    assert sorted(os.listdir(m.path)) == []


def test_rename_without_directory_fsync_is_reverted(mounts: MountFactory) -> None:
    m = mounts()
    durable_file(m, "old", b"old contents")
    write(m.path / "tmp", b"new contents", sync=True)
    os.replace(m.path / "tmp", m.path / "old")
    assert (m.path / "old").read_bytes() == b"new contents"
    m.cut()
    assert os.listdir(m.path) == ["old"]
    assert (m.path / "old").read_bytes() == b"old contents"
    # With the directory synced after the rename, the new file is what remains.
    write(m.path / "tmp", b"new contents", sync=True)
    os.replace(m.path / "tmp", m.path / "old")
    fsync_path(m.path)
    m.cut()
    assert (m.path / "old").read_bytes() == b"new contents"


def test_unlink_without_directory_fsync_is_reverted(mounts: MountFactory) -> None:
    m = mounts()
    path = durable_file(m, "f", b"still here")
    path.unlink()
    assert not path.exists()
    m.cut()
    assert path.read_bytes() == b"still here"
    path.unlink()
    fsync_path(m.path)
    m.cut()
    assert not path.exists()


def test_a_directory_is_durable_only_with_its_parent_synced(mounts: MountFactory) -> None:
    m = mounts()
    (m.path / "a").mkdir()
    write(m.path / "a" / "f", b"x", sync=True)
    fsync_path(m.path / "a")  # a/ holds f durably, but a/ itself is not in the root yet
    m.cut()
    assert not (m.path / "a").exists()
    (m.path / "a").mkdir()
    fsync_path(m.path)
    write(m.path / "a" / "f", b"x", sync=True)
    fsync_path(m.path / "a")
    m.cut()
    assert (m.path / "a" / "f").read_bytes() == b"x"


def test_ordered_mode_keeps_names_and_drops_only_data(mounts: MountFactory) -> None:
    m = mounts(mode="ordered")
    write(m.path / "f", b"never synced")
    write(m.path / "g", b"synced", sync=True)
    (m.path / "d").mkdir()
    os.replace(m.path / "g", m.path / "d" / "g")
    m.cut()
    assert sorted(os.listdir(m.path)) == ["d", "f"]
    assert (m.path / "f").read_bytes() == b""
    assert (m.path / "d" / "g").read_bytes() == b"synced"


def test_sqlite_and_leveldb_work_on_it(mounts: MountFactory) -> None:
    m = mounts()
    conn = sqlite3.connect(m.path / "db.sqlite")
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, os.urandom(100)) for i in range(500)])
    conn.commit()
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 500
    conn.close()
    db = plyvel.DB(str(m.path / "level"), create_if_missing=True)
    for i in range(2000):
        db.put(b"k%05d" % i, os.urandom(200), sync=i % 100 == 0)
    db.close()
    db = plyvel.DB(str(m.path / "level"))
    assert sum(1 for _ in db.iterator()) == 2000
    db.close()
    stats = m.stats()
    assert stats["fsyncs"] > 0
