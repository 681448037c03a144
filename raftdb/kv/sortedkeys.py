"""A sorted set of byte keys with fast inserts, for ordered range reads in memory.

The in-memory state machine answers ``range(prefix, start, limit)`` in key
order. A single sorted ``list`` costs O(n) per insert (a 1,000,000-key list
moves 8 MB per insert); re-sorting on read costs O(n log n) per range. Keys are
instead kept in a list of sorted *chunks* of at most ``2 * load`` keys, with
the largest key of each chunk in a separate list to bisect on: an insert is
two bisections and a ``list.insert`` into one chunk (O(load)), a range read
is two bisections and then a walk. Chunks split when they reach ``2 * load``
and are dropped when they become empty.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator

__all__ = ["SortedKeys", "prefix_end"]


class SortedKeys:
    """A sorted set of ``bytes``. Not thread-safe: callers hold their own lock."""

    def __init__(self, keys: Iterable[bytes] = (), *, load: int = 512) -> None:
        if load < 4:
            raise ValueError("load must be at least 4")
        self._load = load
        self._chunks: list[list[bytes]] = []
        self._maxes: list[bytes] = []
        self._len = 0
        self._build(sorted(set(keys)))

    def _build(self, ordered: list[bytes]) -> None:
        load = self._load
        self._chunks = [ordered[i : i + load] for i in range(0, len(ordered), load)]
        self._maxes = [chunk[-1] for chunk in self._chunks]
        self._len = len(ordered)

    @classmethod
    def from_sorted(cls, keys: Iterable[bytes], *, load: int = 512) -> SortedKeys:
        """Build from keys already in strictly ascending order, in O(n).

        Raises:
            ValueError: the keys are not strictly ascending.
        """
        ordered = list(keys)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if not a < b:
                raise ValueError(f"keys not strictly ascending at {b!r}")
        result = cls(load=load)
        result._build(ordered)
        return result

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes):
            return False
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return False
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        return j < len(chunk) and chunk[j] == key

    def add(self, key: bytes) -> None:
        """Insert ``key``; a key already present is left alone."""
        maxes = self._maxes
        if not maxes:
            self._chunks.append([key])
            maxes.append(key)
            self._len = 1
            return
        i = bisect_left(maxes, key)
        if i == len(maxes):
            # Beyond every key: append to the last chunk (the common case for
            # increasing keys) and it becomes that chunk's new max.
            i -= 1
            self._chunks[i].append(key)
            maxes[i] = key
        else:
            chunk = self._chunks[i]
            j = bisect_left(chunk, key)
            if j < len(chunk) and chunk[j] == key:
                return
            insort(chunk, key)
        self._len += 1
        chunk = self._chunks[i]
        if len(chunk) >= 2 * self._load:
            half = len(chunk) // 2
            self._chunks[i : i + 1] = [chunk[:half], chunk[half:]]
            maxes[i : i + 1] = [chunk[half - 1], chunk[-1]]

    def discard(self, key: bytes) -> None:
        """Remove ``key`` if present."""
        maxes = self._maxes
        i = bisect_left(maxes, key)
        if i == len(maxes):
            return
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        if j == len(chunk) or chunk[j] != key:
            return
        del chunk[j]
        self._len -= 1
        if not chunk:
            del self._chunks[i]
            del maxes[i]
        elif j == len(chunk):
            maxes[i] = chunk[-1]

    def irange(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[bytes]:
        """Keys ``k`` with ``start <= k < stop`` (no upper bound for ``None``), ascending.

        Do not change the set while iterating.
        """
        maxes = self._maxes
        i = bisect_left(maxes, start)
        if i == len(maxes):
            return
        j = bisect_left(self._chunks[i], start)
        for chunk in self._chunks[i:]:
            for key in chunk[j:] if j else chunk:
                if stop is not None and key >= stop:
                    return
                yield key
            j = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            yield from chunk

    def copy(self) -> SortedKeys:
        """A shallow copy, in O(n) pointer copies (no comparisons)."""
        result = SortedKeys(load=self._load)
        result._chunks = [list(chunk) for chunk in self._chunks]
        result._maxes = list(self._maxes)
        result._len = self._len
        return result

    def check(self) -> None:
        """Verify the internal invariants (tests). Raises ``AssertionError``."""
        flat = [key for chunk in self._chunks for key in chunk]
        assert flat == sorted(set(flat)), "keys not strictly ascending"
        assert len(flat) == self._len, "length out of step"
        assert all(self._chunks), "empty chunk"
        assert self._maxes == [chunk[-1] for chunk in self._chunks], "maxes out of step"
        assert all(len(chunk) < 2 * self._load for chunk in self._chunks), "chunk too big"


def prefix_end(prefix: bytes) -> bytes | None:
    """The least key greater than every key starting with ``prefix``.

    ``None`` when there is none (``prefix`` is empty or all ``0xff``).
    """
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
