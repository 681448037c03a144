"""Fuzzing what a node reads from others: peer frames and log commands (hypothesis).

Any byte string must give a clean rejection (``WireError`` for peer bytes,
``InvalidCommandError`` or an ``INVALID`` result for a command, or, for a command
tagged with a newer format, ``NewerCommandFormatError``, which stops the apply), never
another exception, and never a state change:

- the frame decoder, on mutations of valid frames of every kind (bit flips,
  cut, inserted and spliced bytes): a frame that decodes is one a valid
  encoder makes (it re-encodes to a frame that decodes the same);
- a live transport fed a valid HELLO then arbitrary frames and bytes on one
  connection delivers exactly the messages of the valid frames before the
  first bad one, closes the connection, and keeps serving a well-behaved peer;
- the command decoder, on arbitrary bytes and mutated commands, and the state
  machine applying such an entry: ``INVALID``, no key written.

Examples per test: ``FUZZ_EXAMPLES`` (bounded in CI; ``make chaos`` runs many).
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftdb.kv.commands import (
    Command,
    CommandStatus,
    InvalidCommandError,
    KVResult,
    NewerCommandFormatError,
    Op,
    parse_command,
)
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp
from raftdb.raft.messages import Entry, EntryType, Message, MessageType
from raftdb.transport.frames import (
    FRAME_HEADER,
    PROTOCOL_VERSION,
    FrameKind,
    Hello,
    SnapshotAck,
    SnapshotEnd,
    WireError,
    decode_frame,
    encode_ack,
    encode_hello,
    encode_messages,
    encode_snapshot_begin,
    encode_snapshot_chunk,
    encode_snapshot_end,
    parse_frame_header,
)
from raftdb.transport.transport import Transport
from tests.transport.support import Recorder
from tests.transport.test_wire import messages as wire_messages

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STREAM = settings(FUZZ, max_examples=max(20, EXAMPLES // 10))


# -- mutations ---------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding, then a few random bit flips, cuts, insertions or splices."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "replace", "splice"]))
        at = draw(st.integers(min_value=0, max_value=max(0, len(data))))
        if action == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            data = data[:at]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "replace" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif action == "splice":
            data = data[:at] + bytearray(draw(valid))
    return bytes(data)


snap_messages = wire_messages.filter(lambda m: m.snapshot is not None).map(
    lambda m: Message(MessageType.SNAP, m.to, m.frm, m.term, snapshot=m.snapshot)
)
valid_frames = st.one_of(
    st.lists(wire_messages, max_size=4).map(encode_messages),
    st.builds(
        lambda n, t: encode_hello(Hello(PROTOCOL_VERSION, n, t)),
        st.integers(1, 2**64 - 1),
        st.text(max_size=20),
    ),
    snap_messages.map(encode_snapshot_begin),
    st.binary(max_size=64).map(encode_snapshot_chunk),
    st.builds(
        lambda s, c: encode_snapshot_end(SnapshotEnd(s, c)),
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**32 - 1),
    ),
    st.booleans().map(lambda ok: encode_ack(SnapshotAck(ok))),
)


@FUZZ
@given(mutated(valid_frames))
def test_a_mutated_frame_decodes_to_a_valid_one_or_is_refused(data: bytes) -> None:
    try:
        kind, value = decode_frame(data)
    except WireError:
        return
    # Accepted: it must be exactly what an encoder makes (and decodes the same again).
    again = _encode(kind, value)
    assert decode_frame(again) == (kind, value)


def _encode(kind: FrameKind, value: object) -> bytes:
    if kind is FrameKind.MESSAGES:
        assert isinstance(value, list)
        return encode_messages(value)
    if kind is FrameKind.HELLO:
        assert isinstance(value, Hello)
        return encode_hello(value)
    if kind is FrameKind.SNAPSHOT_BEGIN:
        assert isinstance(value, Message)
        return encode_snapshot_begin(value)
    if kind is FrameKind.SNAPSHOT_CHUNK:
        assert isinstance(value, bytes)
        return encode_snapshot_chunk(value)
    if kind is FrameKind.SNAPSHOT_END:
        assert isinstance(value, SnapshotEnd)
        return encode_snapshot_end(value)
    assert isinstance(value, SnapshotAck)
    return encode_ack(value)


# -- a live transport ----------------------------------------------------------------------

ME, PEER = 1, 2
#: Messages from the peer to this node: the only ones a connection may deliver.
peer_messages = wire_messages.filter(lambda m: m.type is not MessageType.SNAP).map(
    lambda m: Message(m.type, ME, PEER, m.term, m.log_term, m.index, m.entries, m.commit)
)
pieces = st.one_of(
    st.lists(peer_messages, min_size=1, max_size=3).map(encode_messages),
    st.lists(wire_messages, min_size=1, max_size=2).map(encode_messages),  # wrong frm / to
    mutated(st.lists(peer_messages, min_size=1, max_size=3).map(encode_messages)),
    st.binary(max_size=40),
)


def _expected(stream: bytes) -> list[Message]:
    """What the transport may deliver: the messages of the complete, valid frames
    before the first bad one (a decoder error, a message not from the peer to
    this node, a frame other than MESSAGES)."""
    out: list[Message] = []
    at = 0
    while len(stream) - at >= FRAME_HEADER.size:
        try:
            kind, length = parse_frame_header(stream[at : at + FRAME_HEADER.size])
        except WireError:
            break
        end = at + FRAME_HEADER.size + length
        if end > len(stream) or kind is not FrameKind.MESSAGES:
            break
        try:
            _, batch = decode_frame(stream[at:end])
        except WireError:
            break
        assert isinstance(batch, list)
        if any(m.frm != PEER or m.to != ME or m.type is MessageType.SNAP for m in batch):
            break
        out.extend(batch)
        at = end
    return out


@STREAM
@given(st.lists(pieces, min_size=1, max_size=5))
def test_a_connection_delivers_exactly_its_valid_prefix(
    tmp_path_factory: pytest.TempPathFactory, parts: list[bytes]
) -> None:
    stream = b"".join(parts)
    tmp = tmp_path_factory.mktemp("fuzz")
    asyncio.run(asyncio.wait_for(_feed(tmp, stream), 20))


async def _feed(tmp: Path, stream: bytes) -> None:
    recorder = Recorder()
    transport = Transport(
        ME,
        "http://127.0.0.1:0",
        {PEER: "http://127.0.0.1:9"},  # never dialled successfully: we only listen
        recorder,
        snapshot_dir=tmp / "snap",
        rng=random.Random(0),
        handshake_timeout=2.0,
    )
    await transport.start()
    try:
        host, port = transport.listen_address
        hello = encode_hello(Hello(PROTOCOL_VERSION, PEER, "raftdb"))
        await _send(host, port, hello + stream)
        assert recorder.messages == _expected(stream)
        # The transport still serves a well-behaved peer.
        good = Message(MessageType.HEARTBEAT, ME, PEER, 1)
        await _send(host, port, hello + encode_messages([good]))
        assert recorder.messages[-1:] == [good]
    finally:
        await transport.stop()


async def _send(host: str, port: int, data: bytes) -> None:
    """Send ``data`` on a new connection, then wait until the node is done with it."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        while await reader.read(65536):  # the node's HELLO, then EOF when it is done
            pass
    except (ConnectionError, OSError):
        pass  # the node closed (reset) first: done as well
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


