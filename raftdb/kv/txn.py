"""Multi-key transactions: compare, then one of two branches, in one log entry.

A :class:`Txn` is etcd's ``Txn``: a list of :class:`Compare` s on keys, and two
lists of :class:`TxnOp` s. When its entry is applied, every compare is
evaluated against the state before the entry; if all hold, the ``success``
operations run, otherwise the ``failure`` ones, in order, and a ``get`` or
``list`` sees that branch's earlier writes. Every write of the transaction
carries the entry's index as its ``mod_index``, and watchers see its changes
together, under that one index.

The encoding is part of the log format (inside a ``TXN`` command's value):
a msgpack array ``[compares, success, failure]``, each compare
``[key, target, op, value]`` and each operation ``[kind, key, value, lease,
prefix, limit]``. :meth:`Txn.decode` checks types exactly, as
``raftdb.kv.commands`` does, so that every node decides alike whether an entry
is a well-formed transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import msgpack

from raftdb.codec import pack
from raftdb.kv.commands import InvalidCommandError, KeyValue

__all__ = [
    "MAX_LIST_LIMIT",
    "MAX_TXN_OPS",
    "CmpOp",
    "Compare",
    "Target",
    "Txn",
    "TxnOp",
    "TxnOpKind",
    "TxnOpResult",
    "TxnResult",
]

#: Most compares, and most operations in each branch (etcd's ``--max-txn-ops``
#: default; Consul's transaction bound too).
MAX_TXN_OPS: Final = 128
#: Most keys one ``list`` operation of a transaction returns: a transaction's
#: reads are computed by every node as it applies the entry, so they stay small.
MAX_LIST_LIMIT: Final = 1000
#: The ``limit`` of a ``list`` that gives none.
DEFAULT_LIST_LIMIT: Final = 100


class Target(IntEnum):
    """What a :class:`Compare` looks at. Part of the log format."""

    VALUE = 1
    MOD_INDEX = 2
    CREATE_INDEX = 3
    EXISTS = 4


class CmpOp(IntEnum):
    """How a :class:`Compare` compares. Part of the log format."""

    EQ = 1
    NE = 2
    LT = 3
    GT = 4


class TxnOpKind(IntEnum):
    """What a :class:`TxnOp` does. Part of the log format."""

    PUT = 1
    DELETE = 2
    GET = 3
    LIST = 4


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction.

    ``value`` is bytes for :attr:`Target.VALUE`, an index (int >= 0) for
    ``MOD_INDEX`` and ``CREATE_INDEX`` (an absent key has both 0), a bool for
    ``EXISTS`` (which takes only ``EQ`` and ``NE``). Values compare as bytes,
    lexicographically; an absent key's value compares as absent: only ``!=``
    holds for it.
    """

    key: bytes
    target: Target
    op: CmpOp
    value: bytes | int | bool

    def __post_init__(self) -> None:
        _check_compare(self.key, self.target, self.op, self.value)


@dataclass(frozen=True, slots=True)
class TxnOp:
    """One operation of a branch.

    Attributes:
        kind: put, delete, get or list.
        key: the key (put, delete, get).
        value: the value (put).
        lease: the lease the put attaches the key to (0: none; the key leaves
            any lease it had, as a plain put does).
        prefix: the prefix (list).
        limit: the most keys a list returns (1 to :data:`MAX_LIST_LIMIT`).
    """

    kind: TxnOpKind
    key: bytes = b""
    value: bytes = b""
    lease: int = 0
    prefix: bytes = b""
    limit: int = DEFAULT_LIST_LIMIT

    def __post_init__(self) -> None:
        _check_op(self.kind, self.key, self.value, self.lease, self.prefix, self.limit)

    @classmethod
    def put(cls, key: bytes, value: bytes, *, lease: int = 0) -> TxnOp:
        """A put of ``key``."""
        return cls(TxnOpKind.PUT, key, value, lease)

    @classmethod
    def delete(cls, key: bytes) -> TxnOp:
        """A delete of ``key`` (nothing happens if it is absent)."""
        return cls(TxnOpKind.DELETE, key)

    @classmethod
    def get(cls, key: bytes) -> TxnOp:
        """A read of ``key``."""
        return cls(TxnOpKind.GET, key)

    @classmethod
    def list(cls, prefix: bytes, limit: int = DEFAULT_LIST_LIMIT) -> TxnOp:
        """A listing of the keys (with values) under ``prefix``, in order."""
        return cls(TxnOpKind.LIST, prefix=prefix, limit=limit)


