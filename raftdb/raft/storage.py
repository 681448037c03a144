"""What the Raft core reads of the durable log: the :class:`StorageReader` protocol.

It is the shape of etcd's ``raft.Storage``. The write side, and the plugins
that implement both, live in :mod:`raftdb.storage`, a layer above the core:
typing the core's parameter with this read-only protocol lets mypy stop the
core from writing, and keeps the core free of any import outside itself.

Log layout, as in etcd: the storage holds a *dummy* position just before its
first entry, whose index and term are known (they come from the last compaction
or snapshot), so ``term(first_index() - 1)`` always answers.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from raftdb.raft.messages import ConfState, Entry, HardState, Snapshot

__all__ = ["StorageReader"]


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
