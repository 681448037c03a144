"""On-disk encodings of the Raft core's values: entries, hard state, snapshots.

Every record a storage plugin writes goes through :func:`seal`: a one-byte
record kind, a CRC-32 of the payload, then the payload in msgpack. The checksum
is ours, not the database's, for two reasons: SQLite does not checksum its
pages at all, and LevelDB only checks blocks it is asked to verify, so a
damaged record could otherwise be read back as a valid, different entry. The
kind byte stops a record of one type being read as another (a hard state copied
over an entry's key decodes, but does not pass). An entry's payload also
carries its own index, so a record under the wrong key is caught as well.

msgpack, never pickle: a storage file, like a peer port, must not be able to
run code when it is read.

Decoding is strict about types and shapes. Anything that does not decode to
exactly what was written raises :class:`CorruptionError`; the storage plugins
add the file and the key to the message, and refuse to start on it.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from raftdb.raft.errors import StorageError
from raftdb.raft.messages import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
)

__all__ = [
    "CorruptionError",
    "LogBounds",
    "RecordKind",
    "check_bytes",
    "check_uint",
    "conf_state_from_list",
    "conf_state_to_list",
    "decode_conf_state",
    "decode_entry",
    "decode_hard_state",
    "decode_log_bounds",
    "decode_snapshot",
    "encode_conf_state",
    "encode_entries",
    "encode_entry",
    "encode_hard_state",
    "encode_log_bounds",
    "encode_snapshot",
    "pack",
    "seal",
    "unpack",
    "unseal",
]


class CorruptionError(StorageError):
    """Stored data is damaged or inconsistent; the node must not start on it.

    The message says what is wrong and, when raised by a plugin, which file.
    """


class RecordKind(IntEnum):
    """The first byte of every sealed record. Part of the on-disk format: never reuse one."""

    ENTRY = 1
    HARD_STATE = 2
    SNAPSHOT = 3
    LOG_BOUNDS = 4
    CONF_STATE = 5
    STATE_MACHINE_META = 6
    SESSION = 7


_HEADER = struct.Struct(">BI")  # kind, crc32(payload) seeded with the kind

_local = threading.local()


def _packb(value: Any) -> bytes:
    # A Packer per thread: reusing one is four times faster than msgpack.packb
    # (0.14 µs against 0.69 µs for an entry), and a Packer is not shareable.
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    data: bytes = packer.pack(value)
    return data


def _unpack(payload: bytes) -> Any:
    # raw=False keeps msgpack str as str and bin as bytes, so a str where bytes
    # belong is caught by the shape checks below instead of slipping through.
    return msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)


def seal(kind: RecordKind, payload: bytes) -> bytes:
    """Frame ``payload`` as a record of ``kind``, with its checksum."""
    return _HEADER.pack(kind, zlib.crc32(payload, kind)) + payload


def unseal(kind: RecordKind, record: bytes) -> bytes:
    """The payload of a record made by :func:`seal`, checked.

    Raises:
        CorruptionError: the record is truncated, of another kind, or its
            checksum does not match.
    """
    if len(record) < _HEADER.size:
        raise CorruptionError(f"{kind.name.lower()} record of {len(record)} bytes is truncated")
    found, crc = _HEADER.unpack_from(record)
    if found != kind:
        raise CorruptionError(f"expected a {kind.name.lower()} record, found kind {found}")
    payload = record[_HEADER.size :]
    if zlib.crc32(payload, kind) != crc:
        raise CorruptionError(f"{kind.name.lower()} record fails its checksum")
    return bytes(payload)


def _decode(kind: RecordKind, record: bytes, length: int) -> list[Any]:
    """Unseal and unpack a record whose payload is a msgpack array of ``length``."""
    payload = unseal(kind, record)
    try:
        value = _unpack(payload)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptionError(f"{kind.name.lower()} record does not decode: {exc}") from exc
    if not isinstance(value, list) or len(value) != length:
        raise CorruptionError(f"{kind.name.lower()} record has the wrong shape")
    return value


def _uint(value: Any, what: str) -> int:
    # bool is an int subclass; msgpack never produces one for an int field we wrote.
    if type(value) is not int or value < 0:
        raise CorruptionError(f"{what} is not a non-negative integer: {value!r}")
    return value


def _blob(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise CorruptionError(f"{what} is not bytes: {type(value).__name__}")
    return value


def _ids(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise CorruptionError(f"{what} is not a list")
    ids = tuple(_uint(v, what) for v in value)
    if list(ids) != sorted(set(ids)):
        raise CorruptionError(f"{what} is not sorted and unique: {ids}")
    return ids


# -- entries ------------------------------------------------------------------


def encode_entry(entry: Entry) -> bytes:
    """An entry as a sealed record. The index is inside too, checked on decode."""
    return seal(RecordKind.ENTRY, _packb([entry.index, entry.term, int(entry.type), entry.data]))


def decode_entry(record: bytes, index: int | None = None) -> Entry:
    """Parse :func:`encode_entry`'s output.

    Args:
        record: the stored bytes.
        index: the index the record was stored under, if known; a record
            carrying another index is corrupt (it is under the wrong key).

    Raises:
        CorruptionError: the record is damaged or is not the entry expected.
    """
    idx, term, kind, data = _decode(RecordKind.ENTRY, record, 4)
    idx = _uint(idx, "entry index")
    if index is not None and idx != index:
        raise CorruptionError(f"entry stored at index {index} says it is entry {idx}")
    if type(kind) is not int or kind not in _ENTRY_TYPES:
        raise CorruptionError(f"entry {idx} has unknown type {kind!r}")
    return Entry(_uint(term, "entry term"), idx, _ENTRY_TYPES[kind], _blob(data, "entry data"))


_ENTRY_TYPES = {int(t): t for t in EntryType}


# -- hard state, conf state, snapshot ------------------------------------------


def encode_hard_state(hs: HardState) -> bytes:
    """A hard state as a sealed record."""
    return seal(RecordKind.HARD_STATE, _packb([hs.term, hs.vote, hs.commit]))


def decode_hard_state(record: bytes) -> HardState:
    """Parse :func:`encode_hard_state`'s output. Raises :class:`CorruptionError`."""
    term, vote, commit = _decode(RecordKind.HARD_STATE, record, 3)
    return HardState(
        _uint(term, "hard state term"),
        _uint(vote, "hard state vote"),
        _uint(commit, "hard state commit"),
    )


