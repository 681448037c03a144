"""MemoryStorage: the in-memory Storage, for tests, the simulation and the ``memory`` plugin."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from raftdb.raft.errors import CompactedError, UnavailableError, UsageError
from raftdb.raft.messages import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    limit_size,
)
from raftdb.storage.protocol import check_save

__all__ = ["MemoryStorage"]


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
        check_save(
            entries,
            snapshot,
            snapshot_index=self._snapshot.metadata.index,
            dummy_index=self._entries[0].index,
            last_index=self.last_index(),
        )
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
