"""Conformance checks for :class:`~raftdb.storage.protocol.Storage` plugins.

Every promise of the Storage protocol, checked through the protocol only:
ordering, byte limits, truncation of conflicting tails, refused saves that
change nothing, hard state and snapshot round trips, compaction bounds,
snapshot installation, a long randomized run against
:class:`~raftdb.storage.memory.MemoryStorage` (the reference), restart recovery,
and crash recovery under kill -9. See ``docs/plugins.md`` to run them.

    from raftdb.testing.conformance.storage import check_storage
    check_storage(MyStorage)                  # every check, or
    for check in STORAGE_CHECKS: ...          # one test each
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raftdb.raft.errors import CompactedError, UnavailableError, UsageError
from raftdb.raft.messages import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
    limit_size,
)
from raftdb.storage.memory import MemoryStorage
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
from raftdb.testing.conformance.crash import run_storage_crash
from raftdb.testing.conformance.workloads import StorageWorkload, dump_storage

__all__ = ["STORAGE_CHECKS", "check_storage"]

#: Every storage check, in a sensible order.
STORAGE_CHECKS: list[Check] = []
_register = registry(STORAGE_CHECKS)


def check_storage(
    make: Callable[[Path], Any],
    *,
    durable: bool = True,
    directory: Path | None = None,
    reference: str | None = None,
) -> None:
    """Run every storage check against the plugin ``make`` builds.

    Args:
        make: the factory, called as ``make(path)`` (a plugin class works).
        durable: the plugin keeps its state across close/reopen and crashes;
            ``False`` skips those checks (``memory``).
        directory: where to work (default: a temporary directory).
        reference: how a child process loads ``make`` (an entry-point name or
            ``"module:attr"``) when ``make`` is not a module-level object.

    Raises:
        ConformanceError: a check failed; the message names it.
    """
    run_checks(STORAGE_CHECKS, make, durable=durable, directory=directory, reference=reference)


def _entries(lo: int, hi: int, term: int, size: int = 8) -> list[Entry]:
    return [
        Entry(term, i, EntryType.NORMAL, (b"%d.%d:" % (i, term)).ljust(size, b"."))
        for i in range(lo, hi)
    ]


def _same_as(storage: Any, model: MemoryStorage, what: str) -> None:
    found, want = dump_storage(storage), dump_storage(model)
    for key in want:
        expect_equal(found[key], want[key], f"{what}: {key}")


@_register()
def check_empty(ctx: CheckContext) -> None:
    """A new storage: zero hard state, empty log at index 0, no snapshot."""
    s = ctx.open()
    expect_equal(s.initial_state(), (HardState(), ConfState()), "initial_state() of a new storage")
    expect_equal((s.first_index(), s.last_index()), (1, 0), "(first_index, last_index)")
    expect_equal(s.term(0), 0, "term(0)")
    expect_equal(s.entries(1, 1), [], "entries(1, 1)")
    expect(s.snapshot().is_empty(), "snapshot() of a new storage is not empty")
    with expect_raises(UnavailableError, "term(1) of an empty log"):
        s.term(1)
    with expect_raises(UnavailableError, "entries(1, 2) of an empty log"):
        s.entries(1, 2)
    with expect_raises(CompactedError, "entries(0, 1)"):
        s.entries(0, 1)


@_register()
def check_append_and_read(ctx: CheckContext) -> None:
    """Entries come back in order, with term, type and data intact."""
    s = ctx.open()
    special = [
        Entry(1, 1, EntryType.NORMAL, b""),
        Entry(1, 2, EntryType.CONF_CHANGE, b"\x00\x01conf"),
        Entry(1, 3, EntryType.NORMAL, bytes(range(256))),
        Entry(2, 4, EntryType.NORMAL, b"x" * (1 << 20)),
    ]
    s.save(HardState(1, 1, 0), special)
    s.save(HardState(2, 1, 3), _entries(5, 20, 2))
    s.save(None, _entries(20, 30, 3))
    expected = special + _entries(5, 20, 2) + _entries(20, 30, 3)
    expect_equal((s.first_index(), s.last_index()), (1, 29), "(first_index, last_index)")
    expect_equal(s.entries(1, 30), expected, "entries(1, 30)")
    for lo, hi in ((1, 2), (3, 5), (4, 21), (29, 30), (10, 10)):
        expect_equal(s.entries(lo, hi), expected[lo - 1 : hi - 1], f"entries({lo}, {hi})")
    for entry in expected:
        expect_equal(s.term(entry.index), entry.term, f"term({entry.index})")
    expect_equal(s.initial_state()[0], HardState(2, 1, 3), "hard state")
    with expect_raises(UnavailableError, "entries(1, 31) past the last index"):
        s.entries(1, 31)
    with expect_raises(UnavailableError, "term(30) past the last index"):
        s.term(30)


@_register()
def check_max_bytes(ctx: CheckContext) -> None:
    """``max_bytes`` returns the longest prefix within it, never less than one entry."""
    s = ctx.open()
    rng = random.Random(7)
    entries = [
        Entry(1, i, EntryType.NORMAL, rng.randbytes(rng.randint(0, 300))) for i in range(1, 200)
    ]
    s.save(HardState(1, 1, 0), entries)
    for lo, hi in ((1, 200), (50, 60), (199, 200), (1, 2)):
        for limit in (None, 0, 1, 16, 100, 317, 1000, 5000, 10**9):
            want = limit_size(entries[lo - 1 : hi - 1], limit)
            expect_equal(s.entries(lo, hi, limit), want, f"entries({lo}, {hi}, max_bytes={limit})")


@_register()
def check_long_log(ctx: CheckContext) -> None:
    """A log longer than any plausible cache reads back whole, by ranges and limits."""
    s = ctx.open()
    total = 20_000
    for lo in range(1, total + 1, 1000):
        s.save(HardState(1 + lo // 5000, 1, lo - 1), _entries(lo, lo + 1000, 1 + lo // 5000))
    expected = []
    for lo in range(1, total + 1, 1000):
        expected += _entries(lo, lo + 1000, 1 + lo // 5000)
    expect_equal(s.last_index(), total, "last_index()")
    expect(s.entries(1, total + 1) == expected, "entries(1, 20001) differ from what was saved")
    for lo, hi, limit in (
        (1, 3000, None),
        (4990, 5010, None),
        (100, total + 1, 4096),
        (15000, 19999, 50),
    ):
        want = limit_size(expected[lo - 1 : hi - 1], limit)
        expect(s.entries(lo, hi, limit) == want, f"entries({lo}, {hi}, {limit}) differ")
    for index in (1, 4999, 5000, 5001, 12345, total):
        expect_equal(s.term(index), expected[index - 1].term, f"term({index})")


@_register()
def check_conflicting_tail(ctx: CheckContext) -> None:
    """An entry at a stored index replaces it and everything after it, atomically."""
    s = ctx.open()
    s.save(HardState(1, 1, 2), _entries(1, 11, 1))
    s.save(HardState(2, 2, 2), _entries(6, 9, 2))
    expect_equal(s.last_index(), 8, "last_index() after a shorter conflicting tail")
    expect_equal(s.entries(1, 9), _entries(1, 6, 1) + _entries(6, 9, 2), "entries after truncation")
    with expect_raises(UnavailableError, "term(9) after truncation to 8"):
        s.term(9)
    s.save(None, _entries(9, 15, 2))
    expect_equal(s.entries(6, 15), _entries(6, 15, 2), "entries appended after a truncation")
    s.save(HardState(3, 3, 2), _entries(3, 20, 3))
    expect_equal(
        s.entries(1, 20), _entries(1, 3, 1) + _entries(3, 20, 3), "longer conflicting tail"
    )
    s.save(None, _entries(20, 21, 3))
    s.save(None, _entries(20, 21, 4))
    expect_equal(s.entries(20, 21), _entries(20, 21, 4), "a one-entry tail replaced")
    # After compaction, a tail may be replaced from the first index on.
    s.create_snapshot(5, ConfState((1,)))
    s.compact(5)
    s.save(None, _entries(6, 8, 5))
    expect_equal((s.first_index(), s.last_index()), (6, 7), "bounds after replacing from first")
    expect_equal(s.entries(6, 8), _entries(6, 8, 5), "entries after replacing from first")
    expect_equal(s.term(5), 3, "term(5) (the compaction point) after replacing from first")


@_register()
def check_refused_saves_change_nothing(ctx: CheckContext) -> None:
    """A save that breaks the rules raises UsageError and writes nothing of itself."""
    s = ctx.open()
    model = MemoryStorage()
    for target in (s, model):
        target.save(HardState(1, 1, 4), _entries(1, 11, 1))
        target.create_snapshot(4, ConfState((1, 2)), b"snap")
        target.compact(3)
    refused = [
        ("a gap after the last index", HardState(9, 9, 9), _entries(12, 14, 2), None),
        ("entries inside the compacted log", HardState(9, 9, 9), _entries(3, 5, 2), None),
        (
            "entries with a hole",
            HardState(9, 9, 9),
            [*_entries(11, 12, 1), *_entries(13, 14, 1)],
            None,
        ),
        (
            "a snapshot not newer",
            HardState(9, 9, 9),
            [],
            Snapshot(SnapshotMetadata(4, 1, ConfState((1,)))),
        ),
        ("a snapshot older", None, [], Snapshot(SnapshotMetadata(2, 1, ConfState((1,))))),
        (
            "entries not right after a snapshot",
            None,
            _entries(30, 31, 2),
            Snapshot(SnapshotMetadata(20, 2, ConfState((1,)))),
        ),
    ]
    for what, hard_state, entries, snapshot in refused:
        with expect_raises(UsageError, f"save() with {what}"):
            s.save(hard_state, entries, snapshot)
        _same_as(s, model, f"after refusing {what}")
    with expect_raises(UsageError, "create_snapshot() not newer"):
        s.create_snapshot(4, ConfState((1,)))
    with expect_raises(UsageError, "create_snapshot() beyond the last index"):
        s.create_snapshot(11, ConfState((1,)))
    with expect_raises(UsageError, "compact() beyond the snapshot"):
        s.compact(5)
    _same_as(s, model, "after refused snapshot and compaction calls")
    s.save(HardState(1, 1, 5), _entries(11, 12, 1))
    model.save(HardState(1, 1, 5), _entries(11, 12, 1))
    _same_as(s, model, "a valid save after refused ones")


@_register()
def check_hard_state(ctx: CheckContext) -> None:
    """The hard state round-trips; ``None`` leaves it; it may be saved alone."""
    s = ctx.open()
    s.save(HardState(3, 2, 0), [])
    expect_equal(s.initial_state()[0], HardState(3, 2, 0), "hard state saved alone")
    s.save(None, _entries(1, 4, 3))
    expect_equal(s.initial_state()[0], HardState(3, 2, 0), "hard state after a save with None")
    s.save(HardState(4, 0, 3), _entries(4, 5, 4))
    expect_equal(s.initial_state()[0], HardState(4, 0, 3), "hard state saved with entries")
    big = HardState(2**62, 2**40, 4)
    s.save(big, [])
    expect_equal(s.initial_state()[0], big, "hard state with large numbers")


@_register()
def check_create_snapshot(ctx: CheckContext) -> None:
    """create_snapshot records index, term, conf state and data; the log is kept."""
    s = ctx.open()
    s.save(HardState(2, 1, 8), _entries(1, 5, 1) + _entries(5, 10, 2))
    conf = ConfState(voters=(1, 2, 3), learners=(7,))
    snapshot = s.create_snapshot(6, conf, b"state-at-6")
    want = Snapshot(SnapshotMetadata(6, 2, conf), b"state-at-6")
    expect_equal(snapshot, want, "create_snapshot()'s result")
    expect_equal(s.snapshot(), want, "snapshot()")
    expect_equal(s.initial_state(), (HardState(2, 1, 8), conf), "initial_state() carries its conf")
    expect_equal((s.first_index(), s.last_index()), (1, 9), "the log after create_snapshot")
    s.create_snapshot(9, ConfState((1,)))
    expect_equal(s.snapshot().metadata, SnapshotMetadata(9, 2, ConfState((1,))), "a newer snapshot")


@_register()
def check_compact(ctx: CheckContext) -> None:
    """Compaction drops entries up to an index and keeps that index's term."""
    s = ctx.open()
    s.save(HardState(3, 1, 30), _entries(1, 11, 1) + _entries(11, 21, 2) + _entries(21, 31, 3))
    s.create_snapshot(25, ConfState((1,)))
    s.compact(15)
    expect_equal((s.first_index(), s.last_index()), (16, 30), "bounds after compact(15)")
    expect_equal(s.term(15), 2, "term(15) at the compaction point")
    with expect_raises(CompactedError, "term(14) below the compaction point"):
        s.term(14)
    with expect_raises(CompactedError, "entries(15, 17)"):
        s.entries(15, 17)
    expect_equal(s.entries(16, 31), _entries(16, 21, 2) + _entries(21, 31, 3), "entries(16, 31)")
    s.compact(10)
    s.compact(15)
    expect_equal(s.first_index(), 16, "first_index() after compacting to older points")
    with expect_raises(UsageError, "compact(26) beyond the snapshot"):
        s.compact(26)
    s.compact(25)
    expect_equal((s.first_index(), s.term(25)), (26, 3), "(first_index, term) after compact(25)")
    s.create_snapshot(30, ConfState((1,)))
    s.compact(30)
    expect_equal(
        (s.first_index(), s.last_index(), s.term(30)), (31, 30, 3), "a fully compacted log"
    )
    expect_equal(s.entries(31, 31), [], "entries(31, 31) of a fully compacted log")
    s.save(HardState(4, 1, 31), _entries(31, 33, 4))
    expect_equal(s.entries(31, 33), _entries(31, 33, 4), "appends after full compaction")


