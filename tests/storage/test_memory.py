"""MemoryStorage (``raftdb/storage/memory.py``): bounds, truncation, snapshots, compaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.raft.errors import CompactedError, UnavailableError, UsageError
from raftdb.raft.messages import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    entry_size,
    limit_size,
)
from raftdb.raft.storage import StorageReader
from raftdb.storage.memory import MemoryStorage
from raftdb.storage.protocol import Storage, StorageWriter

Pairs = Sequence[tuple[int, int]]
CONF = ConfState(voters=(1, 2, 3))


def ents(pairs: Pairs, data: bytes = b"") -> list[Entry]:
    return [Entry(term=t, index=i, data=data) for i, t in pairs]


def snap(index: int, term: int, conf: ConfState = CONF, data: bytes = b"") -> Snapshot:
    return Snapshot(SnapshotMetadata(index=index, term=term, conf_state=conf), data)


def base() -> MemoryStorage:
    """Compacted at (3, 3), holding entries 4, 5, 6 of terms 4, 5, 6 (etcd's storage tests)."""
    s = MemoryStorage()
    s.save(None, [], snap(3, 3))
    s.save(None, ents([(4, 4), (5, 5), (6, 6)]))
    return s


def state(s: MemoryStorage) -> tuple[object, ...]:
    """Everything observable, to check that a refused call changed nothing."""
    return (
        s.hard_state(),
        s.snapshot(),
        s.initial_state(),
        s.first_index(),
        s.last_index(),
        [(e.index, e.term, e.data) for e in s.all_entries()],
        s.term(s.first_index() - 1),
    )


def pairs(entries: Sequence[Entry]) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in entries]


def test_implements_the_storage_protocols() -> None:
    s = MemoryStorage()
    assert isinstance(s, StorageReader)
    assert isinstance(s, StorageWriter)
    assert isinstance(s, Storage)


def test_new_storage() -> None:
    s = MemoryStorage()
    assert s.initial_state() == (HardState(), ConfState())
    assert (s.first_index(), s.last_index()) == (1, 0)
    assert s.term(0) == 0
    assert s.entries(1, 1) == []
    assert s.snapshot().is_empty()
    with pytest.raises(UnavailableError):
        s.term(1)
    with pytest.raises(CompactedError):
        s.entries(0, 1)
    with pytest.raises(UnavailableError):
        s.entries(1, 2)


@pytest.mark.parametrize(
    ("index", "term"),
    [(2, None), (3, 3), (4, 4), (5, 5), (6, 6), (7, None)],
)
def test_term(index: int, term: int | None) -> None:
    s = base()
    if term is None:
        with pytest.raises(CompactedError if index < 3 else UnavailableError):
            s.term(index)
    else:
        assert s.term(index) == term


@pytest.mark.parametrize(
    ("lo", "hi", "max_bytes", "expected"),
    [
        (2, 6, None, CompactedError),
        (3, 4, None, CompactedError),  # the compaction point holds no entry
        (4, 4, None, []),
        (4, 5, None, [4]),
        (4, 6, None, [4, 5]),
        (4, 7, None, [4, 5, 6]),
        (5, 7, None, [5, 6]),
        (4, 8, None, UnavailableError),
        (7, 8, None, UnavailableError),
        # size limits (each entry here counts 16 bytes): at least one entry comes back
        (4, 7, 0, [4]),
        (4, 7, 15, [4]),
        (4, 7, 16, [4]),
        (4, 7, 31, [4]),
        (4, 7, 32, [4, 5]),
        (4, 7, 47, [4, 5]),
        (4, 7, 48, [4, 5, 6]),
        (4, 7, 1000, [4, 5, 6]),
    ],
)
def test_entries(lo: int, hi: int, max_bytes: int | None, expected: object) -> None:
    s = base()
    assert entry_size(Entry(1, 1)) == 16
    if isinstance(expected, list):
        assert [e.index for e in s.entries(lo, hi, max_bytes)] == expected
    else:
        assert isinstance(expected, type)
        assert issubclass(expected, Exception)
        with pytest.raises(expected):
            s.entries(lo, hi, max_bytes)


