"""The core's view of the log (``raftdb/raft/log.py``): Storage plus the unstable tail.

The tables follow the cases of etcd's ``log_test.go`` (what to check, not how).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.raft.errors import CompactedError, UnavailableError
from raftdb.raft.log import InvariantError, RaftLog
from raftdb.raft.messages import ConfState, Entry, Snapshot, SnapshotMetadata, limit_size
from raftdb.storage.memory import MemoryStorage

Pairs = Sequence[tuple[int, int]]


def ents(pairs: Pairs, data: bytes = b"") -> list[Entry]:
    return [Entry(term=t, index=i, data=data) for i, t in pairs]


def snap(index: int, term: int) -> Snapshot:
    return Snapshot(SnapshotMetadata(index=index, term=term, conf_state=ConfState(voters=(1,))))


def make_log(
    stored: Pairs = (),
    *,
    dummy: tuple[int, int] = (0, 0),
    unstable: Pairs = (),
    committed: int | None = None,
    applied: int | None = None,
    max_applying_bytes: int = 1 << 30,
) -> RaftLog:
    """A log whose Storage holds ``stored`` after a compaction point ``dummy``,
    with ``unstable`` appended on top."""
    storage = MemoryStorage()
    if dummy[0]:
        storage.save(None, [], snap(*dummy))
    if stored:
        storage.save(None, ents(stored))
    log = RaftLog(storage, max_applying_bytes)
    if unstable:
        log.append(ents(unstable))
    if committed is not None:
        log.commit_to(committed)
    if applied is not None:
        log.applied_to(applied)
    return log


def log_pairs(log: RaftLog) -> list[tuple[int, int]]:
    return [(i, log.term(i)) for i in range(log.first_index(), log.last_index() + 1)]


BASE = ((1, 1), (2, 2), (3, 3))


# -- positions and terms ---------------------------------------------------------


def test_new_log_starts_at_the_storage_compaction_point() -> None:
    log = make_log([(6, 2), (7, 3)], dummy=(5, 2))
    assert (log.first_index(), log.last_index()) == (6, 7)
    assert (log.committed, log.applied) == (5, 5)
    assert log.unstable.offset == 8
    assert log.stable_last_index() == 7


def test_empty_log() -> None:
    log = make_log()
    assert (log.first_index(), log.last_index(), log.last_term()) == (1, 0, 0)
    assert log.term(0) == 0
    assert log.entries_from(1, None) == []


@pytest.mark.parametrize(
    ("index", "term"),
    [
        (4, None),  # compacted
        (5, 2),  # the compaction point itself keeps its term
        (6, 2),
        (7, 3),
        (8, 3),
        (9, 4),  # unstable
        (10, 4),
        (11, None),  # beyond the last index
    ],
)
def test_term_across_compaction_storage_and_unstable(index: int, term: int | None) -> None:
    log = make_log([(6, 2), (7, 3), (8, 3)], dummy=(5, 2), unstable=[(9, 4), (10, 4)])
    if term is None:
        expected_error = CompactedError if index < 5 else UnavailableError
        with pytest.raises(expected_error):
            log.term(index)
        assert log.term_or_zero(index) == 0
        assert not log.match_term(index, 2)
    else:
        assert log.term(index) == term
        assert log.term_or_zero(index) == term
        assert log.match_term(index, term)
        assert not log.match_term(index, term + 1)


def test_term_with_unstable_snapshot_hides_the_old_storage_log() -> None:
    log = make_log([(1, 1), (2, 1), (3, 1)])
    log.restore(snap(10, 5))
    assert (log.first_index(), log.last_index(), log.last_term()) == (11, 10, 5)
    assert log.committed == 10
    assert log.term(10) == 5
    for index in (3, 9):  # Storage still has 3, but the snapshot replaced it
        with pytest.raises(CompactedError):
            log.term(index)
    with pytest.raises(UnavailableError):
        log.term(11)
    # Entries may follow the snapshot before it is saved.
    log.append(ents([(11, 5), (12, 6)]))
    assert log_pairs(log) == [(11, 5), (12, 6)]
    assert log.term(10) == 5


def test_restore_then_save_and_stabilize() -> None:
    log = make_log([(1, 1), (2, 1), (3, 1)], committed=3, applied=3)
    s = snap(10, 5)
    log.restore(s)
    assert log.snapshot() == s
    assert not log.has_next_committed()  # the snapshot must be applied first
    assert log.next_committed() == []
    storage = log.storage
    assert isinstance(storage, MemoryStorage)
    storage.save(None, [], s)
    log.stable_snap_to(10)
    assert log.unstable.snapshot is None
    assert log.applied == 10
    assert (log.first_index(), log.last_index(), log.term(10)) == (11, 10, 5)
    assert log.snapshot() == s


@pytest.mark.parametrize(
    ("last_index", "term", "up_to_date"),
    [
        # a higher last term wins whatever the length
        (2, 4, True),
        (3, 4, True),
        (4, 4, True),
        # a lower last term loses whatever the length
        (2, 2, False),
        (3, 2, False),
        (4, 2, False),
        # the same last term: the longer (or equal) log wins
        (2, 3, False),
        (3, 3, True),
        (4, 3, True),
    ],
)
def test_is_up_to_date(last_index: int, term: int, up_to_date: bool) -> None:
    log = make_log(BASE)
    assert log.is_up_to_date(last_index, term) is up_to_date


def test_is_up_to_date_uses_unstable_tail() -> None:
    log = make_log(BASE, unstable=[(4, 5)])
    assert not log.is_up_to_date(10, 4)
    assert log.is_up_to_date(4, 5)
    assert not log.is_up_to_date(3, 5)


# -- conflicts and appends ---------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "conflict"),
    [
        ([], 0),
        # no conflict, no new entries
        ([(1, 1), (2, 2), (3, 3)], 0),
        ([(2, 2), (3, 3)], 0),
        ([(3, 3)], 0),
        # no conflict, new entries
        ([(1, 1), (2, 2), (3, 3), (4, 4), (5, 4)], 4),
        ([(2, 2), (3, 3), (4, 4), (5, 4)], 4),
        ([(3, 3), (4, 4), (5, 4)], 4),
        ([(4, 4), (5, 4)], 4),
        # conflicts with existing entries
        ([(1, 4), (2, 4)], 1),
        ([(2, 1), (3, 4), (4, 4)], 2),
        ([(3, 1), (4, 2), (5, 4), (6, 4)], 3),
    ],
)
def test_find_conflict(entries: Pairs, conflict: int) -> None:
    log = make_log(BASE)
    assert log.find_conflict(tuple(ents(entries))) == conflict


@pytest.mark.parametrize(
    ("log_term", "index", "commit", "entries", "last_new", "new_commit", "after"),
    [
        # the consistency check fails: wrong term, or no entry at index
        (2, 3, 3, [(4, 4)], None, 1, BASE),
        (3, 4, 3, [(5, 4)], None, 1, BASE),
        # nothing to append: commit follows the leader, up to the last new entry
        (3, 3, 3, [], 3, 3, BASE),
        (3, 3, 4, [], 3, 3, BASE),  # capped at last_new
        (3, 3, 2, [], 3, 2, BASE),
        (3, 3, 0, [], 3, 1, BASE),  # never backwards
        (0, 0, 3, [], 0, 1, BASE),
        # a stale append covering a prefix does not truncate the longer log
        (1, 1, 3, [(2, 2)], 2, 2, BASE),
        (0, 0, 3, [(1, 1)], 1, 1, BASE),
        # new entries
        (3, 3, 3, [(4, 4)], 4, 3, (*BASE, (4, 4))),
        (3, 3, 4, [(4, 4)], 4, 4, (*BASE, (4, 4))),
        (3, 3, 5, [(4, 4)], 4, 4, (*BASE, (4, 4))),
        (3, 3, 5, [(4, 4), (5, 4)], 5, 5, (*BASE, (4, 4), (5, 4))),
        # conflicts: the uncommitted tail is replaced
        (2, 2, 3, [(3, 4)], 3, 3, ((1, 1), (2, 2), (3, 4))),
        (2, 2, 4, [(3, 4), (4, 4)], 4, 4, ((1, 1), (2, 2), (3, 4), (4, 4))),
        (1, 1, 3, [(2, 4)], 2, 2, ((1, 1), (2, 4))),
        (1, 1, 3, [(2, 4), (3, 4)], 3, 3, ((1, 1), (2, 4), (3, 4))),
        # the first entries match, the rest conflict
        (1, 1, 0, [(2, 2), (3, 4), (4, 4)], 4, 1, ((1, 1), (2, 2), (3, 4), (4, 4))),
    ],
)
def test_maybe_append(
    log_term: int,
    index: int,
    commit: int,
    entries: Pairs,
    last_new: int | None,
    new_commit: int,
    after: Pairs,
) -> None:
    log = make_log(BASE, committed=1)
    assert log.maybe_append(index, log_term, commit, tuple(ents(entries))) == last_new
    assert log.committed == new_commit
    assert log_pairs(log) == list(after)


@pytest.mark.parametrize(
    "entries",
    [
        [(1, 4)],  # conflicts with committed entry 1
        [(2, 4), (3, 4)],  # conflicts with committed entry 2
    ],
)
def test_maybe_append_refuses_to_overwrite_committed_entries(entries: Pairs) -> None:
    log = make_log(BASE, committed=2)
    prev = entries[0][0] - 1
    with pytest.raises(InvariantError):
        log.maybe_append(prev, log.term(prev), 3, tuple(ents(entries)))
    assert log_pairs(log) == list(BASE)
    assert log.committed == 2


@pytest.mark.parametrize(
    ("stored", "unstable", "append", "last", "after", "offset"),
    [
        (BASE, (), [], 3, BASE, 4),
        (BASE, (), [(4, 3)], 4, (*BASE, (4, 3)), 4),
        # replaces saved entries: the unstable offset moves back
        (BASE, (), [(2, 4)], 2, ((1, 1), (2, 4)), 2),
        (BASE, (), [(3, 4), (4, 4)], 4, ((1, 1), (2, 2), (3, 4), (4, 4)), 3),
        # replaces unstable entries only
        (BASE, ((4, 3), (5, 3)), [(5, 4)], 5, (*BASE, (4, 3), (5, 4)), 4),
        ((), (), [(1, 1), (2, 1)], 2, ((1, 1), (2, 1)), 1),
    ],
)
def test_append(
    stored: Pairs, unstable: Pairs, append: Pairs, last: int, after: Pairs, offset: int
) -> None:
    log = make_log(stored, unstable=unstable)
    assert log.append(ents(append)) == last
    assert log_pairs(log) == list(after)
    assert log.unstable.offset == offset
    assert log.stable_last_index() == offset - 1


def test_append_below_committed_raises() -> None:
    log = make_log(BASE, committed=2)
    with pytest.raises(InvariantError):
        log.append(ents([(2, 5)]))
    assert log_pairs(log) == list(BASE)
    log.append(ents([(3, 5)]))  # right after the commit point is allowed
    assert log_pairs(log) == [(1, 1), (2, 2), (3, 5)]


# -- find_conflict_by_term ---------------------------------------------------------

TERMS_FROM_1 = ((1, 2), (2, 2), (3, 5), (4, 5), (5, 5))


@pytest.mark.parametrize(
    ("stored", "dummy", "index", "term", "expected"),
    [
        (TERMS_FROM_1, (0, 0), 5, 6, (5, 5)),
        (TERMS_FROM_1, (0, 0), 5, 5, (5, 5)),
        (TERMS_FROM_1, (0, 0), 5, 4, (2, 2)),
        (TERMS_FROM_1, (0, 0), 5, 2, (2, 2)),
        (TERMS_FROM_1, (0, 0), 5, 1, (0, 0)),
        (TERMS_FROM_1, (0, 0), 1, 2, (1, 2)),
        (TERMS_FROM_1, (0, 0), 1, 1, (0, 0)),
        (TERMS_FROM_1, (0, 0), 0, 0, (0, 0)),
        (TERMS_FROM_1, (0, 0), 9, 5, (5, 5)),  # beyond the last index: from the last
        # a compacted log: the compaction point (10, 3) is the earliest known term
        (((11, 3), (12, 4), (13, 4), (14, 4)), (10, 3), 14, 9, (14, 4)),
        (((11, 3), (12, 4), (13, 4), (14, 4)), (10, 3), 14, 4, (14, 4)),
        (((11, 3), (12, 4), (13, 4), (14, 4)), (10, 3), 14, 3, (11, 3)),
        (((11, 3), (12, 4), (13, 4), (14, 4)), (10, 3), 10, 3, (10, 3)),
        (((11, 3), (12, 4), (13, 4), (14, 4)), (10, 3), 14, 2, (9, 0)),  # unknown
        (((11, 3), (12, 4), (13, 4), (14, 4)), (10, 3), 10, 2, (9, 0)),
        (((11, 3), (12, 4), (13, 4), (14, 4)), (10, 3), 9, 3, (9, 0)),
        (((11, 3), (12, 4), (13, 4), (14, 4)), (10, 3), 5, 9, (5, 0)),
    ],
)
def test_find_conflict_by_term(
    stored: Pairs, dummy: tuple[int, int], index: int, term: int, expected: tuple[int, int]
) -> None:
    log = make_log(stored, dummy=dummy)
    assert log.find_conflict_by_term(index, term) == expected


@st.composite
def logs(draw: st.DrawFn) -> tuple[tuple[int, int], list[tuple[int, int]], int]:
    """A compaction point, the entries after it with non-decreasing terms, and how
    many of those entries are saved (the rest are unstable)."""
    dummy_index = draw(st.integers(0, 6))
    term = draw(st.integers(1, 3)) if dummy_index else 0
    dummy = (dummy_index, term)
    entries = []
    for i in range(draw(st.integers(0, 10))):
        term += draw(st.integers(0, 2)) if i or term else draw(st.integers(1, 2))
        entries.append((dummy_index + 1 + i, term))
    return dummy, entries, draw(st.integers(0, len(entries)))


def build(dummy: tuple[int, int], entries: list[tuple[int, int]], n_stored: int) -> RaftLog:
    return make_log(entries[:n_stored], dummy=dummy, unstable=entries[n_stored:])


@settings(max_examples=300, deadline=None)
@given(log_spec=logs(), index=st.integers(0, 20), term=st.integers(0, 25))
def test_find_conflict_by_term_properties(
    log_spec: tuple[tuple[int, int], list[tuple[int, int]], int], index: int, term: int
) -> None:
    dummy, entries, n_stored = log_spec
    log = build(dummy, entries, n_stored)
    first, last = log.first_index(), log.last_index()
    known = {dummy[0]: dummy[1], **dict(entries)}  # index -> term, from first - 1 to last
    i, t = log.find_conflict_by_term(index, term)
    top = min(index, last)
    assert i <= top
    if i >= first - 1:
        # A known entry: the largest at or below the probe with a term <= term.
        assert t == known[i]
        assert t <= term
        assert all(known[j] > term for j in range(i + 1, top + 1))
    else:
        # Ran into the compacted part: no known entry qualifies, and the term is unknown.
        assert t == 0
        assert all(known[j] > term for j in range(first - 1, top + 1))


# -- slicing ---------------------------------------------------------------------


def sized_log() -> RaftLog:
    """Compacted at 5; 6..9 saved, 10..12 unstable; entry i carries i bytes of data."""
    storage = MemoryStorage()
    storage.save(None, [], snap(5, 1))
    storage.save(None, [Entry(term=1, index=i, data=b"x" * i) for i in range(6, 10)])
    log = RaftLog(storage, 1 << 30)
    log.append([Entry(term=2, index=i, data=b"x" * i) for i in range(10, 13)])
    return log


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (6, 6, []),
        (6, 8, [6, 7]),
        (8, 12, [8, 9, 10, 11]),  # spans Storage and the unstable tail
        (10, 13, [10, 11, 12]),
        (9, 10, [9]),
        (10, 11, [10]),
        (6, 13, [6, 7, 8, 9, 10, 11, 12]),
    ],
)
def test_slice_bounds(lo: int, hi: int, expected: list[int]) -> None:
    log = sized_log()
    assert [e.index for e in log.slice(lo, hi, None)] == expected


def test_slice_out_of_bounds() -> None:
    log = sized_log()
    with pytest.raises(CompactedError):
        log.slice(5, 7, None)
    with pytest.raises(CompactedError):
        log.slice(4, 7, None)
    with pytest.raises(InvariantError):
        log.slice(10, 14, None)


@settings(max_examples=200, deadline=None)
@given(
    lo=st.integers(6, 13),
    length=st.integers(0, 7),
    max_bytes=st.one_of(st.none(), st.integers(0, 150)),
)
def test_slice_size_limit_matches_reference(lo: int, length: int, max_bytes: int | None) -> None:
    """Wherever the Storage/unstable boundary falls, the limit applies to the whole range."""
    log = sized_log()
    hi = min(lo + length, 13)
    full = [Entry(term=1 if i < 10 else 2, index=i, data=b"x" * i) for i in range(lo, hi)]
    got = log.slice(lo, hi, max_bytes)
    assert [(e.index, e.term) for e in got] == [
        (e.index, e.term) for e in limit_size(full, max_bytes)
    ]
    if lo < hi:
        assert got  # at least one entry, whatever the limit


def test_entries_from() -> None:
    log = sized_log()
    assert [e.index for e in log.entries_from(11, None)] == [11, 12]
    assert log.entries_from(13, None) == []
    assert [e.index for e in log.entries_from(6, 0)] == [6]
    with pytest.raises(CompactedError):
        log.entries_from(5, None)


# -- commit and apply ----------------------------------------------------------------


def test_commit_to_never_decreases_and_never_passes_the_last_index() -> None:
    log = make_log(BASE, committed=1)
    log.commit_to(3)
    assert log.committed == 3
    log.commit_to(2)
    assert log.committed == 3
    with pytest.raises(InvariantError):
        log.commit_to(4)
    assert log.committed == 3


def test_commit_to_counts_unstable_entries() -> None:
    log = make_log(BASE, unstable=[(4, 4)])
    log.commit_to(4)
    assert log.committed == 4


@pytest.mark.parametrize(
    ("index", "term", "committed", "expected_commit"),
    [
        (3, 3, True, 3),
        (3, 2, False, 1),  # not of the leader's term (Figure 8)
        (2, 2, True, 2),
        (1, 1, False, 1),  # not newer
        (4, 3, False, 1),  # beyond the log
        (0, 0, False, 1),
    ],
)
def test_maybe_commit(index: int, term: int, committed: bool, expected_commit: int) -> None:
    log = make_log(BASE, committed=1)
    assert log.maybe_commit(index, term) is committed
    assert log.committed == expected_commit


@pytest.mark.parametrize(
    ("applied", "committed", "has_next", "expected"),
    [
        (0, 0, False, []),
        (0, 2, True, [1, 2]),
        (1, 2, True, [2]),
        (2, 2, False, []),
        (3, 5, True, [4, 5]),  # across Storage and the unstable tail
        (5, 5, False, []),
    ],
)
def test_next_committed(applied: int, committed: int, has_next: bool, expected: list[int]) -> None:
    log = make_log(BASE, unstable=[(4, 3), (5, 3)], committed=committed, applied=applied)
    assert log.has_next_committed() is has_next
    assert [e.index for e in log.next_committed()] == expected


def test_next_committed_is_bounded_by_max_applying_bytes() -> None:
    storage = MemoryStorage()
    storage.save(None, [Entry(term=1, index=i, data=b"x" * 10) for i in range(1, 6)])
    # Each entry counts 10 bytes + 16 overhead = 26.
    log = RaftLog(storage, max_applying_bytes=60)
    log.commit_to(5)
    assert [e.index for e in log.next_committed()] == [1, 2]
    log.applied_to(2)
    assert [e.index for e in log.next_committed()] == [3, 4]
    tiny = RaftLog(storage, max_applying_bytes=1)
    tiny.commit_to(5)
    assert [e.index for e in tiny.next_committed()] == [1]  # always at least one


@pytest.mark.parametrize("applied", [-1, 0, 4])
def test_applied_to_out_of_range_raises(applied: int) -> None:
    """Backwards (below applied) or beyond the commit index."""
    log = make_log(BASE, committed=3, applied=1)
    with pytest.raises(InvariantError):
        log.applied_to(applied)
    assert log.applied == 1


def test_applied_to_within_range() -> None:
    log = make_log(BASE, committed=3, applied=1)
    log.applied_to(1)
    log.applied_to(3)
    assert log.applied == 3


# -- stabilizing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "term", "offset"),
    [
        (5, 2, 6),
        (4, 2, 5),
        (5, 1, 4),  # wrong term: the entry was replaced, keep it unstable
        (6, 2, 4),  # not in the log
        (3, 1, 4),  # already saved
    ],
)
def test_stable_to(index: int, term: int, offset: int) -> None:
    log = make_log([(1, 1), (2, 1), (3, 1)], unstable=[(4, 2), (5, 2)])
    storage = log.storage
    assert isinstance(storage, MemoryStorage)
    storage.save(None, log.unstable.entries)  # the driver saves, then reports
    log.stable_to(index, term)
    assert log.unstable.offset == offset
    assert log.last_index() == 5


@settings(max_examples=200, deadline=None)
@given(
    log_spec=logs(),
    split=st.integers(0, 12),
    extra=st.integers(1, 4),
    leader_commit=st.integers(0, 25),
    data=st.data(),
)
def test_maybe_append_against_diverging_leader(
    log_spec: tuple[tuple[int, int], list[tuple[int, int]], int],
    split: int,
    extra: int,
    leader_commit: int,
    data: st.DataObject,
) -> None:
    """A leader's log shares a prefix with ours and then has newer terms.

    Any append the follower accepts leaves its log equal to the leader's up to the
    last new entry, never loses entries the append did not contradict, and moves
    the commit index to min(leader commit, last new entry) at most.
    """
    dummy, ours, n_stored = log_spec
    split = min(split, len(ours))
    top_term = max([dummy[1], *(t for _, t in ours)])
    common = ours[:split]
    leader = common + [
        (dummy[0] + split + 1 + k, top_term + 1 + k // 2) for k in range(extra)
    ]  # the leader's terms after the split are all newer than ours
    committed = data.draw(st.integers(dummy[0], dummy[0] + split))
    log = build(dummy, ours, n_stored)
    log.commit_to(committed)
    before_last = log.last_index()
    # The leader probes somewhere at or after our commit index, within its log.
    leader_terms = {dummy[0]: dummy[1], **dict(leader)}
    prev = data.draw(st.integers(committed, dummy[0] + len(leader)))
    n = data.draw(st.integers(0, dummy[0] + len(leader) - prev))
    batch = tuple(ents([(i, leader_terms[i]) for i in range(prev + 1, prev + 1 + n)]))
    our_terms = {dummy[0]: dummy[1], **dict(ours)}
    result = log.maybe_append(prev, leader_terms[prev], leader_commit, batch)
    if our_terms.get(prev) != leader_terms[prev]:
        assert result is None  # the consistency check must fail
        assert log.committed == committed
        assert log_pairs(log) == [(i, t) for i, t in ours if i >= log.first_index()]
        return
    assert result == prev + n
    for i in range(log.first_index() - 1, result + 1):
        assert log.term(i) == leader_terms[i]
    if any(our_terms.get(e.index) != e.term for e in batch):
        assert log.last_index() == result  # our contradicted tail is gone
    else:
        assert log.last_index() == before_last  # nothing contradicted: nothing lost
    assert log.committed == max(committed, min(leader_commit, result))