@_register()
def check_install_snapshot(ctx: CheckContext) -> None:
    """A saved snapshot replaces the log; entries and hard state may come with it."""
    s = ctx.open()
    s.save(HardState(1, 1, 5), _entries(1, 11, 1))
    conf = ConfState(voters=(1, 2), learners=(3,))
    snap = Snapshot(SnapshotMetadata(50, 4, conf), b"leader-state")
    s.save(HardState(4, 2, 50), [], snap)
    expect_equal((s.first_index(), s.last_index(), s.term(50)), (51, 50, 4), "log after install")
    expect_equal(s.snapshot(), snap, "snapshot() after install")
    expect_equal(s.initial_state(), (HardState(4, 2, 50), conf), "initial_state() after install")
    with expect_raises(CompactedError, "term(49) after install at 50"):
        s.term(49)
    snap2 = Snapshot(SnapshotMetadata(60, 5, ConfState((1,))), b"")
    s.save(HardState(5, 1, 62), _entries(61, 64, 5), snap2)
    expect_equal((s.first_index(), s.last_index()), (61, 63), "install with entries")
    expect_equal(s.entries(61, 64), _entries(61, 64, 5), "entries saved with a snapshot")
    # A snapshot inside the log (its term disagrees) replaces the log too.
    snap3 = Snapshot(SnapshotMetadata(62, 6, ConfState((1,))), b"")
    s.save(None, [], snap3)
    expect_equal(
        (s.first_index(), s.last_index(), s.term(62)), (63, 62, 6), "install inside the log"
    )


