"""Determinism: the same entries cut into different batches give the same results and state.

Every node applies the same log but its batches are cut wherever its apply
loop happened to be; results, keys, leases, the history (with its floor) and
the snapshot bytes must not depend on the cuts.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.kv.applier import AppliedBatch, Applier
from raftdb.kv.changes import Change, Lease
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.raft.messages import Entry
from raftdb.testing.conformance.workloads import EntryWorkload
from tests.kv.test_commands import DictBackend


def workload(seed: int, total: int) -> list[Entry]:
    return [
        e
        for batch in EntryWorkload(seed, keys=12, txns=0.3, leases=0.3).batches(total)
        for e in batch
    ]


def cut(entries: list[Entry], sizes: list[int]) -> list[list[Entry]]:
    out, pos, turn = [], 0, 0
    while pos < len(entries):
        size = sizes[turn % len(sizes)]
        out.append(entries[pos : pos + size])
        pos, turn = pos + size, turn + 1
    return out


def run(
    entries: list[Entry], sizes: list[int], limit: int
) -> tuple[list[object], list[Change], list[Change], dict[int, Lease], Applier, DictBackend]:
    """Apply in batches of ``sizes``; also what a plugin storing each batch's
    reports (changes, trimmed, leases) would hold."""
    applier, backend = Applier(history_limit=limit), DictBackend()
    results: list[object] = []
    changes: list[Change] = []
    trimmed: list[Change] = []
    stored: dict[int, Lease] = {}
    for batch in cut(entries, sizes):
        out: AppliedBatch = applier.apply(batch, backend)
        results.extend(out.results)
        changes.extend(out.changes)
        trimmed.extend(out.trimmed)
        for lease_id, lease in out.leases.items():
            if lease is None:
                del stored[lease_id]  # reported ended only if reported before
            else:
                stored[lease_id] = lease
        assert out.history_floor == applier.history_floor
    return results, changes, trimmed, stored, applier, backend


@settings(deadline=None, max_examples=25)
@given(
    st.integers(0, 10_000),
    st.lists(st.integers(1, 300), min_size=1, max_size=6),
    st.sampled_from([0, 3, 40, 50_000]),
)
def test_batch_cuts_do_not_change_anything(seed: int, sizes: list[int], limit: int) -> None:
    entries = workload(seed, 600)
    whole = run(entries, [len(entries)], limit)
    split = run(entries, sizes, limit)
    results, changes, trimmed, stored, applier, backend = split
    assert results == whole[0]
    assert changes == whole[1]
    assert [c for r in results for c in getattr(r, "changes", ())] == changes
    assert trimmed == whole[2]  # what a plugin deletes from its stored history
    assert applier.leases() == whole[4].leases()
    # The leases a plugin stored from the reports are the Applier's, however cut.
    assert sorted(stored.values(), key=lambda lease: lease.id) == applier.leases()
    assert stored == whole[3]
    assert applier.history_page(0, 1 << 40) == whole[4].history_page(0, 1 << 40)
    assert trimmed + applier.history.changes() == changes
    assert backend.data == whole[5].data
    # Every key on a lease exists, and is on one lease only.
    on_leases = [key for lease in applier.leases() for key in lease.keys]
    assert len(on_leases) == len(set(on_leases))
    assert all(key in backend.data for key in on_leases)


@settings(deadline=None, max_examples=10)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 200), min_size=1, max_size=4))
def test_two_nodes_snapshots_at_one_index_are_byte_identical(seed: int, sizes: list[int]) -> None:
    entries = workload(seed, 500)
    a, b = MemoryStateMachine(watch_history=60), MemoryStateMachine(watch_history=60)
    a.apply(entries)
    for batch in cut(entries, sizes):
        b.apply(batch)
    stream = b"".join(a.snapshot(chunk_size=1000))
    assert stream == b"".join(b.snapshot(chunk_size=1000))
    # And a third node restored from it snapshots the same bytes again.
    c = MemoryStateMachine(watch_history=60)
    c.restore([stream])
    assert b"".join(c.snapshot(chunk_size=1000)) == stream
    assert c.history(0, 1 << 40) == a.history(0, 1 << 40)
    assert c.leases() == a.leases()
