"""The peer wire format: Raft messages in msgpack, inside length-prefixed frames.

Everything a node sends to another goes over TCP as a sequence of frames::

    frame = length:u32be  kind:u8  body[length]

``length`` counts the body only. Each kind has its own ceiling on ``length``,
checked before the body is read, so a peer cannot make a node allocate more
than the ceiling however it lies:

==================  ====================================================  ==========
kind                body                                                  ceiling
==================  ====================================================  ==========
HELLO (1)           msgpack ``[version, node_id, cluster_token,``          4 KiB
                    ``peer_id, nonce, cluster_id]`` (the last one, or
                    the last three, may be left out)
MESSAGES (2)        msgpack array of messages (see below)                 configurable
SNAPSHOT_BEGIN (3)  msgpack message: the SNAP being delivered             configurable
SNAPSHOT_CHUNK (4)  raw bytes of the state machine snapshot stream        64 MiB
SNAPSHOT_END (5)    msgpack ``[total_bytes, crc32_of_all_chunks]``        4 KiB
SNAPSHOT_ACK (6)    msgpack ``[ok]`` (bool), receiver to sender           4 KiB
AUTH (7)            msgpack ``[mac]``: a 32-byte HMAC-SHA256 proof        4 KiB
==================  ====================================================  ==========

The first frame of a connection is read under the handshake ceiling (4 KiB)
whatever kind its header declares, so a stranger cannot make a node buffer a
large frame before it has said who it is (:func:`raftdb.transport.stream.read_control_frame`).
HELLO and AUTH make up the handshake (:mod:`raftdb.transport.handshake`):
``peer_id`` is the node the sender means to talk to and ``nonce`` its
challenge (32 random bytes, or empty when no peer secret is used). A HELLO of
three fields (no ``peer_id``, no ``nonce``) is what a node without peer
authentication may send. ``cluster_id``, the sender's cluster identity (16
lowercase hex digits, see ``raftdb.node.identity``), is sent only by a node
that has one, as a sixth field after ``peer_id`` and ``nonce``: a node
without one sends exactly the five fields it sent before identities existed,
so that it and older peers still understand each other. (An older peer
refuses a six-field HELLO as the wrong shape, which is right: it has no
identity, and a node with one must not join it.)

A message is a msgpack array of twelve fields, in :class:`Message` order::

    [type, to, frm, term, log_term, index, entries, commit, reject, reject_hint,
     snapshot, context]

``entries`` is one flat array, four items per entry (``term, index, type,
data``), so a batch of entries costs msgpack one array, not one per entry.
``snapshot`` is nil or ``[index, term, [voters, learners]]``: only the
metadata travels with a message. A snapshot's ``data`` never does; the state
machine snapshot follows a SNAPSHOT_BEGIN frame as SNAPSHOT_CHUNK frames.

msgpack, never pickle: a peer port must not run what it receives. Decoding is
total: any input either decodes to exactly what a valid encoder could have
sent, or raises :class:`WireError` — never another exception, never a
half-built value. Types are checked exactly (a ``bool`` is not an ``int``,
``str`` is not ``bytes``), integers must be non-negative, enums known, node
ids at least 1, and messages that only ever exist inside a node (``HUP``,
``BEAT``...) are refused.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import msgpack

from raftdb.codec import CorruptionError, conf_state_from_list, pack
from raftdb.raft.messages import (
    LOCAL_MESSAGES,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_FRAME",
    "FRAME_HEADER",
    "CLUSTER_ID",
    "MAX_CHUNK_FRAME",
    "MAX_CONTROL_FRAME",
    "MAX_TOKEN_LENGTH",
    "PROTOCOL_VERSION",
    "NONCE_BYTES",
    "FrameKind",
    "Hello",
    "SnapshotAck",
    "SnapshotEnd",
    "WireError",
    "decode_ack",
    "decode_auth",
    "decode_frame",
    "decode_hello",
    "decode_message",
    "decode_messages",
    "decode_snapshot_begin",
    "decode_snapshot_end",
    "encode_ack",
    "encode_auth",
    "encode_hello",
    "encode_message",
    "encode_messages",
    "encode_snapshot_begin",
    "encode_snapshot_chunk",
    "encode_snapshot_end",
    "frame",
    "frame_limit",
    "message_to_list",
    "messages_frame",
    "parse_frame_header",
]

#: The version a HELLO carries; a peer speaking another one is refused. Version 2
#: added the handshake's ``peer_id`` and ``nonce`` and the AUTH frame.
PROTOCOL_VERSION: Final = 2
#: ``length:u32be kind:u8``.
FRAME_HEADER: Final = struct.Struct(">IB")
#: Ceiling on a SNAPSHOT_CHUNK body.
MAX_CHUNK_FRAME: Final = 64 << 20
#: Ceiling on HELLO, SNAPSHOT_END and SNAPSHOT_ACK bodies.
MAX_CONTROL_FRAME: Final = 4 << 10
#: Default ceiling on MESSAGES and SNAPSHOT_BEGIN bodies (configurable per transport).
DEFAULT_MAX_MESSAGE_FRAME: Final = 16 << 20
#: The longest cluster token a HELLO may carry, in characters.
MAX_TOKEN_LENGTH: Final = 256
#: The size of a handshake challenge, and of an AUTH frame's HMAC-SHA256 proof.
NONCE_BYTES: Final = 32
#: A cluster identity as a HELLO carries it (``raftdb.node.identity``'s form).
CLUSTER_ID: Final = re.compile(r"[0-9a-f]{16}")

_MESSAGE_FIELDS: Final = 12
_ENTRY_FIELDS: Final = 4


class WireError(ValueError):
    """Bytes from a peer are not a valid frame, message or handshake.

    The only exception the decoders raise. The transport closes the
    connection it came from and logs the message.
    """


class FrameKind(IntEnum):
    """The kind byte of a frame. Part of the wire format: never reuse a number."""

    HELLO = 1
    MESSAGES = 2
    SNAPSHOT_BEGIN = 3
    SNAPSHOT_CHUNK = 4
    SNAPSHOT_END = 5
    SNAPSHOT_ACK = 6
    AUTH = 7


_FRAME_KINDS: Final = {int(k): k for k in FrameKind}
_MESSAGE_TYPES: Final = {int(t): t for t in MessageType if t not in LOCAL_MESSAGES}
_ENTRY_TYPES: Final = {int(t): t for t in EntryType}


@dataclass(frozen=True, slots=True)
class Hello:
    """The first frame each side of a connection sends.

    Attributes:
        version: the protocol version (:data:`PROTOCOL_VERSION`).
        node_id: the sender's node id (at least 1).
        cluster_token: a name for the cluster; nodes of different clusters
            refuse each other. An identifier against misconfiguration, not a
            secret.
        peer_id: the node the sender means to talk to (0: not said, the
            three-field form). Bound into the handshake's proofs, so that a
            proof made for one pair of nodes is worthless for another.
        nonce: the sender's challenge, :data:`NONCE_BYTES` random bytes, or
            empty when the sender uses no peer secret.
        cluster_id: the sender's cluster identity (16 lowercase hex digits),
            or None when its data directory records none (a member joining
            with an empty one, a data directory older than identities, or an
            older node).
    """

    version: int
    node_id: int
    cluster_token: str
    peer_id: int = 0
    nonce: bytes = b""
    cluster_id: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotEnd:
    """The end of a snapshot stream: what the receiver must have got."""

    size: int
    crc32: int


@dataclass(frozen=True, slots=True)
class SnapshotAck:
    """The receiver's answer once a snapshot is durably stored (or refused)."""

    ok: bool


