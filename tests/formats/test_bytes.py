"""This code writes the committed fixtures' bytes exactly as the older code did.

Reading an older format (``test_fixture.py``) is half of compatibility; the other
half is that what this code writes is byte for byte what the older code wrote for
the same values, so that members of both versions agree on every record, every
entry and every snapshot (two members' snapshots of one state are identical, and a
follower's log must hold the leader's entries as they were). An encoder swapped
for a faster one (another msgpack library, a hand-written packer) must pass this.

Each record of the fixtures' databases is decoded and encoded again, and must come
out as stored: log entries, hard state, snapshot metadata, log bounds, and every
command in the log; the state machine's applied state, sessions, leases and watch
history. The backup is restored into a memory state machine whose snapshot must
be the backup's bytes.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import plyvel
import pytest

from raftdb.kv.commands import Command, decode_session, encode_session
from raftdb.kv.snapshot import decode_info, encode_info
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.raft.messages import EntryType
from raftdb.state_machine import decode_lease, encode_lease
from raftdb.storage.records import (
    decode_entry,
    decode_hard_state,
    decode_log_bounds,
    decode_snapshot,
    encode_entry,
    encode_hard_state,
    encode_log_bounds,
    encode_snapshot,
)
from raftdb_leveldb._layout import (
    CHANGE,
    LEASE,
    SESSION,
    STATE,
    decode_change_record,
    encode_change_record,
)

FIXTURE = Path(__file__).parent / "fixtures" / "981ca8c"


def _copy(tmp_path: Path, name: str) -> Path:
    """A copy of a fixture's data directory (opening LevelDB writes to it)."""
    target = tmp_path / name
    shutil.copytree(FIXTURE / name / "data-1", target)
    return target


def _leveldb_rows(path: Path, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
    db = plyvel.DB(str(path))
    try:
        yield from db.iterator(prefix=prefix)
    finally:
        db.close()


def _log_records(tmp_path: Path, name: str) -> tuple[list[tuple[int, bytes]], dict[str, bytes]]:
    """The fixture's log: (index, entry record) in order, and the meta records."""
    data = _copy(tmp_path, name)
    if name == "sqlite":
        conn = sqlite3.connect(data / "log" / "raft.sqlite3")
        try:
            entries = list(conn.execute("SELECT idx, rec FROM entries ORDER BY idx"))
            meta = dict(conn.execute("SELECT name, rec FROM meta"))
        finally:
            conn.close()
        return entries, meta
    rows = list(_leveldb_rows(data / "log"))
    entries = [(int.from_bytes(k[1:], "big"), v) for k, v in rows if k[:1] == b"e"]
    meta = {k[2:].decode(): v for k, v in rows if k.startswith(b"m/") and k != b"m/format"}
    return entries, meta


@pytest.mark.parametrize("name", ["leveldb", "sqlite"])
def test_log_records_encode_as_stored(name: str, tmp_path: Path) -> None:
    entries, meta = _log_records(tmp_path, name)
    assert len(entries) > 50
    kinds = set()
    for index, record in entries:
        entry = decode_entry(record, index)
        assert encode_entry(entry) == record, index
        if entry.type == EntryType.NORMAL and entry.data:
            command = Command.decode(entry.data)
            assert command.encode() == entry.data, index
            kinds.add(entry.data[1])  # the format tag (a fixint after the array header)
    assert kinds == {1, 2}  # both command formats are in the fixture's log
    assert encode_hard_state(decode_hard_state(meta["hard_state"])) == meta["hard_state"]
    assert encode_snapshot(decode_snapshot(meta["snapshot"])) == meta["snapshot"]
    assert encode_log_bounds(decode_log_bounds(meta["log_bounds"])) == meta["log_bounds"]


def test_state_machine_records_encode_as_stored(tmp_path: Path) -> None:
    data = _copy(tmp_path, "leveldb")
    rows = list(_leveldb_rows(data / "state" / "db-000001"))
    counts = {SESSION: 0, LEASE: 0, CHANGE: 0}
    for key, raw in rows:
        if key == STATE:
            assert encode_info(decode_info(raw)) == raw
        elif key[:1] == SESSION:
            assert encode_session(decode_session(raw)) == raw
        elif key[:1] == LEASE:
            assert encode_lease(decode_lease(raw)) == raw
        elif key[:1] == CHANGE:
            assert encode_change_record(decode_change_record(key, raw)) == raw
        else:
            continue
        if key[:1] in counts:
            counts[key[:1]] += 1
    assert counts[SESSION] >= 1
    assert counts[LEASE] == 1
    assert counts[CHANGE] > 100


def test_a_restored_backup_snapshots_to_the_same_bytes() -> None:
    backup = (FIXTURE / "leveldb" / "backup.snap").read_bytes()
    sm = MemoryStateMachine()
    sm.restore([backup])
    with sm.snapshot() as stream:
        assert b"".join(stream) == backup
