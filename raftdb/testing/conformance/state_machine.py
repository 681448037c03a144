"""Conformance checks for :class:`~raftdb.state_machine.StateMachine` plugins.

Every promise of the StateMachine protocol and of the KV semantics in
:mod:`raftdb.kv`, checked through the protocol only: one result per entry,
key indexes, conditions, sessions and their expiry, membership changes,
determinism whatever the batching, reads that never see part of a batch,
snapshots taken while applies go on, bounded chunks, atomic restore that
refuses damaged streams, restart recovery, kill -9 during applies and
during a restore, and for a plugin that defers durability
(:class:`~raftdb.state_machine.DefersDurability`) that ``make_durable``
changes nothing a reader sees and leaves a state that survives a reopen. The
reference is :class:`~raftdb.state_machine.MemoryStateMachine`.

The power-cut half of the durability promise needs a filesystem that drops
what was not made durable: :func:`~raftdb.testing.conformance.crash.run_state_machine_power_cut`
runs it given such a filesystem's cut (raftdb's ``tests/powerloss`` does, on FUSE).

    from raftdb.testing.conformance.state_machine import check_state_machine
    check_state_machine(MyStateMachine)
"""

from __future__ import annotations

import threading
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raftdb.kv.commands import (
    MAX_SESSION_RESPONSES,
    SESSION_TTL_ENTRIES,
    Command,
    CommandStatus,
    ConfChangeResult,
    KeyValue,
    KVResult,
    NoopResult,
    SessionState,
)
from raftdb.kv.snapshot import SnapshotFormatError, SnapshotInfo, SnapshotReader, encode_stream
from raftdb.kv.state_machine import DefersDurability, MemoryStateMachine
from raftdb.raft.errors import UsageError
from raftdb.raft.messages import ConfChangeType, ConfState, Entry, EntryType
from raftdb.storage.nospace import is_no_space
from raftdb.testing.conformance.checks import (
    Check,
    CheckContext,
    expect,
    expect_equal,
    expect_raises,
    fill,
    registry,
    run_checks,
)
from raftdb.testing.conformance.crash import run_restore_crash, run_state_machine_crash
from raftdb.testing.conformance.machines import Log as _Log
from raftdb.testing.conformance.machines import delete_ok as _delete_ok
from raftdb.testing.conformance.machines import digest
from raftdb.testing.conformance.machines import kv_result as _kv
from raftdb.testing.conformance.machines import one as _one
from raftdb.testing.conformance.machines import put_ok as _put_ok
from raftdb.testing.conformance.watch_leases import WATCH_LEASE_CHECKS
from raftdb.testing.conformance.workloads import EntryWorkload

__all__ = ["STATE_MACHINE_CHECKS", "check_state_machine", "digest"]

#: Every state machine check, in a sensible order.
STATE_MACHINE_CHECKS: list[Check] = []
_register = registry(STATE_MACHINE_CHECKS)


def check_state_machine(
    make: Callable[[Path], Any],
    *,
    durable: bool = True,
    directory: Path | None = None,
    reference: str | None = None,
) -> None:
    """Run every state machine check against the plugin ``make`` builds.

    Args: as :func:`raftdb.testing.conformance.storage.check_storage`.

    Raises:
        ConformanceError: a check failed; the message names it.
    """
    run_checks(
        STATE_MACHINE_CHECKS, make, durable=durable, directory=directory, reference=reference
    )


@_register()
def check_empty(ctx: CheckContext) -> None:
    """A new state machine: nothing applied, no keys, no members."""
    m = ctx.open()
    expect_equal(m.applied_index, 0, "applied_index of a new state machine")
    expect_equal(m.get(b"k"), None, "get() of a new state machine")
    expect_equal(m.range(), [], "range() of a new state machine")
    expect_equal(m.conf_state(), ConfState(), "conf_state() of a new state machine")
    expect_equal(m.members(), {}, "members() of a new state machine")
    expect_equal(m.apply([]), [], "apply([])")