# -- frames -----------------------------------------------------------------------


def frame(kind: FrameKind, body: bytes) -> bytes:
    """``body`` framed as ``kind``. The caller keeps ``body`` under the kind's ceiling."""
    return FRAME_HEADER.pack(len(body), kind) + body


def frame_limit(kind: FrameKind, max_message_frame: int = DEFAULT_MAX_MESSAGE_FRAME) -> int:
    """The largest body a frame of ``kind`` may have."""
    if kind is FrameKind.SNAPSHOT_CHUNK:
        return MAX_CHUNK_FRAME
    if kind is FrameKind.MESSAGES or kind is FrameKind.SNAPSHOT_BEGIN:
        return max_message_frame
    return MAX_CONTROL_FRAME


def parse_frame_header(
    header: bytes, max_message_frame: int = DEFAULT_MAX_MESSAGE_FRAME
) -> tuple[FrameKind, int]:
    """The kind and body length of a frame from its five header bytes.

    Raises:
        WireError: wrong header size, unknown kind, or a length over the
            kind's ceiling (checked before anything is allocated for it).
    """
    if len(header) != FRAME_HEADER.size:
        raise WireError(f"a frame header is {FRAME_HEADER.size} bytes, not {len(header)}")
    length, raw_kind = FRAME_HEADER.unpack(header)
    kind = _FRAME_KINDS.get(raw_kind)
    if kind is None:
        raise WireError(f"unknown frame kind {raw_kind}")
    limit = frame_limit(kind, max_message_frame)
    if length > limit:
        raise WireError(f"{kind.name} frame of {length} bytes is over the limit of {limit}")
    return kind, length