def test_entries_max_bytes_returns_one_oversized_entry() -> None:
    s = MemoryStorage()
    s.save(None, [Entry(1, 1, data=b"x" * 100), Entry(1, 2, data=b"y")])
    got = s.entries(1, 3, max_bytes=10)
    assert [e.index for e in got] == [1]
    assert got[0].data == b"x" * 100


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=8),
    max_bytes=st.one_of(st.none(), st.integers(0, 200)),
)
def test_limit_size_is_the_longest_fitting_prefix(sizes: list[int], max_bytes: int | None) -> None:
    entries = [Entry(1, i + 1, data=b"x" * n) for i, n in enumerate(sizes)]
    got = limit_size(entries, max_bytes)
    assert got == entries[: len(got)]
    assert got  # never empty for a non-empty input
    if max_bytes is None:
        assert got == entries
        return
    total = sum(entry_size(e) for e in got)
    assert len(got) == 1 or total <= max_bytes
    if len(got) < len(entries):
        assert total + entry_size(entries[len(got)]) > max_bytes


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        # the same entries: nothing changes
        ([(4, 4), (5, 5), (6, 6)], [(4, 4), (5, 5), (6, 6)]),
        # replace from the first entry with new terms
        ([(4, 4), (5, 6), (6, 6)], [(4, 4), (5, 6), (6, 6)]),
        ([(4, 7)], [(4, 7)]),
        # extend
        ([(4, 4), (5, 5), (6, 6), (7, 6)], [(4, 4), (5, 5), (6, 6), (7, 6)]),
        ([(7, 6)], [(4, 4), (5, 5), (6, 6), (7, 6)]),
        # an entry at a stored index replaces it and everything after it
        ([(5, 5)], [(4, 4), (5, 5)]),
        ([(5, 7), (6, 7), (7, 7), (8, 7)], [(4, 4), (5, 7), (6, 7), (7, 7), (8, 7)]),
        ([(6, 6)], [(4, 4), (5, 5), (6, 6)]),
    ],
)
def test_save_appends_and_truncates_conflicting_tails(entries: Pairs, expected: Pairs) -> None:
    s = base()
    s.save(None, ents(entries))
    assert pairs(s.all_entries()) == list(expected)
    assert s.first_index() == 4
    assert s.last_index() == expected[-1][0]
    assert s.term(3) == 3


def test_save_hard_state_only() -> None:
    s = base()
    s.save(HardState(term=6, vote=2, commit=5), [])
    assert s.initial_state() == (HardState(term=6, vote=2, commit=5), CONF)
    s.save(None, [])
    assert s.hard_state() == HardState(term=6, vote=2, commit=5)  # None: unchanged


@pytest.mark.parametrize(
    ("hard_state", "entries", "snapshot"),
    [
        (HardState(9, 9, 9), [(8, 6)], None),  # gap after the last index 6
        (HardState(9, 9, 9), [(3, 3), (4, 4)], None),  # starts at the compaction point
        (HardState(9, 9, 9), [(2, 3)], None),  # inside the compacted log
        (HardState(9, 9, 9), [], snap(3, 3)),  # snapshot not newer
        (HardState(9, 9, 9), [], snap(2, 2)),  # snapshot older
        (HardState(9, 9, 9), [(4, 4)], snap(3, 3)),
        (HardState(9, 9, 9), [(12, 7)], snap(10, 7)),  # gap after the new snapshot
        (HardState(9, 9, 9), [(10, 7)], snap(10, 7)),  # entries inside the snapshot
        (None, [(9, 9)], snap(10, 7)),
    ],
)
def test_refused_save_changes_nothing(
    hard_state: HardState | None, entries: Pairs, snapshot: Snapshot | None
) -> None:
    s = base()
    s.save(HardState(6, 1, 4), [])
    before = state(s)
    with pytest.raises(UsageError):
        s.save(hard_state, ents(entries), snapshot)
    assert state(s) == before


def test_save_with_snapshot_replaces_the_log() -> None:
    s = base()
    new_conf = ConfState(voters=(1, 2), learners=(4,))
    sn = snap(10, 7, new_conf, b"state")
    s.save(HardState(7, 0, 10), ents([(11, 7), (12, 8)]), sn)
    assert s.snapshot() == sn
    assert s.initial_state() == (HardState(7, 0, 10), new_conf)
    assert (s.first_index(), s.last_index()) == (11, 12)
    assert s.term(10) == 7
    assert pairs(s.all_entries()) == [(11, 7), (12, 8)]
    with pytest.raises(CompactedError):
        s.term(9)
    with pytest.raises(CompactedError):
        s.entries(10, 12)


def test_save_snapshot_inside_the_stored_log_drops_everything_after_it() -> None:
    s = base()
    s.save(None, [], snap(5, 5))
    assert (s.first_index(), s.last_index()) == (6, 5)
    assert s.term(5) == 5
    assert s.all_entries() == []