def conf_state_to_list(cs: ConfState) -> list[list[int]]:
    """The msgpack-ready form of a conf state (shared with the snapshot stream)."""
    return [list(cs.voters), list(cs.learners)]


def conf_state_from_list(value: Any) -> ConfState:
    """Inverse of :func:`conf_state_to_list`. Raises :class:`CorruptionError`."""
    if not isinstance(value, list) or len(value) != 2:
        raise CorruptionError("conf state has the wrong shape")
    voters = _ids(value[0], "conf state voters")
    learners = _ids(value[1], "conf state learners")
    if set(voters) & set(learners):
        raise CorruptionError(f"nodes {sorted(set(voters) & set(learners))} are voter and learner")
    return ConfState(voters, learners)


def encode_conf_state(cs: ConfState) -> bytes:
    """A conf state as a sealed record."""
    return seal(RecordKind.CONF_STATE, _packb(conf_state_to_list(cs)))


def decode_conf_state(record: bytes) -> ConfState:
    """Parse :func:`encode_conf_state`'s output. Raises :class:`CorruptionError`."""
    return conf_state_from_list(_decode(RecordKind.CONF_STATE, record, 2))


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """A snapshot (metadata and its opaque data) as a sealed record."""
    meta = snapshot.metadata
    return seal(
        RecordKind.SNAPSHOT,
        _packb([meta.index, meta.term, conf_state_to_list(meta.conf_state), snapshot.data]),
    )


def decode_snapshot(record: bytes) -> Snapshot:
    """Parse :func:`encode_snapshot`'s output. Raises :class:`CorruptionError`."""
    index, term, conf, data = _decode(RecordKind.SNAPSHOT, record, 4)
    meta = SnapshotMetadata(
        _uint(index, "snapshot index"), _uint(term, "snapshot term"), conf_state_from_list(conf)
    )
    return Snapshot(meta, _blob(data, "snapshot data"))


# -- log bounds -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogBounds:
    """Where a stored log starts and ends: the dummy position and the last index.

    Storage plugins write this in the same atomic write as the entries it
    describes. At start, it tells a gap in the log (corruption) apart from
    entries that were compacted or truncated away but not yet deleted from
    disk (garbage, deleted lazily).
    """

    dummy_index: int
    dummy_term: int
    last_index: int


def encode_log_bounds(bounds: LogBounds) -> bytes:
    """Log bounds as a sealed record."""
    return seal(
        RecordKind.LOG_BOUNDS, _packb([bounds.dummy_index, bounds.dummy_term, bounds.last_index])
    )


def decode_log_bounds(record: bytes) -> LogBounds:
    """Parse :func:`encode_log_bounds`'s output. Raises :class:`CorruptionError`."""
    dummy_index, dummy_term, last = _decode(RecordKind.LOG_BOUNDS, record, 3)
    bounds = LogBounds(
        _uint(dummy_index, "log dummy index"),
        _uint(dummy_term, "log dummy term"),
        _uint(last, "log last index"),
    )
    if bounds.last_index < bounds.dummy_index:
        raise CorruptionError(
            f"log bounds end ({bounds.last_index}) before they start ({bounds.dummy_index})"
        )
    return bounds


def pack(value: Any) -> bytes:
    """msgpack-encode ``value`` the way every raftdb record is encoded (bin type on)."""
    return _packb(value)


def unpack(payload: bytes) -> Any:
    """Decode :func:`pack`'s output. Raises :class:`CorruptionError` on bad input."""
    try:
        return _unpack(payload)
    except Exception as exc:
        raise CorruptionError(f"record does not decode: {exc}") from exc


def check_uint(value: Any, what: str) -> int:
    """``value`` if it is a non-negative int, else :class:`CorruptionError` naming ``what``."""
    return _uint(value, what)


def check_bytes(value: Any, what: str) -> bytes:
    """``value`` if it is bytes, else :class:`CorruptionError` naming ``what``."""
    return _blob(value, what)


def encode_entries(entries: Sequence[Entry]) -> list[bytes]:
    """:func:`encode_entry` over a batch (one call site for plugins' hot path)."""
    return [encode_entry(e) for e in entries]
