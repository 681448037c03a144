"""The snapshot stream: a state machine's whole state as bounded byte chunks.

A snapshot crosses the network (leader to a lagging follower) and may be
larger than memory, so it is never one ``bytes``: :meth:`StateMachine.snapshot`
returns a :class:`SnapshotStream` that yields chunks of at most ``chunk_size``
bytes, and :meth:`StateMachine.restore` consumes any iterable of chunks,
whatever their boundaries (a transport may re-split them).

Every state machine writes the same format, so any node can restore any other
node's snapshot whatever its plugin. The logical byte stream (format 2) is::

    MAGIC  frame(HEADER)  frame(KV)*  frame(SESSIONS)*  frame(LEASES)*  frame(HISTORY)*
           frame(END)

    frame    = type:u8  length:u32  crc32(payload, seed=type):u32  payload
    HEADER   = msgpack [format=2, index, term, [voters, learners], [[id, url], ...],
                        history_floor]
    KV       = msgpack [key, value, create_index, mod_index], repeated
    SESSIONS = msgpack SessionState.to_list(), repeated
    LEASES   = msgpack Lease.to_list(), repeated
    HISTORY  = msgpack Change.to_list(), repeated
    END      = msgpack [kv_count, session_count, lease_count, change_count]

Format 1 (before leases and the watch history) has a 5-field header, no
LEASES or HISTORY frames and two END counts; it is still read: no leases, an
empty history, and the snapshot's index as the history floor (what happened
before it is unknown).

Keys come in strictly ascending order, sessions in ascending client id,
leases in ascending id (each lease's keys sorted) and the history window in
log order, so a state has exactly one stream (two nodes' snapshots at the
same index are byte-identical) and a reader can load keys in order. The metadata the driver
needs (index, term, conf state, members) is in the header, first, so it is
known before the bulk arrives. Per-frame checksums and the END counts catch a
damaged or truncated stream before a restore switches to it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import msgpack

from raftdb.codec import (
    CorruptionError,
    RecordKind,
    check_uint,
    conf_state_from_list,
    conf_state_to_list,
    pack,
    seal,
    unpack,
    unseal,
)
from raftdb.kv.changes import Change, Lease
from raftdb.kv.commands import SessionState
from raftdb.raft.errors import RaftError
from raftdb.raft.messages import ConfState, SnapshotMetadata

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAGIC",
    "KVRecord",
    "SnapshotAbortedError",
    "SnapshotFormatError",
    "SnapshotInfo",
    "decode_info",
    "encode_info",
    "SnapshotReader",
    "SnapshotStream",
    "check_stream",
    "encode_stream",
]

MAGIC: Final = b"RDBSNAP1"
#: Default upper bound on a chunk's size.
DEFAULT_CHUNK_SIZE: Final = 1 << 20
_MIN_CHUNK_SIZE: Final = 64
_FORMAT: Final = 2
_FORMATS: Final = {1: 5, 2: 6}  # format -> fields of its header

_FRAME = struct.Struct(">BII")
_HEADER, _KV, _SESSIONS, _END, _LEASES, _HISTORY = 1, 2, 3, 4, 5, 6
_FRAME_NAMES = {
    _HEADER: "header",
    _KV: "keys",
    _SESSIONS: "sessions",
    _LEASES: "leases",
    _HISTORY: "history",
    _END: "end",
}
# Where each bulk frame type comes in the stream.
_RANK: Final = {_KV: 0, _SESSIONS: 1, _LEASES: 2, _HISTORY: 3}

#: A key as it travels: (key, value, create_index, mod_index).
KVRecord = tuple[bytes, bytes, int, int]


class SnapshotFormatError(RaftError):
    """A snapshot stream is damaged, truncated or not a raftdb snapshot."""


class SnapshotAbortedError(RaftError):
    """The state machine was restored or closed while a snapshot of it was read."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What a snapshot stands for: the first thing in its stream.

    Attributes:
        index, term: the last entry applied into the snapshot.
        conf_state: the membership at ``index``.
        members: ``{node id: peer URL}`` at ``index``.
    """

    index: int
    term: int
    conf_state: ConfState
    members: Mapping[int, str] = field(hash=False)

    def metadata(self) -> SnapshotMetadata:
        """The core's view of it, for ``Storage.create_snapshot`` and snapshot messages."""
        return SnapshotMetadata(self.index, self.term, self.conf_state)


