"""Reads a running node makes of its files long after its start, on damaged bytes.

A leader sends a lagging follower entries its log cache no longer holds, read
from disk; a leader streams its state machine as a snapshot. Both reads are of
files that may have rotted since the node started. Opened in process, as a node
holds them, with the damage made in place under the open storage:

- the log: LevelDB verifies the block's checksum on the read and raftdb each
  record's seal, so the read raises ``CorruptionError`` (the node stops on a
  storage error); SQLite answers from its page cache what it read and checked
  at start, the right entries, and refuses the file at the next start;
- the snapshot stream: LevelDB verifies every block it streams, so reading the
  stream raises instead of sending a damaged state.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raftdb.codec import CorruptionError
from raftdb.kv.commands import Command
from raftdb.plugins import open_state_machine
from raftdb.raft.messages import Entry, EntryType, HardState
from raftdb.storage import DiskStorage
from raftdb_leveldb import LevelDBStorage
from raftdb_sqlite import SQLiteStorage
from tests.bitrot.cluster import flip_in_place

ENTRIES = 30


def _entries() -> list[Entry]:
    return [Entry(1, n, EntryType.NORMAL, os.urandom(200)) for n in range(1, ENTRIES + 1)]


def _damaged_under_open_storage(tmp: Path, storage_name: str) -> tuple[DiskStorage, list[Entry]]:
    """A log of :data:`ENTRIES` entries, reopened with a cache of one entry (reads of
    older entries go to the disk, as a leader's for a follower far behind), then
    one byte of an entry's data damaged in place under it."""
    entries = _entries()
    factory = {"leveldb": LevelDBStorage, "sqlite": SQLiteStorage}[storage_name]
    storage = factory(tmp / "log")
    storage.save(HardState(term=1, commit=ENTRIES), entries)
    storage.close()
    factory(tmp / "log").close()  # LevelDB moves its write-ahead log into a table
    storage = factory(tmp / "log", cache_entries=1, cache_bytes=1)
    flip_in_place(tmp / "log", "*", entries[ENTRIES // 2].data)
    return storage, entries


def test_a_leveldb_log_read_from_disk_after_start_is_checked(tmp_path: Path) -> None:
    storage, _ = _damaged_under_open_storage(tmp_path, "leveldb")
    try:
        with pytest.raises(CorruptionError, match=str(tmp_path / "log")):
            storage.entries(1, ENTRIES + 1)
    finally:
        storage.close()


def test_a_sqlite_log_read_after_start_is_what_was_checked(tmp_path: Path) -> None:
    """SQLite answers from its page cache (``locking_mode=EXCLUSIVE``: the file is
    its alone), which holds what it read and checked at start: the right entries.
    The damage is found at the next start, as any."""
    storage, entries = _damaged_under_open_storage(tmp_path, "sqlite")
    try:
        assert storage.entries(1, ENTRIES + 1) == entries
    finally:
        storage.close()
    with pytest.raises(CorruptionError, match="fails its checksum"):
        SQLiteStorage(tmp_path / "log")


def test_a_snapshot_streamed_from_a_damaged_table_is_refused(tmp_path: Path) -> None:
    values = [os.urandom(2048) for _ in range(20)]
    sm = open_state_machine("leveldb", tmp_path / "state")
    sm.apply(
        [
            Entry(1, n + 1, EntryType.NORMAL, Command.put(f"k{n}".encode(), v).encode())
            for n, v in enumerate(values)
        ]
    )
    sm.close()
    sm = open_state_machine("leveldb", tmp_path / "state")  # the keys now in a table
    try:
        flip_in_place(tmp_path / "state", "*.ldb", values[10])
        with pytest.raises(CorruptionError, match="orruption"), sm.snapshot() as stream:
            b"".join(stream)
    finally:
        sm.close()
