"""Open a data directory as a node does at start, and dump all it would serve.

:func:`open_and_dump` is the offline twin of a node's start
(``NodeDisk.open`` and ``Node.start``): it opens the storage and the state
machine plugins on the directory, makes the same checks, applies the
committed entries the state machine does not have yet (as the node's first
Readys would), and then reads back everything the node would serve to a
client or send to a peer:

- the log: hard state, membership, snapshot point, first and last index, every
  entry and the term before the first;
- the state machine: applied index, membership, every key with its value,
  create and mod index (by a range and by a point read of each key, the two
  read paths), the watch history, the leases, and its snapshot stream, byte
  for byte (what a follower and a backup receive; one state has exactly one
  stream, :mod:`raftdb.kv.snapshot`).

Two dumps are equal exactly when the two nodes would serve and replicate the
same things. A damaged directory must either raise one of
:data:`DETECTED` (naming what is damaged) or dump equal to its pristine copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftdb.codec import CorruptionError
from raftdb.kv.snapshot import SnapshotFormatError
from raftdb.plugins import open_state_machine, open_storage
from raftdb.raft.errors import StorageError

__all__ = ["DETECTED", "Detected", "Dump", "NodeRefusedError", "open_and_dump"]

# What a node that finds damage raises: each becomes its one-line refusal at
# start, or, from a read of a running node, a 503 and the node's stop.
DETECTED = (CorruptionError, StorageError, SnapshotFormatError, OSError)

_APPLY_BATCH = 64


class NodeRefusedError(StorageError):
    """The checks a node makes at start, beyond the plugins' own, failed."""


class Detected(Exception):
    """The damage was found: at ``stage`` ``"open"`` (a node refuses to start) or
    ``"read"`` (a running node answers that read 503 and stops); ``error`` is
    what the plugin or the node raised."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage}: {type(error).__name__}: {error}")
        self.stage = stage
        self.error = error


@dataclass(frozen=True)
class Dump:
    """Everything a node serves and replicates (see the module docstring)."""

    log: tuple[Any, ...]
    state: tuple[Any, ...]
    stream: bytes


def open_and_dump(data: Path, storage_name: str, sm_name: str) -> Dump:
    """Start ``data`` offline and dump it.

    Raises:
        Detected: one of :data:`DETECTED` was raised, at start or at a read.
        Anything else: a bug (damage neither detected nor harmless).
    """
    stage = "open"
    try:
        storage = open_storage(storage_name, data / "log")
        try:
            sm = open_state_machine(sm_name, data / "state")
            try:
                hs, cs = storage.initial_state()
                first, last = storage.first_index(), storage.last_index()
                snap = storage.snapshot().metadata
                # NodeDisk.open's and RawNode's checks of what they were given.
                if sm.applied_index < first - 1:
                    raise NodeRefusedError(
                        f"the state machine is at {sm.applied_index}, before the log's "
                        f"first index {first}"
                    )
                if hs.commit > last:
                    raise NodeRefusedError(f"commit {hs.commit} is beyond the last index {last}")
                # NodeDisk.open: a state machine behind the snapshot point catches up.
                if sm.applied_index < snap.index:
                    sm.apply(storage.entries(sm.applied_index + 1, snap.index + 1))
                applied = max(min(sm.applied_index, hs.commit), snap.index)
                for lo in range(applied + 1, hs.commit + 1, _APPLY_BATCH):
                    sm.apply(storage.entries(lo, min(lo + _APPLY_BATCH, hs.commit + 1)))
                entries = storage.entries(first, last + 1)
                log = (hs, cs, snap, first, last, storage.term(first - 1), tuple(entries))
                stage = "read"
                kvs = sm.range(b"")
                points = tuple(sm.get(kv.key) for kv in kvs)
                state = (
                    sm.applied_index,
                    sm.conf_state(),
                    sm.members(),
                    tuple(kvs),
                    points,
                    sm.history(0, 1 << 30),
                    tuple(sm.leases()),
                )
                with sm.snapshot() as stream:
                    chunks = b"".join(stream)
            finally:
                sm.close()
        finally:
            storage.close()
    except DETECTED as exc:
        raise Detected(stage, exc) from exc
    return Dump(log, state, chunks)
