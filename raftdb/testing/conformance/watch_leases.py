"""Conformance checks of transactions, leases and the watch history.

Part of :data:`~raftdb.testing.conformance.state_machine.STATE_MACHINE_CHECKS`.
What they hold a plugin to: a transaction's reads see the writes of the
batch before it and of its own branch (``KVBackend.read``/``scan``); leases
and the history window (with its floor) are state like the keys: the same
as the reference's after any workload however it is batched, carried by
snapshots, and kept across close/reopen by a durable plugin; ``history`` and
the lease reads never see part of a batch; the ``watch_history`` constructor
argument bounds the window.
"""

from __future__ import annotations

import struct
import threading
import zlib
from typing import Any

import msgpack

from raftdb.kv.changes import Change, Lease
from raftdb.kv.commands import CommandStatus, KeyValue
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.kv.txn import CmpOp, Compare, Target, TxnOp, TxnOpKind, TxnOpResult, TxnResult
from raftdb.raft.messages import Entry
from raftdb.testing.conformance.checks import Check, CheckContext, expect, expect_equal, registry
from raftdb.testing.conformance.machines import (
    ALL_HISTORY,
    Log,
    delete_change,
    digest,
    kv_result,
    put_change,
)
from raftdb.testing.conformance.workloads import EntryWorkload

__all__ = ["WATCH_LEASE_CHECKS"]

#: The checks of this module, in order.
WATCH_LEASE_CHECKS: list[Check] = []
_register = registry(WATCH_LEASE_CHECKS)

_OK = CommandStatus.OK


def _entries(seed: int, total: int, *, txns: float = 0.05, leases: float = 0.1) -> list[Entry]:
    workload = EntryWorkload(seed, keys=24, txns=txns, leases=leases)
    return [e for batch in workload.batches(total) for e in batch]


@_register()
def check_transactions(ctx: CheckContext) -> None:
    """A transaction's compares see the state before it; its branch's reads see
    the earlier writes of the batch and of the branch; a missing lease aborts it."""
    m, log = ctx.open(), Log()
    m.apply([log.put(b"a", b"1"), log.put(b"p/2", b"x"), log.put(b"p/3", b"y")])
    # In one batch with the transaction: writes before it that its reads must see.
    before = [log.put(b"p/1", b"z"), log.delete(b"p/3")]
    compare = (
        Compare(b"a", Target.VALUE, CmpOp.EQ, b"1"),
        Compare(b"a", Target.MOD_INDEX, CmpOp.LT, 2),
        Compare(b"nope", Target.EXISTS, CmpOp.EQ, False),
    )
    txn = log.txn(
        compare,
        (
            TxnOp.list(b"p/"),
            TxnOp.put(b"p/0", b"new"),
            TxnOp.put(b"a", b"2"),
            TxnOp.put(b"a", b"3"),
            TxnOp.get(b"a"),
            TxnOp.delete(b"p/2"),
            TxnOp.delete(b"p/9"),
            TxnOp.list(b"p/", 1),
            TxnOp.list(b"p/"),
        ),
        (TxnOp.put(b"failed", b"1"),),
    )
    i = txn.index
    results = m.apply([*before, txn])
    result = results[-1]
    expect_equal(result.status, _OK, "status of a transaction")
    expect_equal((result.mod_index, result.duplicate), (i, False), "index of a transaction")
    p1, p2, p0 = (
        KeyValue(b"p/1", b"z", 4, 4),
        KeyValue(b"p/2", b"x", 2, 2),
        KeyValue(b"p/0", b"new", i, i),
    )
    want = TxnResult(
        True,
        (
            TxnOpResult(TxnOpKind.LIST, kvs=(p1, p2)),
            TxnOpResult(TxnOpKind.PUT, create_index=i, mod_index=i),
            TxnOpResult(TxnOpKind.PUT, create_index=1, mod_index=i, prev_mod_index=1),
            TxnOpResult(TxnOpKind.PUT, create_index=1, mod_index=i, prev_mod_index=i),
            TxnOpResult(TxnOpKind.GET, found=True, kv=KeyValue(b"a", b"3", 1, i)),
            TxnOpResult(TxnOpKind.DELETE, found=True, prev_mod_index=2),
            TxnOpResult(TxnOpKind.DELETE),
            TxnOpResult(TxnOpKind.LIST, kvs=(p0,), more=True),
            TxnOpResult(TxnOpKind.LIST, kvs=(p0, p1)),
        ),
    )
    expect_equal(result.txn, want, "the results of a transaction")
    changes = (
        put_change(i, b"p/0", b"new", i, 0),
        put_change(i, b"a", b"2", 1, 1),
        put_change(i, b"a", b"3", 1, i),
        delete_change(i, b"p/2", 2),
    )
    expect_equal(result.changes, changes, "the changes of a transaction")
    expect_equal([kv.key for kv in m.range()], [b"a", b"p/0", b"p/1"], "keys after a transaction")
    # The failure branch, and a lease that does not exist.
    failed = kv_result(m, log.txn(compare, (), (TxnOp.get(b"p/0"),)))
    expect_equal(failed.txn, TxnResult(False, (TxnOpResult(TxnOpKind.GET, True, p0),)), "failure")
    state = digest(m)
    missing = kv_result(m, log.txn((), (TxnOp.put(b"b", b"1"), TxnOp.put(b"c", b"1", lease=99))))
    expect_equal(missing.status, CommandStatus.LEASE_NOT_FOUND, "a put on a lease that is not")
    expect_equal(missing.changes, (), "changes of an aborted transaction")
    expect_equal(digest(m)[3:5], state[3:5], "keys and leases after an aborted transaction")


