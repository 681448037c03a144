"""Disk storage under two threads: reads go on while a write waits for its fsync.

The driver saves on its I/O thread while its event loop reads through the
core (``term``, ``first_index``, ``last_index``, cached ``entries``). These
tests hold or slow a real plugin's database write (:class:`Gate`) and check,
on LevelDB and SQLite, that those reads answer meanwhile instead of waiting
for the write (they did wait while one lock covered the write), that reads
which must go to the database wait for the write and never see it half done,
that a failed write still stops the storage, and, in a randomized run, that a
reader of the stable log always reads what a model says.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from raftdb.raft.errors import CompactedError, StorageError, UsageError
from raftdb.raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMetadata, limit_size
from raftdb.storage.disk import DiskStorage, MetaName
from raftdb.storage.memory import MemoryStorage
from raftdb.storage.protocol import Storage
from raftdb_leveldb import LevelDBStorage
from raftdb_sqlite import SQLiteStorage

PLUGINS = ("leveldb", "sqlite")
#: Upper bound of every wait in these tests: a hang fails, it never blocks the run.
WAIT = 10.0
#: How long a read may take while the write is held; far above its real cost.
READ_BUDGET = 2.0
CONF = ConfState(voters=(1,))


class Gate:
    """Holds, slows or fails the database writes of a storage, and counts them."""

    def __init__(self) -> None:
        #: While set, a write waits for :attr:`release` (after setting :attr:`entered`).
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()
        #: Raised by a write (after any hold), before it reaches the database.
        self.fail: BaseException | None = None
        #: Seconds each write sleeps before reaching the database.
        self.delay = 0.0
        self.started = 0
        self.done = 0

    @contextmanager
    def writing(self) -> Iterator[None]:
        self.started += 1
        try:
            if self.hold:
                self.entered.set()
                if not self.release.wait(WAIT):
                    raise AssertionError("the held write was never released")
            if self.delay:
                time.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            yield
        finally:
            self.done += 1


class _GatedWrites(DiskStorage):
    """Mixed in before a plugin class: its database writes pass through ``gate``."""

    gate: Gate

    def _write_batch(
        self,
        garbage: Sequence[tuple[int, int]],
        entries: Sequence[tuple[int, bytes]],
        meta: Sequence[tuple[MetaName, bytes]],
    ) -> None:
        with self.gate.writing():
            super()._write_batch(garbage, entries, meta)  # type: ignore[safe-super]


class GatedLevelDB(_GatedWrites, LevelDBStorage):
    def __init__(self, path: Path, gate: Gate, **options: Any) -> None:
        self.gate = gate
        LevelDBStorage.__init__(self, path, **options)


class GatedSQLite(_GatedWrites, SQLiteStorage):
    def __init__(self, path: Path, gate: Gate, **options: Any) -> None:
        self.gate = gate
        SQLiteStorage.__init__(self, path, **options)


def open_gated(plugin: str, path: Path, gate: Gate, **options: Any) -> DiskStorage:
    if plugin == "leveldb":
        return GatedLevelDB(path, gate, **options)
    return GatedSQLite(path, gate, **options)


def open_plain(plugin: str, path: Path) -> DiskStorage:
    return LevelDBStorage(path) if plugin == "leveldb" else SQLiteStorage(path)


class Call(threading.Thread):
    """``fn()`` on its own thread, keeping its result or exception."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> object:
        """The result, once the thread ended in time; re-raises its exception."""
        self.join(WAIT)
        assert not self.is_alive(), "the call did not end"
        if self.error is not None:
            raise self.error
        return self.result


def entry(index: int, term: int) -> Entry:
    """The entry at ``index`` of ``term``: its data (of varying size) names both."""
    tag = f"{index}/{term};".encode()
    return Entry(term, index, data=tag * (1 + (index * 7919 + term) % 20))


def entries(lo: int, hi: int, term: int) -> list[Entry]:
    return [entry(i, term) for i in range(lo, hi)]