# -- commands ------------------------------------------------------------------------------

_key_writes = st.builds(
    lambda op, key, value, expect, client, seq: Command(
        op,
        key,
        value if op is Op.PUT else b"",
        expect,
        client,
        seq if client else 0,
        min(seq, 1) if client else 0,
    ),
    st.sampled_from([Op.PUT, Op.DELETE]),
    st.binary(min_size=1, max_size=16),
    st.binary(max_size=16),
    st.none() | st.integers(0, 2**63),
    st.none() | st.binary(min_size=1, max_size=16),
    st.integers(1, 2**63),
)
_txns = st.builds(
    lambda compare, success: Txn(compare, success),
    st.lists(
        st.builds(
            Compare,
            st.binary(min_size=1, max_size=8),
            st.just(Target.MOD_INDEX),
            st.sampled_from(list(CmpOp)),
            st.integers(0, 2**32),
        ),
        max_size=3,
    ).map(tuple),
    st.lists(
        st.one_of(
            st.builds(TxnOp.put, st.binary(min_size=1, max_size=8), st.binary(max_size=8)),
            st.builds(TxnOp.delete, st.binary(min_size=1, max_size=8)),
            st.builds(TxnOp.get, st.binary(min_size=1, max_size=8)),
            st.builds(TxnOp.list, st.binary(max_size=4), st.integers(1, 1000)),
        ),
        max_size=4,
    ).map(tuple),
)
#: Every kind of command (format 1 and 2), well formed, before mutation.
valid_commands = st.one_of(
    _key_writes,
    st.builds(
        lambda key, value, lease: Command.put(key, value, lease=lease),
        st.binary(min_size=1, max_size=16),
        st.binary(max_size=16),
        st.integers(1, 2**63),
    ),
    _txns.map(lambda txn: Command.txn(txn.encode())),
    st.integers(1, 2**32).map(Command.lease_grant),
    st.integers(1, 2**63).map(Command.lease_revoke),
    st.integers(1, 2**63).map(Command.lease_keepalive),
    st.builds(Command.lease_expire, st.integers(1, 2**63), st.integers(0, 2**63)),
).map(lambda command: command.encode())
command_bytes = st.one_of(
    st.binary(max_size=80),
    mutated(valid_commands),
    st.lists(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=8),
        max_size=11,
    ).map(lambda fields: msgpack.packb(fields, use_bin_type=True)),
)


@FUZZ
@given(command_bytes)
def test_the_command_decoder_is_total_and_changes_nothing_it_refuses(data: bytes) -> None:
    try:
        command = Command.decode(data)
    except NewerCommandFormatError:
        # Tagged with a newer format: applying it stops the node, changing nothing
        # (skipping it would diverge from the members that read it: docs/formats.md).
        with pytest.raises(NewerCommandFormatError):
            parse_command(data)
        sm = MemoryStateMachine()
        with pytest.raises(NewerCommandFormatError):
            sm.apply([Entry(term=1, index=1, type=EntryType.NORMAL, data=data)])
        assert sm.range(b"", b"", None) == []
        assert sm.applied_index == 0
        return
    except InvalidCommandError:
        with pytest.raises(InvalidCommandError):
            parse_command(data)
        sm = MemoryStateMachine()
        (result,) = sm.apply([Entry(term=1, index=1, type=EntryType.NORMAL, data=data)])
        if data:  # an empty entry is a new leader's no-op
            assert isinstance(result, KVResult)
            assert result.status is CommandStatus.INVALID
        assert sm.range(b"", b"", None) == []
        assert sm.applied_index == 1
        return
    assert Command.decode(command.encode()) == command
    assert parse_command(data) is not None