@_register()
def check_put_get_delete(ctx: CheckContext) -> None:
    """Puts set create and mod indexes; overwrites keep create; deletes forget both."""
    m, log = ctx.open(), _Log()
    expect_equal(_kv(m, log.put(b"a", b"1")), _put_ok(1, b"a", b"1", 1, 0), "first put")
    expect_equal(m.get(b"a"), KeyValue(b"a", b"1", 1, 1), "get after put")
    expect_equal(_kv(m, log.put(b"a", b"2")), _put_ok(2, b"a", b"2", 1, 1), "overwrite")
    expect_equal(m.get(b"a"), KeyValue(b"a", b"2", 1, 2), "get after overwrite")
    expect_equal(_kv(m, log.put(b"b", b"")), _put_ok(3, b"b", b"", 3, 0), "empty value")
    expect_equal(m.get(b"b"), KeyValue(b"b", b"", 3, 3), "get of an empty value")
    expect_equal(_kv(m, log.delete(b"a")), _delete_ok(4, b"a", 2), "delete")
    expect_equal(m.get(b"a"), None, "get after delete")
    expect_equal(
        _kv(m, log.delete(b"a")), KVResult(5, CommandStatus.OK, 0, 5, 0), "delete of nothing"
    )
    expect_equal(_kv(m, log.put(b"a", b"3")), _put_ok(6, b"a", b"3", 6, 0), "recreate")
    big = bytes(range(256)) * 4096
    expect_equal(
        _kv(m, log.put(b"\x00\xff", big)).status, CommandStatus.OK, "1 MiB value, binary key"
    )
    expect_equal(m.get(b"\x00\xff"), KeyValue(b"\x00\xff", big, 7, 7), "get of a 1 MiB value")
    expect_equal(m.applied_index, 7, "applied_index")


@_register()
def check_conditions(ctx: CheckContext) -> None:
    """Compare-and-set on mod index, create-only, conditional delete; failures change nothing."""
    m, log = ctx.open(), _Log()
    created = _kv(m, log.put(b"k", b"v1", create_only=True))
    expect_equal(created, _put_ok(1, b"k", b"v1", 1, 0), "create-only of a new key")
    again = _kv(m, log.put(b"k", b"v2", create_only=True))
    expect_equal(
        again,
        KVResult(2, CommandStatus.CONDITION_FAILED, 1, 1, 1),
        "create-only of an existing key",
    )
    stale = _kv(m, log.put(b"k", b"v3", if_mod=2))
    expect_equal(
        stale, KVResult(3, CommandStatus.CONDITION_FAILED, 1, 1, 1), "CAS on a wrong index"
    )
    expect_equal(m.get(b"k"), KeyValue(b"k", b"v1", 1, 1), "value after failed conditions")
    swapped = _kv(m, log.put(b"k", b"v4", if_mod=1))
    expect_equal(swapped, _put_ok(4, b"k", b"v4", 1, 1), "CAS on the right index")
    missing = _kv(m, log.put(b"nope", b"x", if_mod=4))
    expect_equal(
        missing, KVResult(5, CommandStatus.CONDITION_FAILED, 0, 0, 0), "CAS on a missing key"
    )
    refused = _kv(m, log.delete(b"k", if_mod=1))
    expect_equal(
        refused, KVResult(6, CommandStatus.CONDITION_FAILED, 1, 4, 4), "delete on a wrong index"
    )
    deleted = _kv(m, log.delete(b"k", if_mod=4))
    expect_equal(deleted, _delete_ok(7, b"k", 4), "delete on the right index")
    expect_equal(m.get(b"nope"), None, "a failed CAS creates nothing")
    expect_equal(m.range(), [], "no keys left")