@pytest.mark.parametrize(
    "index",
    [
        3,  # not newer than the stored snapshot (at 3)
        2,
        7,  # beyond the last index
    ],
)
def test_create_snapshot_out_of_bounds_is_refused(index: int) -> None:
    s = base()
    before = state(s)
    with pytest.raises(UsageError):
        s.create_snapshot(index, CONF)
    assert state(s) == before


@pytest.mark.parametrize(("index", "term"), [(4, 4), (5, 5), (6, 6)])
def test_create_snapshot_records_the_term_and_keeps_the_log(index: int, term: int) -> None:
    s = base()
    conf = ConfState(voters=(1,))
    sn = s.create_snapshot(index, conf, b"data")
    assert sn == Snapshot(SnapshotMetadata(index, term, conf), b"data")
    assert s.snapshot() == sn
    assert s.initial_state()[1] == conf
    # The log itself is untouched until compact().
    assert pairs(s.all_entries()) == [(4, 4), (5, 5), (6, 6)]
    assert s.first_index() == 4


def test_create_snapshot_must_move_forward() -> None:
    s = base()
    s.create_snapshot(5, CONF)
    with pytest.raises(UsageError):
        s.create_snapshot(5, CONF)
    with pytest.raises(UsageError):
        s.create_snapshot(4, CONF)
    s.create_snapshot(6, CONF)
    assert s.snapshot().metadata.index == 6


@pytest.mark.parametrize(
    ("index", "first", "term_at_index"),
    [
        (2, 4, None),  # below the compaction point: nothing to do
        (3, 4, 3),  # at the compaction point: nothing to do
        (4, 5, 4),
        (5, 6, 5),
        (6, 7, 6),  # everything: the log is empty but term(6) still answers
    ],
)
def test_compact_keeps_the_term_of_the_compaction_point(
    index: int, first: int, term_at_index: int | None
) -> None:
    s = base()
    s.create_snapshot(6, CONF)
    s.compact(index)
    assert s.first_index() == first
    assert s.last_index() == 6
    assert s.term(first - 1) == {4: 3, 5: 4, 6: 5, 7: 6}[first]
    if term_at_index is not None:
        assert s.term(index) == term_at_index
    with pytest.raises(CompactedError):
        s.term(first - 2)
    with pytest.raises(CompactedError):
        s.entries(first - 1, 7)
    assert [e.index for e in s.entries(first, 7)] == list(range(first, 7))


def test_compact_beyond_the_snapshot_is_refused() -> None:
    s = base()
    before = state(s)
    with pytest.raises(UsageError):
        s.compact(4)  # the snapshot is at 3
    assert state(s) == before
    s.create_snapshot(5, CONF)
    with pytest.raises(UsageError):
        s.compact(6)
    s.compact(5)
    assert s.first_index() == 6


def test_compact_then_append() -> None:
    s = base()
    s.create_snapshot(5, CONF)
    s.compact(5)
    s.save(None, ents([(6, 7), (7, 7)]))
    assert pairs(s.all_entries()) == [(6, 7), (7, 7)]
    assert s.term(5) == 5
    with pytest.raises(UsageError):
        s.save(None, ents([(5, 7)]))


def test_compact_past_a_truncated_log_raises_usage_error() -> None:
    s = MemoryStorage()
    s.save(None, ents([(i, 1) for i in range(1, 11)]))
    s.create_snapshot(8, CONF)
    s.save(None, ents([(6, 2)]))  # allowed by save's contract: starts at >= first_index()
    before = state(s)
    with pytest.raises(UsageError):
        s.compact(8)
    assert state(s) == before


def test_save_refuses_non_consecutive_entries() -> None:
    s = base()
    before = state(s)
    with pytest.raises(UsageError):
        s.save(HardState(9, 9, 9), ents([(7, 6), (9, 6)]))
    with pytest.raises(UsageError):
        s.save(None, ents([(5, 6), (5, 6)]))
    assert state(s) == before


def test_close() -> None:
    s = MemoryStorage()
    assert not s.closed
    s.close()
    assert s.closed


# -- against a list model ------------------------------------------------------------


@dataclass
class Model:
    """The storage as a compaction point, a list of entries and a snapshot position."""

    dummy: tuple[int, int] = (0, 0)
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot = field(default_factory=Snapshot)
    hard_state: HardState = field(default_factory=HardState)

    @property
    def first(self) -> int:
        return self.dummy[0] + 1

    @property
    def last(self) -> int:
        return self.dummy[0] + len(self.entries)

    def term(self, index: int) -> int | None:
        if index == self.dummy[0]:
            return self.dummy[1]
        if self.first <= index <= self.last:
            return self.entries[index - self.first].term
        return None