@_register()
def check_leases(ctx: CheckContext) -> None:
    """Grants name leases by index; puts attach and detach keys; keep-alives renew;
    revoke and expiry (unless renewed since) delete the keys, in key order."""
    m, log = ctx.open(), Log()
    grant = log.grant(30)
    expect_equal(kv_result(m, grant).lease, grant.index, "a lease's id is its grant's index")
    other = kv_result(m, log.grant(5)).lease
    m.apply([log.put(k, b"v", lease=grant.index) for k in (b"c", b"a", b"b")])
    m.apply([log.put(b"d", b"v", lease=other), log.put(b"b", b"w", lease=other)])
    m.apply([log.put(b"d", b"x"), log.delete(b"c")])  # detach: a plain put, a delete
    a = grant.index
    expect_equal(m.lease(a), Lease(a, 30, a, frozenset({b"a"})), "lease() after attaching")
    expect_equal(m.lease(other), Lease(other, 5, other, frozenset({b"b"})), "the other lease")
    expect_equal(m.lease(999), None, "lease() of an unknown lease")
    expect_equal([x.id for x in m.leases()], [a, other], "leases() by id")
    missing = kv_result(m, log.put(b"e", b"v", lease=999))
    expect_equal(missing.status, CommandStatus.LEASE_NOT_FOUND, "a put on an unknown lease")
    expect_equal(m.get(b"e"), None, "a put on an unknown lease writes nothing")
    renewal = log.keepalive(other)
    expect_equal(kv_result(m, renewal).ttl, 5, "a keep-alive's ttl")
    expect_equal(
        m.lease(other), Lease(other, 5, renewal.index, frozenset({b"b"})), "after a keep-alive"
    )
    stale = kv_result(m, log.expire(other, other))
    expect_equal(stale.status, CommandStatus.CONDITION_FAILED, "an expiry of a renewed lease")
    expect(m.get(b"b") is not None, "a renewed lease keeps its keys")
    expiry = log.expire(other, renewal.index)
    expired = kv_result(m, expiry)
    expect_equal(expired.changes, (delete_change(expiry.index, b"b", 7),), "an expiry's changes")
    attach = log.put(b"z", b"v", lease=a)
    revoke = log.revoke(a)
    m.apply([attach, revoke])
    revoked = m.history(revoke.index - 1, 10)[1]
    want = [
        delete_change(revoke.index, b"a", 4),
        delete_change(revoke.index, b"z", revoke.index - 1),
    ]
    expect_equal(revoked, want, "a revoke's changes, in key order")
    expect_equal((m.leases(), m.get(b"a"), m.get(b"z")), ([], None, None), "after a revoke")
    expect_equal(m.get(b"d"), KeyValue(b"d", b"x", 6, 8), "a detached key outlives its lease")
    for entry in (log.keepalive(a), log.revoke(a), log.expire(a, a)):
        expect_equal(kv_result(m, entry).status, CommandStatus.LEASE_NOT_FOUND, "an ended lease")


