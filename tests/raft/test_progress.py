"""Per-follower replication state (``raftdb/raft/progress.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.raft.messages import ConfState
from raftdb.raft.progress import Inflights, Progress, ProgressState, ProgressTracker
from raftdb.raft.quorum import VoteResult


def make_progress(
    state: ProgressState,
    match: int,
    next_index: int,
    *,
    size: int = 4,
    max_bytes: int = 0,
    pending_snapshot: int = 0,
) -> Progress:
    pr = Progress(match, next_index, Inflights(size, max_bytes), learner=False)
    if state == ProgressState.REPLICATE:
        pr.become_replicate()
        pr.next = next_index
    elif state == ProgressState.SNAPSHOT:
        pr.become_snapshot(pending_snapshot)
    return pr


def state_of(pr: Progress) -> ProgressState:
    """``pr.state``, read through a call so that mypy does not narrow it across transitions."""
    return pr.state


# -- Inflights ---------------------------------------------------------------


def test_inflights_full_by_count() -> None:
    inf = Inflights(3)
    for i in (1, 2, 3):
        assert not inf.full()
        inf.add(i, 100)
    assert inf.full()
    assert inf.count() == 3
    inf.free_le(1)
    assert not inf.full()
    assert inf.count() == 2


def test_inflights_full_by_bytes() -> None:
    inf = Inflights(10, max_bytes=100)
    inf.add(1, 60)
    assert not inf.full()
    inf.add(2, 40)  # exactly at the limit counts as full
    assert inf.full()
    inf.free_le(1)
    assert not inf.full()


def test_inflights_free_le_is_cumulative_and_ignores_old_acks() -> None:
    inf = Inflights(10)
    for i in (3, 5, 9, 12):
        inf.add(i, 1)
    inf.free_le(4)  # frees 3 only
    assert inf.count() == 3
    inf.free_le(2)  # an older ack: nothing
    assert inf.count() == 3
    inf.free_le(11)  # frees 5 and 9
    assert inf.count() == 1
    inf.free_le(100)
    assert inf.count() == 0
    assert not inf.full()


def test_inflights_reset_forgets_bytes_too() -> None:
    inf = Inflights(10, max_bytes=10)
    inf.add(1, 10)
    assert inf.full()
    inf.reset()
    assert inf.count() == 0
    assert not inf.full()
    inf.add(2, 9)
    assert not inf.full()  # bytes of the forgotten message are not counted


# An op is ("add", gap, nbytes), ("free", index) or ("reset",).
inflight_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 3), st.integers(0, 50)),
        st.tuples(st.just("free"), st.integers(0, 60)),
        st.tuples(st.just("reset")),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 6),
    max_bytes=st.sampled_from([0, 30, 100]),
    ops=inflight_ops,
)
def test_inflights_matches_model(size: int, max_bytes: int, ops: list[tuple[object, ...]]) -> None:
    inf = Inflights(size, max_bytes)
    model: list[tuple[int, int]] = []
    last = 0
    for op in ops:
        if op[0] == "add":
            if inf.full():
                continue  # a leader never sends into a full window
            gap, nbytes = op[1], op[2]
            assert isinstance(gap, int)
            assert isinstance(nbytes, int)
            last += gap
            inf.add(last, nbytes)
            model.append((last, nbytes))
        elif op[0] == "free":
            index = op[1]
            assert isinstance(index, int)
            inf.free_le(index)
            model = [(i, b) for i, b in model if i > index]
        else:
            inf.reset()
            model = []
        total = sum(b for _, b in model)
        assert inf.count() == len(model)
        assert inf.full() == (len(model) >= size or (max_bytes > 0 and total >= max_bytes))


# -- Progress state transitions ------------------------------------------------


def test_become_probe_from_replicate_restarts_after_match() -> None:
    pr = make_progress(ProgressState.REPLICATE, 5, 10)
    pr.inflights.add(9, 1)
    pr.become_probe()
    assert pr.state == ProgressState.PROBE
    assert (pr.match, pr.next) == (5, 6)
    assert pr.inflights.count() == 0
    assert not pr.msg_app_flow_paused


@pytest.mark.parametrize(
    ("match", "pending", "expected_next"),
    [
        (1, 10, 11),  # the snapshot probably arrived: probe right after it
        (12, 10, 13),  # match overtook the snapshot
        (3, 0, 4),  # a failed snapshot (pending cleared): back to match + 1
    ],
)
def test_become_probe_from_snapshot(match: int, pending: int, expected_next: int) -> None:
    pr = make_progress(ProgressState.PROBE, match, match + 1)
    pr.become_snapshot(pending)
    assert pr.state == ProgressState.SNAPSHOT
    assert pr.pending_snapshot == pending
    pr.become_probe()
    assert state_of(pr) == ProgressState.PROBE
    assert pr.next == expected_next
    assert pr.pending_snapshot == 0


def test_become_replicate_starts_after_match_with_empty_window() -> None:
    pr = make_progress(ProgressState.PROBE, 5, 8)
    pr.msg_app_flow_paused = True
    pr.become_replicate()
    assert pr.state == ProgressState.REPLICATE
    assert pr.next == 6
    assert not pr.is_paused()


def test_sent_entries_in_replicate_moves_next_and_fills_window() -> None:
    pr = make_progress(ProgressState.REPLICATE, 5, 6, size=2)
    pr.sent_entries(3, 30)  # entries 6, 7, 8
    assert pr.next == 9
    assert pr.inflights.count() == 1
    pr.sent_entries(0, 0)  # an empty append (commit only) takes no window slot
    assert pr.next == 9
    assert pr.inflights.count() == 1
    pr.sent_entries(1, 10)  # entry 9
    assert pr.next == 10
    assert pr.is_paused()
    # Acknowledging 8 frees the first message only.
    assert pr.maybe_update(8)
    pr.inflights.free_le(8)
    assert not pr.is_paused()
    assert pr.next == 10


def test_sent_entries_in_probe_pauses_until_answer() -> None:
    pr = make_progress(ProgressState.PROBE, 5, 6)
    assert not pr.is_paused()
    pr.sent_entries(2, 20)
    assert pr.next == 6  # probing does not move next optimistically
    assert pr.is_paused()
    assert pr.maybe_update(7)  # the answer unpauses
    assert not pr.is_paused()
    assert (pr.match, pr.next) == (7, 8)


def test_snapshot_state_is_always_paused() -> None:
    pr = make_progress(ProgressState.SNAPSHOT, 0, 1, pending_snapshot=10)
    assert pr.is_paused()
    pr.sent_entries(1, 1)
    assert pr.next == 1
    assert pr.inflights.count() == 0


@pytest.mark.parametrize(
    ("match", "next_index", "update", "updated", "expected"),
    [
        (3, 5, 2, False, (3, 5)),  # older than match
        (3, 5, 3, False, (3, 5)),  # same as match
        (3, 5, 4, True, (4, 5)),  # next already past it
        (3, 5, 5, True, (5, 6)),
        (3, 5, 10, True, (10, 11)),  # jumps next forward
    ],
)
def test_maybe_update(
    match: int, next_index: int, update: int, updated: bool, expected: tuple[int, int]
) -> None:
    pr = make_progress(ProgressState.PROBE, match, next_index)
    assert pr.maybe_update(update) is updated
    assert (pr.match, pr.next) == expected


@pytest.mark.parametrize(
    ("state", "match", "next_index", "rejected", "hint", "changed", "expected_next"),
    [
        # REPLICATE: a rejection at or below match is stale; otherwise fall back to match + 1.
        (ProgressState.REPLICATE, 5, 10, 5, 5, False, 10),
        (ProgressState.REPLICATE, 5, 10, 4, 4, False, 10),
        (ProgressState.REPLICATE, 5, 10, 9, 9, True, 6),
        (ProgressState.REPLICATE, 5, 10, 7, 0, True, 6),  # hint ignored in REPLICATE
        # PROBE: only the rejection of the outstanding probe (next - 1) counts.
        (ProgressState.PROBE, 0, 10, 5, 5, False, 10),
        (ProgressState.PROBE, 0, 10, 9, 9, True, 9),
        (ProgressState.PROBE, 0, 10, 9, 20, True, 9),  # hint beyond rejected: rejected
        (ProgressState.PROBE, 0, 10, 9, 2, True, 3),  # follows the hint
        (ProgressState.PROBE, 0, 10, 9, 0, True, 1),
        (ProgressState.PROBE, 3, 10, 9, 1, True, 4),  # never at or below match
        (ProgressState.PROBE, 0, 2, 1, 1, True, 1),
        (ProgressState.PROBE, 0, 2, 1, 0, True, 1),
    ],
)
def test_maybe_decrease_to(
    state: ProgressState,
    match: int,
    next_index: int,
    rejected: int,
    hint: int,
    changed: bool,
    expected_next: int,
) -> None:
    pr = make_progress(state, match, next_index)
    if state == ProgressState.PROBE:
        pr.msg_app_flow_paused = True
    assert pr.maybe_decrease_to(rejected, hint) is changed
    assert pr.next == expected_next
    assert pr.match == match
    if changed and state == ProgressState.PROBE:
        assert not pr.msg_app_flow_paused  # the answer came: probe again


@pytest.mark.parametrize(
    ("sent_commit", "match", "committed", "expected"),
    [
        (0, 0, 5, False),  # matches nothing: cannot use any commit index
        (3, 5, 5, True),
        (5, 5, 5, False),  # already told
        (3, 3, 5, False),  # told all it can use
        (3, 10, 3, False),  # no newer commit to tell
    ],
)
def test_can_bump_commit(sent_commit: int, match: int, committed: int, expected: bool) -> None:
    pr = make_progress(ProgressState.REPLICATE, match, match + 1)
    pr.sent_commit = sent_commit
    assert pr.can_bump_commit(committed) is expected


progress_ops = st.lists(
    st.one_of(
        st.tuples(st.just("update"), st.integers(0, 30)),
        st.tuples(st.just("decrease"), st.integers(0, 30), st.integers(0, 30)),
        st.tuples(st.just("sent"), st.integers(0, 4)),
        st.tuples(st.just("probe")),
        st.tuples(st.just("replicate")),
        st.tuples(st.just("snapshot"), st.integers(0, 30)),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(ops=progress_ops)
def test_progress_keeps_match_below_next_and_match_monotonic(ops: list[tuple[object, ...]]) -> None:
    pr = Progress(0, 1, Inflights(3), learner=False)
    for op in ops:
        before = pr.match
        kind = op[0]
        if kind == "update":
            assert isinstance(op[1], int)
            pr.maybe_update(op[1])
        elif kind == "decrease":
            assert isinstance(op[1], int)
            assert isinstance(op[2], int)
            pr.maybe_decrease_to(op[1], op[2])
        elif kind == "sent":
            assert isinstance(op[1], int)
            if not pr.is_paused():
                pr.sent_entries(op[1], op[1])
        elif kind == "probe":
            pr.become_probe()
        elif kind == "replicate":
            pr.become_replicate()
        else:
            assert isinstance(op[1], int)
            pr.become_snapshot(op[1])
        assert pr.match >= before
        assert pr.match < pr.next, (op, pr)


# -- ProgressTracker -------------------------------------------------------------


def test_set_conf_keeps_progress_of_staying_members() -> None:
    t = ProgressTracker(max_inflight=4)
    t.set_conf(ConfState(voters=(1, 2, 3)), next_index=5)
    assert [pr.next for pr in t.progress.values()] == [5, 5, 5]
    assert all(pr.recent_active for pr in t.progress.values())
    t.progress[2].maybe_update(7)
    t.progress[2].recent_active = False
    t.set_conf(ConfState(voters=(1, 2), learners=(4,)), next_index=9)
    assert sorted(t.progress) == [1, 2, 4]
    assert t.progress[2].match == 7
    assert not t.progress[2].recent_active
    assert t.progress[4].next == 9
    assert t.progress[4].is_learner
    assert not t.progress[2].is_learner
    assert t.voters == frozenset({1, 2})
    assert t.learners == frozenset({4})
    assert t.conf_state() == ConfState(voters=(1, 2), learners=(4,))


def test_set_conf_flips_learner_flag_on_promotion_and_demotion() -> None:
    t = ProgressTracker(max_inflight=4)
    t.set_conf(ConfState(voters=(1,), learners=(2,)), next_index=1)
    pr2 = t.progress[2]
    t.set_conf(ConfState(voters=(1, 2)), next_index=1)
    assert t.progress[2] is pr2
    assert not pr2.is_learner
    t.set_conf(ConfState(voters=(2,), learners=(1,)), next_index=1)
    assert t.progress[1].is_learner
    assert not t.is_voter(1)
    assert t.is_voter(2)


def test_new_progress_uses_tracker_window_limits() -> None:
    t = ProgressTracker(max_inflight=2, max_inflight_bytes=50)
    t.set_conf(ConfState(voters=(1, 2)), next_index=1)
    inf = t.progress[2].inflights
    assert (inf.size, inf.max_bytes) == (2, 50)
    assert t.progress[1].inflights is not inf


def test_committed_counts_voters_only() -> None:
    t = ProgressTracker(max_inflight=4)
    t.set_conf(ConfState(voters=(1, 2, 3), learners=(4, 5)), next_index=1)
    for node_id, match in {1: 10, 2: 4, 3: 2, 4: 100, 5: 100}.items():
        t.progress[node_id].maybe_update(match)
    assert t.committed() == 4


def test_votes_first_answer_wins_and_learners_do_not_count() -> None:
    t = ProgressTracker(max_inflight=4)
    t.set_conf(ConfState(voters=(1, 2, 3), learners=(4,)), next_index=1)
    t.record_vote(1, True)
    t.record_vote(4, True)
    assert t.tally_votes() == (1, 0, VoteResult.PENDING)
    t.record_vote(2, False)
    t.record_vote(2, True)  # a later, different answer is ignored
    assert t.tally_votes() == (1, 1, VoteResult.PENDING)
    t.record_vote(3, True)
    assert t.tally_votes() == (2, 1, VoteResult.WON)
    t.reset_votes()
    assert t.tally_votes() == (0, 0, VoteResult.PENDING)


@pytest.mark.parametrize(
    ("voters", "active", "expected"),
    [
        ((1,), set(), True),  # self alone is a quorum
        ((1, 2, 3), set(), False),
        ((1, 2, 3), {2}, True),
        ((1, 2, 3, 4), {2}, False),
        ((1, 2, 3, 4), {2, 3}, True),
        ((1, 2, 3, 4, 5), {4, 5}, True),
    ],
)
def test_quorum_active(voters: tuple[int, ...], active: set[int], expected: bool) -> None:
    t = ProgressTracker(max_inflight=4)
    t.set_conf(ConfState(voters=voters, learners=(9,)), next_index=1)
    for node_id, pr in t.progress.items():
        pr.recent_active = node_id in active or node_id == 9
    assert t.quorum_active(1) is expected


def test_peers_excludes_self_in_id_order() -> None:
    t = ProgressTracker(max_inflight=4)
    t.set_conf(ConfState(voters=(3, 1, 2), learners=(5,)), next_index=1)
    assert [i for i, _ in t.peers(2)] == [1, 3, 5]
