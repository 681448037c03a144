"""The in-memory side of a disk log: bounds, terms, recent entries, garbage.

Both disk storage plugins (LevelDB and SQLite) keep one :class:`LogIndex` next
to their database, and any plugin author may too. It makes the reads the core
does all the time free of I/O, and it holds the rules of the Storage contract
in one place, so that every plugin refuses exactly what
:class:`~raftdb.storage.memory.MemoryStorage` refuses:

- **Terms by runs.** Terms change rarely (once per election), so the log's
  terms are kept as runs ``(first index, term)``: ``term(i)`` is a bisection,
  never a disk read, and the index costs a few bytes per election, not per entry.
- **Recent entries.** The last entries saved (up to ``cache_entries`` and
  ``cache_bytes``) stay in memory, so replication to followers that keep up
  does not read back from disk what was just written.
- **Lazy deletion.** Compaction and tail truncation leave entries on disk that
  are no longer part of the log ("garbage"). They are deleted a bounded slice
  at a time inside later saves (:meth:`take_garbage`), so a compaction of
  100,000 entries never stalls an append; the plugin writes the log bounds in
  the same atomic write, so after a crash the bounds say which stored entries
  are live and which are leftovers.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence

from raftdb.codec import CorruptionError
from raftdb.raft.errors import CompactedError, UnavailableError, UsageError
from raftdb.raft.messages import Entry, Snapshot, entry_size
from raftdb.storage.protocol import check_save
from raftdb.storage.records import LogBounds, decode_entry

__all__ = ["LogIndex", "load_log"]

_EMPTY = LogBounds(0, 0, 0)


class LogIndex:
    """Bounds, term runs, recent-entry cache and garbage ranges of a stored log.

    Invariants: the runs start at ``dummy_index`` and cover ``[dummy_index,
    last_index]``; the cache, when not empty, holds consecutive entries ending
    at ``last_index``; garbage ranges never meet ``(dummy_index, last_index]``.
    Not thread-safe: the plugin holds its lock.
    """

    def __init__(
        self,
        bounds: LogBounds = _EMPTY,
        *,
        cache_entries: int = 8192,
        cache_bytes: int = 32 << 20,
    ) -> None:
        self.dummy_index = bounds.dummy_index
        self.dummy_term = bounds.dummy_term
        # last_index starts at the dummy: load() brings it up to the stored bounds.
        self.last_index = bounds.dummy_index
        self._run_starts = [bounds.dummy_index]
        self._run_terms = [bounds.dummy_term]
        self._cache: list[Entry] = []
        self._cache_size = 0
        self._cache_entries = cache_entries
        self._cache_bytes = cache_bytes
        self._garbage: list[tuple[int, int]] = []

    # -- reads ----------------------------------------------------------------

    def bounds(self) -> LogBounds:
        """The bounds to write with the next save."""
        return LogBounds(self.dummy_index, self.dummy_term, self.last_index)

    @property
    def first_index(self) -> int:
        """The first live index (the dummy position + 1)."""
        return self.dummy_index + 1

    def term(self, index: int) -> int:
        """As ``StorageReader.term``: raises Compacted/UnavailableError out of range."""
        if index < self.dummy_index:
            raise CompactedError(f"term of {index} is compacted (dummy index {self.dummy_index})")
        if index > self.last_index:
            raise UnavailableError(f"term of {index} requested, last index is {self.last_index}")
        return self._run_terms[bisect_right(self._run_starts, index) - 1]

    def check_range(self, lo: int, hi: int) -> None:
        """As ``StorageReader.entries``: raise unless ``[lo, hi)`` is in the log."""
        if lo <= self.dummy_index:
            raise CompactedError(f"index {lo} is compacted (first index {self.first_index})")
        if hi > self.last_index + 1:
            raise UnavailableError(
                f"entries up to {hi - 1} requested, last index is {self.last_index}"
            )

    @property
    def cache_first(self) -> int:
        """The first cached index (``last_index + 1`` when nothing is cached)."""
        return self._cache[0].index if self._cache else self.last_index + 1

    def cached(self, lo: int, hi: int) -> list[Entry]:
        """Cached entries in ``[lo, hi)``; requires ``lo >= cache_first``."""
        base = self.cache_first
        return self._cache[lo - base : hi - base]

    # -- writes ------------------------------------------------------------------

    def check_save(
        self, entries: Sequence[Entry], snapshot: Snapshot | None, snapshot_index: int
    ) -> None:
        """Raise UsageError for a save that breaks the rules (see ``check_save``).

        Args:
            entries, snapshot: as ``StorageWriter.save``.
            snapshot_index: the index of the stored snapshot.
        """
        check_save(
            entries,
            snapshot,
            snapshot_index=snapshot_index,
            dummy_index=self.dummy_index,
            last_index=self.last_index,
        )

    def save(self, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        """Record a save that :meth:`check_save` accepted."""
        if snapshot is not None:
            meta = snapshot.metadata
            self._add_garbage(self.dummy_index + 1, self.last_index)
            self.dummy_index = self.last_index = meta.index
            self.dummy_term = meta.term
            self._run_starts = [meta.index]
            self._run_terms = [meta.term]
            self._cache = []
            self._cache_size = 0
        if entries:
            self._append(entries)
        self._clip_garbage()

    def load(self, entry: Entry) -> None:
        """Add the next stored entry while reading the log at start."""
        self._append((entry,))

    def _append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        new_last = entries[-1].index
        if first <= self.last_index:
            # Overwritten in place up to new_last; anything after it is garbage.
            self._add_garbage(new_last + 1, self.last_index)
            cut = bisect_right(self._run_starts, first - 1)
            del self._run_starts[cut:]
            del self._run_terms[cut:]
            cache_first = self.cache_first
            if first <= cache_first:
                self._cache = []
                self._cache_size = 0
            else:
                for dropped in self._cache[first - cache_first :]:
                    self._cache_size -= entry_size(dropped)
                del self._cache[first - cache_first :]
        starts, terms = self._run_starts, self._run_terms
        for entry in entries:
            if entry.term != terms[-1]:
                starts.append(entry.index)
                terms.append(entry.term)
        self.last_index = new_last
        self._cache.extend(entries)
        self._cache_size += sum(entry_size(e) for e in entries)
        self._trim_cache()

    def _trim_cache(self) -> None:
        cache = self._cache
        excess = len(cache) - self._cache_entries
        drop = max(excess, 0)
        size = self._cache_size
        while size > self._cache_bytes and drop < len(cache):
            size -= entry_size(cache[drop])
            drop += 1
        if drop:
            self._cache_size -= sum(entry_size(e) for e in cache[:drop])
            del cache[:drop]

    def compact(self, index: int, snapshot_index: int) -> bool:
        """Move the dummy position to ``index``; False if already at or past it.

        Raises:
            UsageError: ``index`` is beyond the snapshot or the last index.
        """
        if index <= self.dummy_index:
            return False
        if index > snapshot_index:
            raise UsageError(
                f"cannot compact to {index}: the latest snapshot is at {snapshot_index}"
            )
        if index > self.last_index:
            raise UsageError(f"cannot compact to {index}: the last index is {self.last_index}")
        term = self.term(index)
        self._add_garbage(self.dummy_index + 1, index)
        cut = bisect_right(self._run_starts, index) - 1
        self._run_starts = [index, *self._run_starts[cut + 1 :]]
        self._run_terms = [term, *self._run_terms[cut + 1 :]]
        self.dummy_index, self.dummy_term = index, term
        cache_first = self.cache_first
        if index >= cache_first:
            for dropped in self._cache[: index - cache_first + 1]:
                self._cache_size -= entry_size(dropped)
            del self._cache[: index - cache_first + 1]
        return True

    # -- garbage ------------------------------------------------------------------

    def _add_garbage(self, lo: int, hi: int) -> None:
        if lo <= hi:
            self._garbage.append((lo, hi))

    def _clip_garbage(self) -> None:
        live_lo, live_hi = self.dummy_index + 1, self.last_index
        clipped: list[tuple[int, int]] = []
        for lo, hi in self._garbage:
            if hi < live_lo or lo > live_hi:
                clipped.append((lo, hi))
                continue
            if lo < live_lo:
                clipped.append((lo, live_lo - 1))
            if hi > live_hi:
                clipped.append((live_hi + 1, hi))
        self._garbage = clipped

    def add_garbage(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Stored entries outside the log (inclusive ranges) to delete in later saves:
        the leftovers :func:`load_log` finds, when the index is rebuilt on a
        running storage (after a write refused for lack of space)."""
        for lo, hi in ranges:
            self._add_garbage(lo, hi)
        self._clip_garbage()

    @property
    def has_garbage(self) -> bool:
        """True while stored entries outside the log wait to be deleted."""
        return bool(self._garbage)

    def take_garbage(self, limit: int | None) -> list[tuple[int, int]]:
        """Up to ``limit`` indexes of garbage (all for ``None``) as inclusive ranges.

        The caller deletes them in its next atomic write, with the bounds.
        """
        self._clip_garbage()
        taken: list[tuple[int, int]] = []
        budget = limit
        while self._garbage and (budget is None or budget > 0):
            lo, hi = self._garbage[-1]
            if budget is not None and hi - lo + 1 > budget:
                taken.append((lo, lo + budget - 1))
                self._garbage[-1] = (lo + budget, hi)
                break
            taken.append((lo, hi))
            self._garbage.pop()
            if budget is not None:
                budget -= hi - lo + 1
        return taken


