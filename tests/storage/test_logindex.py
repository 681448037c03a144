"""raftdb.storage.logindex: term runs, the entry cache and lazy garbage, against MemoryStorage."""

from __future__ import annotations

import pytest

from raftdb.codec import CorruptionError
from raftdb.raft.errors import CompactedError, UnavailableError, UsageError
from raftdb.raft.messages import Entry, entry_size
from raftdb.storage.logindex import LogIndex, load_log
from raftdb.storage.records import LogBounds, encode_entry
from raftdb.testing.conformance.workloads import StorageWorkload


def live_never_garbage(index: LogIndex) -> None:
    for lo, hi in index.take_garbage(None):
        assert hi < index.first_index or lo > index.last_index, (lo, hi)


@pytest.mark.parametrize("seed", range(5))
def test_follows_memory_storage(seed: int) -> None:
    """Bounds, terms and cached entries agree with the reference, step by step."""
    workload = StorageWorkload(seed)
    index = LogIndex(cache_entries=50, cache_bytes=2000)
    snapshot_index = 0
    for _ in range(400):
        op = workload.next_op()
        if op.kind == "save":
            index.check_save(op.entries, op.snapshot, snapshot_index)
            index.save(op.entries, op.snapshot)
            if op.snapshot is not None:
                snapshot_index = op.snapshot.metadata.index
        elif op.kind == "compact":
            index.compact(op.index, snapshot_index)
        else:
            snapshot_index = op.index
        workload.apply(op)
        model = workload.model
        assert (index.first_index, index.last_index) == (model.first_index(), model.last_index())
        for i in range(model.first_index() - 1, model.last_index() + 1):
            assert index.term(i) == model.term(i)
        first = index.cache_first
        cached = index.cached(first, model.last_index() + 1)
        assert cached == model.entries(first, model.last_index() + 1)
        assert len(cached) <= 50
        assert sum(map(entry_size, cached)) <= 2000 or len(cached) == 1
    live_never_garbage(index)


def test_reads_out_of_range() -> None:
    index = LogIndex(LogBounds(10, 2, 10))
    for i in range(11, 21):
        index.load(Entry(3, i))
    with pytest.raises(CompactedError):
        index.term(9)
    with pytest.raises(UnavailableError):
        index.term(21)
    with pytest.raises(CompactedError):
        index.check_range(10, 12)
    with pytest.raises(UnavailableError):
        index.check_range(11, 22)
    assert index.term(10) == 2
    assert index.term(20) == 3


def test_garbage_is_taken_in_bounded_slices() -> None:
    index = LogIndex()
    index.save([Entry(1, i) for i in range(1, 101)], None)
    index.compact(60, snapshot_index=80)
    taken = index.take_garbage(25)
    assert sum(hi - lo + 1 for lo, hi in taken) == 25
    rest = index.take_garbage(None)
    covered = sorted(i for lo, hi in taken + rest for i in range(lo, hi + 1))
    assert covered == list(range(1, 61))
    assert not index.has_garbage


def test_a_truncated_tail_that_is_rewritten_is_not_deleted() -> None:
    index = LogIndex()
    index.save([Entry(1, i) for i in range(1, 11)], None)
    index.save([Entry(2, 5)], None)  # 6..10 become garbage
    index.save([Entry(2, i) for i in range(6, 9)], None)  # 6..8 live again
    garbage = sorted(i for lo, hi in index.take_garbage(None) for i in range(lo, hi + 1))
    assert garbage == [9, 10]


def test_compaction_limits() -> None:
    index = LogIndex()
    index.save([Entry(1, i) for i in range(1, 11)], None)
    with pytest.raises(UsageError, match="snapshot"):
        index.compact(6, snapshot_index=5)
    assert not index.compact(0, snapshot_index=5)
    assert index.compact(5, snapshot_index=5)
    assert not index.compact(5, snapshot_index=5)


def test_load_log_finds_gaps_damage_and_leftovers() -> None:
    def stored(indexes: list[int]) -> list[tuple[int, bytes]]:
        return [(i, encode_entry(Entry(1, i, data=b"x"))) for i in indexes]

    def where(i: int) -> str:
        return f"file.db entry {i}"

    index, garbage = load_log(LogBounds(3, 1, 8), stored([1, 2, 3, 4, 5, 6, 7, 8, 9, 11]), where)
    assert (index.first_index, index.last_index) == (4, 8)
    assert garbage == [(1, 3), (9, 9), (11, 11)]
    with pytest.raises(CorruptionError, match="file.db entry 6: entry 6 is missing"):
        load_log(LogBounds(3, 1, 8), stored([4, 5, 7, 8]), where)
    with pytest.raises(CorruptionError, match="entries 7..8 are missing"):
        load_log(LogBounds(3, 1, 8), stored([4, 5, 6]), where)
    damaged = stored([4, 5])
    damaged[1] = (5, damaged[1][1][:-1] + b"y")
    with pytest.raises(CorruptionError, match="file.db entry 5: .*checksum"):
        load_log(LogBounds(3, 1, 5), damaged, where)
