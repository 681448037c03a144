"""The key-value commands, their results, and client sessions.

Theory of operation. A client's write becomes a :class:`Command`, encoded with
msgpack into a NORMAL log entry. When the entry commits, every node's state
machine hands it to a :class:`raftdb.kv.applier.Applier`, which decides the outcome from the
entry alone and the state before it: never from a clock, a configuration
value or the batch the entry arrived in. So all nodes compute the same
:class:`KVResult` for the same index, and a state machine plugin that uses the
Applier cannot get the semantics wrong; it only supplies the storage
(:class:`raftdb.kv.applier.KVBackend`).

Keys carry two log indexes, as etcd's revisions: ``create_index`` (the entry
that created the key; a delete and a new put start again) and ``mod_index``
(the entry that last wrote it; the API's ETag). A condition compares the key's
``mod_index`` with ``expect``: ``None`` writes unconditionally, ``0`` means
"the key must not exist" (create-only, ``If-None-Match: *``), ``n > 0`` means
"the key was last written at index n" (compare-and-set, ``If-Match``).

Client sessions (Raft thesis §6.3) make retries safe. A command may carry
``client_id`` (opaque bytes), ``seq`` (the client's request number, from 1) and
``ack`` (the lowest ``seq`` the client has not yet had an answer for, so the
state machine may forget answers below it). The session remembers the answer
to each ``seq`` it applied, and a command whose ``seq`` it has already answered
gets that answer again, with ``duplicate=True``, without being applied twice.
A client may keep many commands in flight; up to :data:`MAX_SESSION_RESPONSES`
answers are kept per session, the oldest dropped first.

Session expiry is by log index, so it is the same on every node: a session
not used by any of the :data:`SESSION_TTL_ENTRIES` entries after its last use
is dropped when the entry that makes it that old is applied. A retry that
arrives after that is either refused (``SESSION_EXPIRED``, when its ``ack``
shows the client had answers from the lost session) or, when it cannot be told
apart from a new client, applied again: clients must retry within the TTL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

import msgpack

from raftdb.codec import (
    CorruptionError,
    RecordKind,
    check_bytes,
    check_uint,
    pack,
    seal,
    unpack,
    unseal,
)
from raftdb.raft.messages import ConfChange, ConfState

__all__ = [
    "COMMAND_FORMAT",
    "CREATE_ONLY",
    "MAX_CLIENT_ID_BYTES",
    "MAX_SESSION_RESPONSES",
    "SESSION_TTL_ENTRIES",
    "ApplyResult",
    "Command",
    "ConfChangeResult",
    "InvalidCommandError",
    "KVResult",
    "KeyValue",
    "NoopResult",
    "Op",
    "SessionState",
    "CommandStatus",
    "decode_session",
    "encode_session",
    "parse_command",
]

#: A session unused for this many log entries expires (see the module docstring).
#: Part of the replicated semantics: every node of a cluster must use the same value.
SESSION_TTL_ENTRIES: Final = 100_000
#: Answers kept per session; the oldest is dropped first. Replicated semantics too.
MAX_SESSION_RESPONSES: Final = 256
#: Longest accepted client id.
MAX_CLIENT_ID_BYTES: Final = 128
#: Version tag, first element of every encoded command.
COMMAND_FORMAT: Final = 1
#: ``expect`` value meaning "the key must not exist yet".
CREATE_ONLY: Final = 0


class Op(IntEnum):
    """What a command does. Part of the log format: never reuse a number."""

    PUT = 1
    DELETE = 2


class CommandStatus(IntEnum):
    """The outcome of a command. Part of the log (session) format."""

    OK = 0
    #: ``expect`` did not match the key's ``mod_index``; nothing changed.
    CONDITION_FAILED = 1
    #: The entry is not a well-formed command; nothing changed.
    INVALID = 2
    #: ``seq`` is below what the session still remembers: the client already
    #: acknowledged the answer, or it was dropped. Not applied again.
    STALE = 3
    #: The client's session expired, and its answers with it; not applied.
    SESSION_EXPIRED = 4


class InvalidCommandError(ValueError):
    """Bytes that are not an encoded :class:`Command`, or a command out of range."""


def _check(op: Any, key: Any, value: Any, expect: Any, client_id: Any, seq: Any, ack: Any) -> None:
    """Raise :class:`InvalidCommandError` unless the fields make a valid command.

    Types are checked exactly (``type(x) is int``), so that ``True`` is not 1
    and ``"k"`` is not ``b"k"``: a decoder that is lax on one node and strict on
    another would make the nodes disagree.
    """
    if type(op) is not int and type(op) is not Op:
        raise InvalidCommandError(f"unknown operation {op!r}")
    if op == Op.PUT:
        if type(value) is not bytes:
            raise InvalidCommandError("a put needs a bytes value")
    elif op == Op.DELETE:
        if value is not None:
            raise InvalidCommandError("a delete carries no value")
    else:
        raise InvalidCommandError(f"unknown operation {op!r}")
    if type(key) is not bytes or not key:
        raise InvalidCommandError("the key must be non-empty bytes")
    if expect is not None and (type(expect) is not int or expect < 0):
        raise InvalidCommandError(f"expect must be None or an index >= 0, got {expect!r}")
    if client_id is None:
        if seq != 0 or ack != 0 or type(seq) is not int or type(ack) is not int:
            raise InvalidCommandError("seq and ack need a client id")
        return
    if type(client_id) is not bytes or not 0 < len(client_id) <= MAX_CLIENT_ID_BYTES:
        raise InvalidCommandError(f"client id must be 1 to {MAX_CLIENT_ID_BYTES} bytes")
    if type(seq) is not int or seq < 1:
        raise InvalidCommandError(f"seq must be an integer >= 1, got {seq!r}")
    if type(ack) is not int or not 0 <= ack <= seq:
        raise InvalidCommandError(f"ack must be an integer in [0, seq], got {ack!r}")


def parse_command(data: bytes) -> tuple[Any, ...]:
    """Decode and check a command, as the tuple of its 8 fields.

    The Applier's hot path: no :class:`Command` object is built. Raises
    :class:`InvalidCommandError` exactly when :meth:`Command.decode` does.
    """
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise InvalidCommandError(f"not a msgpack command: {exc}") from None
    if type(fields) is not tuple or len(fields) != 8:
        raise InvalidCommandError("a command is an array of 8 fields")
    version, op, key, value, expect, client_id, seq, ack = fields
    if (  # the common case, checked inline: an unconditional put without a session
        version == COMMAND_FORMAT
        and op == Op.PUT
        and type(op) is int
        and expect is None
        and client_id is None
        and type(key) is bytes
        and type(value) is bytes
        and key
        and seq == 0
        and ack == 0
        and type(version) is int
        and type(seq) is int
        and type(ack) is int
    ):
        return fields
    if version != COMMAND_FORMAT or type(version) is not int:
        raise InvalidCommandError(f"unknown command format {version!r}")
    _check(op, key, value, expect, client_id, seq, ack)
    return fields


@dataclass(frozen=True, slots=True)
class Command:
    """One key-value write, as proposed to the log.

    Attributes:
        op: put or delete.
        key: non-empty bytes.
        value: the new value (puts only).
        expect: the condition on the key's ``mod_index``: ``None`` for none,
            :data:`CREATE_ONLY` (0) for "must not exist", ``n`` for "last
            written at index n".
        client_id, seq, ack: the client session, or ``None``/0/0 for none.
    """

    op: Op
    key: bytes
    value: bytes = b""
    expect: int | None = None
    client_id: bytes | None = None
    seq: int = 0
    ack: int = 0

    def __post_init__(self) -> None:
        _check(
            self.op,
            self.key,
            self.value if self.op == Op.PUT else None,
            self.expect,
            self.client_id,
            self.seq,
            self.ack,
        )

    @classmethod
    def put(
        cls,
        key: bytes,
        value: bytes,
        *,
        if_mod: int | None = None,
        create_only: bool = False,
        client_id: bytes | None = None,
        seq: int = 0,
        ack: int = 0,
    ) -> Command:
        """A put; ``if_mod`` makes it a compare-and-set, ``create_only`` a create.

        Raises:
            InvalidCommandError: a field is out of range, or both conditions given.
        """
        if create_only and if_mod is not None:
            raise InvalidCommandError("create_only and if_mod exclude each other")
        expect = CREATE_ONLY if create_only else if_mod
        if expect == CREATE_ONLY and not create_only:
            raise InvalidCommandError("if_mod must be a positive index")
        return cls(Op.PUT, key, value, expect, client_id, seq, ack)

    @classmethod
    def delete(
        cls,
        key: bytes,
        *,
        if_mod: int | None = None,
        client_id: bytes | None = None,
        seq: int = 0,
        ack: int = 0,
    ) -> Command:
        """A delete; ``if_mod`` makes it conditional on the key's ``mod_index``.

        Raises:
            InvalidCommandError: a field is out of range.
        """
        if if_mod is not None and if_mod <= 0:
            raise InvalidCommandError("if_mod must be a positive index")
        return cls(Op.DELETE, key, b"", if_mod, client_id, seq, ack)

    def encode(self) -> bytes:
        """The entry data for this command (msgpack array, format 1)."""
        value = self.value if self.op == Op.PUT else None
        fields = [COMMAND_FORMAT, int(self.op), self.key, value, self.expect]
        fields += [self.client_id, self.seq, self.ack]
        data: bytes = msgpack.packb(fields, use_bin_type=True)
        return data

    @classmethod
    def decode(cls, data: bytes) -> Command:
        """Parse :meth:`encode`'s output.

        Raises:
            InvalidCommandError: ``data`` is not a valid command.
        """
        _, op, key, value, expect, client_id, seq, ack = parse_command(data)
        return cls(Op(op), key, value if value is not None else b"", expect, client_id, seq, ack)


# -- results ---------------------------------------------------------------------


@dataclass(slots=True)
class KVResult:
    """The outcome of one command entry. Treat as immutable.

    Not frozen: one is made per applied write, and a frozen dataclass costs
    three times as much to build (see ``raftdb.raft.messages``).

    Attributes:
        index: the log index of the entry this result answers.
        status: the outcome.
        create_index, mod_index: the key's indexes after the command (0 and 0
            when the key does not exist). After a successful put ``mod_index ==
            index``: the write's ETag. After a failed condition, the key's
            current indexes, so the caller can report them.
        prev_mod_index: the key's ``mod_index`` before the command (0: it did
            not exist). A delete with 0 here deleted nothing.
        duplicate: the command was a retry, answered from the session without
            being applied again; the other fields are the first answer's.
        message: why, for ``INVALID``.
    """

    index: int
    status: CommandStatus
    create_index: int = 0
    mod_index: int = 0
    prev_mod_index: int = 0
    duplicate: bool = False
    message: str = ""

    @property
    def ok(self) -> bool:
        """True when the command took effect (or had, for a duplicate)."""
        return self.status == CommandStatus.OK


@dataclass(frozen=True, slots=True)
class NoopResult:
    """The outcome of an entry that changes nothing.

    An empty NORMAL entry is the no-op a new leader appends (Raft §8); with
    ``already_applied`` the entry was at or below ``applied_index`` and was
    skipped, as after a restart that replays the log from before a durable
    applied index.
    """

    index: int
    already_applied: bool = False

    @property
    def ok(self) -> bool:
        """Always true: nothing was asked, nothing failed."""
        return True


@dataclass(frozen=True, slots=True)
class ConfChangeResult:
    """The outcome of a CONF_CHANGE entry.

    Attributes:
        index: the entry's log index.
        conf_state: the membership after the entry (unchanged on error).
        change: the decoded change, ``None`` if the data did not decode.
        error: empty on success; otherwise why the change was ignored, which
            every node and the Raft core decide alike.
    """

    index: int
    conf_state: ConfState
    change: ConfChange | None
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when the membership changed as asked."""
        return not self.error


