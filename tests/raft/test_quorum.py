"""Majority arithmetic (``raftdb/raft/quorum.py``), checked against brute force."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.raft.quorum import VoteResult, committed_index, quorum_size, vote_result

# Voter ids and match indexes: small ranges so that ties and missing voters are common.
voter_sets = st.frozensets(st.integers(min_value=1, max_value=9), min_size=1, max_size=7)


def brute_committed(voters: frozenset[int], match: dict[int, int]) -> int:
    """The largest index that a strict majority of ``voters`` has, by trying every index."""
    best = 0
    for index in range(max(match.values(), default=0) + 1):
        have = sum(1 for v in voters if match.get(v, 0) >= index)
        if 2 * have > len(voters):
            best = index
    return best


def brute_vote(voters: frozenset[int], votes: dict[int, bool]) -> VoteResult:
    """WON if a majority granted; LOST if even every missing answer could not win."""
    granted = sum(1 for v in voters if votes.get(v) is True)
    missing = sum(1 for v in voters if v not in votes)
    if 2 * granted > len(voters):
        return VoteResult.WON
    if 2 * (granted + missing) <= len(voters):
        return VoteResult.LOST
    return VoteResult.PENDING


@pytest.mark.parametrize(
    ("voters", "size"),
    [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)],
)
def test_quorum_size(voters: int, size: int) -> None:
    assert quorum_size(voters) == size


@pytest.mark.parametrize(
    ("voters", "match", "expected"),
    [
        ((), {}, 0),
        ((1,), {}, 0),
        ((1,), {1: 7}, 7),
        ((1,), {2: 7}, 0),  # only voters count
        ((1, 2), {1: 5, 2: 3}, 3),  # two voters: both are needed
        ((1, 2, 3), {1: 5, 2: 3, 3: 1}, 3),
        ((1, 2, 3), {1: 5, 2: 5}, 5),
        ((1, 2, 3), {1: 5}, 0),  # missing voters count as 0
        ((1, 2, 3, 4), {1: 9, 2: 8, 3: 7, 4: 6}, 7),  # 3 of 4 have >= 7
        ((1, 2, 3, 4, 5), {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}, 3),
        ((1, 2, 3), {1: 5, 2: 5, 3: 5, 4: 100, 5: 100}, 5),  # non-voters ignored
    ],
)
def test_committed_index_table(
    voters: tuple[int, ...], match: dict[int, int], expected: int
) -> None:
    assert committed_index(voters, match) == expected


@settings(max_examples=300, deadline=None)
@given(
    voters=voter_sets,
    match=st.dictionaries(
        st.integers(min_value=1, max_value=12), st.integers(min_value=0, max_value=20)
    ),
)
def test_committed_index_matches_brute_force(voters: frozenset[int], match: dict[int, int]) -> None:
    assert committed_index(voters, match) == brute_committed(voters, match)


@settings(max_examples=100, deadline=None)
@given(
    voters=voter_sets,
    match=st.dictionaries(
        st.integers(min_value=1, max_value=9), st.integers(min_value=0, max_value=20)
    ),
    data=st.data(),
)
def test_committed_index_is_monotonic_in_match(
    voters: frozenset[int], match: dict[int, int], data: st.DataObject
) -> None:
    """Raising one member's match never lowers the committed index."""
    before = committed_index(voters, match)
    who = data.draw(st.sampled_from(sorted(voters)))
    bumped = dict(match)
    bumped[who] = bumped.get(who, 0) + data.draw(st.integers(min_value=0, max_value=5))
    assert committed_index(voters, bumped) >= before


@pytest.mark.parametrize(
    ("voters", "votes", "expected"),
    [
        ((1,), {}, VoteResult.PENDING),
        ((1,), {1: True}, VoteResult.WON),
        ((1,), {1: False}, VoteResult.LOST),
        ((1, 2), {1: True}, VoteResult.PENDING),
        ((1, 2), {1: True, 2: False}, VoteResult.LOST),
        ((1, 2), {1: True, 2: True}, VoteResult.WON),
        ((1, 2, 3), {1: True, 2: True}, VoteResult.WON),
        ((1, 2, 3), {1: True, 2: False}, VoteResult.PENDING),
        ((1, 2, 3), {2: False, 3: False}, VoteResult.LOST),
        ((1, 2, 3, 4), {1: True, 2: True, 3: False}, VoteResult.PENDING),
        ((1, 2, 3, 4), {1: True, 2: False, 3: False}, VoteResult.LOST),
        ((1, 2, 3), {1: True, 4: True, 5: True}, VoteResult.PENDING),  # non-voters ignored
        ((1, 2, 3), {4: False, 5: False, 6: False}, VoteResult.PENDING),
    ],
)
def test_vote_result_table(
    voters: tuple[int, ...], votes: dict[int, bool], expected: VoteResult
) -> None:
    assert vote_result(voters, votes) == expected


@settings(max_examples=300, deadline=None)
@given(
    voters=voter_sets,
    votes=st.dictionaries(st.integers(min_value=1, max_value=12), st.booleans()),
)
def test_vote_result_matches_brute_force(voters: frozenset[int], votes: dict[int, bool]) -> None:
    assert vote_result(voters, votes) == brute_vote(voters, votes)


@settings(max_examples=100, deadline=None)
@given(voters=voter_sets, votes=st.dictionaries(st.integers(1, 9), st.booleans()))
def test_vote_result_outcome_is_final(voters: frozenset[int], votes: dict[int, bool]) -> None:
    """Once WON or LOST, answering every remaining voter cannot change the outcome."""
    result = vote_result(voters, votes)
    if result == VoteResult.PENDING:
        return
    for fill in (True, False):
        complete = {v: votes.get(v, fill) for v in voters}
        assert vote_result(voters, complete) == result
