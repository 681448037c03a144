"""The LevelDB state machine's leases and watch history: on disk, across reopen,
restore, a full disk and kill -9, always equal to the in-memory reference.

The reference is a :class:`MemoryStateMachine` with the same ``watch_history``
applying the same entries: the Applier decides everything, so the two must
agree on every result, lease, history change and floor, and produce the same
snapshot stream.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import plyvel
import pytest

from raftdb.codec import CorruptionError
from raftdb.kv.commands import Command, KVResult
from raftdb.kv.snapshot import SnapshotFormatError
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.raft.messages import Entry
from raftdb.testing.conformance.checks import fill, small_filesystem
from raftdb.testing.conformance.state_machine import digest
from raftdb_leveldb import LevelDBStateMachine
from tests.plugins.lease_workload import LeaseWorkload, entries_up_to

HISTORY = 60  # small, so that the workloads trim the history all the time
WORKLOAD = Path(__file__).with_name("lease_workload.py")

# A format-1 snapshot stream (before leases and the history), as the code of
# that format wrote it: keys old/1, old/3, old/4, old/5 at index 6.
FORMAT_1_STREAM = bytes.fromhex(
    "524442534e4150310100000008af12562a95010602929090900200000038be86008d94c4056f6c"
    "642f31c4027631010194c4056f6c642f33c4027633030394c4056f6c642f34c4027634040494c4"
    "056f6c642f35c40276350505040000000362b3d854920400"
)


def observed(machine: Any) -> tuple[Any, ...]:
    """Everything a machine says about its leases and history, plus its digest."""
    return (
        machine.leases(),
        machine.history(0, 1 << 30),
        digest(machine),
    )


def lease_and_history_state(machine: Any) -> tuple[Any, ...]:
    return machine.leases(), machine.history(0, 1 << 30)


def history_records(machine: LevelDBStateMachine) -> int:
    """The history records in the machine's database (trimmed ones must be gone)."""
    return sum(1 for _ in machine._db.iterator(prefix=b"h", include_value=False))


def run_both(
    machine: Any, reference: MemoryStateMachine, workload: LeaseWorkload, total: int
) -> None:
    for batch in workload.batches(total):
        assert machine.apply(batch) == reference.apply(batch)