@_register()
def check_against_model(ctx: CheckContext) -> None:
    """600 random operations; after each, everything readable matches MemoryStorage."""
    s = ctx.open()
    workload = StorageWorkload(seed=20240601)
    for _ in range(600):
        op = workload.step()
        op.run(s)
        _same_as(s, workload.model, f"after step {workload.steps}: {op.describe()}")


@_register(durable=True)
def check_reopen(ctx: CheckContext) -> None:
    """close() then reopening gives back exactly the same state, at every stage."""
    s = ctx.open()
    workload = StorageWorkload(seed=99)
    for _ in range(150):
        op = workload.step()
        op.run(s)
        if workload.steps % 10 == 0:
            s = ctx.reopen(s)
            _same_as(s, workload.model, f"after reopening at step {workload.steps}")
    s = ctx.reopen(s)
    _same_as(s, workload.model, "after the last reopen")


@_register(durable=True)
def check_reopen_after_compaction(ctx: CheckContext) -> None:
    """Compaction, snapshot and truncation all survive a clean close."""
    s = ctx.open()
    s.save(HardState(2, 1, 500), _entries(1, 1001, 2))
    s.create_snapshot(900, ConfState((1, 2, 3)), b"x")
    s.compact(900)
    s.save(HardState(3, 1, 950), _entries(960, 980, 3))
    s = ctx.reopen(s)
    expect_equal(
        (s.first_index(), s.last_index(), s.term(900)), (901, 979, 2), "bounds after reopen"
    )
    expect_equal(
        s.entries(901, 980), _entries(901, 960, 2) + _entries(960, 980, 3), "entries after reopen"
    )
    expect_equal(s.snapshot().metadata, SnapshotMetadata(900, 2, ConfState((1, 2, 3))), "snapshot")
    s.save(None, _entries(980, 990, 3))
    s = ctx.reopen(s)
    expect_equal(s.last_index(), 989, "last_index() after appending post-reopen")


