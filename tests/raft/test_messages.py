"""Core value types and the ConfChange binary form (``raftdb/raft/messages.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.raft.messages import (
    LOCAL_MESSAGES,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    entries_size,
    entry_size,
)

MT = MessageType


def test_message_type_numbers_are_the_wire_format() -> None:
    assert {t.name: t.value for t in MessageType} == {
        "HUP": 0,
        "BEAT": 1,
        "PROP": 2,
        "APP": 3,
        "APP_RESP": 4,
        "VOTE": 5,
        "VOTE_RESP": 6,
        "SNAP": 7,
        "HEARTBEAT": 8,
        "HEARTBEAT_RESP": 9,
        "UNREACHABLE": 10,
        "SNAP_STATUS": 11,
        "CHECK_QUORUM": 12,
        "TRANSFER_LEADER": 13,
        "TIMEOUT_NOW": 14,
        "READ_INDEX": 15,
        "READ_INDEX_RESP": 16,
        "PRE_VOTE": 17,
        "PRE_VOTE_RESP": 18,
    }
    assert {t.name: t.value for t in EntryType} == {"NORMAL": 0, "CONF_CHANGE": 1}
    assert {t.name: t.value for t in ConfChangeType} == {
        "ADD_VOTER": 0,
        "ADD_LEARNER": 1,
        "REMOVE_NODE": 2,
    }


def test_local_messages() -> None:
    assert {MT.HUP, MT.BEAT, MT.UNREACHABLE, MT.SNAP_STATUS, MT.CHECK_QUORUM} == LOCAL_MESSAGES
    # Everything a peer legitimately sends must not be local.
    for t in (MT.APP, MT.APP_RESP, MT.VOTE, MT.PRE_VOTE, MT.PROP, MT.HEARTBEAT, MT.TIMEOUT_NOW):
        assert t not in LOCAL_MESSAGES


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(
    st.lists(
        st.builds(
            Entry,
            term=st.integers(0, 10),
            index=st.integers(0, 10),
            data=st.binary(max_size=40),
        ),
        max_size=10,
    )
)
def test_entries_size_is_the_sum_of_entry_sizes(entries: list[Entry]) -> None:
    assert entries_size(entries) == sum(entry_size(e) for e in entries)
    assert entries_size(tuple(entries)) == entries_size(entries)


def test_empty_entry_still_has_a_size() -> None:
    assert entry_size(Entry(term=1, index=1)) > 0
    assert entry_size(Entry(term=1, index=1, data=b"abc")) == entry_size(Entry(1, 1)) + 3


def test_zero_values() -> None:
    assert HardState().is_empty()
    assert not HardState(commit=1).is_empty()
    assert not HardState(vote=1).is_empty()
    assert not HardState(term=1).is_empty()
    assert Snapshot().is_empty()
    assert not Snapshot(SnapshotMetadata(index=1, term=1)).is_empty()
    assert ConfState(voters=(1, 3), learners=(2,)).ids() == (1, 2, 3)
    assert ConfState().ids() == ()


# -- ConfChange -------------------------------------------------------------------

conf_changes = st.builds(
    ConfChange,
    type=st.sampled_from(ConfChangeType),
    node_id=st.integers(0, 2**64 - 1),
    context=st.binary(max_size=64),
)


@settings(max_examples=200, deadline=None)
@given(cc=conf_changes)
def test_conf_change_round_trip(cc: ConfChange) -> None:
    data = cc.encode()
    assert isinstance(data, bytes)
    back = ConfChange.decode(data)
    assert back == cc
    assert type(back.context) is bytes
    assert type(back.type) is ConfChangeType


@pytest.mark.parametrize(
    "cc",
    [
        ConfChange(ConfChangeType.ADD_VOTER, 1),
        ConfChange(ConfChangeType.ADD_LEARNER, 2**64 - 1, b"http://10.0.0.1:8000"),
        ConfChange(ConfChangeType.REMOVE_NODE, 7, b"\x00\xff"),
    ],
)
def test_conf_change_round_trip_examples(cc: ConfChange) -> None:
    assert ConfChange.decode(cc.encode()) == cc


def test_conf_change_encoding_is_fixed() -> None:
    # One type byte, then the node id as a big-endian 64-bit integer, then the context.
    cc = ConfChange(ConfChangeType.REMOVE_NODE, 0x0102, b"ctx")
    assert cc.encode() == b"\x02" + b"\x00" * 6 + b"\x01\x02" + b"ctx"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00" * 8,  # one byte short of the header
        b"\x03" + b"\x00" * 8,  # unknown type
        b"\xff" + b"\x00" * 8 + b"ctx",
        b"garbage!!",  # 9 bytes, type 'g'
    ],
)
def test_conf_change_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        ConfChange.decode(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=30))
def test_conf_change_decode_is_canonical_or_refuses(data: bytes) -> None:
    """Any bytes either fail with ValueError or are exactly the encoding of what they decode to."""
    try:
        cc = ConfChange.decode(data)
    except ValueError:
        return
    assert cc.encode() == data
