"""The Storage interface (a read side for the core, a write side for the driver)
and :class:`MemoryStorage`, the in-memory implementation.

The split follows the callers. The Raft core only ever reads the durable log
(:class:`StorageReader`, the shape of etcd's ``raft.Storage``); the driver
makes things durable, one atomic :meth:`StorageWriter.save` per Ready. A plugin
implements both, as :class:`Storage`; typing the core's parameter with the read
protocol lets mypy stop the core from writing.

Log layout, as in etcd: the storage holds a *dummy* position just before its
first entry, whose index and term are known (they come from the last compaction
or snapshot), so ``term(first_index() - 1)`` always answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from raftdb.raft.errors import CompactedError, UnavailableError, UsageError
from raftdb.raft.messages import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    limit_size,
)

__all__ = [
    "MemoryStorage",
    "Storage",
    "StorageReader",
    "StorageWriter",
    "limit_size",
]


@runtime_checkable
class StorageReader(Protocol):
    """What the Raft core reads. What the core asks about is durable state.

    Threads: the core calls these on the driver's event loop while the
    driver's I/O thread may be inside a write (see :class:`StorageWriter`)
    or reading between its writes. A plugin must answer reads concurrently
    with each other and with that one write, and should not make them wait
    for the write's fsync: a read that blocks stops the node's whole loop.
    Nor may reads block for long otherwise (a plugin keeps recent entries
    cached).

    What the core asks: only the log it holds as stable. It reads entries
    and terms only below its unstable part, whose entries a Ready hands to
    :meth:`StorageWriter.save` and which stay unstable until ``advance()``,
    called once ``save`` returned; it asks ``first_index``, ``last_index``
    and ``snapshot`` only when its unstable part holds no snapshot (and, for
    ``last_index``, no entries). So it never asks about what a write in
    flight is writing. A plugin may answer such questions (from another
    caller) from the state that write is producing, but must never return
    wrong data for them: not the entries being replaced, and not a
    corruption error for entries not yet written.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The saved hard state and the membership of the latest snapshot.

        Returns:
            ``(hard_state, conf_state)``; zero values for a new node.
        """
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries with indexes in ``[lo, hi)``.

        Args:
            lo: first index wanted.
            hi: one past the last index wanted.
            max_bytes: stop once the entries returned would exceed this many
                bytes (by :func:`~raftdb.raft.messages.entry_size`); at least one
                entry is returned whenever ``lo < hi``. ``None``: no limit.

        Raises:
            CompactedError: ``lo < first_index()``.
            UnavailableError: ``hi > last_index() + 1``.
        """
        ...

    def term(self, index: int) -> int:
        """The term of the entry at ``index``.

        Answers for ``first_index() - 1 <= index <= last_index()``.

        Raises:
            CompactedError: ``index < first_index() - 1``.
            UnavailableError: ``index > last_index()``.
        """
        ...

    def first_index(self) -> int:
        """Index of the first entry still available (the dummy position + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last durable entry (``first_index() - 1`` when empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (possibly empty: index 0).

        Raises:
            SnapshotTemporarilyUnavailableError: one is being prepared; the core
                retries later.
        """
        ...


