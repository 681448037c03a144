"""The not-yet-saved tail of the log (``raftdb/raft/unstable.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.raft.messages import Entry, Snapshot, SnapshotMetadata
from raftdb.raft.unstable import Unstable


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    """Entries from ``(index, term)`` pairs."""
    return [Entry(term=t, index=i) for i, t in pairs]


def snap(index: int, term: int) -> Snapshot:
    return Snapshot(SnapshotMetadata(index=index, term=term))


def make(offset: int, entries: list[Entry], snapshot: Snapshot | None = None) -> Unstable:
    u = Unstable(offset)
    u.entries = list(entries)
    u.snapshot = snapshot
    return u


def pairs(entries: list[Entry]) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in entries]


@pytest.mark.parametrize(
    ("offset", "entries", "snapshot", "first", "last"),
    [
        (5, [], None, None, None),
        (5, ents((5, 1)), None, None, 5),
        (5, ents((5, 1), (6, 1)), None, None, 6),
        (5, [], snap(4, 1), 5, 4),
        (5, ents((5, 1)), snap(4, 1), 5, 5),
    ],
)
def test_maybe_first_and_last_index(
    offset: int,
    entries: list[Entry],
    snapshot: Snapshot | None,
    first: int | None,
    last: int | None,
) -> None:
    u = make(offset, entries, snapshot)
    assert u.maybe_first_index() == first
    assert u.maybe_last_index() == last


@pytest.mark.parametrize(
    ("offset", "entries", "snapshot", "index", "term"),
    [
        (5, ents((5, 1)), None, 5, 1),
        (5, ents((5, 1)), None, 6, None),  # past the end
        (5, ents((5, 1)), None, 4, None),  # before the offset, no snapshot
        (5, ents((5, 1)), snap(4, 2), 5, 1),
        (5, ents((5, 1)), snap(4, 2), 4, 2),  # the snapshot's own index
        (5, ents((5, 1)), snap(4, 2), 3, None),  # before the snapshot
        (5, ents((5, 1)), snap(4, 2), 6, None),
        (5, [], snap(4, 2), 4, 2),
        (5, [], snap(4, 2), 5, None),
        (5, [], None, 5, None),
    ],
)
def test_maybe_term(
    offset: int, entries: list[Entry], snapshot: Snapshot | None, index: int, term: int | None
) -> None:
    assert make(offset, entries, snapshot).maybe_term(index) == term


@pytest.mark.parametrize(
    ("offset", "entries", "snapshot", "index", "term", "new_offset", "remaining"),
    [
        (5, ents((5, 1)), None, 5, 1, 6, 0),
        (5, ents((5, 1), (6, 1)), None, 5, 1, 6, 1),
        (5, ents((5, 1), (6, 1)), None, 6, 1, 7, 0),
        (5, ents((5, 1), (6, 2)), None, 6, 1, 5, 2),  # the entry was replaced meanwhile
        (5, ents((5, 1)), None, 4, 1, 5, 1),  # before the offset
        (5, ents((5, 1)), None, 6, 1, 5, 1),  # not ours
        (5, [], None, 5, 1, 5, 0),
        # With a snapshot: its index is below the offset and never "stabilized" this way.
        (5, ents((5, 1)), snap(4, 1), 4, 1, 5, 1),
        (5, ents((5, 2)), snap(4, 1), 5, 2, 6, 0),
        (5, ents((5, 2)), snap(4, 1), 5, 1, 5, 1),
    ],
)
def test_stable_to(
    offset: int,
    entries: list[Entry],
    snapshot: Snapshot | None,
    index: int,
    term: int,
    new_offset: int,
    remaining: int,
) -> None:
    u = make(offset, entries, snapshot)
    u.stable_to(index, term)
    assert u.offset == new_offset
    assert len(u.entries) == remaining
    if u.entries:
        assert u.entries[0].index == u.offset


def test_stable_snap_to_only_drops_the_same_snapshot() -> None:
    u = make(5, [], snap(4, 1))
    u.stable_snap_to(3)
    assert u.maybe_first_index() == 5  # still there
    u.stable_snap_to(4)
    assert u.snapshot is None
    u.stable_snap_to(4)  # nothing left: harmless
    assert u.maybe_first_index() is None


def test_restore_replaces_everything() -> None:
    u = make(5, ents((5, 1), (6, 1)))
    s = snap(10, 3)
    u.restore(s)
    assert u.offset == 11
    assert u.entries == []
    assert u.snapshot == s
    assert u.maybe_last_index() == 10
    assert u.maybe_first_index() == 11
    assert u.maybe_term(10) == 3


@pytest.mark.parametrize(
    ("offset", "entries", "append", "new_offset", "expected"),
    [
        # append to the end
        (5, [(5, 1)], [(6, 1), (7, 1)], 5, [(5, 1), (6, 1), (7, 1)]),
        (5, [], [(5, 1)], 5, [(5, 1)]),
        # replace the unstable entries from the offset
        (5, [(5, 1)], [(5, 2), (6, 2)], 5, [(5, 2), (6, 2)]),
        # replace from before the offset (reaches into what Storage holds)
        (5, [(5, 1)], [(4, 2), (5, 2), (6, 2)], 4, [(4, 2), (5, 2), (6, 2)]),
        (5, [], [(3, 2)], 3, [(3, 2)]),
        # truncate inside the unstable entries, then append
        (5, [(5, 1), (6, 1), (7, 1)], [(6, 2)], 5, [(5, 1), (6, 2)]),
        (5, [(5, 1), (6, 1), (7, 1)], [(7, 2), (8, 2)], 5, [(5, 1), (6, 1), (7, 2), (8, 2)]),
    ],
)
def test_truncate_and_append(
    offset: int,
    entries: list[tuple[int, int]],
    append: list[tuple[int, int]],
    new_offset: int,
    expected: list[tuple[int, int]],
) -> None:
    u = make(offset, ents(*entries))
    u.truncate_and_append(ents(*append))
    assert u.offset == new_offset
    assert pairs(u.entries) == expected


def test_truncate_and_append_does_not_alias_the_callers_list() -> None:
    u = Unstable(5)
    batch = ents((5, 1))
    u.truncate_and_append(batch)
    batch.append(Entry(term=1, index=6))
    assert pairs(u.entries) == [(5, 1)]


def test_slice() -> None:
    u = make(5, ents((5, 1), (6, 1), (7, 2)))
    assert pairs(u.slice(5, 8)) == [(5, 1), (6, 1), (7, 2)]
    assert pairs(u.slice(6, 7)) == [(6, 1)]
    assert u.slice(7, 7) == []


@st.composite
def unstable_histories(draw: st.DrawFn) -> tuple[int, list[list[Entry]]]:
    """A starting offset and batches whose first index never leaves a gap.

    A batch starts anywhere from a little before the current offset (truncating into
    Storage) to just past the current end; terms within the log never decrease.
    """
    offset = draw(st.integers(1, 10))
    lo, end, term = offset, offset, 1
    batches: list[list[Entry]] = []
    for _ in range(draw(st.integers(1, 8))):
        first = draw(st.integers(max(1, lo - 3), end))
        term += draw(st.integers(0, 1))
        n = draw(st.integers(1, 4))
        batches.append([Entry(term=term, index=first + k) for k in range(n)])
        lo = min(lo, first)
        end = first + n
    return offset, batches


@settings(max_examples=200, deadline=None)
@given(history=unstable_histories(), data=st.data())
def test_truncate_and_append_and_slice_match_list_model(
    history: tuple[int, list[list[Entry]]], data: st.DataObject
) -> None:
    offset, batches = history
    u = Unstable(offset)
    model_offset, model = offset, []  # model[i] is the entry at model_offset + i
    for batch in batches:
        u.truncate_and_append(batch)
        first = batch[0].index
        if first <= model_offset:
            model_offset, model = first, list(batch)
        else:
            model = model[: first - model_offset] + list(batch)
        assert u.offset == model_offset
        assert pairs(u.entries) == pairs(model)
        assert u.maybe_last_index() == model_offset + len(model) - 1
        end = model_offset + len(model)
        for index in range(model_offset - 2, end + 2):
            want = model[index - model_offset].term if model_offset <= index < end else None
            assert u.maybe_term(index) == want
        lo = data.draw(st.integers(model_offset, end))
        hi = data.draw(st.integers(lo, end))
        assert pairs(u.slice(lo, hi)) == pairs(model[lo - model_offset : hi - model_offset])
    # Saving everything drops everything, and the offset moves past it.
    last = u.entries[-1]
    u.stable_to(last.index, last.term)
    assert u.entries == []
    assert u.offset == last.index + 1
