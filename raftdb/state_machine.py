"""The public API of state machine plugins: the StateMachine protocol and what it builds on.

A state machine plugin imports what it needs from here, never from the
modules of :mod:`raftdb.kv` (an import-linter contract in ``make test`` holds
the shipped plugins to that), so those modules can move without breaking it:

- :class:`StateMachine`, the contract (its docstrings are the reference),
  :class:`DefersDurability`, the promise of a plugin that makes a batch durable
  after ``apply`` returns (before the next one), :class:`BatchesDurability`, that
  of one whose batches are durable only at ``make_durable`` (many share one
  fsync), and :class:`MemoryStateMachine`,
  the in-memory version (the ``memory`` plugin);
- :class:`Applier` and :class:`KVBackend`: the deterministic core a plugin
  applies entries with, over its own storage;
- the snapshot stream every state machine reads and writes
  (:class:`SnapshotStream`, :class:`SnapshotReader`, :func:`encode_stream`, ...);
- the records a plugin stores (:class:`SessionState`, :class:`Lease`,
  :class:`Change` and their sealed encodings :func:`encode_session`,
  :func:`encode_lease`, :func:`encode_change`, ...) and the helpers the
  shipped plugins use (:class:`RWLock`, :func:`prefix_end`, :class:`History`
  for a copy of the watch history that readers see).
"""

from __future__ import annotations

from raftdb.codec import CorruptionError
from raftdb.kv.applier import AppliedBatch, Applier, KVBackend
from raftdb.kv.changes import (
    DEFAULT_WATCH_HISTORY,
    Change,
    ChangeKind,
    History,
    Lease,
    decode_change,
    decode_lease,
    encode_change,
    encode_lease,
)
from raftdb.kv.commands import ApplyResult, KeyValue, SessionState, decode_session, encode_session
from raftdb.kv.rwlock import RWLock
from raftdb.kv.snapshot import (
    DEFAULT_CHUNK_SIZE,
    KVRecord,
    SnapshotAbortedError,
    SnapshotFormatError,
    SnapshotInfo,
    SnapshotReader,
    SnapshotStream,
    decode_info,
    encode_info,
    encode_stream,
)
from raftdb.kv.sortedkeys import SortedKeys, prefix_end
from raftdb.kv.state_machine import (
    BatchesDurability,
    DefersDurability,
    MemoryStateMachine,
    StateMachine,
    check_range_args,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_WATCH_HISTORY",
    "AppliedBatch",
    "Applier",
    "BatchesDurability",
    "ApplyResult",
    "Change",
    "ChangeKind",
    "CorruptionError",
    "DefersDurability",
    "History",
    "KVBackend",
    "KVRecord",
    "KeyValue",
    "Lease",
    "MemoryStateMachine",
    "RWLock",
    "SessionState",
    "SnapshotAbortedError",
    "SnapshotFormatError",
    "SnapshotInfo",
    "SnapshotReader",
    "SnapshotStream",
    "SortedKeys",
    "StateMachine",
    "check_range_args",
    "decode_change",
    "decode_info",
    "decode_lease",
    "decode_session",
    "encode_change",
    "encode_info",
    "encode_lease",
    "encode_session",
    "encode_stream",
    "prefix_end",
]