def test_leases_and_history_match_the_reference_and_survive_reopen(tmp_path: Path) -> None:
    machine = LevelDBStateMachine(tmp_path, watch_history=HISTORY)
    reference = MemoryStateMachine(watch_history=HISTORY)
    workload = LeaseWorkload(1)
    run_both(machine, reference, workload, 600)
    floor, changes = reference.history(0, 1 << 30)
    assert floor > 0, "the workload is meant to trim the history"
    assert reference.leases(), "the workload is meant to leave leases alive"
    assert observed(machine) == observed(reference)
    for lease in reference.leases():
        assert machine.lease(lease.id) == lease
    assert machine.lease(10**9) is None
    # Pages of the history: the same answers whatever the page size.
    for after in (0, floor, changes[len(changes) // 2].index):
        for limit in (1, 7):
            assert machine.history(after, limit) == reference.history(after, limit)
    # Trimmed changes are deleted from the database, not only from memory.
    assert history_records(machine) == len(changes)
    machine.close()

    machine = LevelDBStateMachine(tmp_path, watch_history=HISTORY)
    assert observed(machine) == observed(reference)
    run_both(machine, reference, workload, 900)  # and it goes on from there
    assert observed(machine) == observed(reference)
    machine.close()


@pytest.mark.parametrize("bad", [-1, 1.5, "10"])
def test_a_bad_watch_history_is_refused_naming_it(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="watch_history must be an integer >= 0"):
        LevelDBStateMachine(tmp_path / "sm", watch_history=bad)
    assert not (tmp_path / "sm").exists()  # refused before anything was created


@pytest.mark.parametrize("limit", [0, 1])
def test_a_tiny_watch_history_keeps_the_last_index_only_or_nothing(
    tmp_path: Path, limit: int
) -> None:
    machine = LevelDBStateMachine(tmp_path, watch_history=limit)
    reference = MemoryStateMachine(watch_history=limit)
    run_both(machine, reference, LeaseWorkload(13), 300)
    assert lease_and_history_state(machine) == lease_and_history_state(reference)
    assert history_records(machine) == len(reference.history(0, 1 << 30)[1]) <= limit
    machine.close()
    machine = LevelDBStateMachine(tmp_path, watch_history=limit)
    assert observed(machine) == observed(reference)
    machine.close()


def test_a_smaller_watch_history_after_a_restart_trims_at_the_next_batch(tmp_path: Path) -> None:
    workload = LeaseWorkload(2)
    entries = list(workload.batches(400))
    machine = LevelDBStateMachine(tmp_path, watch_history=200)
    for batch in entries:
        machine.apply(batch)
    machine.close()
    machine = LevelDBStateMachine(tmp_path, watch_history=20)
    reference = MemoryStateMachine(watch_history=20)
    for batch in entries:
        reference.apply(batch)
    run_both(machine, reference, workload, 450)
    assert lease_and_history_state(machine) == lease_and_history_state(reference)
    assert history_records(machine) == len(reference.history(0, 1 << 30)[1])
    machine.close()


def test_restore_replaces_leases_and_history_and_survives_reopen(tmp_path: Path) -> None:
    machine = LevelDBStateMachine(tmp_path, watch_history=HISTORY)
    for batch in LeaseWorkload(3).batches(300):
        machine.apply(batch)
    before = observed(machine)
    source = MemoryStateMachine(watch_history=HISTORY)
    for batch in LeaseWorkload(4).batches(500):
        source.apply(batch)
    chunks = list(source.snapshot(chunk_size=300))
    # A truncated stream leaves the old leases and history whole.
    with pytest.raises(SnapshotFormatError):
        machine.restore(chunks[:-1])
    assert observed(machine) == before
    info = machine.restore(chunks)
    assert info.index == 500
    assert observed(machine) == observed(source)
    machine.close()
    machine = LevelDBStateMachine(tmp_path, watch_history=HISTORY)
    assert observed(machine) == observed(source)
    assert history_records(machine) == len(source.history(0, 1 << 30)[1])
    machine.close()


def test_a_format_1_stream_restores_with_no_leases_and_its_index_as_floor(
    tmp_path: Path,
) -> None:
    machine = LevelDBStateMachine(tmp_path, watch_history=HISTORY)
    for batch in LeaseWorkload(5).batches(200):
        machine.apply(batch)
    info = machine.restore([FORMAT_1_STREAM[:40], FORMAT_1_STREAM[40:]])
    assert info.index == 6
    assert machine.leases() == []
    assert machine.history(0, 100) == (6, [])
    assert [kv.key for kv in machine.range()] == [b"old/1", b"old/3", b"old/4", b"old/5"]
    # What follows is recorded from there on, and survives a reopen.
    machine.apply([Entry(2, 7, data=Command.put(b"old/1", b"new").encode())])
    floor, changes = machine.history(0, 100)
    assert floor == 6
    assert [(c.index, c.key, c.value, c.prev_mod_index) for c in changes] == [
        (7, b"old/1", b"new", 1)
    ]
    machine.close()
    machine = LevelDBStateMachine(tmp_path)
    assert machine.history(0, 100) == (floor, changes)
    machine.close()


def _make_format_1(tmp_path: Path) -> Path:
    """A database as the code before leases and the history left it: marker 1, no
    floor, no lease or history record (it wrote none)."""
    machine = LevelDBStateMachine(tmp_path)
    machine.apply([Entry(1, i, data=Command.put(b"k%d" % i, b"v").encode()) for i in range(1, 9)])
    db_path = machine.db_path
    machine.close()
    db = plyvel.DB(str(db_path))
    for key, _ in list(db.iterator(prefix=b"h")):
        db.delete(key)
    db.delete(b"m/floor")
    db.put(b"m/format", b"raftdb.leveldb.state_machine/1")
    db.close()
    return db_path


def test_a_format_1_database_is_upgraded_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path = _make_format_1(tmp_path)
    with caplog.at_level(logging.WARNING, logger="raftdb.leveldb"):
        machine = LevelDBStateMachine(tmp_path)
    [message] = [r.getMessage() for r in caplog.records if r.name == "raftdb.leveldb"]
    assert message.endswith(
        ": upgraded from format raftdb.leveldb.state_machine/1 to "
        "raftdb.leveldb.state_machine/2 (no leases, and no watch history before index 8)"
    )
    assert machine.applied_index == 8
    assert machine.history(0, 100) == (8, [])  # nothing before the upgrade is retained
    assert machine.leases() == []
    machine.apply([Entry(1, 9, data=Command.delete(b"k1").encode())])
    assert [c.index for c in machine.history(0, 100)[1]] == [9]
    machine.close()
    db = plyvel.DB(str(db_path))
    assert db.get(b"m/format") == b"raftdb.leveldb.state_machine/2"
    db.close()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda db: db.delete(b"m/floor"), "history floor record is missing"),
        (lambda db: db.put(b"m/floor", b"\x00\x01"), "floor record has 2 bytes"),
        (lambda db: db.put(b"m/floor", (10**6).to_bytes(8, "big")), "above the applied index"),
        (lambda db: db.put(b"l" + (5).to_bytes(8, "big"), b"\x09junk"), "lease"),
        (lambda db: db.put(b"h" + b"\x00" * 12, b"\x09junk"), "history record"),
    ],
)
def test_damaged_lease_and_history_records_stop_the_open(
    tmp_path: Path, tamper: Any, message: str
) -> None:
    machine = LevelDBStateMachine(tmp_path, watch_history=HISTORY)
    for batch in LeaseWorkload(6).batches(100):
        machine.apply(batch)
    db_path = machine.db_path
    machine.close()
    db = plyvel.DB(str(db_path))
    tamper(db)
    db.close()
    with pytest.raises(CorruptionError, match=message):
        LevelDBStateMachine(tmp_path)


