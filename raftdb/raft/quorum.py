"""Majority arithmetic: which index a quorum has, and who won an election.

Kept apart from the tracker so that it can be checked exhaustively on its own
(``tests/raft/test_quorum.py`` tests it against brute force with hypothesis).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import Enum

__all__ = ["VoteResult", "committed_index", "quorum_size", "vote_result"]


class VoteResult(Enum):
    """The state of a count of votes."""

    PENDING = "pending"  # neither outcome is decided yet
    WON = "won"  # a majority granted
    LOST = "lost"  # a majority can no longer grant


def quorum_size(voters: int) -> int:
    """The smallest majority of ``voters`` members."""
    return voters // 2 + 1


def committed_index(voters: Collection[int], match: Mapping[int, int]) -> int:
    """The largest index that a majority of ``voters`` have in their logs.

    ``match`` maps a voter to the highest index known to be replicated on it;
    a voter missing from it counts as 0. With no voters the answer is 0.
    """
    n = len(voters)
    if n == 0:
        return 0
    if n == 1:
        return match.get(next(iter(voters)), 0)
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    # The quorum_size(n) largest values are all >= acked[quorum_size(n) - 1].
    return acked[n // 2]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """Tally ``votes`` (voter -> granted) against ``voters``; others' votes are ignored."""
    granted = rejected = 0
    for v in voters:
        answer = votes.get(v)
        if answer is True:
            granted += 1
        elif answer is False:
            rejected += 1
    q = quorum_size(len(voters))
    if granted >= q:
        return VoteResult.WON
    if len(voters) - rejected < q:
        return VoteResult.LOST
    return VoteResult.PENDING