@dataclass(frozen=True, slots=True)
class Txn:
    """A transaction: see the module docstring."""

    compare: tuple[Compare, ...] = ()
    success: tuple[TxnOp, ...] = ()
    failure: tuple[TxnOp, ...] = ()

    def __post_init__(self) -> None:
        for name in ("compare", "success", "failure"):
            if len(getattr(self, name)) > MAX_TXN_OPS:
                raise InvalidCommandError(
                    f"a transaction takes at most {MAX_TXN_OPS} entries in {name!r}"
                )

    def writes(self, succeeded: bool) -> bool:
        """Whether the branch that ran (``success`` if ``succeeded``, else
        ``failure``) puts or deletes a key; one that only reads changed nothing."""
        ops = self.success if succeeded else self.failure
        return any(op.kind in (TxnOpKind.PUT, TxnOpKind.DELETE) for op in ops)

    def encode(self) -> bytes:
        """The transaction as the value of a ``TXN`` command."""
        compares = [[c.key, int(c.target), int(c.op), c.value] for c in self.compare]
        return pack([compares, _ops_to_list(self.success), _ops_to_list(self.failure)])

    @classmethod
    def decode(cls, data: bytes) -> Txn:
        """Parse :meth:`encode`'s output.

        Raises:
            InvalidCommandError: ``data`` is not a well-formed transaction.
        """
        try:
            fields = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise InvalidCommandError(f"not a msgpack transaction: {exc}") from None
        if type(fields) is not list or len(fields) != 3:
            raise InvalidCommandError("a transaction is an array of 3 lists")
        compares, success, failure = fields
        if type(compares) is not list:
            raise InvalidCommandError("the compares of a transaction are a list")
        parsed: list[Compare] = []
        for item in compares:
            if type(item) is not list or len(item) != 4:
                raise InvalidCommandError("a compare is an array of 4 fields")
            key, target, op, value = item
            _check_compare(key, target, op, value)
            parsed.append(Compare(key, Target(target), CmpOp(op), value))
        return cls(tuple(parsed), _ops_from_list(success), _ops_from_list(failure))


def _ops_to_list(ops: tuple[TxnOp, ...]) -> list[list[Any]]:
    return [[int(o.kind), o.key, o.value, o.lease, o.prefix, o.limit] for o in ops]


def _ops_from_list(value: Any) -> tuple[TxnOp, ...]:
    if type(value) is not list:
        raise InvalidCommandError("a branch of a transaction is a list")
    if len(value) > MAX_TXN_OPS:
        raise InvalidCommandError(f"a branch takes at most {MAX_TXN_OPS} operations")
    out: list[TxnOp] = []
    for item in value:
        if type(item) is not list or len(item) != 6:
            raise InvalidCommandError("an operation is an array of 6 fields")
        kind, key, val, lease, prefix, limit = item
        _check_op(kind, key, val, lease, prefix, limit)
        out.append(TxnOp(TxnOpKind(kind), key, val, lease, prefix, limit))
    return tuple(out)


_TARGETS: Final = frozenset(int(t) for t in Target)
_CMP_OPS: Final = frozenset(int(o) for o in CmpOp)
_KINDS: Final = frozenset(int(k) for k in TxnOpKind)


def _check_compare(key: Any, target: Any, op: Any, value: Any) -> None:
    if type(key) is not bytes or not key:
        raise InvalidCommandError("a compare's key must be non-empty bytes")
    if type(target) not in (int, Target) or target not in _TARGETS:
        raise InvalidCommandError(f"unknown compare target {target!r}")
    if type(op) not in (int, CmpOp) or op not in _CMP_OPS:
        raise InvalidCommandError(f"unknown compare operator {op!r}")
    if target == Target.VALUE:
        if type(value) is not bytes:
            raise InvalidCommandError("a value compare takes a bytes value")
    elif target == Target.EXISTS:
        if type(value) is not bool:
            raise InvalidCommandError("an exists compare takes true or false")
        if op not in (CmpOp.EQ, CmpOp.NE):
            raise InvalidCommandError("an exists compare takes == or != only")
    elif type(value) is not int or value < 0:
        raise InvalidCommandError("an index compare takes an integer >= 0")


def _check_op(kind: Any, key: Any, value: Any, lease: Any, prefix: Any, limit: Any) -> None:
    if type(kind) not in (int, TxnOpKind) or kind not in _KINDS:
        raise InvalidCommandError(f"unknown transaction operation {kind!r}")
    if type(key) is not bytes or type(value) is not bytes or type(prefix) is not bytes:
        raise InvalidCommandError("an operation's key, value and prefix are bytes")
    if type(lease) is not int or lease < 0:
        raise InvalidCommandError("an operation's lease is an integer >= 0")
    if type(limit) is not int or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidCommandError(f"a list's limit is 1 to {MAX_LIST_LIMIT}")
    if kind == TxnOpKind.LIST:
        if key or value or lease:
            raise InvalidCommandError("a list takes a prefix and a limit only")
        return
    if not key:
        raise InvalidCommandError("a put, delete or get needs a non-empty key")
    if prefix or limit != DEFAULT_LIST_LIMIT:
        raise InvalidCommandError("only a list takes a prefix and a limit")
    if kind != TxnOpKind.PUT and (value or lease):
        raise InvalidCommandError("only a put takes a value and a lease")


@dataclass(frozen=True, slots=True)
class TxnOpResult:
    """The result of one operation of the branch that ran.

    Attributes:
        kind: the operation's kind.
        found: get: the key exists; delete: there was a key to delete.
        kv: get: the key as read (``None`` if absent).
        kvs: list: the keys (with values) read, in order.
        more: list: keys beyond ``limit`` exist under the prefix.
        create_index, mod_index: put: the key's indexes after the put.
        prev_mod_index: put, delete: the key's ``mod_index`` before (0: absent).
    """

    kind: TxnOpKind
    found: bool = False
    kv: KeyValue | None = None
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    create_index: int = 0
    mod_index: int = 0
    prev_mod_index: int = 0


@dataclass(frozen=True, slots=True)
class TxnResult:
    """What a transaction did.

    Attributes:
        succeeded: every compare held (``success`` ran), or not (``failure`` ran).
        results: one per operation of the branch that ran, in order. Empty for
            a duplicate (a retry answered from its session: the branch and the
            index are the first attempt's; its reads are not kept).
    """

    succeeded: bool
    results: tuple[TxnOpResult, ...] = ()