def held_write(gate: Gate, write: Callable[[], object]) -> Call:
    """Start ``write`` on a thread and return once it is held inside the database write."""
    gate.hold = True
    writer = Call(write)
    writer.start()
    assert gate.entered.wait(WAIT), "the write never reached the database"
    return writer


@pytest.mark.parametrize("plugin", PLUGINS)
def test_memory_reads_do_not_wait_for_a_save(plugin: str, tmp_path: Path) -> None:
    gate = Gate()
    storage = open_gated(plugin, tmp_path, gate, cache_entries=16)
    storage.save(HardState(1, 1, 0), entries(1, 101, term=1))
    writer = held_write(gate, lambda: storage.save(HardState(1, 1, 100), entries(101, 111, term=1)))
    try:
        reader = Call(
            lambda: (
                storage.first_index(),
                storage.term(0),
                storage.term(100),
                storage.entries(95, 101),
                storage.last_index(),
                storage.snapshot(),
                storage.initial_state()[0],
            )
        )
        reader.start()
        reader.join(READ_BUDGET)
        assert not reader.is_alive(), "the reads waited for the write to the database"
        assert writer.is_alive(), "the write ended before the reads did"
        assert reader.outcome() == (
            1,
            0,
            1,
            entries(95, 101, term=1),
            # Memory already describes the save in flight (the core never
            # asks about its entries: they are in its unstable log until
            # advance()); the hard state and snapshot are the durable ones
            # until the write ends.
            110,
            Snapshot(),
            HardState(1, 1, 0),
        )
    finally:
        gate.release.set()
    writer.outcome()
    assert storage.initial_state()[0] == HardState(1, 1, 100)
    assert storage.entries(101, 111) == entries(101, 111, term=1)
    storage.close()
    reopened = open_plain(plugin, tmp_path)
    assert reopened.entries(1, 111) == entries(1, 111, term=1)
    reopened.close()


@pytest.mark.parametrize("plugin", PLUGINS)
def test_memory_reads_do_not_wait_for_create_snapshot(plugin: str, tmp_path: Path) -> None:
    gate = Gate()
    storage = open_gated(plugin, tmp_path, gate, cache_entries=16)
    storage.save(HardState(1, 1, 100), entries(1, 101, term=1))
    writer = held_write(gate, lambda: storage.create_snapshot(80, CONF))
    try:
        reader = Call(
            lambda: (
                storage.first_index(),
                storage.last_index(),
                storage.term(80),
                storage.entries(99, 101),
                storage.snapshot().metadata.index,
            )
        )
        reader.start()
        reader.join(READ_BUDGET)
        assert not reader.is_alive(), "the reads waited for the write to the database"
        assert writer.is_alive()
        assert reader.outcome() == (1, 100, 1, entries(99, 101, term=1), 0)
    finally:
        gate.release.set()
    made = writer.outcome()
    assert made == Snapshot(SnapshotMetadata(80, 1, CONF))
    assert storage.snapshot() == made
    storage.compact(80)
    assert storage.first_index() == 81
    storage.close()