def encode_info(info: SnapshotInfo) -> bytes:
    """A :class:`SnapshotInfo` as a sealed record: how disk state machines store
    their applied index, term and membership, in the batch that changes them."""
    members = [[node_id, url] for node_id, url in sorted(info.members.items())]
    return seal(
        RecordKind.STATE_MACHINE_META,
        pack([info.index, info.term, conf_state_to_list(info.conf_state), members]),
    )


def decode_info(record: bytes) -> SnapshotInfo:
    """Parse :func:`encode_info`'s output.

    Raises:
        CorruptionError: the record is damaged.
    """
    value = unpack(unseal(RecordKind.STATE_MACHINE_META, record))
    if not isinstance(value, list) or len(value) != 4 or not isinstance(value[3], list):
        raise CorruptionError("state machine metadata has the wrong shape")
    index, term, conf, members = value
    table: dict[int, str] = {}
    for member in members:
        if not isinstance(member, list) or len(member) != 2 or type(member[1]) is not str:
            raise CorruptionError(f"bad member {member!r} in state machine metadata")
        table[check_uint(member[0], "member id")] = member[1]
    return SnapshotInfo(
        check_uint(index, "applied index"),
        check_uint(term, "applied term"),
        conf_state_from_list(conf),
        table,
    )


def _frame(kind: int, payload: bytes) -> bytes:
    return _FRAME.pack(kind, len(payload), zlib.crc32(payload, kind)) + payload


def _frames(
    info: SnapshotInfo,
    kv: Iterable[KVRecord],
    sessions: Iterable[SessionState],
    leases: Iterable[Lease],
    history: Iterable[Change],
    history_floor: int,
    target: int,
) -> Iterator[bytes]:
    pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
    members = [[node_id, url] for node_id, url in sorted(info.members.items())]
    conf = conf_state_to_list(info.conf_state)
    header = [_FORMAT, info.index, info.term, conf, members, history_floor]
    yield MAGIC + _frame(_HEADER, pack(header))
    counts = [0, 0, 0, 0]
    bulk: tuple[tuple[int, Iterable[Any]], ...] = (
        (_KV, kv),
        (_SESSIONS, (s.to_list() for s in sessions)),
        (_LEASES, (lease.to_list() for lease in leases)),
        (_HISTORY, (change.to_list() for change in history)),
    )
    for kind, records in bulk:
        parts: list[bytes] = []
        size = 0
        for record in records:
            packed = pack(list(record))
            if parts and size + len(packed) > target:
                yield _frame(kind, b"".join(parts))
                parts, size = [], 0
            parts.append(packed)
            size += len(packed)
            counts[_RANK[kind]] += 1
        if parts:
            yield _frame(kind, b"".join(parts))
    yield _frame(_END, pack(counts))


