"""Where the LevelDB state machine keeps what, and the Applier's view of it during a batch.

Every key of the database starts with one byte that says what it holds::

    b"d" + key                     ->  create_index (8 bytes) + mod_index (8 bytes) + value
    b"s" + client id               ->  sealed session (encode_session)
    b"l" + lease id (8 bytes)      ->  sealed lease (encode_lease): ttl, renewed index, keys
    b"h" + index (8) + position (4) -> change: kind (1), create_index (8),
                                      prev_mod_index (8), key length (4), key, value
    b"m/format"                    ->  FORMAT
    b"m/state"                     ->  sealed applied index, term, conf state, members
    b"m/floor"                     ->  the history floor (8 bytes)
    b"m/barrier"                   ->  empty: left by earlier versions' synced writes; never read
    b"m/batch/" + last index (8)   ->  the batch's first index (8 bytes): one a batch
    b"m/verified"                  ->  an index (8 bytes) every batch up to which was durable

Integers in keys are big-endian, so LevelDB's byte order is numeric order: the
leases come out by id and the history in index order, then in the order of the
changes within one index (a transaction's writes, a revoked lease's keys).
The position takes 4 bytes, not 2: revoking a lease deletes all its keys at
one index, and a lease may hold more than 65,535 keys.

A change is written for every put, so its record is packed with one
``struct`` call rather than sealed with msgpack (:func:`encode_change`, three
times slower, about 0.5 µs a put): its index is in its key and its
``mod_index`` is its index, so neither is stored, and LevelDB's block
checksums, verified on every read of the history, stand for the record's
own. Decoding goes through :meth:`Change.from_list`, so the checks are the
ones every other copy of a change passes.

Only the last ``watch_history`` changes are kept (the Applier decides which):
a batch adds its changes and deletes the ones it trimmed in the same
``WriteBatch`` as its keys and ``m/state``, so after a crash the history is
exactly the one of the applied index found. ``m/floor`` is written only when
the floor moves; it is part of the same batch too.

Many batches share one fsync (the state machine's ``make_durable``), so a
power cut may take several of them. LevelDB drops what its log lost without
a word where a lost page reads back as zeros, and goes on with the records
after it: a state with a hole, which the applied index in ``m/state`` cannot
show. So each batch also writes ``m/batch/<last>`` = ``first`` (in the same
``WriteBatch``, so it is there exactly when the batch is), and opening walks
that chain from the applied index down to ``m/verified``, the point every
batch before which was durable: a missing link is a hole. The first batch
after a ``make_durable`` moves ``m/verified`` to the point it reached and
deletes the marks below it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator, Iterable
from itertools import islice
from typing import Any, Final

from raftdb.state_machine import (
    AppliedBatch,
    Change,
    CorruptionError,
    KeyValue,
    Lease,
    SortedKeys,
    decode_lease,
    encode_lease,
    prefix_end,
)

__all__ = [
    "CHANGE",
    "DATA",
    "DATA_END",
    "FLOOR",
    "FORMAT",
    "FORMAT_1",
    "FORMAT_KEY",
    "INDEX",
    "LEASE",
    "MARK",
    "REC",
    "SESSION",
    "STATE",
    "VERIFIED",
    "BatchBackend",
    "HistoryKeys",
    "change_key",
    "data_record",
    "decode_change_record",
    "encode_change_record",
    "decode_floor",
    "encode_floor",
    "lease_key",
    "read_history",
    "read_leases",
    "stage_leases_and_history",
]

#: Databases written before leases and the watch history existed: they hold
#: neither, and no floor (opening one upgrades it, see the state machine).
FORMAT_1: Final = b"raftdb.leveldb.state_machine/1"
FORMAT: Final = b"raftdb.leveldb.state_machine/2"
FORMAT_KEY: Final = b"m/format"
STATE: Final = b"m/state"
FLOOR: Final = b"m/floor"
MARK: Final = b"m/batch/"
VERIFIED: Final = b"m/verified"
INDEX = struct.Struct(">Q")
DATA: Final = b"d"
DATA_END: Final = b"e"  # the first key after every b"d" key
SESSION: Final = b"s"
LEASE: Final = b"l"
CHANGE: Final = b"h"
REC = struct.Struct(">QQ")
_U64 = struct.Struct(">Q")
_CHANGE_KEY = struct.Struct(">cQI")  # b"h", index, position
_CHANGE_REC = struct.Struct(">BQQI")  # kind, create index, prev mod index, key length
_ABSENT: Final = (b"", -1, -1)  # not in the batch's pending writes (compared by identity)


def _name(where: str | Callable[[], str]) -> str:
    return where if isinstance(where, str) else where()


def data_record(raw: bytes, key: bytes, where: str) -> tuple[int, int]:
    """``(create_index, mod_index)`` of a ``b"d"`` record, checked for length."""
    if len(raw) < REC.size:
        raise CorruptionError(f"{where}: the record of key {key!r} is truncated")
    create, mod = REC.unpack_from(raw)
    return create, mod


def lease_key(lease_id: int) -> bytes:
    return LEASE + _U64.pack(lease_id)


def change_key(index: int, position: int) -> bytes:
    return _CHANGE_KEY.pack(CHANGE, index, position)


def encode_change_record(change: Change) -> bytes:
    """The value of a ``b"h"`` record (see the module docstring)."""
    key = change.key
    head = _CHANGE_REC.pack(change.kind, change.create_index, change.prev_mod_index, len(key))
    return head + key + change.value


def decode_change_record(key: bytes, raw: bytes) -> Change:
    """The change a ``b"h"`` record holds, checked.

    Raises:
        CorruptionError: the key or the record is not a change's.
    """
    if len(key) != _CHANGE_KEY.size or len(raw) < _CHANGE_REC.size:
        raise CorruptionError("history record is truncated")
    _, index, _ = _CHANGE_KEY.unpack(key)
    kind, create, prev, size = _CHANGE_REC.unpack_from(raw)
    start = _CHANGE_REC.size
    if len(raw) < start + size:
        raise CorruptionError("history record is truncated")
    name = raw[start : start + size]
    return Change.from_list([index, kind, name, raw[start + size :], create, index, prev])


def encode_floor(floor: int) -> bytes:
    return _U64.pack(floor)


def decode_floor(raw: bytes | None, where: str) -> int:
    if raw is None:
        raise CorruptionError(f"{where}: the history floor record is missing")
    if len(raw) != _U64.size:
        raise CorruptionError(f"{where}: the history floor record has {len(raw)} bytes, not 8")
    floor: int = _U64.unpack(raw)[0]
    return floor


class HistoryKeys:
    """The key of each change of a history given in order: its index and its
    position among the changes of that index."""

    __slots__ = ("index", "position")

    def __init__(self) -> None:
        self.index = 0
        self.position = 0

    def __call__(self, change: Change) -> bytes:
        if change.index != self.index:
            if change.index < self.index:
                raise CorruptionError(
                    f"the watch history goes back from index {self.index} to {change.index}"
                )
            self.index, self.position = change.index, 0
        else:
            self.position += 1
        return _CHANGE_KEY.pack(CHANGE, self.index, self.position)


def stage_leases_and_history(batch: Any, out: AppliedBatch, before: int, floor: int) -> None:
    """Add to ``batch`` what ``out`` did to the leases and the watch history.

    Args:
        batch: the ``WriteBatch`` that also holds the batch's keys and state.
        out: what the Applier did.
        before: the applied index before the batch: trimmed changes above it
            were added by this very batch and never reached the database.
        floor: the history floor before the batch (``m/floor`` is rewritten
            only if it moved).
    """
    put, delete = batch.put, batch.delete
    for lease_id, lease in out.leases.items():
        if lease is None:
            delete(lease_key(lease_id))
        else:
            put(lease_key(lease_id), encode_lease(lease))
    new_floor = out.history_floor
    # The hot loop of a batch of puts (one change each): the keys are packed
    # inline rather than through HistoryKeys, which checks an order the
    # Applier guarantees here.
    key_of = _CHANGE_KEY.pack
    index = position = 0
    for change in out.changes:
        if change.index != index:
            index, position = change.index, 0
        else:
            position += 1
        if index > new_floor:  # else trimmed by this batch already
            put(key_of(CHANGE, index, position), encode_change_record(change))
    index = position = 0
    for change in out.trimmed:
        if change.index != index:
            index, position = change.index, 0
        else:
            position += 1
        if index <= before:  # else added by this batch: never written
            delete(key_of(CHANGE, index, position))
    if new_floor != floor:
        put(FLOOR, encode_floor(new_floor))


def read_leases(rows: Iterable[tuple[bytes, bytes]], where: str) -> list[Lease]:
    """The leases of ``b"l"`` rows, checked against their keys."""
    out: list[Lease] = []
    for key, raw in rows:
        try:
            lease = decode_lease(raw)
        except CorruptionError as exc:
            raise CorruptionError(f"{where}: lease {key[1:].hex()}: {exc}") from None
        if len(key) != 1 + _U64.size or lease_key(lease.id) != key:
            raise CorruptionError(f"{where}: lease {lease.id} is stored under key {key!r}")
        out.append(lease)
    return out


def read_history(
    rows: Iterable[tuple[bytes, bytes]], floor: int, applied: int, where: str
) -> list[Change]:
    """The changes of ``b"h"`` rows, checked: each under the key its place gives
    it (no change missing within an index), all above ``floor`` and at or
    below ``applied``."""
    out: list[Change] = []
    key_of = HistoryKeys()
    for key, raw in rows:
        try:
            change = decode_change_record(key, raw)
            expected = key_of(change)
        except CorruptionError as exc:
            raise CorruptionError(f"{where}: history record {key.hex()}: {exc}") from None
        if expected != key:
            raise CorruptionError(
                f"{where}: the change of {change.key!r} at index {change.index} is stored "
                f"under {key.hex()}, not {expected.hex()} (a change is missing or misplaced)"
            )
        if not floor < change.index <= applied:
            raise CorruptionError(
                f"{where}: the history holds a change at index {change.index}, outside "
                f"the floor {floor} and the applied index {applied}"
            )
        out.append(change)
    return out


class BatchBackend:
    """The Applier's view during one batch: the database plus the batch's own writes.

    LevelDB cannot read its own unwritten ``WriteBatch``, so the batch's writes
    are also kept in :attr:`pending` (``(value, create, mod)``, or ``None`` for
    a delete) and every read looks there first. A transaction's ``list`` merges
    the database's iterator with the pending keys in key order; the sorted set
    of pending keys is built only at the first ``scan`` of a batch, so a batch
    of plain puts never pays for it.
    """

    __slots__ = ("batch", "db", "pending", "sorted", "where")

    def __init__(self, db: Any, batch: Any, where: str | Callable[[], str]) -> None:
        self.db = db
        self.batch = batch
        self.where = where
        self.pending: dict[bytes, tuple[bytes, int, int] | None] = {}
        self.sorted: SortedKeys | None = None  # the keys of ``pending``, once a scan needs them

    def _raw(self, key: bytes) -> bytes | None:
        raw: bytes | None = self.db.get(DATA + key, verify_checksums=True)
        if raw is not None and len(raw) < REC.size:
            data_record(raw, key, _name(self.where))  # raises, naming the database
        return raw

    def load(self, key: bytes) -> tuple[int, int] | None:
        pending = self.pending.get(key, _ABSENT)
        if pending is not _ABSENT:
            return None if pending is None else (pending[1], pending[2])
        raw = self._raw(key)
        if raw is None:
            return None
        create, mod = REC.unpack_from(raw)
        return create, mod

    def read(self, key: bytes) -> tuple[bytes, int, int] | None:
        pending = self.pending.get(key, _ABSENT)
        if pending is not _ABSENT:
            return pending
        raw = self._raw(key)
        if raw is None:
            return None
        create, mod = REC.unpack_from(raw)
        return raw[REC.size :], create, mod

    def scan(self, prefix: bytes, limit: int) -> tuple[list[KeyValue], bool]:
        rows = self._merged(prefix)
        try:
            found = list(islice(rows, max(limit, 0) + 1))
        finally:
            rows.close()  # closes the database iterator
        if len(found) > limit:
            return found[: max(limit, 0)], True
        return found, False

    def _merged(self, prefix: bytes) -> Generator[KeyValue, None, None]:
        """The live keys under ``prefix`` in order: the database's, overridden
        (or hidden, for a delete) by the batch's pending writes."""
        if self.sorted is None:
            self.sorted = SortedKeys(self.pending)
        pending = self.pending
        end = prefix_end(prefix)
        mine = self.sorted.irange(prefix, end)
        rows = self.db.iterator(
            start=DATA + prefix,
            stop=DATA_END if end is None else DATA + end,
            verify_checksums=True,
        )
        try:
            p = next(mine, None)
            for raw_key, raw in rows:
                key = raw_key[1:]
                while p is not None and p < key:
                    record = pending[p]
                    if record is not None:
                        yield KeyValue(p, *record)
                    p = next(mine, None)
                if p is not None and p == key:
                    record = pending[p]
                    if record is not None:
                        yield KeyValue(p, *record)
                    p = next(mine, None)
                    continue
                create, mod = data_record(raw, key, _name(self.where))
                yield KeyValue(key, raw[REC.size :], create, mod)
            while p is not None:
                record = pending[p]
                if record is not None:
                    yield KeyValue(p, *record)
                p = next(mine, None)
        finally:
            rows.close()

    def store(self, key: bytes, value: bytes, create_index: int, mod_index: int) -> None:
        if self.sorted is not None and key not in self.pending:
            self.sorted.add(key)
        self.pending[key] = (value, create_index, mod_index)
        self.batch.put(DATA + key, REC.pack(create_index, mod_index) + value)

    def remove(self, key: bytes) -> None:
        if self.sorted is not None and key not in self.pending:
            self.sorted.add(key)
        self.pending[key] = None
        self.batch.delete(DATA + key)
