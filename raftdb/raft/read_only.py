"""ReadIndex (Raft thesis §6.4): linearizable reads without writing to the log.

The leader records its commit index for a read, then proves it was still the
leader at that moment by hearing from a quorum after it. raftdb batches: every
read that arrives before the next Ready shares one heartbeat *round*; the
round's number travels in the heartbeats' ``context`` and comes back in the
answers. An answer to round ``r`` proves leadership for every round up to
``r``, since those rounds' reads all arrived before round ``r`` was sent. So
the periodic heartbeat carries the newest round too, and a lost heartbeat
costs a read one heartbeat interval, never the read itself.

One round at a time: while a round waits for its quorum, new reads queue for
the next one, which starts once it is confirmed (as etcd's server keeps one
ReadIndex in flight). Under load that makes a round per round trip rather
than one per Ready, each carrying every read of the meantime; a read waits at
most the round in flight plus its own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["PendingRead", "ReadOnly", "ReadState", "decode_round", "encode_round"]

_ROUND = struct.Struct(">Q")


def encode_round(round_no: int) -> bytes:
    """The heartbeat context that names a read round."""
    return _ROUND.pack(round_no)


def decode_round(context: bytes) -> int:
    """The round a heartbeat answer acknowledges; 0 for a plain heartbeat."""
    if len(context) != _ROUND.size:
        return 0
    return int(_ROUND.unpack(context)[0])


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read the leader has confirmed: once ``index`` is applied, serve ``context``'s read."""

    index: int
    context: bytes


@dataclass(slots=True)
class PendingRead:
    """A read waiting for its round to be confirmed. ``requester`` 0 or self: local."""

    context: bytes
    requester: int
    index: int


@dataclass(slots=True)
class _Round:
    reads: list[PendingRead]
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    """The leader's reads waiting for a round, and the rounds awaiting a quorum."""

    def __init__(self) -> None:
        self.unsent: list[PendingRead] = []
        self._rounds: dict[int, _Round] = {}
        self.last_round = 0

    def add(self, read: PendingRead) -> None:
        """Queue a read for the next round."""
        self.unsent.append(read)

    def start_round(self, self_id: int) -> int:
        """Move the queued reads into a new round (self acknowledged); its number."""
        self.last_round += 1
        self._rounds[self.last_round] = _Round(self.unsent, {self_id})
        self.unsent = []
        return self.last_round

    def ready_to_start(self) -> bool:
        """Whether a new round should start now: reads are queued, none in flight."""
        return bool(self.unsent) and not self._rounds

    def current_context(self) -> bytes:
        """The context for a heartbeat: the newest round still waiting, if any."""
        if self._rounds:
            return encode_round(self.last_round)
        return b""

    def ack(self, round_no: int, voter: int) -> None:
        """Record that ``voter`` answered round ``round_no`` (and so all earlier ones)."""
        for r, rnd in self._rounds.items():
            if r <= round_no:
                rnd.acks.add(voter)

    def release(self, is_quorum: Callable[[set[int]], bool]) -> list[PendingRead]:
        """Reads of every round up to the newest one a quorum has acknowledged."""
        confirmed = 0
        for r, rnd in self._rounds.items():
            if is_quorum(rnd.acks):
                confirmed = r
        if not confirmed:
            return []
        released: list[PendingRead] = []
        for r in [r for r in self._rounds if r <= confirmed]:
            released.extend(self._rounds.pop(r).reads)
        return released

    def pending_count(self) -> int:
        """Reads not yet released."""
        return len(self.unsent) + sum(len(r.reads) for r in self._rounds.values())