def load_log(
    bounds: LogBounds,
    stored: Iterable[tuple[int, bytes]],
    where: Callable[[int], str],
    **cache: int,
) -> tuple[LogIndex, list[tuple[int, int]]]:
    """Rebuild a :class:`LogIndex` from every stored entry, checking all of them.

    Args:
        bounds: the log bounds read from the same database.
        stored: ``(index, record)`` for every stored entry, ascending.
        where: describes an index's location for error messages (file and key).
        cache: ``cache_entries`` / ``cache_bytes`` for the index.

    Returns:
        The index, and the ranges of stored entries outside the bounds
        (leftovers of a compaction or truncation: delete them).

    Raises:
        CorruptionError: an entry fails to decode or its checksum, is under
            the wrong index, or a live entry is missing (a gap).
    """
    index = LogIndex(bounds, **cache)
    garbage: list[tuple[int, int]] = []
    expected = bounds.dummy_index + 1
    for i, record in stored:
        if i <= bounds.dummy_index or i > bounds.last_index:
            if garbage and garbage[-1][1] == i - 1:
                garbage[-1] = (garbage[-1][0], i)
            else:
                garbage.append((i, i))
            continue
        if i != expected:
            raise CorruptionError(
                f"{where(expected)}: entry {expected} is missing (the log has a gap; "
                f"the next stored entry is {i})"
            )
        try:
            entry = decode_entry(record, i)
        except CorruptionError as exc:
            raise CorruptionError(f"{where(i)}: {exc}") from None
        index.load(entry)
        expected += 1
    if expected != bounds.last_index + 1:
        raise CorruptionError(
            f"{where(expected)}: entries {expected}..{bounds.last_index} are missing "
            f"(the log should end at {bounds.last_index})"
        )
    return index, garbage