@pytest.mark.parametrize("plugin", PLUGINS)
def test_database_reads_wait_for_the_save_in_flight(plugin: str, tmp_path: Path) -> None:
    """Entries older than the cache come from the database: while a save is
    in flight those reads wait for it, and never see the entries it replaces.

    The save truncates the log at 51 with 30 entries, more than the cache
    holds, so 51..64 are in memory's bounds but only in the write in flight.
    The core never reads them before advance(); another caller must still
    get the new entries, not the old ones nor a CorruptionError.
    """
    gate = Gate()
    storage = open_gated(plugin, tmp_path, gate, cache_entries=16)
    storage.save(HardState(1, 1, 0), entries(1, 101, term=1))
    writer = held_write(gate, lambda: storage.save(HardState(2, 2, 0), entries(51, 81, term=2)))
    try:
        memory = Call(lambda: (storage.term(50), storage.term(70), storage.last_index()))
        memory.start()
        memory.join(READ_BUDGET)
        assert not memory.is_alive(), "a memory read waited for the write"
        assert memory.outcome() == (1, 2, 80)
        # A database reader waits holding the memory lock (so no later write
        # can start under it): these two queue behind the write in flight.
        durable = Call(lambda: storage.entries(40, 51))
        in_flight = Call(lambda: storage.entries(51, 60))
        durable.start()
        in_flight.start()
        durable.join(0.2)
        in_flight.join(0.2)
        assert durable.is_alive(), "a database read did not wait for the write in flight"
        assert in_flight.is_alive(), "a database read did not wait for the write in flight"
        assert writer.is_alive()
    finally:
        gate.release.set()
    writer.outcome()
    assert durable.outcome() == entries(40, 51, term=1)
    assert in_flight.outcome() == entries(51, 60, term=2)
    storage.close()


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_failed_write_still_stops_the_storage(plugin: str, tmp_path: Path) -> None:
    gate = Gate()
    storage = open_gated(plugin, tmp_path, gate, cache_entries=16)
    storage.save(HardState(1, 1, 0), entries(1, 101, term=1))
    gate.fail = OSError(5, "disk on fire")
    writer = held_write(gate, lambda: storage.save(None, entries(51, 81, term=2)))
    try:
        memory = Call(lambda: storage.term(50))
        memory.start()
        memory.join(READ_BUDGET)
        assert not memory.is_alive(), "a memory read waited for the write"
        assert memory.outcome() == 1
        from_disk = Call(lambda: storage.entries(51, 60))  # only in the failing write
        from_disk.start()
        from_disk.join(0.2)
        assert from_disk.is_alive(), "a database read did not wait for the write in flight"
        assert writer.is_alive()
    finally:
        gate.release.set()
    with pytest.raises(OSError, match="disk on fire"):
        writer.outcome()
    # Not the old entries, not "entry 51 is missing": the storage failed.
    with pytest.raises(StorageError, match="failed earlier.*disk on fire"):
        from_disk.outcome()
    gate.fail = None
    calls: list[Callable[[], object]] = [
        storage.first_index,
        storage.last_index,
        lambda: storage.term(10),
        lambda: storage.entries(95, 101),
        lambda: storage.entries(1, 5),
        storage.snapshot,
        storage.initial_state,
        lambda: storage.save(None, entries(101, 102, term=1)),
        lambda: storage.create_snapshot(10, CONF),
        lambda: storage.compact(5),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="failed earlier"):
            call()
    storage.close()
    with pytest.raises(UsageError, match="closed"):
        storage.last_index()
    # Memory was ahead of the disk; the disk still holds the log before the failure.
    reopened = open_plain(plugin, tmp_path)
    assert reopened.entries(1, 101) == entries(1, 101, term=1)
    reopened.close()


@pytest.mark.parametrize("plugin", PLUGINS)
def test_close_refuses_reads_at_once(plugin: str, tmp_path: Path) -> None:
    """``close`` writes pending compaction; reads during that write are refused, not served."""
    gate = Gate()
    storage = open_gated(plugin, tmp_path, gate)
    storage.save(HardState(1, 1, 50), entries(1, 101, term=1))
    storage.create_snapshot(50, CONF)
    storage.compact(50)
    writer = held_write(gate, storage.close)
    try:
        reader = Call(storage.last_index)
        reader.start()
        reader.join(READ_BUDGET)
        assert not reader.is_alive(), "a read waited for close's write"
        with pytest.raises(UsageError, match="closed"):
            reader.outcome()
    finally:
        gate.release.set()
    writer.outcome()
    reopened = open_plain(plugin, tmp_path)
    assert reopened.first_index() == 51
    reopened.close()


# -- one writer, one reader, against a model -------------------------------------------


