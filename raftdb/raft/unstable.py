"""The tail of the log that is not durable yet.

Entries (and at most one incoming snapshot) live here from the moment the core
accepts them until the driver reports, through ``advance()``, that a Ready
carrying them was saved. ``offset`` is the index of ``entries[0]``; everything
before it is in Storage (or covered by ``snapshot``).

Invariant: if ``snapshot`` is set, ``offset == snapshot.metadata.index + 1``.
"""

from __future__ import annotations

from raftdb.raft.messages import Entry, Snapshot

__all__ = ["Unstable"]


class Unstable:
    """Not-yet-saved entries and snapshot; see the module docstring."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        """The first log index if an unsaved snapshot decides it, else None."""
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        """The last log index if the unstable part decides it, else None."""
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, index: int) -> int | None:
        """The term at ``index`` if the unstable part knows it, else None."""
        if index < self.offset:
            snap = self.snapshot
            if snap is not None and snap.metadata.index == index:
                return snap.metadata.term
            return None
        i = index - self.offset
        if i < len(self.entries):
            return self.entries[i].term
        return None

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (of ``term``) were saved: drop them from here.

        If the entry at ``index`` was replaced meanwhile (a new leader overwrote
        the tail while the save was in flight), nothing is dropped: the newer
        entries still need saving.
        """
        t = self.maybe_term(index)
        if t is None or t != term or index < self.offset:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        """The snapshot at ``index`` was saved."""
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        """Replace everything with ``snapshot`` (received from a leader)."""
        self.offset = snapshot.metadata.index + 1
        self.entries = []
        self.snapshot = snapshot

    def truncate_and_append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append ``entries``, first dropping any unstable entries at or after their start."""
        first = entries[0].index
        end = self.offset + len(self.entries)
        if first == end:
            self.entries.extend(entries)
        elif first <= self.offset:
            # Replaces the whole unstable part (and, once saved, part of Storage).
            self.offset = first
            self.entries = list(entries)
        else:
            del self.entries[first - self.offset :]
            self.entries.extend(entries)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries in ``[lo, hi)``, all within the unstable part."""
        return self.entries[lo - self.offset : hi - self.offset]
