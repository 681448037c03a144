"""Typed results of the client's calls: frozen dataclasses with slots.

Keys and values are ``bytes`` (the API stores bytes); ``.text`` helpers decode UTF-8.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DeleteResult",
    "GetResult",
    "KeyValue",
    "Lease",
    "LeaseInfo",
    "Listing",
    "LockHold",
    "Member",
    "Status",
    "TxnDelete",
    "TxnGet",
    "TxnList",
    "TxnPut",
    "TxnResult",
    "WriteResult",
]


def to_bytes(data: bytes | str) -> bytes:
    """``str`` as UTF-8, ``bytes`` as they are: the client's str convenience."""
    return data.encode() if isinstance(data, str) else bytes(data)


@dataclass(frozen=True, slots=True)
class Listing:
    """A whole listing read at once (:meth:`~raftdb.client.Client.list_wait`): the
    entries, in key order, and ``index``, the index its first page was read at: give
    it as the next call's ``wait_index`` to wait for the next change under the
    prefix, and none is missed."""

    entries: list[KeyValue]
    index: int


@dataclass(frozen=True, slots=True)
class GetResult:
    """A key's value: ``mod_index`` (its ETag) and ``read_index`` (the index served at)."""

    key: bytes
    value: bytes
    mod_index: int
    read_index: int

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode()


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One entry of a listing (``value`` is ``None`` when listed without values)."""

    key: bytes
    create_index: int
    mod_index: int
    value: bytes | None = None

    @property
    def text(self) -> str | None:
        """The value decoded as UTF-8 (``None`` when not listed)."""
        return None if self.value is None else self.value.decode()

    @classmethod
    def from_listing(cls, entry: dict[str, Any]) -> KeyValue:
        """From ``GET /v1/kv``: text fields, base64 when flagged by ``*_encoding``."""
        key = _field(entry, "key", entry.get("key_encoding"))
        value = None
        if "value" in entry:
            value = _field(entry, "value", entry.get("value_encoding"))
        return cls(key, int(entry["create_index"]), int(entry["mod_index"]), value)

    @classmethod
    def from_b64(cls, entry: dict[str, Any]) -> KeyValue:
        """From a transaction's or a watch's JSON: ``key``/``key_b64``, ``value_b64``."""
        value = base64.b64decode(entry["value_b64"]) if "value_b64" in entry else None
        return cls(key_of(entry), int(entry.get("create_index", 0)), int(entry["mod_index"]), value)


def _field(entry: dict[str, Any], name: str, encoding: Any) -> bytes:
    raw = str(entry[name])
    return base64.b64decode(raw) if encoding == "base64" else raw.encode()


def key_of(entry: dict[str, Any]) -> bytes:
    """A JSON object's key: ``key`` (UTF-8 text) or ``key_b64``."""
    if "key_b64" in entry:
        return base64.b64decode(entry["key_b64"])
    return str(entry["key"]).encode()


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A put: the write's index (its ETag); ``duplicate`` when a retry was answered as the
    first attempt (``X-Raftdb-Duplicate``)."""

    index: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """A delete: its index, and whether the key existed."""

    index: int
    existed: bool
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class TxnPut:
    """A transaction's put: the key's new indexes (``prev_mod_index`` 0: it was new)."""

    mod_index: int
    create_index: int
    prev_mod_index: int


@dataclass(frozen=True, slots=True)
class TxnDelete:
    """A transaction's delete: whether the key existed, and its previous modify index."""

    deleted: bool
    prev_mod_index: int


@dataclass(frozen=True, slots=True)
class TxnGet:
    """A transaction's get: ``None`` fields when the key was not found."""

    found: bool
    value: bytes | None = None
    create_index: int = 0
    mod_index: int = 0


@dataclass(frozen=True, slots=True)
class TxnList:
    """A transaction's list: the entries, and ``more`` when keys beyond the limit exist."""

    keys: tuple[KeyValue, ...]
    more: bool


TxnOpResult = TxnPut | TxnDelete | TxnGet | TxnList


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch ran (``succeeded``), the transaction's index, each operation's result
    (``None`` when ``duplicate``: a retry's reads are not kept by the node)."""

    succeeded: bool
    index: int
    results: tuple[TxnOpResult, ...] | None
    duplicate: bool = False

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TxnResult:
        """From ``POST /v1/txn``'s answer."""
        raw = body.get("results")
        results = None if raw is None else tuple(_op_result(r) for r in raw)
        return cls(
            bool(body["succeeded"]), int(body["index"]), results, bool(body.get("duplicate"))
        )


def _op_result(r: dict[str, Any]) -> TxnOpResult:
    op = r["op"]
    if op == "put":
        return TxnPut(int(r["mod_index"]), int(r["create_index"]), int(r["prev_mod_index"]))
    if op == "delete":
        return TxnDelete(bool(r["deleted"]), int(r.get("prev_mod_index", 0)))
    if op == "get":
        if not r.get("found"):
            return TxnGet(False)
        return TxnGet(
            True, base64.b64decode(r["value_b64"]), int(r["create_index"]), int(r["mod_index"])
        )
    return TxnList(tuple(KeyValue.from_b64(k) for k in r["keys"]), bool(r.get("more")))


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted or renewed lease: its id and TTL in whole seconds."""

    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease as a member sees it: ``remaining`` seconds (that member's estimate), and its
    keys (empty in the list of every lease, which omits them)."""

    id: int
    ttl: int
    remaining: float
    keys: tuple[bytes, ...] = ()

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> LeaseInfo:
        """From ``GET /v1/leases/{id}`` or an entry of ``GET /v1/leases``."""
        keys = [str(k).encode() for k in body.get("keys", [])]
        keys += [base64.b64decode(k) for k in body.get("keys_b64", [])]
        return cls(
            int(body["id"]), int(body["ttl"]), float(body.get("remaining", 0.0)), tuple(keys)
        )


@dataclass(frozen=True, slots=True)
class LockHold:
    """A held lock: the holder's key, its fencing token and the lease holding it."""

    name: bytes
    key: bytes
    fence: int
    lease: int


@dataclass(frozen=True, slots=True)
class Member:
    """A cluster member as the answering node has applied the membership."""

    id: int
    peer_url: str
    learner: bool


@dataclass(frozen=True, slots=True)
class Status:
    """``GET /v1/status`` of one member (``leader`` 0: none known); ``raw`` has every field."""

    id: int
    role: str
    leader: int
    term: int
    commit_index: int
    applied_index: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Status:
        """From ``GET /v1/status``."""
        return cls(
            int(body["id"]),
            str(body["role"]),
            int(body.get("leader", 0)),
            int(body.get("term", 0)),
            int(body.get("commit_index", 0)),
            int(body.get("applied_index", 0)),
            body,
        )