@_register()
def check_history(ctx: CheckContext) -> None:
    """history(after, limit): at least ``limit`` changes, never half an index, and the
    floor; ``watch_history`` bounds the window, which loses whole indexes only."""
    m, log = ctx.open(watch_history=6), Log()
    want: list[Change] = []
    for entry in (
        log.put(b"a", b"1"),
        log.txn((), tuple(TxnOp.put(b"t%d" % n, b"") for n in range(3))),
        log.delete(b"nothing"),
        log.put(b"b", b"1"),
        log.delete(b"a"),
    ):
        want.extend(kv_result(m, entry).changes)
    expect_equal([c.index for c in want], [1, 2, 2, 2, 4, 5], "indexes of the changes")
    expect_equal(m.history(0, ALL_HISTORY), (0, want), "the whole history")
    for after, limit, count in ((0, 1, 1), (0, 2, 4), (1, 1, 3), (1, 3, 3), (1, 4, 4), (5, 9, 0)):
        page = [c for c in want if c.index > after][:count]
        expect_equal(m.history(after, limit), (0, page), f"history({after}, {limit})")
    # Two more changes: index 1 (one change) and index 2 (three) must go whole.
    m.apply([log.put(b"c", b"1"), log.put(b"d", b"1")])
    floor, kept = m.history(0, ALL_HISTORY)
    expect_equal((floor, [c.index for c in kept]), (2, [4, 5, 6, 7]), "history after trimming")
    expect_equal(m.history(2, 1), (2, kept[:1]), "history() from the floor")
    expect_equal(m.history(1, 1)[0], 2, "history() below the floor reports the floor")


@_register()
def check_watch_state_in_snapshots(ctx: CheckContext) -> None:
    """A snapshot carries the leases and the history window with its floor; the
    restored machine (and the reference) continue alike, lease expiry included."""
    m = ctx.open("a", watch_history=200)
    entries = _entries(41, 2400, txns=0.2, leases=0.3)
    for start in range(0, 2000, 150):
        m.apply(entries[start : min(start + 150, 2000)])
    expect(m.history(0, ALL_HISTORY)[0] > 0, "the workload trims the history")
    expect(any(lease.keys for lease in m.leases()), "the workload leaves keys on leases")
    chunks = list(m.snapshot(chunk_size=4096))
    b = ctx.open("b", watch_history=200)
    b.restore(chunks)
    reference = MemoryStateMachine(watch_history=200)
    reference.restore(chunks)
    expect(digest(b) == digest(m), "the restored state (leases, history) differs from the source")
    expect(digest(reference) == digest(m), "the reference restores a different state")
    more = entries[2000:]
    results = m.apply(more)
    expect_equal(b.apply(more), results, "results after restore")
    expect_equal(reference.apply(more), results, "the reference's results after restore")
    log = Log(m.applied_index)
    ends = [log.revoke(lease.id) for lease in m.leases()]  # every lease ends, keys with it
    results = m.apply(ends)
    expect_equal(b.apply(ends), results, "revokes after restore")
    expect_equal(reference.apply(ends), results, "the reference's revokes after restore")
    expect(digest(b) == digest(m), "state after revoking every lease")
    c = ctx.open("c", watch_history=200)
    c.restore(list(reference.snapshot(chunk_size=100)))
    expect(digest(c) == digest(reference), "restore from the reference's stream")


@_register()
def check_format_1_snapshot(ctx: CheckContext) -> None:
    """A format-1 stream (from before leases and the history) restores: no leases,
    an empty history whose floor is the snapshot's index."""
    m = ctx.open()
    m.restore([_format_1_stream(20, [(b"a", b"1", 3, 7), (b"b", b"2", 9, 9)])])
    expect_equal(m.get(b"a"), KeyValue(b"a", b"1", 3, 7), "a key of a format-1 snapshot")
    expect_equal((m.leases(), m.history(0, 10)), ([], (20, [])), "leases and history")
    m.apply([Log(20).put(b"a", b"2")])
    expect_equal(m.history(20, 10), (20, [put_change(21, b"a", b"2", 3, 7)]), "history after")


