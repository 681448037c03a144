"""The values the Raft core consumes and produces: entries, messages, states.

Entries and messages are slotted dataclasses that are *not* frozen: they are
made on the hot path (tens of thousands per second per node), and a frozen
dataclass's ``__init__`` goes through ``object.__setattr__`` once per field —
measured here at 1.66 µs for a Message against 0.47 µs unfrozen (a NamedTuple
cannot be used: its ``index`` field would shadow ``tuple.index``). Treat them as
immutable all the same: the core never changes one after making it, and
neither may a caller. The rarer values (hard state, conf state, snapshots,
conf changes) are frozen, slotted dataclasses.

Nothing here does I/O. Wire and disk encodings live outside the core
(``raftdb.codec``); the one exception is :class:`ConfChange`, which the core
itself must decode from committed entries, so it carries a small, fixed binary
form of its own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "COMMIT_NOTICE",
    "LOCAL_MESSAGES",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "Message",
    "MessageType",
    "Snapshot",
    "SnapshotMetadata",
    "entries_size",
    "entry_size",
    "limit_size",
]


class MessageType(IntEnum):
    """Kinds of message. The numbers are part of the wire format: never reuse one."""

    HUP = 0  # local: start an election (the election timer fired, or campaign()).
    BEAT = 1  # local: the leader's heartbeat timer fired.
    PROP = 2  # a client proposal; forwarded from followers to the leader.
    APP = 3  # leader -> follower: append entries.
    APP_RESP = 4  # follower -> leader: accepted up to index, or rejected with a hint.
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7  # leader -> follower: install a snapshot.
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local: the transport could not reach a peer.
    SNAP_STATUS = 11  # local: the transport finished (or failed) sending a snapshot.
    CHECK_QUORUM = 12  # local: the leader checks it still hears from a quorum.
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14  # leader -> transfer target: campaign now, skip pre-vote and lease.
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


#: Messages that only ever come from the node itself; stepping one from a peer is refused.
LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
    }
)


class EntryType(IntEnum):
    """What a log entry carries. Part of the on-disk and wire format."""

    NORMAL = 0  # application data (empty data: a leader's no-op of its term)
    CONF_CHANGE = 1  # a ConfChange in its binary form


@dataclass(slots=True)
class Entry:
    """One log entry. ``index`` and ``term`` identify it (the Log Matching property)."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


# Fixed overhead charged per entry when bounding message and batch sizes, so that
# empty entries still count against the limits.
_ENTRY_OVERHEAD = 16


def entry_size(entry: Entry) -> int:
    """Bytes an entry counts for against ``max_size_per_msg`` and similar limits."""
    return len(entry.data) + _ENTRY_OVERHEAD


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_bytes``, never empty if input isn't."""
    if max_bytes is None or len(entries) <= 1:
        return entries
    total = 0
    for i, entry in enumerate(entries):
        total += entry_size(entry)
        if total > max_bytes and i > 0:
            return entries[:i]
    return entries


def entries_size(entries: list[Entry] | tuple[Entry, ...]) -> int:
    """The sum of :func:`entry_size` over ``entries``."""
    return sum(len(e.data) for e in entries) + _ENTRY_OVERHEAD * len(entries)


@dataclass(frozen=True, slots=True)
class HardState:
    """The state that must be durable before a node answers a vote or an append.

    Invariant: ``commit`` never exceeds the last index of the durable log.
    """

    term: int = 0
    vote: int = 0
    commit: int = 0

    def is_empty(self) -> bool:
        """True for the zero value, which a Ready uses to say "nothing changed"."""
        return self.term == 0 and self.vote == 0 and self.commit == 0


@dataclass(frozen=True, slots=True)
class ConfState:
    """The cluster membership: voters and learners (non-voting members), by node id.

    Both are sorted tuples and disjoint.
    """

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()

    def ids(self) -> tuple[int, ...]:
        """Every member, voters and learners, sorted."""
        return tuple(sorted((*self.voters, *self.learners)))


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    """Where a snapshot stands in the log and which membership it carries."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A point-in-time image of the state machine up to ``metadata.index``.

    ``data`` is opaque to the core. A driver may leave it empty and stream the
    state machine's snapshot separately; the core only reads the metadata.
    """

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        """True when there is no snapshot (index 0)."""
        return self.metadata.index == 0


@dataclass(slots=True)
class Message:
    """A Raft message between nodes, or a local input to :meth:`RawNode.step`.

    Field use by type (as in etcd's raftpb.Message):

    - APP: ``index``/``log_term`` identify the entry before ``entries``;
      ``commit`` is the leader's commit index. ``context`` is
      :data:`COMMIT_NOTICE` on a *commit notice*: no entries, to a follower
      known to hold everything before it, that no client of its own waits on.
    - APP_RESP: ``index`` is the follower's last matching index when accepted;
      on reject, ``index`` is the rejected probe index and ``reject_hint`` /
      ``log_term`` point at a likely match (fast backtracking).
    - VOTE / PRE_VOTE: ``index``/``log_term`` are the candidate's last entry;
      ``context`` is ``b"transfer"`` for a leadership transfer.
    - HEARTBEAT / HEARTBEAT_RESP: ``context`` carries the ReadIndex round.
    - READ_INDEX / READ_INDEX_RESP: ``context`` identifies the read; ``index``
      is the read index in the response.
    - TRANSFER_LEADER: ``index`` is the node to hand leadership to; ``frm`` is
      the node that asked (it may be forwarded to the leader).
    """

    type: MessageType
    to: int = 0
    frm: int = 0
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


#: The ``context`` of an APP that only tells a caught-up follower the commit
#: index (see :class:`Message`). The follower does not answer it when it
#: accepts it: the leader learns nothing from the answer. A driver may hold one
#: back briefly, and drop it when a later APP or HEARTBEAT to the same member
#: goes first, since that carries the commit index too; a follower learns it at
#: the latest from the next heartbeat, so holding one forever only costs
#: freshness. Peers that predate it ignore the context and answer as before.
COMMIT_NOTICE = b"commit"


class ConfChangeType(IntEnum):
    """Single-server membership changes (Raft thesis §4.1). Part of the wire format."""

    ADD_VOTER = 0  # add a voter, or promote a learner to voter
    ADD_LEARNER = 1  # add a learner, or demote a voter to learner
    REMOVE_NODE = 2


_CONF_CHANGE_HEADER = struct.Struct(">BQ")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change. ``context`` is opaque to the core (raftdb: the peer URL)."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        """The binary form stored in a CONF_CHANGE entry's data."""
        return _CONF_CHANGE_HEADER.pack(self.type, self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Parse :meth:`encode`'s output.

        Raises:
            ValueError: ``data`` is not a conf change (too short or unknown type).
        """
        if len(data) < _CONF_CHANGE_HEADER.size:
            raise ValueError(f"conf change of {len(data)} bytes is truncated")
        kind, node_id = _CONF_CHANGE_HEADER.unpack_from(data)
        return cls(ConfChangeType(kind), node_id, bytes(data[_CONF_CHANGE_HEADER.size :]))