def check(s: MemoryStorage, m: Model, lo: int, hi: int, max_bytes: int | None) -> None:
    assert (s.first_index(), s.last_index()) == (m.first, m.last)
    assert s.snapshot() == m.snapshot
    assert s.initial_state() == (m.hard_state, m.snapshot.metadata.conf_state)
    assert s.all_entries() == m.entries
    for index in range(m.dummy[0] - 2, m.last + 3):
        want = m.term(index)
        if want is None:
            with pytest.raises(CompactedError if index < m.dummy[0] else UnavailableError):
                s.term(index)
        else:
            assert s.term(index) == want
    if lo < m.first:
        with pytest.raises(CompactedError):
            s.entries(lo, hi, max_bytes)
    elif hi > m.last + 1:
        with pytest.raises(UnavailableError):
            s.entries(lo, hi, max_bytes)
    elif lo <= hi:
        want_entries = limit_size(m.entries[lo - m.first : hi - m.first], max_bytes)
        assert s.entries(lo, hi, max_bytes) == want_entries


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n_ops=st.integers(1, 25))
def test_memory_storage_matches_list_model(data: st.DataObject, n_ops: int) -> None:
    s, m = MemoryStorage(), Model()
    conf_no = 0
    for _ in range(n_ops):
        op = data.draw(st.sampled_from(["save", "save", "save", "snap", "compact", "save_snap"]))
        hs = data.draw(st.one_of(st.none(), st.builds(HardState, st.integers(0, 9))))
        if op == "save":
            # From the compacted region (refused), past the snapshot, or leaving a gap
            # (refused). Saves never reach below the snapshot index: the core never
            # overwrites committed (snapshotted) entries.
            start = data.draw(
                st.one_of(
                    st.just(m.dummy[0]),
                    st.integers(max(m.first, m.snapshot.metadata.index + 1), m.last + 2),
                )
            )
            n = data.draw(st.integers(0, 4))
            term = data.draw(st.integers(1, 9))
            batch = [
                Entry(term, start + k, data=b"x" * data.draw(st.integers(0, 20))) for k in range(n)
            ]
            valid = not batch or (m.first <= start <= m.last + 1)
            if not valid:
                with pytest.raises(UsageError):
                    s.save(hs, batch)
            else:
                s.save(hs, batch)
                if batch:
                    m.entries = m.entries[: start - m.first] + batch
                if hs is not None:
                    m.hard_state = hs
        elif op == "snap":
            index = data.draw(st.integers(max(0, m.dummy[0] - 1), m.last + 1))
            conf_no += 1
            conf = ConfState(voters=(conf_no,))
            if index <= m.snapshot.metadata.index or index > m.last:
                with pytest.raises(UsageError):
                    s.create_snapshot(index, conf)
            else:
                at = m.term(index)
                assert at is not None
                m.snapshot = Snapshot(SnapshotMetadata(index, at, conf))
                assert s.create_snapshot(index, conf) == m.snapshot
        elif op == "compact":
            index = data.draw(st.integers(max(0, m.dummy[0] - 1), m.last + 1))
            if index <= m.dummy[0]:
                s.compact(index)
            elif index > m.snapshot.metadata.index:
                with pytest.raises(UsageError):
                    s.compact(index)
            else:
                at = m.term(index)
                assert at is not None
                s.compact(index)
                m.entries = m.entries[index - m.first + 1 :]
                m.dummy = (index, at)
        else:
            index = data.draw(st.integers(m.snapshot.metadata.index, m.snapshot.metadata.index + 6))
            term = data.draw(st.integers(1, 9))
            after_gap = data.draw(st.sampled_from([1, 1, 2]))
            batch = ents(
                [(index + after_gap + k, term) for k in range(data.draw(st.integers(0, 2)))]
            )
            conf_no += 1
            sn = snap(index, term, ConfState(voters=(conf_no,)))
            if index <= m.snapshot.metadata.index or (batch and after_gap != 1):
                with pytest.raises(UsageError):
                    s.save(hs, batch, sn)
            else:
                s.save(hs, batch, sn)
                m.snapshot, m.dummy, m.entries = sn, (index, term), list(batch)
                if hs is not None:
                    m.hard_state = hs
        lo = data.draw(st.integers(max(0, m.dummy[0] - 1), m.last + 2))
        hi = data.draw(st.integers(lo, m.last + 2))
        max_bytes = data.draw(st.one_of(st.none(), st.integers(0, 80)))
        check(s, m, lo, hi, max_bytes)