def encode_stream(
    info: SnapshotInfo,
    kv: Iterable[KVRecord],
    sessions: Iterable[SessionState],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    leases: Iterable[Lease] = (),
    history: Iterable[Change] = (),
    history_floor: int = 0,
) -> Iterator[bytes]:
    """Encode a state as chunks of at most ``chunk_size`` bytes, lazily (format 2).

    Args:
        info: the header.
        kv: every key, in strictly ascending key order.
        sessions: every session, in ascending client id order.
        chunk_size: the bound on each chunk (at least 64).
        leases: every lease, in ascending id order.
        history: the retained watch history, oldest first.
        history_floor: the history floor (every change above it is in ``history``).

    Memory stays within about two chunks plus the largest single record,
    whatever the size of the state: the inputs are read as the output is.
    """
    if chunk_size < _MIN_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be at least {_MIN_CHUNK_SIZE}")
    if not 0 <= history_floor <= info.index:
        raise ValueError(f"history_floor {history_floor} is not in [0, {info.index}]")
    buffer = bytearray()
    frames = _frames(info, kv, sessions, leases, history, history_floor, chunk_size - _FRAME.size)
    for frame in frames:
        buffer += frame
        while len(buffer) >= chunk_size:
            yield bytes(buffer[:chunk_size])
            del buffer[:chunk_size]
    if buffer:
        yield bytes(buffer)


