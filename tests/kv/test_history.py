"""The watch history: bounded, trimmed by whole indexes, its floor, and its pages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.kv.applier import Applier
from raftdb.kv.changes import Change, History
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.kv.txn import TxnOp
from raftdb.raft.messages import ConfState, Entry
from tests.kv.machine import Log, delete_change, put_change
from tests.kv.test_commands import DictBackend


def changes_at(*counts: int, start: int = 1) -> list[Change]:
    """``counts[i]`` changes at index ``start + i``."""
    out: list[Change] = []
    for offset, count in enumerate(counts):
        index = start + offset
        out.extend(put_change(index, b"k%d-%d" % (index, n), b"", index, 0) for n in range(count))
    return out


def test_every_change_is_in_the_history_and_the_results() -> None:
    m, log = MemoryStateMachine(), Log()
    results = m.apply(
        [
            log.put(b"a", b"1"),
            log.put(b"a", b"2"),
            log.delete(b"a"),
            log.delete(b"a"),  # nothing to delete: no change
            log.put(b"b", b"1", if_mod=7),  # failed condition: no change
            log.noop(),
            log.txn(success=(TxnOp.put(b"c", b"1"), TxnOp.put(b"d", b"1"))),
        ]
    )
    want = [
        put_change(1, b"a", b"1", 1, 0),
        put_change(2, b"a", b"2", 1, 1),
        delete_change(3, b"a", 2),
        put_change(7, b"c", b"1", 7, 0),
        put_change(7, b"d", b"1", 7, 0),
    ]
    assert [c for r in results for c in getattr(r, "changes", ())] == want
    assert m.history(0, 100) == (0, want)


def test_the_history_keeps_the_last_changes_in_whole_indexes() -> None:
    m, log = MemoryStateMachine(watch_history=4), Log()
    m.apply([log.put(b"a"), log.put(b"b"), log.put(b"c")])
    assert m.history(0, 10) == (
        0,
        [
            put_change(1, b"a", b"v", 1, 0),
            put_change(2, b"b", b"v", 2, 0),
            put_change(3, b"c", b"v", 3, 0),
        ],
    )
    # A transaction of three: 6 changes, over 4: index 1 and 2 go (not half of 4).
    m.apply([log.txn(success=tuple(TxnOp.put(b"t%d" % n, b"") for n in range(3)))])
    floor, kept = m.history(0, 10)
    assert floor == 2
    assert [c.index for c in kept] == [3, 4, 4, 4]
    # One more put: index 3 goes; then 5 changes would remain, so index 4 goes too.
    m.apply([log.put(b"e"), log.put(b"f")])
    floor, kept = m.history(0, 10)
    assert (floor, [c.index for c in kept]) == (4, [5, 6])


def test_an_index_with_more_changes_than_the_limit_is_dropped_whole() -> None:
    applier, backend = Applier(history_limit=2), DictBackend()
    log = Log()
    out = applier.apply([log.put(b"a")], backend)
    assert (out.changes, out.trimmed, out.history_floor) == (
        [put_change(1, b"a", b"v", 1, 0)],
        [],
        0,
    )
    out = applier.apply(
        [log.txn(success=tuple(TxnOp.put(b"t%d" % n, b"") for n in range(3)))], backend
    )
    assert len(out.changes) == 3
    # The batch's own changes may be trimmed by the same batch: stored, then deleted.
    assert out.trimmed == [put_change(1, b"a", b"v", 1, 0), *out.changes]
    assert out.history_floor == 2
    assert applier.history_page(0, 10) == (2, [])


def test_a_zero_history_keeps_nothing_and_follows_the_changes() -> None:
    m, log = MemoryStateMachine(watch_history=0), Log()
    m.apply([log.put(b"a"), log.noop()])
    assert m.history(0, 10) == (1, [])
    m.apply([log.noop()])
    assert m.history(0, 10) == (1, [])


def test_pages_are_at_least_limit_long_and_never_split_an_index() -> None:
    history = History(100, changes_at(1, 3, 1, 2, 1))  # indexes 1..5
    floor, page = history.page(0, 1)
    assert (floor, [c.index for c in page]) == (0, [1])
    assert [c.index for c in history.page(0, 2)[1]] == [1, 2, 2, 2]
    assert [c.index for c in history.page(1, 1)[1]] == [2, 2, 2]
    assert [c.index for c in history.page(1, 3)[1]] == [2, 2, 2]
    assert [c.index for c in history.page(1, 4)[1]] == [2, 2, 2, 3]
    assert [c.index for c in history.page(3, 2)[1]] == [4, 4]
    assert [c.index for c in history.page(3, 100)[1]] == [4, 4, 5]
    assert history.page(5, 10) == (0, [])
    assert history.page(99, 10) == (0, [])
    with pytest.raises(ValueError, match="limit"):
        history.page(0, 0)


def test_a_page_below_the_floor_reports_the_floor() -> None:
    history = History(3, changes_at(1, 1, 1, 1))
    assert history.trim() == changes_at(1, start=1)
    assert history.floor == 1
    floor, page = history.page(0, 10)
    assert floor == 1  # the caller sees after < floor: compacted
    assert [c.index for c in page] == [2, 3, 4]
    assert len(history) == 3
    assert history.last_index == 4


def test_history_checks_its_input() -> None:
    with pytest.raises(ValueError, match="out of order"):
        History(10, changes_at(1, 1, start=5)[::-1])
    with pytest.raises(ValueError, match="below floor"):
        History(10, changes_at(1, start=5), floor=5)
    with pytest.raises(ValueError, match=">= 0"):
        History(-1)
    with pytest.raises(ValueError, match="history_limit"):
        Applier(history_limit=-1)
    assert History(10, floor=7).last_index == 7


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.integers(0, 4), max_size=40),
    st.integers(0, 8),
    st.lists(st.integers(1, 6), min_size=1, max_size=10),
)
def test_trimming_does_not_depend_on_the_batches(
    counts: list[int], limit: int, cuts: list[int]
) -> None:
    """The window is the longest suffix of all changes, cut at an index boundary,
    of at most ``limit`` changes, however the changes arrived; a replica fed
    with the batches (``advance``) is the same window."""
    everything = changes_at(*counts)
    whole = History(limit)
    whole.extend(everything)
    whole.trim()
    pieces, replica = History(limit), History(limit)
    trimmed: list[Change] = []
    pos, turn = 0, 0
    by_index = [[c for c in everything if c.index == i + 1] for i in range(len(counts))]
    while pos < len(by_index):
        size = cuts[turn % len(cuts)]
        batch = [c for group in by_index[pos : pos + size] for c in group]
        pieces.extend(batch)
        trimmed.extend(pieces.trim())
        replica.advance(batch, pieces.floor)
        pos, turn = pos + size, turn + 1
    assert pieces.changes() == whole.changes() == replica.changes()
    assert pieces.floor == whole.floor == replica.floor
    assert trimmed + pieces.changes() == everything
    assert (pieces.changes(), pieces.floor) == longest_aligned_suffix(everything, limit)


def longest_aligned_suffix(changes: list[Change], limit: int) -> tuple[list[Change], int]:
    """By brute force: the longest suffix that starts an index and has at most
    ``limit`` changes, and the index before it (0: none)."""
    for start in range(len(changes) + 1):
        aligned = start in (0, len(changes)) or changes[start - 1].index != changes[start].index
        if aligned and len(changes) - start <= limit:
            return changes[start:], changes[start - 1].index if start else 0
    raise AssertionError("the empty suffix always qualifies")


def test_reset_takes_a_window_and_the_next_batch_trims_a_longer_one() -> None:
    applier, backend = Applier(history_limit=2), DictBackend()
    window = changes_at(1, 1, 1, start=3)
    applier.reset(9, 1, ConfState((1,)), {}, [], history=window, history_floor=2)
    assert applier.history_page(0, 10) == (2, window)
    out = applier.apply([Entry(1, 10)], backend)
    assert (out.trimmed, out.history_floor) == (window[:1], 3)
    for bad, message in (
        (changes_at(1, start=10), "after 9"),
        (changes_at(1, start=2), "below floor"),
    ):
        with pytest.raises(ValueError, match=message):
            applier.reset(9, 1, ConfState((1,)), {}, [], history=bad, history_floor=2)
    assert applier.applied_index == 10
