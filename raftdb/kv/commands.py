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

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final

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

if TYPE_CHECKING:
    from raftdb.kv.changes import Change
    from raftdb.kv.txn import TxnResult

__all__ = [
    "COMMAND_FORMAT",
    "COMMAND_FORMAT_2",
    "CREATE_ONLY",
    "MAX_CLIENT_ID_BYTES",
    "MAX_SESSION_RESPONSES",
    "SESSION_TTL_ENTRIES",
    "ApplyResult",
    "Command",
    "ConfChangeResult",
    "InvalidCommandError",
    "KVResult",
    "NewerCommandFormatError",
    "KeyValue",
    "NoopResult",
    "OneAnswer",
    "Op",
    "SessionState",
    "CommandStatus",
    "decode_session",
    "compact_answers",
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
#: Version tag, first element of a put or delete without a lease (8 fields).
COMMAND_FORMAT: Final = 1
#: Version tag of every other command (10 fields: format 1's, then lease and ttl).
COMMAND_FORMAT_2: Final = 2
#: ``expect`` value meaning "the key must not exist yet".
CREATE_ONLY: Final = 0


class Op(IntEnum):
    """What a command does. Part of the log format: never reuse a number."""

    PUT = 1
    DELETE = 2
    #: A transaction (``raftdb.kv.txn``): ``value`` is its encoding.
    TXN = 3
    #: Grant a lease of ``ttl`` seconds; its id is the entry's index.
    LEASE_GRANT = 4
    #: Revoke lease ``lease`` and delete its keys.
    LEASE_REVOKE = 5
    #: Renew lease ``lease`` (its ``renewed_index`` becomes the entry's index).
    LEASE_KEEPALIVE = 6
    #: The leader saw lease ``lease`` expire while last renewed at ``expect``:
    #: revoke it, unless it was renewed since (then nothing happens).
    LEASE_EXPIRE = 7


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
    #: The command names a lease that does not exist (never granted, revoked or
    #: expired); nothing changed.
    LEASE_NOT_FOUND = 5


class InvalidCommandError(ValueError):
    """Bytes that are not an encoded :class:`Command`, or a command out of range."""


class NewerCommandFormatError(Exception):
    """A committed command of a format newer than this code reads: a member running
    a newer raftdb wrote it.

    Not an :class:`InvalidCommandError` on purpose: an invalid command is applied
    as a no-op by every member alike, but a newer one means something to the
    members that read it, so skipping it here would make this state machine
    diverge from theirs. The applier lets it through and the node stops (one
    line) until it runs a version that reads the format (docs/formats.md).
    """


def _newer_format(fields: Any) -> None:
    """Raise :class:`NewerCommandFormatError` if ``fields`` is tagged with a format
    above :data:`COMMAND_FORMAT_2`. Called only once a command failed the checks
    of the known formats (the hot path never pays for it); every format, past and
    future, starts with its version tag."""
    if type(fields) is tuple and fields and type(fields[0]) is int and fields[0] > 2:
        raise NewerCommandFormatError(
            f"a command of format {fields[0]}, newer than this raftdb reads "
            f"({COMMAND_FORMAT}, {COMMAND_FORMAT_2}): a member running a newer raftdb "
            "wrote it; upgrade this node (see docs/formats.md)"
        )


def _check(op: Any, key: Any, value: Any, expect: Any, client_id: Any, seq: Any, ack: Any) -> None:
    """Raise :class:`InvalidCommandError` unless the fields make a valid format-1
    command (a put or a delete without a lease).

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
    _check_session(client_id, seq, ack)


def _check_session(client_id: Any, seq: Any, ack: Any) -> None:
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


def _check_v2(
    op: Any,
    key: Any,
    value: Any,
    expect: Any,
    client_id: Any,
    seq: Any,
    ack: Any,
    lease: Any,
    ttl: Any,
) -> None:
    """:func:`_check` for a format-2 command: any operation, with ``lease`` and ``ttl``.

    Per operation (fields not named must be empty: ``b""``, ``None`` or 0):
    PUT key, value, expect, lease (>= 1); TXN value (the encoded transaction);
    LEASE_GRANT ttl (>= 1); LEASE_REVOKE and LEASE_KEEPALIVE lease; LEASE_EXPIRE
    lease and expect (the renewal index the leader saw).
    """
    if type(op) is not int or op not in _OPS:
        raise InvalidCommandError(f"unknown operation {op!r}")
    if type(lease) is not int or lease < 0 or type(ttl) is not int or ttl < 0:
        raise InvalidCommandError("lease and ttl are integers >= 0")
    if type(key) is not bytes or type(value) is not bytes:
        raise InvalidCommandError("key and value are bytes")
    if expect is not None and (type(expect) is not int or expect < 0):
        raise InvalidCommandError(f"expect must be None or an index >= 0, got {expect!r}")
    _check_session(client_id, seq, ack)
    if op == Op.PUT:
        if not key or lease < 1 or ttl:
            raise InvalidCommandError("a format-2 put takes a non-empty key and a lease")
        return
    if key:
        raise InvalidCommandError(f"{Op(op).name} takes no key")
    if op == Op.TXN:
        if not value or expect is not None or lease or ttl:
            raise InvalidCommandError("a transaction takes its encoding only")
    elif op == Op.LEASE_GRANT:
        if value or expect is not None or lease or not 1 <= ttl <= _MAX_TTL:
            raise InvalidCommandError(f"a lease grant takes a ttl of 1 to {_MAX_TTL} seconds")
    elif op in (Op.LEASE_REVOKE, Op.LEASE_KEEPALIVE):
        if value or expect is not None or lease < 1 or ttl:
            raise InvalidCommandError(f"{Op(op).name} takes a lease id only")
    elif op == Op.LEASE_EXPIRE:
        if value or expect is None or lease < 1 or ttl:
            raise InvalidCommandError("a lease expiry takes a lease id and its renewal index")
    else:
        raise InvalidCommandError(f"{Op(op).name} is a format-1 operation")


_OPS: Final = frozenset(int(o) for o in Op)
_MAX_TTL: Final = 9_000_000_000  # raftdb.kv.changes.MAX_LEASE_TTL (no import cycle)


def parse_command(data: bytes) -> tuple[Any, ...]:
    """Decode and check a command, as the tuple of its fields.

    Format 1 (puts and deletes without a lease, the hot path) has 8 fields:
    ``(1, op, key, value, expect, client_id, seq, ack)``; format 2 (every
    other command) has 10: the same, then ``lease`` and ``ttl``. No
    :class:`Command` object is built. Raises :class:`InvalidCommandError`
    exactly when :meth:`Command.decode` does.
    """
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise InvalidCommandError(f"not a msgpack command: {exc}") from None
    if type(fields) is not tuple or len(fields) not in (8, 10):
        _newer_format(fields)
        raise InvalidCommandError("a command is an array of 8 or 10 fields")
    if len(fields) == 10:
        if fields[0] != COMMAND_FORMAT_2 or type(fields[0]) is not int:
            _newer_format(fields)
            raise InvalidCommandError(f"a 10-field command is format 2, not {fields[0]!r}")
        _check_v2(*fields[1:])
        return fields
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
        _newer_format(fields)
        raise InvalidCommandError(f"unknown command format {version!r}")
    _check(op, key, value, expect, client_id, seq, ack)
    return fields


@dataclass(frozen=True, slots=True)
class Command:
    """One replicated write, as proposed to the log.

    Attributes:
        op: what it does (see :class:`Op`).
        key: the key (puts and deletes; ``b""`` otherwise).
        value: the new value (puts), or the encoded transaction (``TXN``).
        expect: puts and deletes: the condition on the key's ``mod_index``:
            ``None`` for none, :data:`CREATE_ONLY` (0) for "must not exist",
            ``n`` for "last written at index n". ``LEASE_EXPIRE``: the lease's
            renewal index the leader saw expire.
        client_id, seq, ack: the client session, or ``None``/0/0 for none.
        lease: the lease a put attaches its key to, or the lease a lease
            command acts on (0: none).
        ttl: the time to live of a ``LEASE_GRANT``, in seconds.
    """

    op: Op
    key: bytes
    value: bytes = b""
    expect: int | None = None
    client_id: bytes | None = None
    seq: int = 0
    ack: int = 0
    lease: int = 0
    ttl: int = 0

    def __post_init__(self) -> None:
        if self._format() == COMMAND_FORMAT:
            _check(
                self.op,
                self.key,
                self.value if self.op == Op.PUT else None,
                self.expect,
                self.client_id,
                self.seq,
                self.ack,
            )
        else:
            _check_v2(
                int(self.op),
                self.key,
                self.value,
                self.expect,
                self.client_id,
                self.seq,
                self.ack,
                self.lease,
                self.ttl,
            )

    def _format(self) -> int:
        if self.op in (Op.PUT, Op.DELETE) and not self.lease and not self.ttl:
            return COMMAND_FORMAT
        return COMMAND_FORMAT_2

    @classmethod
    def put(
        cls,
        key: bytes,
        value: bytes,
        *,
        if_mod: int | None = None,
        create_only: bool = False,
        lease: int = 0,
        client_id: bytes | None = None,
        seq: int = 0,
        ack: int = 0,
    ) -> Command:
        """A put; ``if_mod`` makes it a compare-and-set, ``create_only`` a create,
        ``lease`` attaches the key to that lease (0: the key leaves any lease).

        Raises:
            InvalidCommandError: a field is out of range, or both conditions given.
        """
        if create_only and if_mod is not None:
            raise InvalidCommandError("create_only and if_mod exclude each other")
        expect = CREATE_ONLY if create_only else if_mod
        if expect == CREATE_ONLY and not create_only:
            raise InvalidCommandError("if_mod must be a positive index")
        return cls(Op.PUT, key, value, expect, client_id, seq, ack, lease)

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

    @classmethod
    def txn(cls, encoded: bytes) -> Command:
        """A transaction, given as ``raftdb.kv.txn.Txn.encode()``."""
        return cls(Op.TXN, b"", encoded)

    @classmethod
    def lease_grant(cls, ttl: int) -> Command:
        """Grant a lease of ``ttl`` seconds (1 to ``MAX_LEASE_TTL``)."""
        return cls(Op.LEASE_GRANT, b"", ttl=ttl)

    @classmethod
    def lease_revoke(cls, lease: int) -> Command:
        """Revoke ``lease`` and delete its keys."""
        return cls(Op.LEASE_REVOKE, b"", lease=lease)

    @classmethod
    def lease_keepalive(cls, lease: int) -> Command:
        """Renew ``lease``."""
        return cls(Op.LEASE_KEEPALIVE, b"", lease=lease)

    @classmethod
    def lease_expire(cls, lease: int, renewed_index: int) -> Command:
        """The leader's verdict that ``lease``, last renewed at ``renewed_index``, expired."""
        return cls(Op.LEASE_EXPIRE, b"", expect=renewed_index, lease=lease)

    def with_session(self, client_id: bytes, seq: int, ack: int) -> Command:
        """This command in a client session.

        Raises:
            InvalidCommandError: the session fields are out of range.
        """
        _check_session(client_id, seq, ack)  # the rest was checked when self was made
        return _checked_command(
            self.op, self.key, self.value, self.expect, client_id, seq, ack, self.lease, self.ttl
        )

    def encode(self) -> bytes:
        """The entry data for this command (msgpack array, format 1 or 2)."""
        if self._format() == COMMAND_FORMAT:
            value = self.value if self.op == Op.PUT else None
            fields = [COMMAND_FORMAT, int(self.op), self.key, value, self.expect]
            fields += [self.client_id, self.seq, self.ack]
        else:
            fields = [COMMAND_FORMAT_2, int(self.op), self.key, self.value, self.expect]
            fields += [self.client_id, self.seq, self.ack, self.lease, self.ttl]
        return pack(fields)

    @classmethod
    def decode(cls, data: bytes) -> Command:
        """Parse :meth:`encode`'s output.

        Raises:
            InvalidCommandError: ``data`` is not a valid command.
            NewerCommandFormatError: ``data`` is a command of a newer format.
        """
        fields = parse_command(data)  # checks every field, as __post_init__ would
        if len(fields) == 8:
            _, op, key, value, expect, client_id, seq, ack = fields
            value = value if value is not None else b""
            return _checked_command(Op(op), key, value, expect, client_id, seq, ack, 0, 0)
        _, op, key, value, expect, client_id, seq, ack, lease, ttl = fields
        return _checked_command(Op(op), key, value, expect, client_id, seq, ack, lease, ttl)


_new_command = object.__new__
_set_field = object.__setattr__


def _checked_command(
    op: Op,
    key: bytes,
    value: bytes,
    expect: int | None,
    client_id: bytes | None,
    seq: int,
    ack: int,
    lease: int,
    ttl: int,
) -> Command:
    """A :class:`Command` of fields already checked, without ``__post_init__``'s checks.

    The node decodes commands and puts every proposed write in a session, on
    its event loop. Through the frozen dataclass's ``__init__`` each took about
    3 µs, a third to a half of it ``__post_init__`` repeating checks that the
    decoder (``parse_command``) or the command's own construction had made
    (``benchmarks/test_codec_bench.py``: ``decode`` ×0.70, ``with_session``
    ×0.54 without them).
    """
    cmd: Command = _new_command(Command)
    _set_field(cmd, "op", op)
    _set_field(cmd, "key", key)
    _set_field(cmd, "value", value)
    _set_field(cmd, "expect", expect)
    _set_field(cmd, "client_id", client_id)
    _set_field(cmd, "seq", seq)
    _set_field(cmd, "ack", ack)
    _set_field(cmd, "lease", lease)
    _set_field(cmd, "ttl", ttl)
    return cmd


# -- results ---------------------------------------------------------------------


@dataclass(slots=True)
class KVResult:
    """The outcome of one command entry. Treat as immutable.

    Not frozen: one is made per applied write, and a frozen dataclass costs
    three times as much to build (see ``raftdb.raft.messages``).

    Attributes:
        index: the log index of the entry this result answers.
        status: the outcome.
        create_index, mod_index: the key's indexes after the command. After a
            successful put ``mod_index == index``: the write's ETag. After a
            successful delete (of a key or of nothing) ``create_index`` is 0
            and ``mod_index == index``, the delete's own index, as its change
            says (so a duplicate carries the first attempt's; see
            ``raftdb.kv.applier._duplicate`` for sessions stored before this).
            After a failed condition, the key's current indexes (0 and 0 when
            it does not exist), so the caller can report them.
        prev_mod_index: the key's ``mod_index`` before the command (0: it did
            not exist). A delete with 0 here deleted nothing.
        duplicate: the command was a retry, answered from the session without
            being applied again; the other fields are the first answer's.
        message: why, for ``INVALID``.
        changes: what the entry did to the keys, in order (the watch events);
            empty for a duplicate and for a command that changed nothing.
        txn: a transaction's outcome (``TXN`` commands only). For a
            transaction, ``mod_index`` is the index it was applied at (the
            first attempt's, for a duplicate).
        lease: the lease a lease command acted on (its id; for a grant, the
            entry's index), ``ttl`` its time to live; 0 otherwise.
    """

    index: int
    status: CommandStatus
    create_index: int = 0
    mod_index: int = 0
    prev_mod_index: int = 0
    duplicate: bool = False
    message: str = ""
    changes: tuple[Change, ...] = ()
    txn: TxnResult | None = None
    lease: int = 0
    ttl: int = 0

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


class OneAnswer(Mapping[int, Response]):
    """A session's answers when there is exactly one: ``{seq: answer}`` in 48 bytes.

    Nearly every session holds one answer (an ``Idempotency-Key`` names one
    request), and a node keeps every session for ``SESSION_TTL_ENTRIES``
    entries: a one-item dict costs 224 bytes, this 48 (measured: a held
    session of an idempotent write went from about 546 to about 370 bytes of
    Python heap). Read-only, equal to the dict with the same item; only the
    memory form changes, never the bytes on disk or on the wire.
    """

    __slots__ = ("answer", "seq")

    def __init__(self, seq: int, answer: Response) -> None:
        self.seq = seq
        self.answer = answer

    def __getitem__(self, seq: int) -> Response:
        if seq == self.seq:
            return self.answer
        raise KeyError(seq)

    def get(self, seq: int, default: Any = None) -> Any:
        return self.answer if seq == self.seq else default

    def __iter__(self) -> Iterator[int]:
        yield self.seq

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"OneAnswer({self.seq!r}, {self.answer!r})"


def compact_answers(answers: dict[int, Response]) -> Mapping[int, Response]:
    """``answers`` in their smallest memory form (:class:`OneAnswer` for one)."""
    if len(answers) == 1:
        ((seq, answer),) = answers.items()
        return OneAnswer(seq, answer)
    return answers


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
            compact_answers(responses),
        )


_STATUSES = frozenset(int(s) for s in CommandStatus)


def encode_session(session: SessionState) -> bytes:
    """A session as a sealed record (for state machines that store sessions on disk)."""
    return seal(RecordKind.SESSION, pack(session.to_list()))


def decode_session(record: bytes) -> SessionState:
    """Parse :func:`encode_session`'s output. Raises :class:`CorruptionError`."""
    return SessionState.from_list(unpack(unseal(RecordKind.SESSION, record)))