class Frontier:
    """What the reader may read: the stable log as the writer last published it.

    It plays the core's unstable offset: the writer lowers it before a save
    that truncates (or installs a snapshot) and raises it after a save
    returned, both while the reader is between reads (``lock``), as the
    core's loop does between steps. Saves themselves run unlocked, beside
    the reads.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dummy = 0
        self.hi = 0  # last readable index; nothing to read while hi <= dummy
        self.terms: dict[int, int] = {0: 0}

    def publish(self, dummy: int, hi: int, terms: dict[int, int]) -> None:
        with self.lock:
            self.dummy, self.hi, self.terms = dummy, hi, terms


def _writer(storage: Storage, frontier: Frontier, rng: random.Random, ops: int) -> None:
    terms: dict[int, int] = {0: 0}
    dummy = last = snap_index = 0
    term = 1
    for _ in range(ops):
        r = rng.random()
        if r < 0.55 or last == dummy:
            n = rng.choice((1, 1, 2, 5, 16, 40))
            storage.save(HardState(term, 1, dummy), entries(last + 1, last + n + 1, term))
            terms.update((i, term) for i in range(last + 1, last + n + 1))
            last += n
        elif r < 0.7:
            # A new leader's entries replace the tail from t on (some saves
            # are larger than the cache); never the snapshot's (committed) part.
            if last <= snap_index:
                continue
            t = rng.randint(max(dummy, snap_index) + 1, last)
            term += 1
            n = rng.choice((1, 3, 30, 40))
            frontier.publish(dummy, t - 1, dict(terms))
            storage.save(HardState(term, 2, dummy), entries(t, t + n, term))
            for i in range(t, last + 1):
                del terms[i]
            terms.update((i, term) for i in range(t, t + n))
            last = t + n - 1
        elif r < 0.82:
            if last <= snap_index:
                continue
            index = rng.randint(snap_index + 1, last)
            storage.create_snapshot(index, CONF)
            snap_index = index
            upto = index - rng.choice((0, 10, 50))
            storage.compact(upto)
            if upto > dummy:
                for i in range(dummy, upto):
                    del terms[i]
                dummy = upto
        elif r < 0.85:
            # A leader's snapshot replaces the whole log, maybe with entries after it.
            index = max(last, snap_index) + rng.randint(0, 10)
            index = max(index, snap_index + 1)
            term += 1
            n = rng.choice((0, 0, 5, 30))
            frontier.publish(dummy, dummy, dict(terms))  # the core reads nothing meanwhile
            snapshot = Snapshot(SnapshotMetadata(index, term, CONF))
            storage.save(
                HardState(term, 1, index), entries(index + 1, index + n + 1, term), snapshot
            )
            dummy = snap_index = index
            last = index + n
            terms = {i: term for i in range(index, last + 1)}
        else:
            storage.save(HardState(term, rng.randint(0, 3), dummy), [])
        frontier.publish(dummy, last, dict(terms))


class _Reader:
    def __init__(self, storage: Storage, frontier: Frontier, gate: Gate) -> None:
        self.storage = storage
        self.frontier = frontier
        self.gate = gate
        self.stop = threading.Event()
        self.reads = 0
        #: Reads that began and ended inside one database write.
        self.overlapped = 0

    def run(self, rng: random.Random) -> None:
        while not self.stop.is_set():
            with self.frontier.lock:
                started, done = self.gate.started, self.gate.done
                self.read_once(rng)
                if (started, done) == (self.gate.started, self.gate.done) and started > done:
                    self.overlapped += 1
            self.reads += 1
            # Let the writer have the GIL: a reader spinning on it would make
            # each write wait out a whole switch interval (5 ms).
            time.sleep(0)

    def read_once(self, rng: random.Random) -> None:
        storage, f = self.storage, self.frontier
        assert storage.first_index() - 1 <= f.hi or f.hi == f.dummy
        assert storage.last_index() >= f.hi
        if f.hi <= f.dummy:
            return
        lo = rng.randint(max(f.dummy + 1, f.hi - 100), f.hi)
        try:
            if rng.random() < 0.5:
                max_bytes = rng.choice((None, 1, 500, 5000))
                got = storage.entries(lo, f.hi + 1, max_bytes)
                want = limit_size(entries_of(f.terms, lo, f.hi + 1), max_bytes)
                assert got == want, f"entries({lo}, {f.hi + 1}, {max_bytes})"
            else:
                for i in rng.sample(range(lo - 1, f.hi + 1), min(5, f.hi + 2 - lo)):
                    assert storage.term(i) == f.terms[i], f"term({i})"
        except CompactedError:
            # Compacted since it was published (compaction needs no publishing):
            # the dummy index only grows, so it must be at or past lo by now.
            assert lo <= storage.first_index() - 1


def entries_of(terms: dict[int, int], lo: int, hi: int) -> list[Entry]:
    return [entry(i, terms[i]) for i in range(lo, hi)]


def _run_writer_and_reader(
    storage: Storage, frontier: Frontier, gate: Gate, seed: int, ops: int
) -> _Reader:
    """``ops`` random writes on one thread while a reader checks the stable log
    against ``frontier`` on another; the reader, once both ended without error."""
    reader = _Reader(storage, frontier, gate)
    reading = Call(lambda: reader.run(random.Random(seed + 1000)))
    reading.start()
    writing = Call(lambda: _writer(storage, frontier, random.Random(seed), ops=ops))
    writing.start()
    try:
        writing.join(60)
        assert not writing.is_alive(), "the writer did not finish (deadlock?)"
    finally:
        reader.stop.set()
    writing.outcome()
    reading.outcome()
    assert reader.reads > 100
    return reader


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("seed", [1, 2])
def test_one_writer_one_reader_against_a_model(plugin: str, seed: int, tmp_path: Path) -> None:
    """A writer saves, truncates, snapshots, compacts and installs snapshots;
    a reader reads the stable log the whole time. Every read matches the
    model, some reads happen inside a write (they overlapped a database
    write instead of waiting for it), and the log reopens as the model says.
    """
    gate = Gate()
    gate.delay = 0.0003  # a slow disk: widens the window each write is in flight
    storage = open_gated(plugin, tmp_path, gate, cache_entries=24, cache_bytes=1 << 20)
    frontier = Frontier()
    reader = _run_writer_and_reader(storage, frontier, gate, seed, ops=1200)
    assert reader.overlapped > 0, "no read ever ran inside a database write"
    dummy, hi, terms = frontier.dummy, frontier.hi, frontier.terms
    snapshot = storage.snapshot()
    storage.close()
    reopened = open_plain(plugin, tmp_path)
    assert (reopened.first_index(), reopened.last_index()) == (dummy + 1, hi)
    assert reopened.term(dummy) == terms[dummy]
    assert reopened.entries(dummy + 1, hi + 1) == entries_of(terms, dummy + 1, hi + 1)
    assert reopened.snapshot() == snapshot
    reopened.close()


class _YieldingMemory(MemoryStorage):
    """Gives the reader the GIL before each write, so that reads interleave with
    writes (a memory write is too quick to be caught in the middle otherwise)."""

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        time.sleep(0)
        super().save(hard_state, entries, snapshot)


@pytest.mark.parametrize("seed", [1, 2])
def test_memory_storage_one_writer_one_reader_against_a_model(seed: int) -> None:
    """The same randomized run on ``MemoryStorage`` (the ``memory`` plugin, which
    the driver also drives from two threads): every read matches the model."""
    storage = _YieldingMemory()
    frontier = Frontier()
    _run_writer_and_reader(storage, frontier, Gate(), seed, ops=3000)
    dummy, hi, terms = frontier.dummy, frontier.hi, frontier.terms
    assert (storage.first_index(), storage.last_index()) == (dummy + 1, hi)
    assert storage.entries(dummy + 1, hi + 1) == entries_of(terms, dummy + 1, hi + 1)