def _format_1_stream(index: int, keys: list[tuple[bytes, bytes, int, int]]) -> bytes:
    """A snapshot stream as format 1 wrote it (magic, header, keys, end)."""

    def frame(kind: int, payload: bytes) -> bytes:
        return struct.pack(">BII", kind, len(payload), zlib.crc32(payload, kind)) + payload

    pack = msgpack.Packer(use_bin_type=True).pack
    header = pack([1, index, 1, [[1], []], [[1, "http://127.0.0.1:1"]]])
    body = b"".join(pack(list(k)) for k in keys)
    return b"RDBSNAP1" + frame(1, header) + frame(2, body) + frame(4, pack([len(keys), 0]))


@_register()
def check_transactions_and_leases_differential(ctx: CheckContext) -> None:
    """A workload heavy in transactions and leases, cut into batches of every size:
    every result (reads, changes, lease answers) equals the reference's."""
    m = ctx.open(watch_history=300)
    reference = MemoryStateMachine(watch_history=300)
    entries = _entries(43, 3000, txns=0.3, leases=0.3)
    want = reference.apply(entries)
    found: list[Any] = []
    sizes, pos = [1, 13, 200, 2, 64, 700], 0
    while pos < len(entries):
        size = sizes[len(found) % len(sizes)]
        found.extend(m.apply(entries[pos : pos + size]))
        pos += size
    for a, b in zip(found, want, strict=True):
        expect_equal(a, b, f"result of entry {b.index}")
    expect(digest(m) == digest(reference), "state differs from the reference after the workload")


@_register()
def check_watch_reads_never_see_partial_batches(ctx: CheckContext) -> None:
    """history(), lease() and leases() from other threads see each batch whole or not at all."""
    m, log = ctx.open(), Log()
    done = threading.Event()
    errors: list[str] = []
    per_batch = 6

    def reader() -> None:
        reads = 0
        while not done.is_set() or reads == 0:
            reads += 1
            floor, changes = m.history(0, ALL_HISTORY)
            if floor or len(changes) % per_batch:
                errors.append(f"history() saw {len(changes)} changes above floor {floor}")
                return
            for lease in m.leases():
                if len(lease.keys) != per_batch - 1:
                    errors.append(f"lease {lease.id} seen with {len(lease.keys)} keys")
                    return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for r in range(150):
            grant = log.grant()
            batch = [grant]
            batch += [log.put(b"r%03d/%d" % (r, k), b"x", lease=grant.index) for k in range(5)]
            batch.append(log.put(b"last", b"%d" % r))
            m.apply(batch)
            m.apply([log.revoke(grant.index), log.put(b"last", b"again")])  # 5 deletes, 1 put
    finally:
        done.set()
        for thread in threads:
            thread.join()
    expect(not errors, errors[0] if errors else "")


@_register(durable=True)
def check_watch_state_survives_reopen(ctx: CheckContext) -> None:
    """Leases, the history window and its floor survive close/reopen, and the
    machine goes on as the reference does (trimming included)."""
    m = ctx.open(watch_history=100)
    reference = MemoryStateMachine(watch_history=100)
    entries = _entries(47, 2000, txns=0.2, leases=0.3)
    for start in range(0, 1500, 100):
        batch = entries[start : start + 100]
        m.apply(batch)
        reference.apply(batch)
    expect(m.history(0, ALL_HISTORY)[0] > 0, "the workload trims the history")
    expect(digest(m) == digest(reference), "state before reopen")
    m = ctx.reopen(m, watch_history=100)
    expect(digest(m) == digest(reference), "leases and history after reopen")
    expect_equal(m.apply(entries[1500:]), reference.apply(entries[1500:]), "results after reopen")
    m = ctx.reopen(m, watch_history=100)
    expect(digest(m) == digest(reference), "state after a second reopen")


@_register(durable=True)
def check_restored_watch_state_survives_reopen(ctx: CheckContext) -> None:
    """Leases and history restored from a snapshot are there after a reopen."""
    source = MemoryStateMachine(watch_history=150)
    source.apply(_entries(53, 1200, txns=0.2, leases=0.3))
    m = ctx.open(watch_history=150)
    m.apply(_entries(54, 300, leases=0.3))
    m.restore(source.snapshot(chunk_size=2048))
    m = ctx.reopen(m, watch_history=150)
    expect(digest(m) == digest(source), "restored leases and history after reopen")