def _array_header(n: int) -> bytes:
    # The msgpack array header, so that separately packed items can be joined
    # into one array without packing them again.
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def messages_frame(packed: Sequence[bytes]) -> bytes:
    """A MESSAGES frame from messages already packed by :func:`encode_message`."""
    head = _array_header(len(packed))
    size = len(head) + sum(map(len, packed))
    return b"".join((FRAME_HEADER.pack(size, FrameKind.MESSAGES), head, *packed))


# -- messages -----------------------------------------------------------------------


def message_to_list(m: Message) -> list[Any]:
    """The msgpack-ready form of a message (see the module docstring)."""
    entries: list[Any] = []
    for e in m.entries:
        entries += (e.term, e.index, e.type, e.data)
    snap = m.snapshot
    meta: list[Any] | None = None
    if snap is not None:
        md = snap.metadata
        meta = [md.index, md.term, [md.conf_state.voters, md.conf_state.learners]]
    return [
        m.type,
        m.to,
        m.frm,
        m.term,
        m.log_term,
        m.index,
        entries,
        m.commit,
        m.reject,
        m.reject_hint,
        meta,
        m.context,
    ]


def encode_message(m: Message) -> bytes:
    """One message in msgpack, without a frame. A snapshot's ``data`` is left out."""
    return pack(message_to_list(m))


def encode_messages(messages: Iterable[Message]) -> bytes:
    """A MESSAGES frame holding ``messages``."""
    return messages_frame([encode_message(m) for m in messages])