@_register()
def check_results_per_entry(ctx: CheckContext) -> None:
    """One result per entry of every kind; applied entries are skipped; gaps are refused."""
    m, log = ctx.open(), _Log()
    batch = [
        log.noop(),
        log.put(b"a", b"1"),
        log.raw(b"\xc1garbage"),
        log.conf(ConfChangeType.ADD_VOTER, 1, b"http://n1"),
        log.raw(b"\x00", EntryType.CONF_CHANGE),
        log.put(b"b", b"2"),
    ]
    results = m.apply(batch)
    expect_equal(len(results), 6, "number of results")
    expect_equal([r.index for r in results], [1, 2, 3, 4, 5, 6], "result indexes")
    expect_equal(results[0], NoopResult(1), "result of a leader no-op")
    expect(
        isinstance(results[2], KVResult) and results[2].status == CommandStatus.INVALID, "garbage"
    )
    expect(isinstance(results[3], ConfChangeResult) and results[3].ok, "a valid conf change")
    expect(isinstance(results[4], ConfChangeResult) and not results[4].ok, "undecodable change")
    expect_equal(m.applied_index, 6, "applied_index after a mixed batch")
    # Replayed entries (a restart that replays from before applied_index) are skipped.
    replay = m.apply([*batch[3:], log.put(b"c", b"3")])
    expect_equal(replay[:3], [NoopResult(i, already_applied=True) for i in (4, 5, 6)], "replay")
    expect_equal(m.get(b"c"), KeyValue(b"c", b"3", 7, 7), "the new entry after a replay")
    before = digest(m)
    with expect_raises(UsageError, "apply() with a gap after applied_index"):
        m.apply([Entry(1, 9, EntryType.NORMAL, Command.put(b"x", b"y").encode())])
    with expect_raises(UsageError, "apply() of entries that are not consecutive"):
        m.apply([log.put(b"x", b"1"), Entry(1, 10, EntryType.NORMAL, b"")])
    expect_equal(digest(m), before, "state after refused batches")


@_register()
def check_range(ctx: CheckContext) -> None:
    """range(prefix, start, limit): ordered, bounded, consistent."""
    m, log = ctx.open(), _Log()
    keys = [b"", b"a", b"a\x00", b"a\xff", b"a\xff\xff", b"ab", b"abc", b"b", b"\xff", b"\xff\xff"]
    m.apply([log.put(k, k.hex().encode()) for k in keys if k])
    stored = sorted(k for k in keys if k)

    def names(found: list[KeyValue]) -> list[bytes]:
        return [kv.key for kv in found]

    expect_equal(names(m.range()), stored, "range() of everything")
    cases: list[tuple[bytes, bytes, int | None]] = [
        (b"a", b"", None),
        (b"a\xff", b"", None),
        (b"\xff", b"", None),
        (b"ab", b"", 1),
        (b"", b"ab", None),
        (b"a", b"a\xff", 2),
        (b"a", b"b", None),
        (b"b", b"a", None),
        (b"zz", b"", None),
        (b"", b"", 3),
    ]
    for prefix, start, limit in cases:
        want = [k for k in stored if k.startswith(prefix) and k >= start][:limit]
        found = m.range(prefix, start, limit)
        expect_equal(names(found), want, f"range({prefix!r}, {start!r}, {limit})")
    expect_equal(m.range(b"a", limit=0), [], "range(limit=0)")
    expect_equal(m.range(b"abc")[0], KeyValue(b"abc", b"616263", 6, 6), "a range result")
    with expect_raises(ValueError, "range(limit=-1)"):
        m.range(limit=-1)
    # values=False and max_bytes: what a listing holds in memory stays bounded.
    expect_equal([kv.value for kv in m.range(b"a", values=False)], [b""] * 6, "range(values=False)")
    # a, a\x00, a\xff: 1 + 2, 2 + 4, 2 + 4 bytes (key + hex value)
    for max_bytes, count in ((1, 1), (3, 1), (4, 2), (9, 2), (10, 3), (1000, 6)):
        found = m.range(b"a", max_bytes=max_bytes)
        expect_equal(names(found), stored[:count], f"range(b'a', max_bytes={max_bytes})")
    expect_equal(len(m.range(b"a", values=False, max_bytes=3)), 2, "max_bytes counts keys only")
    expect_equal(len(m.range(b"a", limit=1, max_bytes=1000)), 1, "limit before max_bytes")
    with expect_raises(ValueError, "range(max_bytes=0)"):
        m.range(max_bytes=0)