@_register(durable=True)
def check_full_disk(ctx: CheckContext) -> None:
    """A save refused by a real full disk (a small tmpfs; root only, else skipped)
    raises OSError with errno ENOSPC or EDQUOT and breaks nothing: reads answer
    as before it, the same save succeeds once space returns, and every
    acknowledged save survives a reopen."""
    ctx.on_small_filesystem(_fill_then_recover)


def _fill_then_recover(ctx: CheckContext, small: Path) -> None:
    s = ctx.open("small/db")
    hard = HardState(1, 1, 0)
    s.save(hard, _entries(1, 11, 1, size=4096))
    filler = fill(small)
    index = 11  # the next entry to save
    refused: OSError | None = None
    while index < 10_000 and refused is None:
        try:
            s.save(HardState(1, 1, index - 1), _entries(index, index + 4, 1, size=4096))
        except OSError as exc:
            refused = exc
        else:
            hard = HardState(1, 1, index - 1)
            index += 4
    expect(refused is not None, "10,000 entries of 4 KiB were all saved on a full 16 MiB disk")
    assert refused is not None
    expect(
        is_no_space(refused),
        "a save refused by a full disk must raise OSError with errno ENOSPC or EDQUOT "
        f"(raftdb.storage.nospace), got {refused!r}",
    )
    expect_equal(s.initial_state()[0], hard, "the hard state after a refused save")
    expect_equal(
        s.entries(1, index, None),
        _entries(1, index, 1, size=4096),
        "the entries saved before a refused save, read after it",
    )
    with contextlib.suppress(OSError):  # still full: refused again, harmlessly
        s.save(HardState(1, 1, index - 1), _entries(index, index + 4, 1, size=4096))
    filler.unlink()
    s.save(HardState(1, 1, index - 1), _entries(index, index + 4, 1, size=4096))
    s.save(HardState(1, 1, index + 3), _entries(index + 4, index + 8, 1, size=4096))
    s = ctx.reopen(s, "small/db")
    expect_equal(s.last_index(), index + 7, "last_index() after space returned and a reopen")
    expect_equal(
        s.entries(1, index + 8, None),
        _entries(1, index + 8, 1, size=4096),
        "every acknowledged entry, after space returned and a reopen",
    )
    expect_equal(s.initial_state()[0], HardState(1, 1, index + 3), "the hard state after it")


@_register(durable=True)
def check_crash_recovery(ctx: CheckContext) -> None:
    """kill -9 during a stream of saves: every save that returned is there, none in part.

    Five rounds on one directory, each in a fresh child process that
    continues the workload where the recovered state stands.
    """
    run_storage_crash(ctx.require_reference(), ctx.path("crash"), seed=4242, rounds=5)
