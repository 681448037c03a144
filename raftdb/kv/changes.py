"""What the log did to the keys (the watch history) and the leases that own keys.

Both are replicated state beside the keys, kept by the
:class:`~raftdb.kv.applier.Applier` and persisted by the state machine:

- a :class:`Change` is one key's put or delete at one log index. The Applier
  keeps the last ``watch_history`` of them (whole indexes: a transaction's
  changes are kept or dropped together) and the *history floor*: every change
  with an index above it is retained. Watchers resume from it.
- a :class:`Lease` is a time to live shared by keys. Its id is the index of
  the entry that granted it, so every node names it alike. When it ends
  (revoked, or expired: the leader proposes that, see
  :mod:`raftdb.kv.expiry`) its keys are deleted in the same entry.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from raftdb.codec import (
    CorruptionError,
    RecordKind,
    check_bytes,
    check_uint,
    pack,
    seal,
    unpack,
    unseal,
)

__all__ = [
    "DEFAULT_WATCH_HISTORY",
    "MAX_LEASE_TTL",
    "Change",
    "ChangeKind",
    "History",
    "Lease",
    "decode_change",
    "decode_lease",
    "encode_change",
    "encode_lease",
]

#: Longest lease TTL, in seconds (etcd's bound).
MAX_LEASE_TTL: Final = 9_000_000_000
#: Changes the watch history retains by default (the ``watch_history`` key).
DEFAULT_WATCH_HISTORY: Final = 50_000


class ChangeKind(IntEnum):
    """A change's kind. Part of the on-disk and snapshot formats."""

    PUT = 1
    DELETE = 2


@dataclass(slots=True)
class Change:
    """One key's change at one log index. Treat as immutable.

    Not frozen: one is made per applied write, on the apply path, and a
    frozen dataclass costs five times as much to build (0.69 µs against
    0.14 µs, most of a put's own cost); see ``KVResult``.

    Attributes:
        index: the entry that made it (several changes share one for a
            transaction or a lease's end).
        kind: put or delete.
        key: the key.
        value: the new value (``b""`` for a delete).
        create_index: the key's ``create_index`` after the change (0 for a delete).
        mod_index: the key's ``mod_index`` after the change: ``index``.
        prev_mod_index: the key's ``mod_index`` before (0: it did not exist),
            so a watcher can find the previous value in the history.
    """

    index: int
    kind: ChangeKind
    key: bytes
    value: bytes
    create_index: int
    mod_index: int
    prev_mod_index: int

    def to_list(self) -> list[Any]:
        """The msgpack-ready form (on disk and in snapshot streams)."""
        return [
            self.index,
            int(self.kind),
            self.key,
            self.value,
            self.create_index,
            self.mod_index,
            self.prev_mod_index,
        ]

    @classmethod
    def from_list(cls, value: Any) -> Change:
        """Inverse of :meth:`to_list`, checked as every stored record is.

        Raises:
            CorruptionError: ``value`` is not a change.
        """
        if type(value) is not list or len(value) != 7:
            raise CorruptionError("change record has the wrong shape")
        index, kind, key, data, create, mod, prev = value
        index = check_uint(index, "change index")
        if type(kind) is not int or kind not in _KINDS:
            raise CorruptionError(f"change record has unknown kind {kind!r}")
        key = check_bytes(key, "change key")
        data = check_bytes(data, "change value")
        create = check_uint(create, "change create index")
        mod = check_uint(mod, "change mod index")
        prev = check_uint(prev, "change prev mod index")
        # prev == index: the second put of a key in one transaction.
        if not key or index < 1 or mod != index or prev > index:
            raise CorruptionError(f"change of key {key!r} at {index} has bad indexes")
        if kind == ChangeKind.PUT:
            if not 0 < create <= index:
                raise CorruptionError(f"put of key {key!r} at {index} has bad indexes")
        elif create or data:
            raise CorruptionError(f"delete of key {key!r} at {index} carries a value")
        return cls(index, ChangeKind(kind), key, data, create, mod, prev)


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease, as of some applied index. Immutable: a change makes a new one.

    Attributes:
        id: the index of the entry that granted it.
        ttl: its time to live, in seconds.
        renewed_index: the index of the grant or of the last keep-alive; an
            expiry proposed by the leader names it, and is ignored if the lease
            was renewed since (so a keep-alive that commits first always wins).
        keys: the keys attached to it.
    """

    id: int
    ttl: int
    renewed_index: int
    keys: frozenset[bytes]

    def to_list(self) -> list[Any]:
        """The msgpack-ready form (on disk and in snapshot streams); keys sorted."""
        return [self.id, self.ttl, self.renewed_index, sorted(self.keys)]

    @classmethod
    def from_list(cls, value: Any) -> Lease:
        """Inverse of :meth:`to_list`, checked.

        Raises:
            CorruptionError: ``value`` is not a lease (keys must be sorted and unique).
        """
        if type(value) is not list or len(value) != 4 or type(value[3]) is not list:
            raise CorruptionError("lease record has the wrong shape")
        lease_id = check_uint(value[0], "lease id")
        ttl = check_uint(value[1], "lease ttl")
        renewed = check_uint(value[2], "lease renewal index")
        if lease_id < 1 or not 1 <= ttl <= MAX_LEASE_TTL or not lease_id <= renewed:
            raise CorruptionError(f"lease {lease_id} has a bad ttl or renewal index")
        keys = [check_bytes(k, f"key of lease {lease_id}") for k in value[3]]
        if not all(keys) or any(a >= b for a, b in zip(keys, keys[1:], strict=False)):
            raise CorruptionError(f"the keys of lease {lease_id} are not sorted, unique, non-empty")
        return cls(lease_id, ttl, renewed, frozenset(keys))


_KINDS: Final = frozenset(int(k) for k in ChangeKind)


def encode_change(change: Change) -> bytes:
    """A change as a sealed record (for state machines that store the history on disk)."""
    return seal(RecordKind.CHANGE, pack(change.to_list()))


def decode_change(record: bytes) -> Change:
    """Parse :func:`encode_change`'s output. Raises :class:`CorruptionError`."""
    return Change.from_list(unpack(unseal(RecordKind.CHANGE, record)))