def test_a_missing_change_within_an_index_stops_the_open(tmp_path: Path) -> None:
    machine = LevelDBStateMachine(tmp_path, watch_history=10_000)
    reference = MemoryStateMachine(watch_history=10_000)
    run_both(machine, reference, LeaseWorkload(7), 300)
    changes = reference.history(0, 1 << 30)[1]
    counts: dict[int, int] = {}
    for change in changes:
        counts[change.index] = counts.get(change.index, 0) + 1
    index = next(i for i, n in counts.items() if n >= 2)  # a txn's or a revoke's
    db_path = machine.db_path
    machine.close()
    db = plyvel.DB(str(db_path))
    db.delete(b"h" + index.to_bytes(8, "big") + (0).to_bytes(4, "big"))
    db.close()
    with pytest.raises(CorruptionError, match="missing or misplaced"):
        LevelDBStateMachine(tmp_path)


def test_reads_of_leases_and_history_never_see_part_of_a_batch(tmp_path: Path) -> None:
    """While batches are applied, every read of the history ends at a batch's end."""
    machine = LevelDBStateMachine(tmp_path, sync=False, watch_history=10_000)
    batches = list(LeaseWorkload(8).batches(800))
    reference = MemoryStateMachine(watch_history=10_000)
    for batch in batches:
        reference.apply(batch)
    full = reference.history(0, 1 << 30)[1]
    indexes = [c.index for c in full]
    # For each batch's last index, how many changes the batches up to it made.
    at_end = {0: 0} | {b[-1].index: bisect.bisect_right(indexes, b[-1].index) for b in batches}
    stops = sorted(at_end)
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                _, changes = machine.history(0, 1 << 30)
                seen.append((len(changes), changes[-1].index if changes else 0))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for batch in batches:
            machine.apply(batch)
    finally:
        done.set()
        thread.join(30)
    assert not errors
    for count, last in seen:
        # What a read saw ends at a batch's end: all the changes of the batch
        # holding its last change, none of a later batch.
        assert count == at_end[stops[bisect.bisect_left(stops, last)]]
    assert observed(machine) == observed(reference)
    machine.close()


# -- a full disk -----------------------------------------------------------------------


def test_a_batch_refused_by_a_full_disk_is_applied_once_with_its_leases_and_history(
    tmp_path: Path,
) -> None:
    """A real ENOSPC (a small tmpfs; root only) refuses a batch of lease work:
    leases and history read as before it, and once space returns the batch is
    applied exactly once, as the reference applied it."""
    with small_filesystem(tmp_path / "small") as small:
        machine = LevelDBStateMachine(small / "sm", watch_history=HISTORY)
        try:
            reference = MemoryStateMachine(watch_history=HISTORY)
            workload = LeaseWorkload(9)
            run_both(machine, reference, workload, 200)
            filler = fill(small)
            refused: OSError | None = None
            batch: list[Entry] = []
            for _ in range(20_000):
                # Big values fill the disk; the workload's lease work rides along.
                batch = [*workload.batch(), *_big_puts(workload, 4)]
                try:
                    machine.apply(batch)
                except OSError as exc:
                    refused = exc
                    break
                reference.apply(batch)
            assert refused is not None, "the disk never filled"
            assert machine.applied_index == batch[0].index - 1
            assert lease_and_history_state(machine) == lease_and_history_state(reference)
            filler.unlink()
            assert machine.apply(batch) == reference.apply(batch)
            assert lease_and_history_state(machine) == lease_and_history_state(reference)
            machine.close()
            machine = LevelDBStateMachine(small / "sm", watch_history=HISTORY)
            assert observed(machine) == observed(reference)
        finally:
            machine.close()