class SnapshotStream:
    """A snapshot being taken: :attr:`info` at once, the chunks on iteration.

    Iterate it once. It holds the state machine's point-in-time view (a
    LevelDB snapshot, a copy) until exhausted or closed; close it when giving
    up early (``with`` does). Safe to hand to another thread.
    """

    def __init__(
        self,
        info: SnapshotInfo,
        chunks: Iterator[bytes],
        release: Callable[[], None] | None = None,
    ) -> None:
        self._info = info
        self._chunks = chunks
        self._release = release
        self._closed = False

    @property
    def info(self) -> SnapshotInfo:
        """The snapshot's index, term, conf state and members (also in the stream)."""
        return self._info

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._chunks
        finally:
            self.close()

    def close(self) -> None:
        """Release the point-in-time view. Idempotent."""
        if self._closed:
            return
        self._closed = True
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        if self._release is not None:
            self._release()

    def __enter__(self) -> SnapshotStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SnapshotReader:
    """Decode a stream made by :func:`encode_stream` (format 2, or format 1),
    validating as it goes.

    Use in order: :attr:`info` and :attr:`history_floor` (read on
    construction), :meth:`kv_batches`, :meth:`session_batches`,
    :meth:`lease_batches`, :meth:`history_batches`, :meth:`finish`. Only
    after :meth:`finish` returns is the stream known to be whole; a restore
    must not switch to the new state before that. A reader that skips the
    leases or the history is stopped by :meth:`finish` if the stream has any
    (nothing is dropped silently).

    Attributes:
        info: the header.
        format: the stream's format (1 or 2).
        history_floor: the history floor (format 1: the snapshot's index).

    Raises (from any method):
        SnapshotFormatError: the stream is damaged, truncated, out of order,
            or followed by extra data.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._pos = 0
        self._counts = [0, 0, 0, 0]
        self._pending: tuple[int, bytes] | None = None
        self._lease_keys: set[bytes] = set()
        if self._read(len(MAGIC)) != MAGIC:
            raise SnapshotFormatError("not a raftdb snapshot (bad magic)")
        kind, payload = self._next_frame()
        if kind != _HEADER:
            raise SnapshotFormatError("the stream does not start with a header")
        self.format = _FORMAT
        self.history_floor = 0
        self.info = self._parse_header(payload)

    # -- byte level -------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        while len(self._buffer) - self._pos < n:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                raise SnapshotFormatError("the stream is truncated") from None
            if self._pos > (1 << 20):
                del self._buffer[: self._pos]
                self._pos = 0
            self._buffer += chunk
        data = bytes(self._buffer[self._pos : self._pos + n])
        self._pos += n
        return data

    def _next_frame(self) -> tuple[int, bytes]:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        kind, length, crc = _FRAME.unpack(self._read(_FRAME.size))
        if kind not in _FRAME_NAMES:
            raise SnapshotFormatError(f"unknown frame type {kind}")
        payload = self._read(length)
        if zlib.crc32(payload, kind) != crc:
            raise SnapshotFormatError(f"a {_FRAME_NAMES[kind]} frame fails its checksum")
        return kind, payload

    @staticmethod
    def _items(payload: bytes) -> Iterator[Any]:
        unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=True)
        unpacker.feed(payload)
        try:
            yield from unpacker
        except Exception as exc:
            raise SnapshotFormatError(f"a frame does not decode: {exc}") from exc

    # -- frames ----------------------------------------------------------------------

    def _parse_header(self, payload: bytes) -> SnapshotInfo:
        items = list(self._items(payload))
        if len(items) != 1 or not isinstance(items[0], list) or not items[0]:
            raise SnapshotFormatError("the header has the wrong shape")
        fmt = items[0][0]
        if type(fmt) is int and fmt > _FORMAT:
            raise SnapshotFormatError(
                f"snapshot format {fmt} is not one this raftdb reads (1, {_FORMAT}): "
                "a newer raftdb wrote it (see docs/formats.md)"
            )
        if type(fmt) is not int or fmt not in _FORMATS:
            raise SnapshotFormatError(f"unknown snapshot format {fmt!r}")
        if len(items[0]) != _FORMATS[fmt]:
            raise SnapshotFormatError(f"the header of a format {fmt} snapshot has the wrong shape")
        index, term, conf, members = items[0][1:5]
        if type(index) is not int or type(term) is not int or index < 0 or term < 0:
            raise SnapshotFormatError("the header's index and term must be integers >= 0")
        try:
            conf_state = conf_state_from_list(conf)
        except CorruptionError as exc:
            raise SnapshotFormatError(f"the header's {exc}") from None
        table: dict[int, str] = {}
        if not isinstance(members, list):
            raise SnapshotFormatError("the header's members are not a list")
        for member in members:
            if (
                not isinstance(member, list)
                or len(member) != 2
                or type(member[0]) is not int
                or type(member[1]) is not str
                or member[0] in table
            ):
                raise SnapshotFormatError(f"bad member {member!r} in the header")
            table[member[0]] = member[1]
        self.format = fmt
        if fmt == 1:
            self.history_floor = index
        else:
            floor = items[0][5]
            if type(floor) is not int or not 0 <= floor <= index:
                raise SnapshotFormatError(f"the header's history floor {floor!r} is out of range")
            self.history_floor = floor
        return SnapshotInfo(index, term, conf_state, table)

    def _frames_of(self, kind: int) -> Iterator[bytes]:
        """The payloads of the consecutive frames of ``kind`` that come next."""
        while True:
            found, payload = self._next_frame()
            if found != kind:
                if found in _RANK and _RANK[found] < _RANK[kind]:
                    raise SnapshotFormatError(
                        f"{_FRAME_NAMES[found]} after {_FRAME_NAMES[kind]}"
                        if found != _KV
                        else f"keys after {_FRAME_NAMES[kind]}"
                    )
                if found in (_LEASES, _HISTORY) and self.format == 1:
                    raise SnapshotFormatError(f"a {_FRAME_NAMES[found]} frame in a format 1 stream")
                self._pending = (found, payload)
                return
            yield payload

    def kv_batches(self) -> Iterator[list[KVRecord]]:
        """The keys, one list per frame, in ascending key order."""
        previous = b""
        limit = self.info.index
        for payload in self._frames_of(_KV):
            batch: list[KVRecord] = []
            for item in self._items(payload):
                if not isinstance(item, list) or len(item) != 4:
                    raise SnapshotFormatError("a key record has the wrong shape")
                key, value, create, mod = item
                if type(key) is not bytes or type(value) is not bytes or not key:
                    raise SnapshotFormatError("a key record's key or value is not bytes")
                if not key > previous:
                    raise SnapshotFormatError(f"key {key!r} is out of order")
                if type(create) is not int or type(mod) is not int or not 0 < create <= mod:
                    raise SnapshotFormatError(f"key {key!r} has bad indexes")
                if mod > limit:
                    raise SnapshotFormatError(f"key {key!r} was written after the snapshot")
                previous = key
                batch.append((key, value, create, mod))
            self._counts[0] += len(batch)
            yield batch

    def session_batches(self) -> Iterator[list[SessionState]]:
        """The client sessions, one list per frame. Call after :meth:`kv_batches`."""
        previous = b""
        for payload in self._frames_of(_SESSIONS):
            batch = []
            for item in self._items(payload):
                try:
                    session = SessionState.from_list(item)
                except CorruptionError as exc:
                    raise SnapshotFormatError(str(exc)) from None
                if not session.client_id > previous:
                    raise SnapshotFormatError("sessions are out of order")
                if session.last_index > self.info.index:
                    raise SnapshotFormatError("a session was used after the snapshot")
                previous = session.client_id
                batch.append(session)
            self._counts[1] += len(batch)
            yield batch

    def lease_batches(self) -> Iterator[list[Lease]]:
        """The leases, one list per frame, by id. Call after :meth:`session_batches`.

        None in a format-1 stream.
        """
        previous = 0
        seen = self._lease_keys
        for payload in self._frames_of(_LEASES):
            batch = []
            for item in self._items(payload):
                try:
                    lease = Lease.from_list(item)
                except CorruptionError as exc:
                    raise SnapshotFormatError(str(exc)) from None
                if not lease.id > previous:
                    raise SnapshotFormatError("leases are out of order")
                if lease.renewed_index > self.info.index:
                    raise SnapshotFormatError(f"lease {lease.id} was renewed after the snapshot")
                if not seen.isdisjoint(lease.keys):
                    raise SnapshotFormatError(f"lease {lease.id} shares a key with another lease")
                seen.update(lease.keys)
                previous = lease.id
                batch.append(lease)
            self._counts[2] += len(batch)
            yield batch

    def history_batches(self) -> Iterator[list[Change]]:
        """The watch history window, oldest first, one list per frame. Call
        after :meth:`lease_batches`. Empty in a format-1 stream."""
        previous = self.history_floor + 1
        for payload in self._frames_of(_HISTORY):
            batch = []
            for item in self._items(payload):
                try:
                    change = Change.from_list(item)
                except CorruptionError as exc:
                    raise SnapshotFormatError(str(exc)) from None
                if change.index < previous:
                    raise SnapshotFormatError(
                        f"the history change at {change.index} is out of order "
                        f"or at or below the floor {self.history_floor}"
                    )
                if change.index > self.info.index:
                    raise SnapshotFormatError(f"a change at {change.index} is after the snapshot")
                previous = change.index
                batch.append(change)
            self._counts[3] += len(batch)
            yield batch

    def finish(self) -> None:
        """Check the END frame and that nothing follows it."""
        kind, payload = self._next_frame()
        if kind != _END:
            raise SnapshotFormatError(f"unexpected {_FRAME_NAMES[kind]} frame before the end")
        items = list(self._items(payload))
        counts = self._counts if self.format == _FORMAT else self._counts[:2]
        if items != [counts]:
            raise SnapshotFormatError(
                f"the stream ends with counts {items!r}, but held {counts[0]} keys, "
                f"{counts[1]} sessions, {self._counts[2]} leases and {self._counts[3]} changes"
            )
        self._lease_keys = set()
        if len(self._buffer) > self._pos or any(self._chunks):
            raise SnapshotFormatError("data follows the end of the snapshot")


def check_stream(chunks: Iterable[bytes]) -> SnapshotInfo:
    """Read a whole stream and check it as a restore would, keeping nothing.

    For a node that must know a snapshot is whole before it commits to
    installing it (a received one, before its message reaches the core).

    Returns:
        The stream's :class:`SnapshotInfo`.

    Raises:
        SnapshotFormatError: as :class:`SnapshotReader` does.
    """
    reader = SnapshotReader(chunks)
    for _ in reader.kv_batches():
        pass
    for _ in reader.session_batches():
        pass
    for _ in reader.lease_batches():
        pass
    for _ in reader.history_batches():
        pass
    reader.finish()
    return reader.info