def _unpack(body: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise WireError(f"{what} is not valid msgpack: {exc or type(exc).__name__}") from None


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise WireError(f"{what} is not a non-negative integer: {value!r:.40}")
    return value


def _node_id(value: Any, what: str) -> int:
    if type(value) is not int or value < 1:
        raise WireError(f"{what} is not a node id: {value!r:.40}")
    return value


def _bytes(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise WireError(f"{what} is not bytes: {type(value).__name__}")
    return value


def _entries(flat: Any) -> tuple[Entry, ...]:
    if type(flat) is not list or len(flat) % _ENTRY_FIELDS:
        raise WireError("message entries are not a flat array of 4-tuples")
    out = []
    types = _ENTRY_TYPES
    items = iter(flat)
    for n, (term, index, kind, data) in enumerate(zip(items, items, items, items, strict=False)):
        etype = types.get(kind) if type(kind) is int else None
        if (
            type(term) is not int
            or type(index) is not int
            or term < 0
            or index < 0
            or etype is None
            or type(data) is not bytes
        ):
            _uint(term, f"entry {n} term")
            _uint(index, f"entry {n} index")
            _bytes(data, f"entry {n} data")
            raise WireError(f"entry {n} has unknown type {kind!r:.40}")
        out.append(Entry(term, index, etype, data))
    return tuple(out)


def _snapshot(value: Any) -> Snapshot | None:
    if value is None:
        return None
    if type(value) is not list or len(value) != 3:
        raise WireError("message snapshot metadata has the wrong shape")
    index, term, conf = value
    try:
        conf_state = conf_state_from_list(conf)
    except CorruptionError as exc:
        raise WireError(f"message snapshot {exc}") from None
    meta = SnapshotMetadata(
        _uint(index, "snapshot index"), _uint(term, "snapshot term"), conf_state
    )
    return Snapshot(meta)


def _message(value: Any) -> Message:
    if type(value) is not list or len(value) != _MESSAGE_FIELDS:
        raise WireError(f"a message is an array of {_MESSAGE_FIELDS} fields")
    (
        raw_type,
        to,
        frm,
        term,
        log_term,
        index,
        entries,
        commit,
        reject,
        reject_hint,
        snapshot,
        context,
    ) = value
    mtype = _MESSAGE_TYPES.get(raw_type) if type(raw_type) is int else None
    if mtype is None:
        raise WireError(f"unknown or local message type {raw_type!r:.40}")
    # One combined test on the hot path; the slow path names the culprit.
    if not (
        type(to) is int
        and type(frm) is int
        and type(term) is int
        and type(log_term) is int
        and type(index) is int
        and type(commit) is int
        and type(reject_hint) is int
        and to >= 1
        and frm >= 1
        and term >= 0
        and log_term >= 0
        and index >= 0
        and commit >= 0
        and reject_hint >= 0
    ):
        _node_id(to, "message to")
        _node_id(frm, "message frm")
        _uint(term, "message term")
        _uint(log_term, "message log_term")
        _uint(index, "message index")
        _uint(commit, "message commit")
        _uint(reject_hint, "message reject_hint")
    if type(reject) is not bool:
        raise WireError(f"message reject is not a bool: {reject!r:.40}")
    _bytes(context, "message context")
    return Message(
        mtype,
        to,
        frm,
        term,
        log_term,
        index,
        _entries(entries) if entries != [] else (),
        commit,
        reject,
        reject_hint,
        _snapshot(snapshot),
        context,
    )


def decode_message(body: bytes) -> Message:
    """Parse :func:`encode_message`'s output.

    Raises:
        WireError: ``body`` is not exactly one valid message.
    """
    return _message(_unpack(body, "a message"))


def decode_messages(body: bytes) -> list[Message]:
    """Parse a MESSAGES frame's body: every message, or :class:`WireError`."""
    value = _unpack(body, "a MESSAGES frame")
    if type(value) is not list:
        raise WireError("a MESSAGES frame is not an array")
    return [_message(item) for item in value]


# -- snapshot streaming ---------------------------------------------------------------


def encode_snapshot_begin(m: Message) -> bytes:
    """The SNAPSHOT_BEGIN frame announcing ``m`` (a SNAP with metadata)."""
    return frame(FrameKind.SNAPSHOT_BEGIN, encode_message(m))


def decode_snapshot_begin(body: bytes) -> Message:
    """Parse a SNAPSHOT_BEGIN body: a SNAP message carrying snapshot metadata.

    Raises:
        WireError: not a message, not a SNAP, or no snapshot metadata.
    """
    m = decode_message(body)
    if m.type is not MessageType.SNAP or m.snapshot is None:
        raise WireError(f"SNAPSHOT_BEGIN carries {m.type.name}, not a SNAP with a snapshot")
    return m


def encode_snapshot_chunk(chunk: bytes) -> bytes:
    """A SNAPSHOT_CHUNK frame (``chunk`` at most :data:`MAX_CHUNK_FRAME` bytes)."""
    return frame(FrameKind.SNAPSHOT_CHUNK, chunk)


def encode_snapshot_end(end: SnapshotEnd) -> bytes:
    """The SNAPSHOT_END frame."""
    return frame(FrameKind.SNAPSHOT_END, pack([end.size, end.crc32]))


def decode_snapshot_end(body: bytes) -> SnapshotEnd:
    """Parse a SNAPSHOT_END body. Raises :class:`WireError`."""
    value = _unpack(body, "SNAPSHOT_END")
    if type(value) is not list or len(value) != 2:
        raise WireError("SNAPSHOT_END has the wrong shape")
    size = _uint(value[0], "snapshot size")
    crc = _uint(value[1], "snapshot crc32")
    if crc > 0xFFFFFFFF:
        raise WireError(f"snapshot crc32 {crc} is over 32 bits")
    return SnapshotEnd(size, crc)


def encode_ack(ack: SnapshotAck) -> bytes:
    """The SNAPSHOT_ACK frame."""
    return frame(FrameKind.SNAPSHOT_ACK, pack([ack.ok]))


def decode_ack(body: bytes) -> SnapshotAck:
    """Parse a SNAPSHOT_ACK body. Raises :class:`WireError`."""
    value = _unpack(body, "SNAPSHOT_ACK")
    if type(value) is not list or len(value) != 1 or type(value[0]) is not bool:
        raise WireError("SNAPSHOT_ACK has the wrong shape")
    return SnapshotAck(value[0])


# -- handshake ------------------------------------------------------------------------


def encode_hello(hello: Hello) -> bytes:
    """The HELLO frame: three fields without a ``peer_id``, five with one, six
    with a ``cluster_id`` too.

    Raises:
        ValueError: the token is longer than :data:`MAX_TOKEN_LENGTH`, or a
            nonce or cluster id without a ``peer_id``, or a nonce of the wrong
            size, or a cluster id not 16 lowercase hex digits.
    """
    if len(hello.cluster_token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"a cluster token is at most {MAX_TOKEN_LENGTH} characters")
    fields: list[Any] = [hello.version, hello.node_id, hello.cluster_token]
    if hello.peer_id:
        if len(hello.nonce) not in (0, NONCE_BYTES):
            raise ValueError(f"a HELLO nonce is empty or {NONCE_BYTES} bytes")
        fields += (hello.peer_id, hello.nonce)
        if hello.cluster_id is not None:
            if not CLUSTER_ID.fullmatch(hello.cluster_id):
                raise ValueError(
                    f"a cluster id is 16 lowercase hex digits, not {hello.cluster_id!r}"
                )
            fields.append(hello.cluster_id)
    elif hello.nonce or hello.cluster_id is not None:
        raise ValueError("a HELLO with a nonce or a cluster id must name its peer")
    return frame(FrameKind.HELLO, pack(fields))


def decode_hello(body: bytes) -> Hello:
    """Parse a HELLO body. Raises :class:`WireError`.

    Any version number decodes; refusing a version is the caller's decision
    (with a message that says which versions met). What every version's HELLO
    must keep is its start, ``[version, node_id, ...]``: a HELLO of another
    version decodes to those two fields alone (the rest may be any shape that
    version chose), so that the refusal names the peer and both versions
    rather than a shape this version does not know.
    """
    value = _unpack(body, "HELLO")
    if type(value) is list and len(value) >= 2 and value[0] != PROTOCOL_VERSION:
        return Hello(_uint(value[0], "HELLO version"), _node_id(value[1], "HELLO node id"), "")
    if type(value) is not list or len(value) not in (3, 5, 6):
        raise WireError("HELLO has the wrong shape")
    version, node_id, token = value[:3]
    if type(token) is not str or len(token) > MAX_TOKEN_LENGTH:
        raise WireError("HELLO cluster token is not a string of at most 256 characters")
    hello = Hello(_uint(version, "HELLO version"), _node_id(node_id, "HELLO node id"), token)
    if len(value) == 3:
        return hello
    peer_id = _node_id(value[3], "HELLO peer id")
    nonce = _bytes(value[4], "HELLO nonce")
    if len(nonce) not in (0, NONCE_BYTES):
        raise WireError(f"HELLO nonce is {len(nonce)} bytes, not 0 or {NONCE_BYTES}")
    if len(value) == 5:
        return Hello(hello.version, hello.node_id, token, peer_id, nonce)
    cluster_id = value[5]
    if type(cluster_id) is not str or not CLUSTER_ID.fullmatch(cluster_id):
        raise WireError("HELLO cluster id is not 16 lowercase hex digits")
    return Hello(hello.version, hello.node_id, token, peer_id, nonce, cluster_id)


def encode_auth(mac: bytes) -> bytes:
    """The AUTH frame carrying a handshake proof (:data:`NONCE_BYTES` bytes)."""
    return frame(FrameKind.AUTH, pack([mac]))


def decode_auth(body: bytes) -> bytes:
    """Parse an AUTH body: the proof. Raises :class:`WireError`."""
    value = _unpack(body, "AUTH")
    if type(value) is not list or len(value) != 1:
        raise WireError("AUTH has the wrong shape")
    mac = _bytes(value[0], "AUTH proof")
    if len(mac) != NONCE_BYTES:
        raise WireError(f"AUTH proof is {len(mac)} bytes, not {NONCE_BYTES}")
    return mac


# -- whole frames (tests, tools) ---------------------------------------------------------

FrameValue = Hello | list[Message] | Message | bytes | SnapshotEnd | SnapshotAck


def decode_frame(
    data: bytes, max_message_frame: int = DEFAULT_MAX_MESSAGE_FRAME
) -> tuple[FrameKind, FrameValue]:
    """Decode one complete frame, header and body, with nothing after it.

    Returns:
        The kind and its value: :class:`Hello`, a list of messages, the SNAP
        message of a SNAPSHOT_BEGIN, a chunk's bytes, :class:`SnapshotEnd`,
        :class:`SnapshotAck`, or an AUTH frame's proof (bytes).

    Raises:
        WireError: anything else.
    """
    kind, length = parse_frame_header(bytes(data[: FRAME_HEADER.size]), max_message_frame)
    body = bytes(data[FRAME_HEADER.size :])
    if len(body) != length:
        raise WireError(f"{kind.name} frame says {length} bytes but holds {len(body)}")
    return kind, decode_body(kind, body)


def decode_body(kind: FrameKind, body: bytes) -> FrameValue:
    """Decode the body of a frame of ``kind``. Raises :class:`WireError`."""
    if kind is FrameKind.MESSAGES:
        return decode_messages(body)
    if kind is FrameKind.SNAPSHOT_CHUNK:
        return body
    if kind is FrameKind.HELLO:
        return decode_hello(body)
    if kind is FrameKind.SNAPSHOT_BEGIN:
        return decode_snapshot_begin(body)
    if kind is FrameKind.SNAPSHOT_END:
        return decode_snapshot_end(body)
    if kind is FrameKind.AUTH:
        return decode_auth(body)
    return decode_ack(body)
