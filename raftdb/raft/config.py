"""The core's settings, checked once when a node is made."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from random import Random
from typing import TYPE_CHECKING

from raftdb.raft.errors import RaftConfigError

if TYPE_CHECKING:
    # Only for annotations: the core never calls a storage at import time.
    from raftdb.raft.storage import StorageReader

__all__ = ["Config"]


@dataclass
class Config:
    """Settings of one Raft node. Times are in ticks; the driver decides a tick's length.

    Attributes:
        id: this node's id, ≥ 1.
        storage: the durable log, read side.
        election_tick: a follower that hears no leader for a randomized
            ``[election_tick, 2 * election_tick)`` ticks campaigns. Must be
            greater than ``heartbeat_tick``; 10× is the usual ratio.
        heartbeat_tick: a leader sends heartbeats every this many ticks.
        applied: the last index the state machine has applied (0: let the core
            start from the snapshot, re-delivering everything after it).
        max_size_per_msg: bytes of entries in one append message (one entry at
            least is always sent).
        max_committed_size_per_ready: bytes of committed entries in one Ready.
        max_uncommitted_entries_size: a leader refuses proposals while this many
            bytes of entry data are appended but not yet applied (0: no limit).
        max_inflight_msgs: appends in flight to one follower in REPLICATE state.
        max_inflight_bytes: bytes in flight to one follower (0: no limit).
        check_quorum: a leader steps down after an election timeout without
            hearing from a quorum, and followers that heard from a leader in the
            last election timeout refuse votes (thesis §6.2 and §4.2.3).
        pre_vote: run a pre-election first so that a partitioned node cannot
            disrupt the cluster by raising its term (thesis §9.6).
        disable_proposal_forwarding: followers drop proposals instead of
            forwarding them to the leader.
        rng: the only source of randomness (election timeouts). Seed it to
            replay a run.
        logger: where the core logs (peer misbehaviour, role changes).
    """

    id: int
    storage: StorageReader
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg: int = 1024 * 1024
    max_committed_size_per_ready: int = 64 * 1024 * 1024
    max_uncommitted_entries_size: int = 0
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 0
    check_quorum: bool = True
    pre_vote: bool = True
    disable_proposal_forwarding: bool = False
    rng: Random = field(default_factory=Random)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("raftdb.raft"))

    def validate(self) -> None:
        """Raise :class:`RaftConfigError` naming the first invalid field."""
        if self.id <= 0:
            raise RaftConfigError(f"id must be ≥ 1, got {self.id}")
        if self.heartbeat_tick <= 0:
            raise RaftConfigError(f"heartbeat_tick must be ≥ 1, got {self.heartbeat_tick}")
        if self.election_tick <= self.heartbeat_tick:
            raise RaftConfigError(
                f"election_tick ({self.election_tick}) must be greater than "
                f"heartbeat_tick ({self.heartbeat_tick})"
            )
        if self.max_inflight_msgs <= 0:
            raise RaftConfigError(f"max_inflight_msgs must be ≥ 1, got {self.max_inflight_msgs}")
        if self.max_size_per_msg <= 0:
            raise RaftConfigError(f"max_size_per_msg must be ≥ 1, got {self.max_size_per_msg}")
        if self.max_committed_size_per_ready <= 0:
            raise RaftConfigError(
                f"max_committed_size_per_ready must be ≥ 1, got {self.max_committed_size_per_ready}"
            )
        if self.max_inflight_bytes < 0:
            raise RaftConfigError(f"max_inflight_bytes must be ≥ 0, got {self.max_inflight_bytes}")
        if self.max_uncommitted_entries_size < 0:
            raise RaftConfigError("max_uncommitted_entries_size must be ≥ 0")
        if self.applied < 0:
            raise RaftConfigError(f"applied must be ≥ 0, got {self.applied}")