@runtime_checkable
class StorageWriter(Protocol):
    """What the driver calls to make the core's output durable.

    Single writer: the driver calls ``save``, ``create_snapshot``,
    ``compact`` and ``close`` on one thread (its I/O thread), never two at
    once, and a plugin may rely on that; reads (:class:`StorageReader`) come
    meanwhile from another thread.
    """

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Make one Ready's output durable, atomically.

        Applied in this order, as one atomic write: ``snapshot`` (when given,
        the log up to it is replaced by it), then ``entries`` (an entry whose
        index is already stored replaces it and everything after it), then
        ``hard_state``. When this returns, a crash of the process or the machine
        loses none of it; a crash during it leaves either all of it or none.

        Durability is the plugin's promise: with ``sync`` on (the default),
        "durable" means the write reached stable storage (fsync) before this
        returns, so neither a kill -9 nor a power loss loses it; one save is
        one fsync however many entries it carries (group commit). A torn write
        is never visible after a restart as a partial batch.

        Args:
            hard_state: the new hard state, or ``None`` if unchanged.
            entries: consecutive entries; the first one's index is at most
                ``last_index() + 1`` and at least ``first_index()``.
            snapshot: a snapshot received from the leader, newer than the
                current one, or ``None``.

        Raises:
            UsageError: the entries leave a gap or reach into the compacted log,
                or the snapshot is not newer; nothing was written.
            OSError, StorageError: the write failed. The storage may then
                refuse every later call: the node must stop.
        """
        ...

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes = b"") -> Snapshot:
        """Record that the state machine has a snapshot at ``index``.

        Durable when it returns. The log is not changed; :meth:`compact` may
        then drop entries up to ``index``. ``data`` is kept as given (raftdb's
        driver leaves it empty and streams the state machine's snapshot).

        Raises:
            UsageError: ``index`` is older than the current snapshot or beyond
                the last entry.
        """
        ...

    def compact(self, index: int) -> None:
        """Drop entries with indexes below or at ``index``, keeping its term.

        Afterwards ``first_index() == index + 1`` and ``term(index)`` answers.
        Requires ``index <= snapshot().metadata.index`` so that a follower that
        needs the dropped entries can be sent the snapshot instead. Compacting
        to an index at or below the current dummy position does nothing.

        Compaction is cheap and need not be durable by itself: a plugin may
        make it durable with the next ``save`` or at ``close``, so after a
        crash ``first_index()`` may be lower than asked (the dropped entries
        are back, unchanged), never higher. Dropping entries never stalls
        appends for long: disk plugins delete them a slice at a time.

        Raises:
            UsageError: ``index`` is beyond the latest snapshot or the last index.
        """
        ...

    def close(self) -> None:
        """Make pending work durable, release files and handles.

        Nothing may be called afterwards. Reopening the same path (with the
        plugin's factory) gives back the same log, hard state and snapshot.
        """
        ...


@runtime_checkable
class Storage(StorageReader, StorageWriter, Protocol):
    """A complete storage plugin: the core's read side and the driver's write side.

    A plugin is found by name (entry-point group ``raftdb.storage``) or as
    ``module:attr``, and made by calling it as ``factory(path, sync=True)``:
    ``path`` is a directory the storage owns (created if missing), ``sync``
    whether saves fsync. Errors reading what is on disk at open are
    :class:`~raftdb.codec.CorruptionError` naming the file and the problem.
    ``raftdb.testing.storage_checks`` holds the conformance suite
    (``docs/plugins.md``).
    """


class MemoryStorage:
    """Storage held in process memory: for tests, simulations and the ``memory`` plugin.

    It is "durable" only for the life of the object: the simulation uses it as
    the disk of a node that crashes (the core is thrown away, the storage kept),
    so what a Ready had not saved is lost as it would be on a real machine.

    Reads may run on one thread while the single writer saves or compacts on
    another (the driver's log thread): every read takes ``self._entries`` once,
    and a write that removes entries (a truncation, a compaction) swaps in a new
    list rather than changing the one a read may be looking at.
    """

    def __init__(self, path: Path | None = None, *, sync: bool = True) -> None:
        # ``path`` and ``sync`` make the class a plugin factory like the disk
        # plugins (``factory(path, sync=...)``); memory has no use for either.
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        # _entries[0] is the dummy position: its index and term are those of the
        # last compaction point; it carries no data.
        self._entries: list[Entry] = [Entry(term=0, index=0)]
        self.closed = False

    # -- read side ---------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        ents = self._entries
        offset = ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first index {offset + 1})")
        last = offset + len(ents) - 1
        if hi > last + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last index is {last}")
        return limit_size(ents[lo - offset : hi - offset], max_bytes)

    def term(self, index: int) -> int:
        ents = self._entries
        offset = ents[0].index
        if index < offset:
            raise CompactedError(f"term of {index} is compacted (dummy index {offset})")
        if index - offset >= len(ents):
            last = offset + len(ents) - 1
            raise UnavailableError(f"term of {index} requested, last index is {last}")
        return ents[index - offset].term

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        ents = self._entries
        return ents[0].index + len(ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- write side --------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        # Validate everything first, so that a refused save changes nothing.
        if snapshot is not None and snapshot.metadata.index <= self._snapshot.metadata.index:
            raise UsageError(
                f"snapshot at {snapshot.metadata.index} is not newer than the stored one "
                f"at {self._snapshot.metadata.index}"
            )
        if entries:
            offset = snapshot.metadata.index if snapshot is not None else self._entries[0].index
            last = snapshot.metadata.index if snapshot is not None else self.last_index()
            first = entries[0].index
            if first > last + 1:
                raise UsageError(f"entries start at {first}, leaving a gap after {last}")
            if first <= offset:
                raise UsageError(f"entries start at {first}, inside the compacted log")
            for i, entry in enumerate(entries):
                if entry.index != first + i:
                    raise UsageError(f"entry {entry.index} follows entry {first + i - 1}")
        if snapshot is not None:
            self._apply_snapshot(snapshot)
        if entries:
            self._append(entries)
        if hard_state is not None:
            self._hard_state = hard_state

    def _apply_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.metadata
        self._snapshot = snapshot
        self._entries = [Entry(term=meta.term, index=meta.index)]

    def _append(self, entries: Sequence[Entry]) -> None:
        ents = self._entries
        keep = entries[0].index - ents[0].index
        if keep < len(ents):  # a truncation: a new list (see the class docstring)
            self._entries = [*ents[:keep], *entries]
        else:
            ents.extend(entries)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes = b"") -> Snapshot:
        if index <= self._snapshot.metadata.index:
            raise UsageError(
                f"snapshot at {index} is not newer than the stored one "
                f"at {self._snapshot.metadata.index}"
            )
        if index > self.last_index():
            raise UsageError(f"snapshot at {index} is beyond the last index {self.last_index()}")
        term = self.term(index)
        self._snapshot = Snapshot(SnapshotMetadata(index, term, conf_state), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        offset = self._entries[0].index
        if index <= offset:
            return
        if index > self._snapshot.metadata.index:
            raise UsageError(
                f"cannot compact to {index}: the latest snapshot is at "
                f"{self._snapshot.metadata.index}"
            )
        if index > self.last_index():
            raise UsageError(f"cannot compact to {index}: the last index is {self.last_index()}")
        dummy = Entry(term=self._entries[index - offset].term, index=index)
        self._entries = [dummy, *self._entries[index - offset + 1 :]]

    def close(self) -> None:
        self.closed = True

    # -- inspection (tests) --------------------------------------------------

    def hard_state(self) -> HardState:
        """The saved hard state."""
        return self._hard_state

    def all_entries(self) -> list[Entry]:
        """Every stored entry, without the dummy position."""
        return self._entries[1:]