class _LandsThenRefuses:
    """A database whose next batch is written, and then reported refused for lack
    of space: LevelDB's case of a log record written whole and an fsync refused."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)

    def write_batch(self, **kwargs: Any) -> Any:
        real = self.db.write_batch(**kwargs)
        outer = self

        class Batch:
            put, delete = real.put, real.delete

            def write(self) -> None:
                real.write()
                if outer.armed:
                    outer.armed = False
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return Batch()


def test_a_refused_batch_that_reached_the_disk_is_not_applied_twice(tmp_path: Path) -> None:
    machine = LevelDBStateMachine(tmp_path, watch_history=HISTORY)
    reference = MemoryStateMachine(watch_history=HISTORY)
    workload = LeaseWorkload(12)
    run_both(machine, reference, workload, 150)
    # The next batch that changes keys (its changes go to the history).
    while True:
        before = lease_and_history_state(machine)
        batch = workload.batch()
        expected = reference.apply(batch)
        if any(isinstance(r, KVResult) and r.changes for r in expected):
            break
        machine.apply(batch)
    machine._db = _LandsThenRefuses(machine._db)
    with pytest.raises(OSError, match="space"):
        machine.apply(batch)
    assert machine.applied_index == batch[0].index - 1
    assert lease_and_history_state(machine) == before  # reads do not see the batch yet
    # Retried, it reopens the database, finds the batch there and answers the
    # results computed the first time, without applying it again.
    assert machine.apply(batch) == expected
    assert machine.applied_index == batch[-1].index
    assert lease_and_history_state(machine) == lease_and_history_state(reference)
    run_both(machine, reference, workload, 250)
    assert observed(machine) == observed(reference)
    assert history_records(machine) == len(reference.history(0, 1 << 30)[1])
    machine.close()


def _big_puts(workload: LeaseWorkload, count: int) -> list[Entry]:
    out = []
    for _ in range(count):
        workload.index += 1
        command = Command.put(b"big/%d" % (workload.index % 50), b"x" * 4096)
        out.append(Entry(1, workload.index, data=command.encode()))
    return out


# -- kill -9 ---------------------------------------------------------------------------


def test_kill_9_during_applies_keeps_leases_and_history_at_the_applied_index(
    tmp_path: Path,
) -> None:
    """kill -9 a child applying the lease workload (synced); reopened, the leases,
    history and floor are exactly the reference's at the recovered applied index."""
    path = tmp_path / "sm"
    acked = 0
    for round_no, kill_after in enumerate((5, 17, 29)):
        child = subprocess.Popen(
            [sys.executable, str(WORKLOAD), str(path), "10", str(HISTORY)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).parents[2],
        )
        watchdog = threading.Timer(60, child.kill)
        watchdog.start()
        try:
            assert child.stdout is not None
            count = 0
            for raw in child.stdout:
                line = raw.decode().strip()
                if line.startswith("ready"):
                    continue
                acked, count = int(line), count + 1
                if count >= kill_after:
                    break
            child.kill()
            late = [int(x) for x in child.stdout.read().decode().split() if x.isdigit()]
            acked = max([acked, *late])
            child.wait()
        finally:
            watchdog.cancel()
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()
        machine = LevelDBStateMachine(path, watch_history=HISTORY)
        try:
            applied = machine.applied_index
            assert applied >= acked, f"round {round_no}: lost an acknowledged batch"
            reference = MemoryStateMachine(watch_history=HISTORY)
            _apply_in_workload_batches(reference, 10, applied)
            assert observed(machine) == observed(reference), f"round {round_no}"
            assert history_records(machine) == len(reference.history(0, 1 << 30)[1])
        finally:
            machine.close()


def _apply_in_workload_batches(machine: Any, seed: int, index: int) -> None:
    for batch in LeaseWorkload(seed).batches(index):
        machine.apply(batch)


def test_entries_up_to_is_the_workload_prefix() -> None:
    entries = entries_up_to(11, 50)
    assert [e.index for e in entries] == list(range(1, 51))
    assert entries == entries_up_to(11, 80)[:50]
