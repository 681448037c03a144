"""Data directories and snapshot files for the tests of raftdb.node.rebuild and its commands."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from raftdb.kv.commands import Command
from raftdb.plugins import open_state_machine, open_storage
from raftdb.raft import Entry, EntryType, HardState
from raftdb.raft.messages import ConfChange, ConfChangeType

__all__ = ["NEW", "OLD", "log_entries", "member_dir", "snapshot_file"]

OLD = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]
NEW = ["http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003"]


def log_entries(keys: int) -> list[Entry]:
    """A bootstrapped 3-member log: conf changes, a lease, puts (one on the lease,
    one in a session), a delete."""
    out = [
        Entry(
            1,
            i,
            EntryType.CONF_CHANGE,
            ConfChange(ConfChangeType.ADD_VOTER, i, u.encode()).encode(),
        )
        for i, u in enumerate(OLD, start=1)
    ]

    def add(command: Command) -> None:
        out.append(Entry(2, len(out) + 1, EntryType.NORMAL, command.encode()))

    add(Command.lease_grant(60))  # lease id = its index, 4
    add(Command.put(b"leased", b"l", lease=4))
    add(Command.put(b"session", b"s").with_session(b"client-1", 1, 0))
    for k in range(keys):
        add(Command.put(b"k%05d" % k, b"v%d" % k))
    add(Command.delete(b"k00000"))
    return out


def member_dir(root: Path, entries: list[Entry], applied: int, commit: int) -> Path:
    """A member's data directory as a node leaves it: the log, and a state machine
    that applied ``applied`` of its entries."""
    data = root / "member"
    storage = open_storage("leveldb", data / "log")
    sm = open_state_machine("leveldb", data / "state")
    storage.save(HardState(3, 1, commit), entries)
    sm.apply(entries[:applied])
    sm.close()
    storage.close()
    return data


def snapshot_file(root: Path, keys: int = 200) -> Path:
    entries = log_entries(keys)
    data = member_dir(root, entries, len(entries), len(entries))
    sm = open_state_machine("leveldb", data / "state")
    path = root / "backup.snap"
    with closing(sm), sm.snapshot() as stream, path.open("wb") as f:
        for chunk in stream:
            f.write(chunk)
    return path
