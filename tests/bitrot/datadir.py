"""A node's data directory after real traffic: the pristine copy the trials damage.

One in-process node (a cluster of one, real transport on 127.0.0.1) takes puts
of random values (some keys overwritten), deletes, transactions and a leased
key, with snapshots every :data:`SNAPSHOT_ENTRIES` entries and a compacted log,
is restarted once (LevelDB moves its write-ahead logs into tables then), takes
a few more writes (so the write-ahead logs hold records too), and is stopped.
With SQLite storage the last entries are appended by the storage itself and the
copy is taken while it is open, so the copy has a write-ahead log (``-wal``;
a clean close checkpoints it away), as after a kill.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp
from raftdb.plugins import open_storage
from raftdb.raft.messages import Entry, EntryType
from tests.node.cluster import LocalCluster

__all__ = ["COMBINATIONS", "SNAPSHOT_ENTRIES", "WAL_SAVES", "build_data_dir"]

SNAPSHOT_ENTRIES = 40
# Transactions in the SQLite copy's write-ahead log (one entry each).
WAL_SAVES = 3
# (storage, state machine): the shipped disk storages with both state machines.
# The memory state machine keeps nothing on disk: its node rebuilds it from the log
# (NodeDisk.open replays it up to the snapshot point, the core after it).
COMBINATIONS = [
    ("leveldb", "leveldb"),
    ("sqlite", "leveldb"),
    ("leveldb", "memory"),
    ("sqlite", "memory"),
]


def build_data_dir(tmp: Path, storage: str, state_machine: str, seed: int = 1) -> Path:
    """Make a stopped node's data directory in ``tmp`` and return it."""
    rng = random.Random(seed)
    # The memory state machine keeps nothing on disk and cannot catch up from a
    # compacted log: its log keeps every entry (its snapshot points are recorded).
    keep = 10 if state_machine != "memory" else 1_000_000
    c = LocalCluster(
        tmp,
        1,
        storage,
        state_machine=state_machine,
        snapshot_entries=SNAPSHOT_ENTRIES,
        snapshot_keep_entries=keep,
    )

    async def traffic(c: LocalCluster, writes: int) -> None:
        node = c.nodes[1]
        for i in range(writes):
            key = f"k{rng.randrange(60):03d}".encode()
            roll = rng.random()
            if roll < 0.1:
                await node.delete(key)
            elif roll < 0.15:
                other = f"t{i}".encode()
                txn = Txn(
                    compare=(Compare(key, Target.EXISTS, CmpOp.EQ, True),),
                    success=(TxnOp.put(other, rng.randbytes(48)), TxnOp.delete(key)),
                )
                await node.txn(txn)
            else:
                await node.put(key, rng.randbytes(rng.choice((16, 64, 300))))

    async def first(c: LocalCluster) -> None:
        await traffic(c, 150)
        lease = await c.nodes[1].lease_grant(3600)
        await c.nodes[1].put(b"leased", b"v", lease=lease.id)

    async def second(c: LocalCluster) -> None:
        await traffic(c, 25)

    c.run(first)
    c.run(second)  # a restart: LevelDB's write-ahead logs become tables
    data = tmp / "node1"
    if storage == "sqlite":
        return _with_sqlite_wal(data, tmp / "copy")
    return data


def _with_sqlite_wal(data: Path, copy: Path) -> Path:
    """Append :data:`WAL_SAVES` (uncommitted, empty) entries with the storage
    itself, one save each, and copy the directory while the storage is open: the
    copy holds a ``-wal`` file of that many transactions."""
    storage = open_storage("sqlite", data / "log")
    try:
        last = storage.last_index()
        term = storage.term(last)
        for n in range(1, WAL_SAVES + 1):
            storage.save(None, [Entry(term, last + n, EntryType.NORMAL, b"")])
        shutil.copytree(data, copy)
    finally:
        storage.close()
    return copy
