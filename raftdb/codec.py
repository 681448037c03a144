"""The sealed-record encoding that storage, the state machines and the wire share.

Every record raftdb writes to disk goes through :func:`seal`: a one-byte
record kind, a CRC-32 of the payload, then the payload in msgpack. The checksum
is ours, not the database's, for two reasons: SQLite does not checksum its
pages at all, and LevelDB only checks blocks it is asked to verify, so a
damaged record could otherwise be read back as a valid, different value. The
kind byte stops a record of one type being read as another (a hard state copied
over an entry's key decodes, but does not pass).

msgpack, never pickle: a storage file, like a peer port, must not be able to
run code when it is read.

Decoding is strict about types and shapes. Anything that does not decode to
exactly what was written raises :class:`CorruptionError`; the storage plugins
add the file and the key to the message, and refuse to start on it.

This module sits below :mod:`raftdb.storage`, :mod:`raftdb.kv` and
:mod:`raftdb.transport` (each has its own records: :mod:`raftdb.storage.records`,
:mod:`raftdb.kv.commands` and :mod:`raftdb.kv.snapshot`, :mod:`raftdb.transport.frames`),
so that the three stay independent of each other.
"""

from __future__ import annotations

import struct
import threading
import zlib
from enum import IntEnum
from typing import Any

import msgpack
import msgspec

from raftdb.raft.errors import StorageError
from raftdb.raft.messages import ConfState

__all__ = [
    "CorruptionError",
    "RecordKind",
    "check_bytes",
    "check_ids",
    "check_uint",
    "conf_state_from_list",
    "conf_state_to_list",
    "decode_record",
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
    LEASE = 8
    CHANGE = 9


_HEADER = struct.Struct(">BI")  # kind, crc32(payload) seeded with the kind

_local = threading.local()


def pack(value: Any) -> bytes:
    """msgpack-encode ``value`` the way every raftdb record is encoded (bin type on).

    The bytes are msgpack's canonical smallest form, exactly what
    ``msgpack.Packer(use_bin_type=True)`` wrote before msgspec did the packing
    (``tests/test_codec_msgspec.py`` holds the two to the same bytes over every
    record, command and message kind): the files on disk, the peer frames and
    the handshake's proofs do not change.
    """
    # One Encoder per thread (it is cheap, and no state is shared between threads):
    # 0.12 µs for an APP message's fields against 0.41 µs with a reused Packer.
    try:
        encode = _local.encode
    except AttributeError:
        encode = _local.encode = msgspec.msgpack.Encoder().encode
    data: bytes = encode(value)
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


def decode_record(kind: RecordKind, record: bytes, length: int) -> list[Any]:
    """Unseal and unpack a record whose payload is a msgpack array of ``length``."""
    payload = unseal(kind, record)
    try:
        value = _unpack(payload)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptionError(f"{kind.name.lower()} record does not decode: {exc}") from exc
    if not isinstance(value, list) or len(value) != length:
        raise CorruptionError(f"{kind.name.lower()} record has the wrong shape")
    return value


def check_uint(value: Any, what: str) -> int:
    """``value`` if it is a non-negative int, else :class:`CorruptionError` naming ``what``."""
    # bool is an int subclass; msgpack never produces one for an int field we wrote.
    if type(value) is not int or value < 0:
        raise CorruptionError(f"{what} is not a non-negative integer: {value!r}")
    return value


def check_bytes(value: Any, what: str) -> bytes:
    """``value`` if it is bytes, else :class:`CorruptionError` naming ``what``."""
    if type(value) is not bytes:
        raise CorruptionError(f"{what} is not bytes: {type(value).__name__}")
    return value


def check_ids(value: Any, what: str) -> tuple[int, ...]:
    """``value`` if it is a sorted list of unique ids, as a tuple; else :class:`CorruptionError`."""
    if not isinstance(value, list):
        raise CorruptionError(f"{what} is not a list")
    ids = tuple(check_uint(v, what) for v in value)
    if list(ids) != sorted(set(ids)):
        raise CorruptionError(f"{what} is not sorted and unique: {ids}")
    return ids


# -- conf states (the storage records, the snapshot stream and the wire share them) --


def conf_state_to_list(cs: ConfState) -> list[list[int]]:
    """The msgpack-ready form of a conf state (shared with the snapshot stream)."""
    return [list(cs.voters), list(cs.learners)]


def conf_state_from_list(value: Any) -> ConfState:
    """Inverse of :func:`conf_state_to_list`. Raises :class:`CorruptionError`."""
    if not isinstance(value, list) or len(value) != 2:
        raise CorruptionError("conf state has the wrong shape")
    voters = check_ids(value[0], "conf state voters")
    learners = check_ids(value[1], "conf state learners")
    if set(voters) & set(learners):
        raise CorruptionError(f"nodes {sorted(set(voters) & set(learners))} are voter and learner")
    return ConfState(voters, learners)


def unpack(payload: bytes) -> Any:
    """Decode :func:`pack`'s output. Raises :class:`CorruptionError` on bad input."""
    try:
        return _unpack(payload)
    except Exception as exc:
        raise CorruptionError(f"record does not decode: {exc}") from exc