@_register()
def check_sessions(ctx: CheckContext) -> None:
    """Retries are answered from the session, once applied; acknowledged answers are forgotten."""
    m, log = ctx.open(), _Log()
    c = {"client_id": b"client-1"}
    first = log.put(b"k", b"v1", seq=1, **c)
    expect_equal(_kv(m, first).status, CommandStatus.OK, "seq 1")
    _kv(m, log.put(b"k", b"other"))  # someone else writes in between
    retry = Entry(1, log.index + 1, EntryType.NORMAL, first.data)
    log.index += 1
    expect_equal(
        _kv(m, retry), KVResult(3, CommandStatus.OK, 1, 1, 0, duplicate=True), "retry of seq 1"
    )
    expect_equal(m.get(b"k"), KeyValue(b"k", b"other", 1, 2), "a retry is not applied again")
    failed = log.put(b"k", b"v2", if_mod=1, seq=2, **c)
    expect_equal(_kv(m, failed).status, CommandStatus.CONDITION_FAILED, "seq 2 fails its condition")
    log.index += 1
    again = _kv(m, Entry(1, log.index, EntryType.NORMAL, failed.data))
    expect_equal(
        again, KVResult(5, CommandStatus.CONDITION_FAILED, 1, 2, 2, duplicate=True), "retry 2"
    )
    # Many in flight, answered out of order; then an ack lets seqs below it go.
    for seq in (5, 3, 4):
        expect_equal(
            _kv(m, log.put(b"s%d" % seq, b"x", seq=seq, **c)).status, CommandStatus.OK, f"seq {seq}"
        )
    expect(_kv(m, log.put(b"s3", b"y", seq=3, **c)).duplicate, "retry of seq 3 in flight")
    expect_equal(
        _kv(m, log.put(b"s6", b"x", seq=6, ack=4, **c)).status, CommandStatus.OK, "seq 6, ack 4"
    )
    stale = _kv(m, log.put(b"s3", b"z", seq=3, ack=3, **c))
    expect_equal(stale.status, CommandStatus.STALE, "seq 3 after ack 4")
    expect(_kv(m, log.put(b"s5", b"z", seq=5, **c)).duplicate, "seq 5 still remembered")
    expect_equal(m.get(b"s3"), KeyValue(b"s3", b"x", 7, 7), "a stale retry changes nothing")
    # A session remembers at most MAX_SESSION_RESPONSES answers.
    d = {"client_id": b"client-2"}
    batch = [log.put(b"d", b"%d" % s, seq=s, **d) for s in range(1, MAX_SESSION_RESPONSES + 2)]
    m.apply(batch)
    expect_equal(
        _kv(m, log.put(b"d", b"x", seq=1, **d)).status, CommandStatus.STALE, "seq 1 dropped"
    )
    expect(_kv(m, log.put(b"d", b"x", seq=2, **d)).duplicate, "seq 2 still remembered")
    # A new client whose ack shows it had answers from a lost session.
    lost = _kv(m, log.put(b"e", b"x", client_id=b"client-3", seq=9, ack=5))
    expect_equal(lost.status, CommandStatus.SESSION_EXPIRED, "unknown session with ack > 1")
    expect_equal(m.get(b"e"), None, "an expired session's command is not applied")


@_register()
def check_session_expiry(ctx: CheckContext) -> None:
    """Sessions expire SESSION_TTL_ENTRIES after their last use, decided by log index."""
    m = ctx.open()
    ttl = SESSION_TTL_ENTRIES
    index = ttl + 100
    answer = (int(CommandStatus.OK), 3, 3, 0)
    sessions = [
        SessionState(b"old", 101, 0, {1: answer}),  # expires at entry 101 + ttl, the next
        SessionState(b"young", 102, 0, {1: answer}),  # expires at entry 102 + ttl
    ]
    info = SnapshotInfo(index, 2, ConfState((1,)), {1: ""})
    m.restore(encode_stream(info, [(b"k", b"v", 3, 3)], sessions))
    log = _Log(index, term=2)
    retry_young = _kv(m, log.put(b"k", b"again", client_id=b"young", seq=1))
    expect(retry_young.duplicate, f"a session last used {ttl - 1} entries ago is remembered")
    retry_old = _kv(m, log.put(b"k", b"again", client_id=b"old", seq=1))
    expect(not retry_old.duplicate, "a session idle for the TTL has expired")
    expect_equal(m.get(b"k"), KeyValue(b"k", b"again", 3, index + 2), "applied as new")
    late = _kv(m, log.put(b"j", b"x", client_id=b"young", seq=2, ack=2))
    expect_equal(late.status, CommandStatus.OK, "the young session was refreshed by its retry")
    m.apply([log.noop() for _ in range(2)])
    snap = SnapshotReader(m.snapshot())
    list(snap.kv_batches())
    names = [s.client_id for batch in snap.session_batches() for s in batch]
    list(snap.lease_batches())
    list(snap.history_batches())
    snap.finish()
    expect_equal(names, [b"old", b"young"], "sessions in the snapshot")


