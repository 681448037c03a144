"""raftdb.codec: disk encodings round-trip, and damage never decodes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.codec import CorruptionError, RecordKind, seal, unseal
from raftdb.raft.messages import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
)
from raftdb.storage.records import (
    LogBounds,
    decode_conf_state,
    decode_entry,
    decode_hard_state,
    decode_log_bounds,
    decode_snapshot,
    encode_conf_state,
    encode_entry,
    encode_hard_state,
    encode_log_bounds,
    encode_snapshot,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
entries = st.builds(Entry, u64, u64, st.sampled_from(list(EntryType)), st.binary(max_size=300))
ids = st.lists(st.integers(1, 2**32), unique=True, max_size=5).map(lambda v: tuple(sorted(v)))
conf_states = st.tuples(ids, ids).map(
    lambda p: ConfState(p[0], tuple(i for i in p[1] if i not in p[0]))
)
snapshots = st.builds(
    Snapshot, st.builds(SnapshotMetadata, u64, u64, conf_states), st.binary(max_size=100)
)


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(entries)
def test_entry_round_trip(entry: Entry) -> None:
    assert decode_entry(encode_entry(entry), entry.index) == entry


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(st.builds(HardState, u64, u64, u64))
def test_hard_state_round_trip(hs: HardState) -> None:
    assert decode_hard_state(encode_hard_state(hs)) == hs


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(conf_states)
def test_conf_state_round_trip(cs: ConfState) -> None:
    assert decode_conf_state(encode_conf_state(cs)) == cs


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(snapshots)
def test_snapshot_round_trip(snapshot: Snapshot) -> None:
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot


def test_log_bounds_round_trip() -> None:
    bounds = LogBounds(10, 3, 25)
    assert decode_log_bounds(encode_log_bounds(bounds)) == bounds
    with pytest.raises(CorruptionError, match="end"):
        decode_log_bounds(encode_log_bounds(LogBounds(10, 3, 9)))


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(entries, st.data())
def test_any_single_bit_flip_is_caught(entry: Entry, data: st.DataObject) -> None:
    record = bytearray(encode_entry(entry))
    bit = data.draw(st.integers(0, len(record) * 8 - 1))
    record[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CorruptionError):
        decode_entry(bytes(record), entry.index)


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(entries, st.data())
def test_truncation_is_caught(entry: Entry, data: st.DataObject) -> None:
    record = encode_entry(entry)
    cut = data.draw(st.integers(0, len(record) - 1))
    with pytest.raises(CorruptionError):
        decode_entry(record[:cut], entry.index)


def test_entry_under_the_wrong_index_is_caught() -> None:
    record = encode_entry(Entry(2, 7, EntryType.NORMAL, b"x"))
    with pytest.raises(CorruptionError, match="stored at index 8 says it is entry 7"):
        decode_entry(record, 8)


def test_records_of_another_kind_are_refused() -> None:
    record = encode_hard_state(HardState(1, 2, 3))
    with pytest.raises(CorruptionError, match="expected a entry record"):
        decode_entry(record)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2, 0], "wrong shape"),
        ([1, 2, 5, b""], "unknown type"),
        ([1, -2, 0, b""], "non-negative"),
        ([1, True, 0, b""], "non-negative"),
        ([1, 2, 0, "text"], "not bytes"),
        ({"index": 1}, "wrong shape"),
    ],
)
def test_well_sealed_nonsense_is_refused(payload: object, message: str) -> None:
    record = seal(RecordKind.ENTRY, msgpack.packb(payload, use_bin_type=True))
    with pytest.raises(CorruptionError, match=message):
        decode_entry(record)


def test_unsorted_or_overlapping_conf_states_are_refused() -> None:
    for voters, learners in (([2, 1], []), ([1, 1], []), ([1], [1])):
        record = seal(RecordKind.CONF_STATE, msgpack.packb([voters, learners]))
        with pytest.raises(CorruptionError):
            decode_conf_state(record)


def test_unseal_reports_the_kind() -> None:
    with pytest.raises(CorruptionError, match="snapshot record of 2 bytes is truncated"):
        unseal(RecordKind.SNAPSHOT, b"\x03\x00")
    with pytest.raises(CorruptionError, match="does not decode"):
        decode_hard_state(seal(RecordKind.HARD_STATE, b"\xc1"))
