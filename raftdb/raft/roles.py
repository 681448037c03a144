"""A node's role and why it campaigns: the two enums every role's step code shares.

They live apart from :mod:`raftdb.raft.raft` so that the role step modules
(:mod:`~raftdb.raft.follower`, :mod:`~raftdb.raft.leader`) can import them at the
top, without importing the :class:`~raftdb.raft.raft.Raft` they are bound to.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["CampaignType", "Role"]


class Role(Enum):
    """A node's role. A learner is a follower that is not a voter (see ``Status``)."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class CampaignType(Enum):
    """Why a node campaigns."""

    PRE_ELECTION = "pre-election"  # PreVote: ask first, without raising the term
    ELECTION = "election"
    TRANSFER = "transfer"  # the leader told us to (TimeoutNow): no pre-vote, no lease