@_register()
def check_conf_changes(ctx: CheckContext) -> None:
    """Membership changes follow apply_conf_change; refused ones change nothing."""
    m, log = ctx.open(), _Log()
    m.apply(
        [
            log.conf(ConfChangeType.ADD_VOTER, 1, b"http://h1:1"),
            log.conf(ConfChangeType.ADD_VOTER, 2, b"http://h2:2"),
            log.conf(ConfChangeType.ADD_LEARNER, 3, b"http://h3:3"),
        ]
    )
    expect_equal(m.conf_state(), ConfState((1, 2), (3,)), "conf after adds")
    expect_equal(m.members(), {1: "http://h1:1", 2: "http://h2:2", 3: "http://h3:3"}, "members")
    promoted = _one(m, log.conf(ConfChangeType.ADD_VOTER, 3))
    expect(isinstance(promoted, ConfChangeResult) and promoted.ok, "promote a learner")
    expect_equal(m.conf_state(), ConfState((1, 2, 3)), "conf after promotion")
    expect_equal(m.members()[3], "http://h3:3", "a change without context keeps the URL")
    _one(m, log.conf(ConfChangeType.ADD_LEARNER, 2, b"http://h2:22"))
    expect_equal(m.conf_state(), ConfState((1, 3), (2,)), "conf after demotion")
    expect_equal(m.members()[2], "http://h2:22", "a change with context updates the URL")
    _one(m, log.conf(ConfChangeType.REMOVE_NODE, 1))
    _one(m, log.conf(ConfChangeType.REMOVE_NODE, 9))
    expect_equal(m.members(), {2: "http://h2:22", 3: "http://h3:3"}, "members after removals")
    before = (m.conf_state(), m.members())
    for entry, what in (
        (log.conf(ConfChangeType.REMOVE_NODE, 3), "removing the last voter"),
        (log.conf(ConfChangeType.ADD_VOTER, 0), "node id 0"),
        (log.raw(b"\x09", EntryType.CONF_CHANGE), "undecodable data"),
    ):
        result = _one(m, entry)
        expect(isinstance(result, ConfChangeResult) and bool(result.error), f"{what} refused")
        expect_equal((m.conf_state(), m.members()), before, f"membership after {what}")
    expect_equal(m.applied_index, log.index, "refused changes are applied as no-ops")
    _one(m, log.conf(ConfChangeType.ADD_VOTER, 4, b"http://\xff"))
    expect_equal(m.members()[4], "http://\ufffd", "a URL that is not UTF-8")


@_register()
def check_determinism(ctx: CheckContext) -> None:
    """The same entries in different batches give the same results and state."""
    m = ctx.open()
    reference = MemoryStateMachine()
    entries = [e for batch in EntryWorkload(5).batches(3000) for e in batch]
    want = reference.apply(entries)
    found: list[Any] = []
    sizes = [1, 7, 100, 3, 500]
    pos = 0
    while pos < len(entries):
        size = sizes[len(found) % len(sizes)]
        found.extend(m.apply(entries[pos : pos + size]))
        pos += size
    expect_equal(len(found), len(want), "number of results")
    for a, b in zip(found, want, strict=True):
        expect_equal(a, b, f"result of entry {b.index}")
    expect(digest(m) == digest(reference), "state differs from the reference after the workload")


def _defers(machine: Any) -> DefersDurability:
    """The machine as a :class:`DefersDurability`, or skip the check."""
    if not isinstance(machine, DefersDurability):
        raise unittest.SkipTest("the plugin has no make_durable (durable at apply, or not at all)")
    return machine