def encode_lease(lease: Lease) -> bytes:
    """A lease as a sealed record (for state machines that store leases on disk)."""
    return seal(RecordKind.LEASE, pack(lease.to_list()))


def decode_lease(record: bytes) -> Lease:
    """Parse :func:`encode_lease`'s output. Raises :class:`CorruptionError`."""
    return Lease.from_list(unpack(unseal(RecordKind.LEASE, record)))


def _index(change: Change) -> int:
    return change.index


class History:
    """The watch history window: the last ``limit`` changes, in whole indexes, and the floor.

    Kept by the :class:`~raftdb.kv.applier.Applier`; a plugin that must
    serve reads while its Applier runs ahead of what readers may see (a batch
    being written) can keep a second one, fed with each batch's ``changes``
    and ``history_floor`` by :meth:`advance` once the batch is visible.

    Trimming drops whole indexes from the front until at most ``limit``
    changes remain, so a transaction's changes are kept or dropped together,
    and the result does not depend on how entries were cut into batches (it
    is the longest suffix of all changes, cut at an index boundary, of at
    most ``limit`` changes). The *floor* is the largest index dropped (or
    given at construction): every change with an index above it is retained.

    A list with a moving start, not a deque: :meth:`page` bisects it.
    Not thread-safe: readers and writers must be kept apart by the owner.
    """

    __slots__ = ("_items", "_start", "floor", "limit")

    def __init__(self, limit: int, changes: Iterable[Change] = (), floor: int = 0) -> None:
        if limit < 0 or floor < 0:
            raise ValueError("a history's limit and floor are integers >= 0")
        self.limit = limit
        self.floor = floor
        self._items: list[Change] = list(changes)
        self._start = 0
        previous = floor
        for change in self._items:
            if change.index <= floor or change.index < previous:
                raise ValueError(
                    f"history change at {change.index} is out of order or below floor {floor}"
                )
            previous = change.index

    def __len__(self) -> int:
        return len(self._items) - self._start

    def __iter__(self) -> Iterator[Change]:
        """The retained changes, oldest first (do not change the history meanwhile)."""
        items = self._items
        for i in range(self._start, len(items)):
            yield items[i]

    def changes(self) -> list[Change]:
        """A copy of the retained changes, oldest first."""
        return self._items[self._start :]

    @property
    def last_index(self) -> int:
        """The index of the newest retained change, or the floor if none is."""
        return self._items[-1].index if len(self._items) > self._start else self.floor

    def extend(self, changes: Iterable[Change]) -> None:
        """Append changes (indexes not below the newest's); :meth:`trim` bounds them."""
        self._items.extend(changes)

    def trim(self) -> list[Change]:
        """Drop whole indexes from the front until at most ``limit`` changes remain.

        Returns:
            The changes dropped, oldest first.
        """
        items = self._items
        cut = self._start + len(self) - self.limit
        if cut <= self._start:
            return []
        last = items[cut - 1].index
        cut = bisect_right(items, last, lo=cut, key=_index)
        dropped = items[self._start : cut]
        self._start = cut
        self.floor = last
        if cut > 4096 and cut * 2 > len(items):
            del items[:cut]
            self._start = 0
        return dropped

    def advance(self, changes: Iterable[Change], floor: int) -> None:
        """Append ``changes`` and drop everything at or below ``floor``: replays an
        :class:`~raftdb.kv.applier.AppliedBatch` (its ``changes`` and
        ``history_floor``) onto a copy of the Applier's history."""
        self._items.extend(changes)
        if floor > self.floor:
            self.floor = floor
            items = self._items
            self._start = bisect_right(items, floor, lo=self._start, key=_index)
            if self._start > 4096 and self._start * 2 > len(items):
                del items[: self._start]
                self._start = 0

    def page(self, after: int, limit: int) -> tuple[int, list[Change]]:
        """``(floor, changes)``: the first retained changes with an index above
        ``after``, at least ``limit`` of them if there are that many, and then
        to the end of the last one's index (an index is never split).

        Raises:
            ValueError: ``limit`` is below 1.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        items = self._items
        lo = bisect_right(items, after, lo=self._start, key=_index)
        hi = lo + limit
        if hi >= len(items):
            return self.floor, items[lo:]
        hi = bisect_right(items, items[hi - 1].index, lo=hi, key=_index)
        return self.floor, items[lo:hi]
