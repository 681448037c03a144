"""Batched ReadIndex rounds (``raftdb/raft/read_only.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.raft.read_only import PendingRead, ReadOnly, decode_round, encode_round

VOTERS = frozenset({1, 2, 3})
SELF = 1


def majority(acks: set[int]) -> bool:
    return 2 * len(acks & VOTERS) > len(VOTERS)


def read(ctx: str, index: int = 5, requester: int = 0) -> PendingRead:
    return PendingRead(ctx.encode(), requester, index)


@pytest.mark.parametrize("round_no", [1, 2, 255, 256, 2**32, 2**64 - 1])
def test_round_context_round_trip(round_no: int) -> None:
    context = encode_round(round_no)
    assert len(context) == 8
    assert decode_round(context) == round_no


@pytest.mark.parametrize("context", [b"", b"\x00" * 7, b"\x01" * 9, b"x"])
def test_plain_heartbeat_context_is_round_zero(context: bytes) -> None:
    assert decode_round(context) == 0


def test_empty_read_only() -> None:
    ro = ReadOnly()
    assert ro.current_context() == b""
    assert ro.pending_count() == 0
    assert ro.release(majority) == []


def test_round_needs_a_quorum_including_self() -> None:
    ro = ReadOnly()
    ro.add(read("a"))
    ro.add(read("b"))
    assert ro.pending_count() == 2
    assert ro.current_context() == b""  # queued, no round yet
    r = ro.start_round(SELF)
    assert r == 1
    assert ro.current_context() == encode_round(1)
    assert ro.release(majority) == []  # only self so far
    ro.ack(1, 2)
    released = ro.release(majority)
    assert [p.context for p in released] == [b"a", b"b"]
    assert ro.pending_count() == 0
    assert ro.current_context() == b""
    assert ro.release(majority) == []  # released once only


def test_ack_of_a_newer_round_confirms_older_rounds() -> None:
    ro = ReadOnly()
    ro.add(read("a"))
    ro.start_round(SELF)
    ro.add(read("b"))
    ro.start_round(SELF)
    ro.add(read("c"))
    ro.start_round(SELF)
    assert ro.current_context() == encode_round(3)
    ro.ack(2, 3)
    released = ro.release(majority)
    assert [p.context for p in released] == [b"a", b"b"]
    assert ro.pending_count() == 1
    assert ro.current_context() == encode_round(3)
    ro.ack(3, 2)
    assert [p.context for p in ro.release(majority)] == [b"c"]


def test_ack_of_an_older_round_does_not_confirm_newer_ones() -> None:
    ro = ReadOnly()
    ro.add(read("a"))
    ro.start_round(SELF)
    ro.add(read("b"))
    ro.start_round(SELF)
    ro.ack(1, 2)
    assert [p.context for p in ro.release(majority)] == [b"a"]
    assert ro.release(majority) == []
    assert ro.pending_count() == 1


def test_acks_from_non_voters_and_repeats_do_not_count() -> None:
    ro = ReadOnly()
    ro.add(read("a"))
    ro.start_round(SELF)
    ro.ack(1, 9)  # a learner
    ro.ack(1, SELF)
    assert ro.release(majority) == []
    ro.ack(1, 3)
    assert len(ro.release(majority)) == 1


def test_queued_reads_wait_for_the_next_round() -> None:
    ro = ReadOnly()
    ro.add(read("a"))
    ro.start_round(SELF)
    ro.add(read("b"))  # arrived after round 1 was sent: round 1 cannot vouch for it
    ro.ack(1, 2)
    assert [p.context for p in ro.release(majority)] == [b"a"]
    assert ro.pending_count() == 1
    assert ro.unsent == [read("b")]


# An op: ("add",), ("round",), ("ack", voter, how_far_back), ("release",)
read_only_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add")),
        st.tuples(st.just("round")),
        st.tuples(st.just("ack"), st.sampled_from([2, 3, 4]), st.integers(0, 3)),
        st.tuples(st.just("release")),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops=read_only_ops)
def test_read_only_matches_model(ops: list[tuple[object, ...]]) -> None:
    """Reads are released in arrival order, exactly once, as soon as (and only when) a
    quorum has answered a round at least as new as theirs."""
    ro = ReadOnly()
    added = 0
    round_of: list[int | None] = []  # per read: its round, None while unsent
    released: list[int] = []
    acked_up_to = {v: 0 for v in (*VOTERS, 4)}
    last_round = 0
    for op in ops:
        if op[0] == "add":
            ro.add(PendingRead(str(added).encode(), 0, added))
            round_of.append(None)
            added += 1
        elif op[0] == "round":
            last_round = ro.start_round(SELF)
            acked_up_to[SELF] = last_round
            round_of = [last_round if r is None else r for r in round_of]
        elif op[0] == "ack":
            voter, back = op[1], op[2]
            assert isinstance(voter, int)
            assert isinstance(back, int)
            r = last_round - back
            if r >= 1:  # a peer can only answer a round that was sent
                ro.ack(r, voter)
                acked_up_to[voter] = max(acked_up_to[voter], r)
        else:
            got = [int(p.context) for p in ro.release(majority)]

            def confirmed(r: int) -> bool:
                return majority({v for v, a in acked_up_to.items() if a >= r})

            want = [
                i
                for i, r in enumerate(round_of)
                if r is not None and i not in released and confirmed(r)
            ]
            assert got == want
            released.extend(got)
        assert ro.pending_count() == added - len(released)
    assert released == sorted(released)