#: One result per applied entry, in entry order.
ApplyResult = KVResult | ConfChangeResult | NoopResult


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A stored key, as reads return it."""

    key: bytes
    value: bytes
    create_index: int
    mod_index: int


# -- sessions ------------------------------------------------------------------------

#: A remembered answer: (status, create_index, mod_index, prev_mod_index).
Response = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class SessionState:
    """One client's session. Immutable: an update makes a new one.

    Copy-on-write lets a snapshot take the table by a shallow copy while
    applies go on. ``responses`` maps ``seq`` to the answer given to it;
    ``floor`` is the lowest ``seq`` still remembered (below it: STALE).
    """

    client_id: bytes
    last_index: int
    floor: int
    responses: Mapping[int, Response] = field(hash=False)

    def to_list(self) -> list[Any]:
        """The msgpack-ready form (used on disk and in snapshot streams)."""
        answers = [[seq, *r] for seq, r in sorted(self.responses.items())]
        return [self.client_id, self.last_index, self.floor, answers]

    @classmethod
    def from_list(cls, value: Any) -> SessionState:
        """Inverse of :meth:`to_list`.

        Raises:
            CorruptionError: ``value`` is not a session.
        """
        if not isinstance(value, list) or len(value) != 4 or not isinstance(value[3], list):
            raise CorruptionError("session record has the wrong shape")
        client_id = check_bytes(value[0], "session client id")
        responses: dict[int, Response] = {}
        for answer in value[3]:
            if not isinstance(answer, list) or len(answer) != 5:
                raise CorruptionError("session answer has the wrong shape")
            seq, status, create, mod, prev = (check_uint(v, "session answer") for v in answer)
            if status not in _STATUSES:
                raise CorruptionError(f"session answer has unknown status {status}")
            responses[seq] = (status, create, mod, prev)
        return cls(
            client_id,
            check_uint(value[1], "session last index"),
            check_uint(value[2], "session floor"),
            responses,
        )


_STATUSES = frozenset(int(s) for s in CommandStatus)


def encode_session(session: SessionState) -> bytes:
    """A session as a sealed record (for state machines that store sessions on disk)."""
    return seal(RecordKind.SESSION, pack(session.to_list()))


def decode_session(record: bytes) -> SessionState:
    """Parse :func:`encode_session`'s output. Raises :class:`CorruptionError`."""
    return SessionState.from_list(unpack(unseal(RecordKind.SESSION, record)))