@_register()
def check_make_durable_changes_nothing_visible(ctx: CheckContext) -> None:
    """``make_durable`` (a plugin that defers durability): before any batch, after
    each, twice in a row, after a snapshot: the results and the state are the
    reference's, as if it had never been called."""
    m = ctx.open()
    durable = _defers(m)
    durable.make_durable()  # nothing applied yet
    reference = MemoryStateMachine()
    for n, batch in enumerate(EntryWorkload(9).batches(2000)):
        want = reference.apply(batch)
        found = m.apply(batch)
        expect_equal(found, want, f"results of batch {n}")
        expect_equal(m.applied_index, reference.applied_index, f"applied_index after batch {n}")
        if n % 3 == 0:
            durable.make_durable()
        if n % 7 == 0:
            durable.make_durable()
            durable.make_durable()
        if n % 11 == 0:
            m.snapshot().close()
            durable.make_durable()
    expect(digest(m) == digest(reference), "state differs from the reference")


@_register(durable=True)
def check_make_durable_then_reopen(ctx: CheckContext) -> None:
    """What ``make_durable`` covered is there after a reopen, and so is a batch
    applied after it (``close`` makes it durable): nothing twice, nothing lost."""
    m = ctx.open()
    durable = _defers(m)
    entries = [e for batch in EntryWorkload(13).batches(1200) for e in batch]
    m.apply(entries[:500])
    durable.make_durable()
    m.apply(entries[500:800])
    m = ctx.reopen(m)
    reference = MemoryStateMachine()
    reference.apply(entries[:800])
    expect(digest(m) == digest(reference), "state after make_durable, an apply and a reopen")
    m.apply(entries[700:1200])
    _defers(m).make_durable()
    m = ctx.reopen(m)
    reference.apply(entries[800:1200])
    expect(digest(m) == digest(reference), "state after a replay, make_durable and a reopen")


@_register()
def check_snapshot_roundtrip(ctx: CheckContext) -> None:
    """A snapshot restored into a fresh machine (and into the reference) is the same state."""
    m = ctx.open("a")
    for batch in EntryWorkload(11).batches(2000):
        m.apply(batch)
    stream = m.snapshot(chunk_size=4096)
    expect_equal(stream.info.index, m.applied_index, "snapshot info index")
    expect_equal(stream.info.conf_state, m.conf_state(), "snapshot info conf state")
    expect_equal(dict(stream.info.members), m.members(), "snapshot info members")
    chunks = list(stream)
    b = ctx.open("b")
    info = b.restore(chunks)
    expect_equal(info, stream.info, "restore()'s result")
    reference = MemoryStateMachine()
    reference.restore(chunks)
    expect(digest(b) == digest(m), "restored state differs from the source")
    expect(digest(reference) == digest(m), "the reference restores a different state")
    # Both continue alike: sessions and indexes came across.
    more = [e for batch in EntryWorkload(11).batches(2400) for e in batch][2000:]
    expect_equal(b.apply(more), m.apply(more), "results after restore")
    # Restoring from the reference's own stream works too.
    c = ctx.open("c")
    c.restore(list(reference.snapshot(chunk_size=100)))
    expect_equal(c.range(), reference.range(), "restore from the reference's stream")


@_register()
def check_snapshot_chunks_bounded(ctx: CheckContext) -> None:
    """Chunks never exceed chunk_size, even with a value larger than a chunk."""
    m, log = ctx.open(), _Log()
    m.apply(
        [log.put(b"big", b"v" * 300_000), *(log.put(b"k%04d" % i, b"x" * 50) for i in range(2000))]
    )
    for size in (64, 1000, 65536):
        chunks = list(m.snapshot(chunk_size=size))
        expect(all(len(c) <= size for c in chunks), f"a chunk exceeds chunk_size={size}")
        expect(sum(map(len, chunks)) > 300_000, f"chunks of {size} bytes hold the whole state")
    # Restore accepts any re-splitting of the stream.
    whole = b"".join(m.snapshot())
    pieces = [whole[i : i + 777] for i in range(0, len(whole), 777)]
    r = ctx.open("r")
    r.restore(iter(pieces))
    expect(digest(r) == digest(m), "restore of a re-split stream")


