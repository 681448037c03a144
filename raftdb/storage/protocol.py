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
from typing import Protocol, runtime_checkable

from raftdb.raft.errors import UsageError
from raftdb.raft.messages import ConfState, Entry, HardState, Snapshot
from raftdb.raft.storage import StorageReader

__all__ = ["Storage", "StorageReader", "StorageWriter", "check_save"]


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
            OSError: with ``errno`` ``ENOSPC`` or ``EDQUOT``
                (:mod:`raftdb.storage.nospace`): refused for lack of space,
                nothing of it was written. The storage keeps serving reads,
                and the driver calls ``save`` again with the same arguments
                until it succeeds (the node is read-only meanwhile).
            OSError, StorageError: any other failed write. The storage may
                then refuse every later call: the node must stop.
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
    ``raftdb.testing.conformance.storage`` holds the conformance suite
    (``docs/plugins.md``).
    """


def check_save(
    entries: Sequence[Entry],
    snapshot: Snapshot | None,
    *,
    snapshot_index: int,
    dummy_index: int,
    last_index: int,
) -> None:
    """Refuse a save that breaks :meth:`StorageWriter.save`'s rules, changing nothing.

    The one statement of those rules, for :class:`~raftdb.storage.memory.MemoryStorage`
    and the disk plugins' :class:`~raftdb.storage.logindex.LogIndex` alike, so
    that every storage refuses exactly the same saves.

    Args:
        entries, snapshot: as ``StorageWriter.save``.
        snapshot_index: the index of the stored snapshot.
        dummy_index, last_index: the stored log's dummy position and last index.

    Raises:
        UsageError: the snapshot is not newer than the stored one, or the
            entries leave a gap, reach into the compacted log, or are not
            consecutive.
    """
    if snapshot is not None and snapshot.metadata.index <= snapshot_index:
        raise UsageError(
            f"snapshot at {snapshot.metadata.index} is not newer than the stored one "
            f"at {snapshot_index}"
        )
    if not entries:
        return
    offset = snapshot.metadata.index if snapshot is not None else dummy_index
    last = snapshot.metadata.index if snapshot is not None else last_index
    first = entries[0].index
    if first > last + 1:
        raise UsageError(f"entries start at {first}, leaving a gap after {last}")
    if first <= offset:
        raise UsageError(f"entries start at {first}, inside the compacted log")
    for i, entry in enumerate(entries):
        if entry.index != first + i:
            raise UsageError(f"entry {entry.index} follows entry {first + i - 1}")
