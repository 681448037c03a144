"""The Raft consensus core: pure, deterministic, sans-IO.

Start at :class:`RawNode` (``node.py``): its docstring gives the driving loop,
and :class:`Ready` the persistence contract. Nothing in this package does I/O,
reads a clock, starts a thread or uses global randomness.
"""

from raftdb.raft.confchange import ConfChangeError, apply_conf_change
from raftdb.raft.config import Config
from raftdb.raft.errors import (
    CompactedError,
    ConfigError,
    InvalidMessageError,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
    UsageError,
)
from raftdb.raft.log import InvariantError
from raftdb.raft.messages import (
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
from raftdb.raft.node import RawNode, Ready, SoftState, Status
from raftdb.raft.raft import Role
from raftdb.raft.read_only import ReadState

__all__ = [
    "CompactedError",
    "ConfChange",
    "ConfChangeError",
    "ConfChangeType",
    "ConfState",
    "Config",
    "ConfigError",
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
    "UnavailableError",
    "UsageError",
    "apply_conf_change",
]