@_register()
def check_snapshot_during_applies(ctx: CheckContext) -> None:
    """A snapshot is a point in time: applies running while it is read do not leak in."""
    m = ctx.open("a")
    workload = EntryWorkload(23, keys=400)
    for batch in workload.batches(3000):
        m.apply(batch)
    point = m.applied_index
    stream = m.snapshot(chunk_size=2048)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for batch in workload.batches(6000):
                m.apply(batch)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    chunks = list(stream)
    thread.join()
    expect(not errors, f"applies during a snapshot failed: {errors!r}")
    reference = MemoryStateMachine()
    reference.restore(chunks)
    expect_equal(reference.applied_index, point, "index of the restored snapshot")
    expected = MemoryStateMachine()
    for batch in EntryWorkload(23, keys=400).batches(3000):
        expected.apply(batch)
    expect(digest(reference) == digest(expected), "the snapshot is not the state at its index")


@_register()
def check_restore_rejects_bad_streams(ctx: CheckContext) -> None:
    """Damaged, truncated or extended streams are refused and the old state is kept."""
    source = MemoryStateMachine()
    for batch in EntryWorkload(3).batches(500):
        source.apply(batch)
    whole = b"".join(source.snapshot(chunk_size=512))
    m = ctx.open()
    for batch in EntryWorkload(4).batches(200):
        m.apply(batch)
    before = digest(m)
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0x40
    bad = {
        "a truncated stream": [whole[: len(whole) - 10]],
        "a stream cut at a frame": [whole[: len(whole) // 3]],
        "a flipped bit": [bytes(flipped)],
        "data after the end": [whole, b"\x00"],
        "no magic": [b"not a snapshot at all"],
        "an empty stream": [],
    }
    for what, chunks in bad.items():
        with expect_raises(SnapshotFormatError, f"restore() of {what}"):
            m.restore(iter(chunks))
        expect(digest(m) == before, f"state changed by a refused restore ({what})")
    m.restore([whole])
    expect(digest(m) == digest(source), "a good restore after refused ones")


@_register()
def check_restore_replaces_everything(ctx: CheckContext) -> None:
    """Restore drops keys, sessions and members the snapshot lacks, even going back in time."""
    m, log = ctx.open(), _Log()
    m.apply(
        [log.put(b"only-here", b"x", client_id=b"c", seq=1), log.conf(ConfChangeType.ADD_VOTER, 5)]
    )
    for batch in EntryWorkload(8).batches(100):
        m.apply([Entry(e.term, e.index + log.index, e.type, e.data) for e in batch])
    older = MemoryStateMachine()
    older.apply([Entry(1, 1, EntryType.NORMAL, Command.put(b"other", b"y").encode())])
    m.restore(older.snapshot())
    expect(digest(m) == digest(older), "state after restoring an older snapshot")
    expect_equal(m.get(b"only-here"), None, "a key the snapshot lacks")
    result = _kv(
        m,
        Entry(
            1, 2, EntryType.NORMAL, Command.put(b"only-here", b"z", client_id=b"c", seq=1).encode()
        ),
    )
    expect(not result.duplicate, "a session the snapshot lacks is gone")


@_register()
def check_reads_never_see_partial_batches(ctx: CheckContext) -> None:
    """Readers on other threads see every batch whole or not at all."""
    m = ctx.open()
    keys = [b"consistent/%02d" % i for i in range(20)]
    rounds = 300
    log = _Log()
    done = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        seen = 0
        while not done.is_set() or seen == 0:
            found = m.range(b"consistent/")
            values = {kv.value for kv in found}
            if found and (len(found) != len(keys) or len(values) != 1):
                errors.append(f"a read saw a partial batch: {sorted(values)}")
                return
            seen += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for r in range(rounds):
            m.apply([log.put(k, b"round-%04d" % r) for k in keys])
    finally:
        done.set()
        for thread in threads:
            thread.join()
    expect(not errors, errors[0] if errors else "")


@_register(durable=True)
def check_reopen(ctx: CheckContext) -> None:
    """State, sessions and membership survive close/reopen; replayed entries are skipped."""
    m = ctx.open()
    entries = [e for batch in EntryWorkload(17).batches(1500) for e in batch]
    m.apply(entries[:1000])
    before = digest(m)
    m = ctx.reopen(m)
    expect(digest(m) == before, "state after reopen")
    # The driver replays the log from before applied_index: nothing applies twice.
    results = m.apply(entries[900:1500])
    expect(all(isinstance(r, NoopResult) and r.already_applied for r in results[:100]), "replay")
    reference = MemoryStateMachine()
    reference.apply(entries)
    expect(digest(m) == digest(reference), "state after replay and new entries")
    m = ctx.reopen(m)
    expect(digest(m) == digest(reference), "state after a second reopen")


@_register(durable=True)
def check_restore_survives_reopen(ctx: CheckContext) -> None:
    """A restored state is the one found after reopening."""
    source = MemoryStateMachine()
    for batch in EntryWorkload(31).batches(800):
        source.apply(batch)
    m = ctx.open()
    for batch in EntryWorkload(32).batches(100):
        m.apply(batch)
    m.restore(source.snapshot(chunk_size=1000))
    m = ctx.reopen(m)
    expect(digest(m) == digest(source), "restored state after reopen")


@_register(durable=True)
def check_full_disk(ctx: CheckContext) -> None:
    """A batch refused by a real full disk (a small tmpfs; root only, else skipped)
    raises OSError with errno ENOSPC or EDQUOT and is not applied: reads and
    ``applied_index`` show the state before it; applied again once space
    returns, it gives its results once, in order; everything survives a reopen."""
    ctx.on_small_filesystem(_fill_then_recover)


def _fill_then_recover(ctx: CheckContext, small: Path) -> None:
    m = ctx.open("small/sm")
    log = _Log()
    value = bytes(range(256)) * 16  # 4 KiB
    m.apply([log.put(b"k%d" % (log.index + 1), value) for _ in range(10)])  # k1..k10
    filler = fill(small)
    refused: OSError | None = None
    batch: list[Entry] = []
    while log.index < 20_000 and refused is None:
        batch = [log.put(b"k%d" % (log.index + 1), value) for _ in range(4)]
        try:
            m.apply(batch)
        except OSError as exc:
            refused = exc
    expect(refused is not None, "20,000 puts of 4 KiB were all applied on a full 16 MiB disk")
    assert refused is not None
    expect(
        is_no_space(refused),
        "a batch refused by a full disk must raise OSError with errno ENOSPC or EDQUOT "
        f"(raftdb.storage.nospace), got {refused!r}",
    )
    before = batch[0].index - 1
    expect_equal(m.applied_index, before, "applied_index after a refused batch")
    expect(m.get(b"k%d" % before) is not None, "a key applied before the refused batch")
    expect_equal(m.get(b"k%d" % batch[0].index), None, "a key of the refused batch")
    filler.unlink()
    results = m.apply(batch)
    expect_equal(len(results), len(batch), "results of the batch applied once space returned")
    expect(
        all(
            isinstance(r, KVResult) and r.index == e.index
            for r, e in zip(results, batch, strict=True)
        ),
        f"the batch applied once space returned gives its own results: {results!r}",
    )
    after = [log.put(b"after", b"1")]
    m.apply(after)
    m = ctx.reopen(m, "small/sm")
    expect_equal(m.applied_index, after[0].index, "applied_index after space returned and a reopen")
    for e in [*batch, *after]:
        key = b"after" if e is after[0] else b"k%d" % e.index
        found = m.get(key)
        expect(found is not None and found.mod_index == e.index, f"key {key!r} after a reopen")


@_register(durable=True)
def check_crash_during_applies(ctx: CheckContext) -> None:
    """kill -9 during a stream of applies: the recovered state is exactly its applied index's."""
    run_state_machine_crash(ctx.require_reference(), ctx.path("crash"), seed=77, rounds=3)


@_register(durable=True)
def check_crash_during_restore(ctx: CheckContext) -> None:
    """kill -9 inside restore leaves the old state whole; after it, the new state is there."""
    run_restore_crash(ctx.require_reference(), ctx.path("crash"), seed=78)


# The checks of transactions, leases and the watch history, then the durable
# checks last (a stable sort keeps each group's order).
STATE_MACHINE_CHECKS.extend(WATCH_LEASE_CHECKS)
STATE_MACHINE_CHECKS.sort(key=lambda check: check.durable)
