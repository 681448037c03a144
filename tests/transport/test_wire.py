"""raftdb.transport.frames: message encoding, frames, and total decoding (WireError or valid).

Property tests run without hypothesis deadlines: the machine is a shared 2-core one.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftdb.raft.messages import (
    LOCAL_MESSAGES,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from raftdb.transport.frames import (
    DEFAULT_MAX_MESSAGE_FRAME,
    FRAME_HEADER,
    MAX_CHUNK_FRAME,
    MAX_CONTROL_FRAME,
    PROTOCOL_VERSION,
    FrameKind,
    Hello,
    SnapshotAck,
    SnapshotEnd,
    WireError,
    decode_ack,
    decode_frame,
    decode_hello,
    decode_message,
    decode_messages,
    decode_snapshot_begin,
    decode_snapshot_end,
    encode_ack,
    encode_hello,
    encode_message,
    encode_messages,
    encode_snapshot_begin,
    encode_snapshot_chunk,
    encode_snapshot_end,
    frame,
    message_to_list,
    parse_frame_header,
)

U64 = st.integers(min_value=0, max_value=2**64 - 1)
NODE = st.integers(min_value=1, max_value=2**64 - 1)
WIRE_TYPES = [t for t in MessageType if t not in LOCAL_MESSAGES]

entries = st.builds(
    Entry,
    term=U64,
    index=U64,
    type=st.sampled_from(list(EntryType)),
    data=st.binary(max_size=64),
)


@st.composite
def conf_states(draw: st.DrawFn) -> ConfState:
    ids = draw(st.lists(NODE, unique=True, max_size=7))
    split = draw(st.integers(min_value=0, max_value=len(ids)))
    return ConfState(tuple(sorted(ids[:split])), tuple(sorted(ids[split:])))


snapshots = st.builds(
    lambda index, term, cs: Snapshot(SnapshotMetadata(index, term, cs)),
    U64,
    U64,
    conf_states(),
)

messages = st.builds(
    Message,
    type=st.sampled_from(WIRE_TYPES),
    to=NODE,
    frm=NODE,
    term=U64,
    log_term=U64,
    index=U64,
    entries=st.lists(entries, max_size=5).map(tuple),
    commit=U64,
    reject=st.booleans(),
    reject_hint=U64,
    snapshot=st.none() | snapshots,
    context=st.binary(max_size=32),
)

# Anything msgpack can carry, nested.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=14) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=40,
)


def assert_valid(m: Message) -> None:
    """Every field exactly of its declared type and range, and it round-trips."""
    assert type(m.type) is MessageType
    assert m.type not in LOCAL_MESSAGES
    for value in (m.term, m.log_term, m.index, m.commit, m.reject_hint):
        assert type(value) is int
        assert value >= 0
    assert type(m.to) is int
    assert m.to >= 1
    assert type(m.frm) is int
    assert m.frm >= 1
    assert type(m.reject) is bool
    assert type(m.context) is bytes
    assert type(m.entries) is tuple
    for e in m.entries:
        assert type(e) is Entry
        assert type(e.type) is EntryType
        assert type(e.term) is int
        assert type(e.index) is int
        assert e.term >= 0
        assert e.index >= 0
        assert type(e.data) is bytes
    if m.snapshot is not None:
        meta = m.snapshot.metadata
        assert type(meta.index) is int
        assert type(meta.term) is int
        assert m.snapshot.data == b""
        ids = [*meta.conf_state.voters, *meta.conf_state.learners]
        assert len(ids) == len(set(ids))
    assert decode_message(encode_message(m)) == m


def without_data(m: Message) -> Message:
    if m.snapshot is None:
        return m
    return Message(
        m.type,
        m.to,
        m.frm,
        m.term,
        m.log_term,
        m.index,
        m.entries,
        m.commit,
        m.reject,
        m.reject_hint,
        Snapshot(m.snapshot.metadata),
        m.context,
    )


# -- round trips -------------------------------------------------------------------


@given(messages)
@settings(deadline=None)
def test_message_round_trip(m: Message) -> None:
    decoded = decode_message(encode_message(m))
    assert decoded == m
    assert_valid(decoded)


@given(st.lists(messages, max_size=20))
@settings(deadline=None)
def test_batch_round_trip_through_a_frame(batch: list[Message]) -> None:
    data = encode_messages(batch)
    kind, value = decode_frame(data)
    assert kind is FrameKind.MESSAGES
    assert value == batch


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65535, 65536])
def test_batch_array_header_sizes(n: int) -> None:
    m = Message(MessageType.HEARTBEAT, to=2, frm=1, term=3)
    assert decode_messages(encode_messages([m] * n)[FRAME_HEADER.size :]) == [m] * n


def test_snapshot_data_is_not_sent_inline() -> None:
    meta = SnapshotMetadata(10, 2, ConfState((1, 2, 3), (4,)))
    m = Message(MessageType.SNAP, to=2, frm=1, term=2, snapshot=Snapshot(meta, b"x" * 1000))
    data = encode_message(m)
    assert b"x" * 1000 not in data
    assert decode_message(data) == without_data(m)
    assert decode_snapshot_begin(encode_snapshot_begin(m)[FRAME_HEADER.size :]) == without_data(m)


def test_snapshot_begin_requires_a_snap_with_metadata() -> None:
    with pytest.raises(WireError):
        decode_snapshot_begin(encode_message(Message(MessageType.APP, to=2, frm=1)))
    with pytest.raises(WireError):
        decode_snapshot_begin(encode_message(Message(MessageType.SNAP, to=2, frm=1)))


def test_control_frames_round_trip() -> None:
    hello = Hello(PROTOCOL_VERSION, 7, "prod")
    assert decode_frame(encode_hello(hello)) == (FrameKind.HELLO, hello)
    end = SnapshotEnd(123456, 0xDEADBEEF)
    assert decode_frame(encode_snapshot_end(end)) == (FrameKind.SNAPSHOT_END, end)
    for ok in (True, False):
        assert decode_frame(encode_ack(SnapshotAck(ok))) == (
            FrameKind.SNAPSHOT_ACK,
            SnapshotAck(ok),
        )
    assert decode_frame(encode_snapshot_chunk(b"abc")) == (FrameKind.SNAPSHOT_CHUNK, b"abc")


def test_encode_hello_refuses_a_long_token() -> None:
    with pytest.raises(ValueError, match="at most"):
        encode_hello(Hello(1, 1, "t" * 257))


def test_frame_layout() -> None:
    assert frame(FrameKind.SNAPSHOT_CHUNK, b"xyz") == b"\x00\x00\x00\x03\x04xyz"


# -- frame headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "limit"),
    [
        (FrameKind.HELLO, MAX_CONTROL_FRAME),
        (FrameKind.MESSAGES, DEFAULT_MAX_MESSAGE_FRAME),
        (FrameKind.SNAPSHOT_BEGIN, DEFAULT_MAX_MESSAGE_FRAME),
        (FrameKind.SNAPSHOT_CHUNK, MAX_CHUNK_FRAME),
        (FrameKind.SNAPSHOT_END, MAX_CONTROL_FRAME),
        (FrameKind.SNAPSHOT_ACK, MAX_CONTROL_FRAME),
    ],
)
def test_frame_header_limits(kind: FrameKind, limit: int) -> None:
    assert parse_frame_header(FRAME_HEADER.pack(limit, kind)) == (kind, limit)
    with pytest.raises(WireError, match="over the limit"):
        parse_frame_header(FRAME_HEADER.pack(limit + 1, kind))


def test_frame_header_message_limit_is_configurable() -> None:
    header = FRAME_HEADER.pack(2000, FrameKind.MESSAGES)
    with pytest.raises(WireError):
        parse_frame_header(header, max_message_frame=1999)
    assert parse_frame_header(header, max_message_frame=2000) == (FrameKind.MESSAGES, 2000)


@pytest.mark.parametrize("header", [b"", b"\x00\x00\x00\x00", b"\x00" * 6, b"\x00\x00\x00\x00\x00"])
def test_frame_header_malformed(header: bytes) -> None:
    with pytest.raises(WireError):
        parse_frame_header(header)


def test_decode_frame_rejects_length_mismatch() -> None:
    data = encode_ack(SnapshotAck(True))
    with pytest.raises(WireError, match="holds"):
        decode_frame(data[:-1])
    with pytest.raises(WireError, match="holds"):
        decode_frame(data + b"\x00")


# -- strictness, case by case -----------------------------------------------------------

GOOD = message_to_list(
    Message(
        MessageType.APP,
        to=2,
        frm=1,
        term=5,
        log_term=4,
        index=9,
        entries=(Entry(5, 10, EntryType.NORMAL, b"v"),),
        commit=8,
        snapshot=Snapshot(SnapshotMetadata(3, 1, ConfState((1, 2), (3,)))),
        context=b"c",
    )
)


def with_field(i: int, value: Any) -> bytes:
    fields = list(GOOD)
    fields[i] = value
    return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (0, int(MessageType.HUP)),  # local only
        (0, int(MessageType.BEAT)),
        (0, 99),
        (0, True),
        (0, "APP"),
        (1, 0),  # to: node ids start at 1
        (1, -1),
        (1, True),
        (2, 0),
        (2, 1.0),
        (3, -5),
        (3, "5"),
        (4, None),
        (5, False),
        (6, [5, 10, 0]),  # not a multiple of 4
        (6, [5, 10, 2, b"v"]),  # unknown entry type
        (6, [5, 10, 0, "v"]),  # str data
        (6, [-5, 10, 0, b"v"]),
        (6, [5, True, 0, b"v"]),
        (6, [[5, 10, 0, b"v"]]),
        (6, {}),
        (6, None),
        (7, -1),
        (8, 0),  # reject must be a bool
        (8, None),
        (9, -1),
        (10, [3, 1]),
        (10, [3, 1, [[2, 1], []]]),  # voters unsorted
        (10, [3, 1, [[1, 2], [2]]]),  # voter and learner
        (10, [3, 1, [[1, 2]]]),
        (10, [-3, 1, [[], []]]),
        (10, [3, 1, [[0, "x"], []]]),
        (10, b""),
        (11, "context"),
        (11, None),
    ],
)
def test_decode_rejects_a_bad_field(field: int, value: Any) -> None:
    with pytest.raises(WireError):
        decode_message(with_field(field, value))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        msgpack.packb(GOOD, use_bin_type=True)[:-1],
        msgpack.packb(GOOD, use_bin_type=True) + b"\x00",  # trailing data
        msgpack.packb(GOOD[:11], use_bin_type=True),
        msgpack.packb([*GOOD, 0], use_bin_type=True),
        msgpack.packb({"type": 3}, use_bin_type=True),
        msgpack.packb({1: 3}, use_bin_type=True),  # non-str map key
        msgpack.packb(msgpack.ExtType(1, b"x")),
        b"\x91" * 5000 + b"\xc0",  # deep nesting
        b"\xdd\xff\xff\xff\xff",  # claims 4 billion items
        b"\xc6\xff\xff\xff\xff",  # claims a 4 GiB bin
    ],
)
def test_decode_rejects_malformed_msgpack(payload: bytes) -> None:
    with pytest.raises(WireError):
        decode_message(payload)


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.packb([2, 1], use_bin_type=True),
        msgpack.packb([2, 0, "raftdb"], use_bin_type=True),
        msgpack.packb([2, 1, b"raftdb"], use_bin_type=True),
        msgpack.packb([-1, 1, "raftdb"], use_bin_type=True),
        msgpack.packb([2, 1, "t" * 257], use_bin_type=True),
        msgpack.packb([2, True, "raftdb"], use_bin_type=True),
        msgpack.packb([3, 0, "raftdb"], use_bin_type=True),
        msgpack.packb([True, 1, "raftdb"], use_bin_type=True),
        msgpack.packb([3], use_bin_type=True),
    ],
)
def test_decode_hello_rejects(payload: bytes) -> None:
    with pytest.raises(WireError):
        decode_hello(payload)


@pytest.mark.parametrize(
    "fields",
    [
        [3, 7, "raftdb", 1, b"", None, {"a future": "field"}],
        [3, 7],
        [1, 7, "raftdb"],
        [99, 7, b"not even the token's type"],
    ],
)
def test_a_hello_of_another_version_decodes_to_its_version_and_sender(fields: list[Any]) -> None:
    """Whatever shape another version gave its HELLO, its start says who and which
    version, so that the refusal can name both (docs/formats.md)."""
    hello = decode_hello(msgpack.packb(fields, use_bin_type=True))
    assert (hello.version, hello.node_id) == (fields[0], 7)


@pytest.mark.parametrize(
    "payload", [msgpack.packb(v) for v in ([1], [1, -1], [1, 2**32], ["1", 2], [1, 2, 3], None)]
)
def test_decode_snapshot_end_rejects(payload: bytes) -> None:
    with pytest.raises(WireError):
        decode_snapshot_end(payload)


@pytest.mark.parametrize("payload", [msgpack.packb(v) for v in ([1], [], [True, 1], True, [None])])
def test_decode_ack_rejects(payload: bytes) -> None:
    with pytest.raises(WireError):
        decode_ack(payload)


# -- totality, by property ----------------------------------------------------------------


@given(st.binary(max_size=300))
@settings(deadline=None, max_examples=500)
def test_arbitrary_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    try:
        m = decode_message(data)
    except WireError:
        return
    assert_valid(m)


@given(msgpack_values)
@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_msgpack_values_decode_or_raise_wire_error(value: object) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    for decode in (decode_message, decode_hello, decode_snapshot_end, decode_ack):
        with contextlib.suppress(WireError):
            decode(data)
    try:
        batch = decode_messages(data)
    except WireError:
        return
    for m in batch:
        assert_valid(m)


@given(st.integers(min_value=0, max_value=11), msgpack_values)
@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_one_arbitrary_field_decodes_or_raises_wire_error(field: int, value: object) -> None:
    try:
        m = decode_message(with_field(field, value))
    except WireError:
        return
    assert_valid(m)


@given(messages, st.data())
@settings(deadline=None, max_examples=300)
def test_damaged_encodings_decode_or_raise_wire_error(m: Message, data: st.DataObject) -> None:
    encoded = bytearray(encode_message(m))
    action = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    pos = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    if action == "flip":
        encoded[pos] ^= data.draw(st.integers(min_value=1, max_value=255))
    elif action == "truncate":
        del encoded[pos:]
    else:
        encoded[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        decoded = decode_message(bytes(encoded))
    except WireError:
        return
    assert_valid(decoded)


@given(st.binary(max_size=200))
@settings(deadline=None, max_examples=500)
def test_arbitrary_frames_decode_or_raise_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_frame(data)


@given(st.sampled_from(list(FrameKind)), st.binary(max_size=200))
@settings(deadline=None, max_examples=500)
def test_framed_arbitrary_bodies_decode_or_raise_wire_error(kind: FrameKind, body: bytes) -> None:
    try:
        decoded_kind, value = decode_frame(frame(kind, body))
    except WireError:
        return
    assert decoded_kind is kind
    if kind is FrameKind.MESSAGES:
        assert isinstance(value, list)
        for m in value:
            assert_valid(m)
    elif kind is FrameKind.SNAPSHOT_BEGIN:
        assert isinstance(value, Message)
        assert_valid(value)


def test_frame_header_struct_is_big_endian() -> None:
    assert FRAME_HEADER.size == 5
    assert struct.unpack(">IB", FRAME_HEADER.pack(1, 2)) == (1, 2)
