"""The storage plugins' on-disk records: entries, hard state, conf state, snapshots, log bounds.

Each is a record sealed by :func:`raftdb.codec.seal` (a kind byte, a CRC-32,
a msgpack payload), so a damaged or misplaced record is caught on read as a
:class:`~raftdb.codec.CorruptionError`, never returned as a different value.
An entry's payload also carries its own index, so an entry under the wrong key
is caught too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from raftdb.codec import (
    CorruptionError,
    RecordKind,
    check_bytes,
    check_uint,
    conf_state_from_list,
    conf_state_to_list,
    decode_record,
    pack,
    seal,
)
from raftdb.raft.messages import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata

__all__ = [
    "LogBounds",
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
]


# -- entries ------------------------------------------------------------------


def encode_entry(entry: Entry) -> bytes:
    """An entry as a sealed record. The index is inside too, checked on decode."""
    return seal(RecordKind.ENTRY, pack([entry.index, entry.term, int(entry.type), entry.data]))


def decode_entry(record: bytes, index: int | None = None) -> Entry:
    """Parse :func:`encode_entry`'s output.

    Args:
        record: the stored bytes.
        index: the index the record was stored under, if known; a record
            carrying another index is corrupt (it is under the wrong key).

    Raises:
        CorruptionError: the record is damaged or is not the entry expected.
    """
    idx, term, kind, data = decode_record(RecordKind.ENTRY, record, 4)
    idx = check_uint(idx, "entry index")
    if index is not None and idx != index:
        raise CorruptionError(f"entry stored at index {index} says it is entry {idx}")
    if type(kind) is not int or kind not in _ENTRY_TYPES:
        raise CorruptionError(f"entry {idx} has unknown type {kind!r}")
    return Entry(
        check_uint(term, "entry term"), idx, _ENTRY_TYPES[kind], check_bytes(data, "entry data")
    )


_ENTRY_TYPES = {int(t): t for t in EntryType}


# -- hard state, conf state, snapshot ------------------------------------------


def encode_hard_state(hs: HardState) -> bytes:
    """A hard state as a sealed record."""
    return seal(RecordKind.HARD_STATE, pack([hs.term, hs.vote, hs.commit]))


def decode_hard_state(record: bytes) -> HardState:
    """Parse :func:`encode_hard_state`'s output. Raises :class:`CorruptionError`."""
    term, vote, commit = decode_record(RecordKind.HARD_STATE, record, 3)
    return HardState(
        check_uint(term, "hard state term"),
        check_uint(vote, "hard state vote"),
        check_uint(commit, "hard state commit"),
    )


def encode_conf_state(cs: ConfState) -> bytes:
    """A conf state as a sealed record."""
    return seal(RecordKind.CONF_STATE, pack(conf_state_to_list(cs)))


def decode_conf_state(record: bytes) -> ConfState:
    """Parse :func:`encode_conf_state`'s output. Raises :class:`CorruptionError`."""
    return conf_state_from_list(decode_record(RecordKind.CONF_STATE, record, 2))


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """A snapshot (metadata and its opaque data) as a sealed record."""
    meta = snapshot.metadata
    return seal(
        RecordKind.SNAPSHOT,
        pack([meta.index, meta.term, conf_state_to_list(meta.conf_state), snapshot.data]),
    )


def decode_snapshot(record: bytes) -> Snapshot:
    """Parse :func:`encode_snapshot`'s output. Raises :class:`CorruptionError`."""
    index, term, conf, data = decode_record(RecordKind.SNAPSHOT, record, 4)
    meta = SnapshotMetadata(
        check_uint(index, "snapshot index"),
        check_uint(term, "snapshot term"),
        conf_state_from_list(conf),
    )
    return Snapshot(meta, check_bytes(data, "snapshot data"))


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
        RecordKind.LOG_BOUNDS, pack([bounds.dummy_index, bounds.dummy_term, bounds.last_index])
    )


def decode_log_bounds(record: bytes) -> LogBounds:
    """Parse :func:`encode_log_bounds`'s output. Raises :class:`CorruptionError`."""
    dummy_index, dummy_term, last = decode_record(RecordKind.LOG_BOUNDS, record, 3)
    bounds = LogBounds(
        check_uint(dummy_index, "log dummy index"),
        check_uint(dummy_term, "log dummy term"),
        check_uint(last, "log last index"),
    )
    if bounds.last_index < bounds.dummy_index:
        raise CorruptionError(
            f"log bounds end ({bounds.last_index}) before they start ({bounds.dummy_index})"
        )
    return bounds


def encode_entries(entries: Sequence[Entry]) -> list[bytes]:
    """:func:`encode_entry` over a batch (one call site for plugins' hot path)."""
    return [encode_entry(e) for e in entries]
