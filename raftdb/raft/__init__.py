"""The Raft consensus core: pure, deterministic, sans-IO.

Start at :class:`RawNode` (``rawnode.py``): its docstring gives the driving loop,
and :class:`Ready` the persistence contract. Nothing in this package does I/O,
reads a clock, starts a thread or uses global randomness.
"""

from raftdb.raft.confchange import ConfChangeError, apply_conf_change
from raftdb.raft.config import Config
from raftdb.raft.errors import (
    CompactedError,
    InvalidMessageError,
    NotLeaderError,
    ProposalDroppedError,
    RaftConfigError,
    RaftError,
    SnapshotTemporarilyUnavailableError,
    StorageError,
    UnavailableError,
    UsageError,
)
from raftdb.raft.log import InvariantError
from raftdb.raft.messages import (
    COMMIT_NOTICE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from raftdb.raft.rawnode import RawNode, Ready, SoftState, Status
from raftdb.raft.read_only import ReadState
from raftdb.raft.roles import Role

__all__ = [
    "COMMIT_NOTICE",
    "CompactedError",
    "ConfChange",
    "ConfChangeError",
    "ConfChangeType",
    "ConfState",
    "Config",
    "RaftConfigError",
    "Entry",
    "EntryType",
    "HardState",
    "InvalidMessageError",
    "InvariantError",
    "Message",
    "MessageType",
    "NotLeaderError",
    "ProposalDroppedError",
    "RaftError",
    "RawNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "Status",
    "StorageError",
    "UnavailableError",
    "UsageError",
    "apply_conf_change",
]
