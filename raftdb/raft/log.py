"""The Raft log as the core sees it: durable Storage plus the unstable tail.

::

    first_index()        applied <= committed         last_index()
        |  Storage (durable)  |    Unstable (not yet saved)   |
        [.....................|...............................]
                           offset

Invariants (checked where they could break, as etcd's ``log.go`` does):
``applied <= committed <= last_index()``; ``committed`` never decreases; an
entry at or below ``committed`` is never overwritten.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftdb.raft.errors import CompactedError, RaftError, UnavailableError
from raftdb.raft.messages import Entry, Snapshot, limit_size
from raftdb.raft.unstable import Unstable

if TYPE_CHECKING:
    # Annotations only: raftdb.storage imports the core's value types at load.
    from raftdb.raft.storage import StorageReader

__all__ = ["InvariantError", "RaftLog"]


class InvariantError(RaftError, AssertionError):
    """A Raft safety invariant would break: the node must stop (etcd panics here)."""


class RaftLog:
    """Durable plus unstable log, with the commit and apply positions."""

    def __init__(self, storage: StorageReader, max_applying_bytes: int) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Everything up to the snapshot is applied by definition (the state machine
        # restarts from it); a storage may keep older entries for slow followers.
        start = max(first - 1, storage.snapshot().metadata.index)
        self.committed = start
        self.applied = start
        self.max_applying_bytes = max_applying_bytes

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)})"
        )

    # -- positions -----------------------------------------------------------

    def first_index(self) -> int:
        """Index of the first entry available (after the snapshot or compaction point)."""
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        """Index of the last entry, saved or not."""
        unstable = self.unstable
        if unstable.entries:
            return unstable.offset + len(unstable.entries) - 1
        i = unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def stable_last_index(self) -> int:
        """Index of the last entry known to be saved (what a leader may count as its own)."""
        return self.unstable.offset - 1

    def term(self, index: int) -> int:
        """The term of the entry at ``index``.

        Raises:
            CompactedError: ``index`` is before the first index's predecessor.
            UnavailableError: ``index`` is past the last index.
        """
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        if index < self.unstable.offset:
            if self.unstable.snapshot is not None:
                # Storage still holds the log the snapshot replaces: not ours any more.
                raise CompactedError(f"term of {index} is before the snapshot")
            return self.storage.term(index)
        raise UnavailableError(f"term of {index} requested, last index is {self.last_index()}")

    def term_or_zero(self, index: int) -> int:
        """The term at ``index``, or 0 where it is unknown (compacted or absent)."""
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        """The term of the last entry."""
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        """True if the entry at ``index`` exists and has ``term``."""
        return self.term_or_zero(index) == term

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """True if a log ending at ``(last_index, term)`` is at least as up to date (§5.4.1)."""
        our_term = self.last_term()
        return term > our_term or (term == our_term and last_index >= self.last_index())

    # -- appending -----------------------------------------------------------

    def maybe_append(
        self, index: int, log_term: int, committed: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """Append a leader's entries that follow ``(index, log_term)``.

        Returns the index of the last new entry, or None if the log has no
        entry ``(index, log_term)`` (the consistency check of §5.3 failed).
        """
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise InvariantError(
                    f"entry {conflict} conflicts with the committed log "
                    f"(committed={self.committed})"
                )
            self.append(entries[conflict - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> int:
        """Append ``entries``, replacing any (uncommitted) entries they overlap."""
        if not entries:
            return self.last_index()
        after = entries[0].index - 1
        if after < self.committed:
            raise InvariantError(f"append after {after} is below committed {self.committed}")
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """The index of the first entry that is new or differs from ours; 0 if none.

        New entries usually start past our last index, so this returns at the
        first comparison on the common path.
        """
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest ``(i, term_i)`` with ``i <= index`` and ``term_i <= term``.

        Used by a follower to reject an append with a hint, and by the leader
        to skip a whole term of mismatching entries per round trip (§5.3's
        optimisation, as etcd implements it).
        """
        first = self.first_index()
        while index >= first - 1:
            try:
                t = self.term(index)
            except CompactedError:
                break
            except UnavailableError:
                index = self.last_index()
                continue
            if t <= term:
                return index, t
            index -= 1
        return index, 0

    # -- reading -------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
        """Entries in ``[lo, hi)`` bounded by ``max_bytes`` (at least one if any).

        Raises:
            CompactedError: ``lo`` is before the first index.
        """
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted (first index {self.first_index()})")
        last = self.last_index()
        if hi > last + 1:
            raise InvariantError(f"slice up to {hi - 1} beyond last index {last}")
        offset = self.unstable.offset
        if lo >= offset:
            return limit_size(self.unstable.slice(lo, hi), max_bytes)
        stored = self.storage.entries(lo, min(hi, offset), max_bytes)
        if hi <= offset or len(stored) < min(hi, offset) - lo:
            return stored
        return limit_size(stored + self.unstable.slice(offset, hi), max_bytes)

    def entries_from(self, lo: int, max_bytes: int | None) -> list[Entry]:
        """Entries from ``lo`` to the end, bounded by ``max_bytes``."""
        last = self.last_index()
        if lo > last:
            return []
        return self.slice(lo, last + 1, max_bytes)

    def snapshot(self) -> Snapshot:
        """The newest snapshot: the unsaved one received from a leader, else Storage's."""
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # -- commit and apply ----------------------------------------------------

    def commit_to(self, index: int) -> None:
        """Advance ``committed`` to ``index`` (never backwards)."""
        if index > self.committed:
            if index > self.last_index():
                raise InvariantError(
                    f"commit index {index} is beyond the last index {self.last_index()}; "
                    "the log is corrupt or truncated"
                )
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to ``index`` if its entry is of ``term`` (Figure 8: only the
        leader's current-term entries commit by counting replicas)."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.committed = index
            return True
        return False

    def has_next_committed(self) -> bool:
        """True if committed entries wait to be handed out for applying."""
        return self.committed > self.applied and self.unstable.snapshot is None

    def next_committed(self) -> list[Entry]:
        """Committed entries after ``applied``, bounded by ``max_applying_bytes``.

        None while a received snapshot is unsaved: it must be applied first.
        """
        if not self.has_next_committed():
            return []
        return self.slice(self.applied + 1, self.committed + 1, self.max_applying_bytes)

    def applied_to(self, index: int) -> None:
        """Entries up to ``index`` were handed to the state machine."""
        if index < self.applied or index > self.committed:
            raise InvariantError(
                f"applied index {index} out of range [{self.applied}, {self.committed}]"
            )
        self.applied = index

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log with a leader's snapshot (it is committed by definition)."""
        self.committed = snapshot.metadata.index
        self.unstable.restore(snapshot)

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``(index, term)`` were saved."""
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        """The snapshot at ``index`` was saved and applied."""
        self.unstable.stable_snap_to(index)
        if index > self.applied:
            self.applied = index
