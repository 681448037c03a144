"""What the REST API needs from a running node: the ``NodeHandle`` protocol.

``raftdb.node.Node`` implements it; API tests may use a fake. Every method
raises only :mod:`raftdb.node.errors` exceptions for expected failures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from raftdb.kv.changes import Change
from raftdb.kv.commands import KeyValue
from raftdb.kv.txn import Txn, TxnOpResult

__all__ = [
    "Alarm",
    "Consistency",
    "LeaseInfo",
    "LockHeld",
    "Member",
    "NodeHandle",
    "NodeStatus",
    "TxnAnswer",
    "WatchEvent",
    "WatchEventKind",
    "Watcher",
    "WriteResult",
]

Consistency = Literal["linearizable", "stale"]
#: An alarm a node raises (``NodeStatus.alarms``). ``nospace``: its disk is full.
Alarm = Literal["nospace"]


@dataclass(frozen=True, slots=True)
class Member:
    """One cluster member as ``GET /v1/cluster/members`` lists it.

    Each field's ``metadata`` is JSON Schema (a ``description``, and bounds or
    examples the type cannot say): the API's OpenAPI document is generated
    from these declarations (:mod:`raftdb.http.spec`).
    """

    id: int = field(metadata={"description": "The member's id.", "minimum": 1})
    peer_url: str = field(
        metadata={
            "description": "Where the other members reach it (its Raft transport).",
            "examples": ["http://127.0.0.1:42379"],
        }
    )
    learner: bool = field(
        metadata={
            "description": "A learner receives the log but neither votes nor counts "
            "toward a quorum."
        }
    )


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A committed, applied write.

    Attributes:
        index: the log index of the write (the ``ETag``).
        existed: for a delete, whether the key existed; for a put, whether it
            replaced an existing value.
        duplicate: the write was a retry (same ``Idempotency-Key``) answered
            from the first attempt without being applied again.
    """

    index: int
    existed: bool
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class TxnAnswer:
    """A committed, applied transaction (``POST /v1/txn``).

    Attributes:
        index: the log index of the transaction's entry (every write it made
            carries it as its ``mod_index``).
        succeeded: every compare held, so ``success`` ran (else ``failure``).
        results: one per operation of the branch that ran, in order; ``None``
            for a duplicate (its reads are not kept in the session).
        duplicate: a retry (same ``Idempotency-Key``) answered from the first
            attempt without being applied again.
    """

    index: int
    succeeded: bool
    results: tuple[TxnOpResult, ...] | None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease as the node knows it.

    Attributes:
        id: the lease id (the index of the entry that granted it).
        ttl: its time to live, in seconds.
        remaining: seconds before this member expects it to expire (this
            member's estimate; only the leader's own clock expires it).
        keys: the keys attached to it, sorted (empty for a grant).
    """

    id: int
    ttl: int
    remaining: float
    keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class LockHeld:
    """A lock this caller now holds (``POST /v1/lock/{name}``).

    Attributes:
        key: the holder's key, ``name + b"/" +`` the lease id in 16 hex digits.
        fence: the key's ``create_index``: a fencing token, larger for every
            later holder of the same lock.
    """

    key: bytes
    fence: int


#: What a :class:`WatchEvent` is: a change (``put``, ``delete``), ``progress``
#: (nothing new up to ``index``), or ``closed`` (the watcher ended; ``data`` says why).
WatchEventKind = Literal["put", "delete", "progress", "closed"]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a :class:`Watcher`.

    Attributes:
        kind: see :data:`WatchEventKind`.
        index: a change's log index (the changes of one entry share it); for
            ``progress``, the index up to which the watcher has seen every
            change; for ``closed``, the last index delivered (0: none).
        change: the change (``put`` and ``delete`` only).
        prev: the key as it was before the change, when the history still
            holds it (``None``: it did not exist, or is no longer retained).
        data: ``closed`` only: why, as the API sends it:
            ``{"error": "watcher_too_slow", "since": <last index delivered>}`` or
            ``{"error": "compacted", "oldest_index": <floor>}``.
    """

    kind: WatchEventKind
    index: int
    change: Change | None = None
    prev: KeyValue | None = None
    data: dict[str, Any] | None = None


class Watcher(Protocol):
    """A watch in progress: an async iterator of :class:`WatchEvent` s, in index order.

    It ends after a ``closed`` event. The caller must ``aclose()`` it when done
    (the client went away), so that the node stops feeding it.
    """

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        """The events."""
        ...

    async def __anext__(self) -> WatchEvent:
        """The next event (waits for it)."""
        ...

    async def aclose(self) -> None:
        """Stop watching; idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """``GET /v1/status``: this node's view of the cluster.

    Each field's ``metadata`` is JSON Schema, as for :class:`Member`.
    """

    id: int = field(metadata={"description": "This node's id.", "minimum": 0})
    role: Literal["leader", "follower", "candidate", "learner"] = field(
        metadata={"description": "This node's Raft role now."}
    )
    leader: int = field(
        metadata={"description": "The leader's id; 0 when none is known.", "minimum": 0}
    )
    term: int = field(metadata={"description": "The current term.", "minimum": 0})
    commit_index: int = field(
        metadata={"description": "The highest log index known committed.", "minimum": 0}
    )
    applied_index: int = field(
        metadata={
            "description": "The highest log index applied to this node's state machine.",
            "minimum": 0,
        }
    )
    first_index: int = field(
        metadata={
            "description": "The first log index still held (older entries are compacted "
            "into the snapshot).",
            "minimum": 0,
        }
    )
    last_index: int = field(metadata={"description": "The last log index held.", "minimum": 0})
    members: list[Member] = field(
        default_factory=list,
        metadata={"description": "The membership as this node has applied it."},
    )
    alarms: list[Alarm] = field(
        default_factory=list,
        metadata={
            "description": "Alarms raised on this node now. `nospace`: its disk (or quota) "
            "is full, so it is read-only: writes and membership changes answer 507, "
            "linearizable reads too; stale reads are served. It clears by itself once "
            "space returns and a retried write succeeds."
        },
    )
    sync: bool = field(
        default=True,
        metadata={
            "description": "Whether this node fsyncs before acknowledging (`sync` setting). "
            "False: a power loss can lose acknowledged writes and its vote (two leaders "
            "become possible); for tests and benchmarks only."
        },
    )


class NodeHandle(Protocol):
    """The operations behind the REST API. All waits are bounded by the node's timeout."""

    @property
    def id(self) -> int:
        """This node's id."""
        ...

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        if_match: int | None = None,
        if_none_match: bool = False,
        idempotency_key: bytes | None = None,
        lease: int = 0,
    ) -> WriteResult:
        """Write ``key`` once committed and applied on this node.

        ``lease``: attach the key to this lease (0: none; the key leaves any
        lease it had, as in etcd).

        Raises:
            ConditionFailedError, BadRequestError, TooLargeError,
            LeaseNotFoundError, ServiceUnavailableError, OutcomeUnknownError,
            NodeRemovedError.
        """
        ...

    async def delete(
        self,
        key: bytes,
        *,
        if_match: int | None = None,
        idempotency_key: bytes | None = None,
    ) -> WriteResult:
        """Delete ``key`` (a missing key is not an error: ``existed`` says).

        Raises: as :meth:`put`.
        """
        ...

    async def get(
        self, key: bytes, consistency: Consistency = "linearizable"
    ) -> tuple[KeyValue | None, int]:
        """Read ``key``; linearizable through ReadIndex unless ``stale``.

        Returns:
            The key (``None``: absent) and the log index the read was served
            at: the confirmed read index, or for a stale read the index this
            node had applied.

        Raises:
            ServiceUnavailableError: no leader to confirm a linearizable read.
        """
        ...

    async def range(
        self,
        prefix: bytes = b"",
        *,
        start: bytes | None = None,
        limit: int | None = None,
        consistency: Consistency = "linearizable",
        values: bool = True,
        max_bytes: int | None = None,
    ) -> tuple[list[KeyValue], int]:
        """Keys with ``prefix`` from ``start`` (inclusive), sorted, at most ``limit``,
        and the index the read was served at (as :meth:`get`).

        ``values=False`` leaves every value ``b""``; ``max_bytes`` ends the list
        after the key that brings its bytes to that many (at least one key), as
        ``StateMachine.range`` does."""
        ...

    async def txn(self, txn: Txn, *, idempotency_key: bytes | None = None) -> TxnAnswer:
        """Apply ``txn`` as one log entry; answers once committed and applied here.

        Raises:
            LeaseNotFoundError (a put names a lease that does not exist: nothing
            was applied), BadRequestError, TooLargeError, and as :meth:`put`.
        """
        ...

    async def lease_grant(self, ttl: int, *, idempotency_key: bytes | None = None) -> LeaseInfo:
        """Grant a lease of ``ttl`` seconds.

        Raises:
            BadRequestError: ``ttl`` below the minimum (which the message names:
                ``max(2, ceil(2 * election timeout))`` seconds) or above the maximum.
            And as :meth:`put`.
        """
        ...

    async def lease_keepalive(self, lease_id: int) -> LeaseInfo:
        """Renew lease ``lease_id`` for its full TTL.

        Raises:
            LeaseNotFoundError, and as :meth:`put`.
        """
        ...

    async def lease_revoke(self, lease_id: int) -> None:
        """End lease ``lease_id`` and delete its keys, in one log entry.

        Raises:
            LeaseNotFoundError, and as :meth:`put`.
        """
        ...

    async def lease_info(
        self, lease_id: int, consistency: Consistency = "linearizable"
    ) -> LeaseInfo:
        """Lease ``lease_id``: its TTL, this member's estimate of what remains, its keys.

        Raises:
            LeaseNotFoundError, ServiceUnavailableError (linearizable).
        """
        ...

    async def leases(self, consistency: Consistency = "linearizable") -> list[LeaseInfo]:
        """Every lease, by id (``keys`` left empty).

        Raises:
            ServiceUnavailableError (linearizable).
        """
        ...

    async def watch(
        self, *, prefix: bytes = b"", key: bytes | None = None, since: int | None = None
    ) -> Watcher:
        """Watch the changes to ``key`` (exact) or under ``prefix`` after index ``since``.

        ``since=None``: from now (after a ReadIndex, so the watch misses
        nothing acknowledged before the call).

        Raises:
            BadRequestError: ``since`` is after the index this node can serve.
            CompactedError: ``since`` is older than the retained history.
            TooManyRequestsError: ``max_watchers`` watchers already.
            ServiceUnavailableError: no leader to confirm "now".
        """
        ...

    async def wait_for_change(
        self,
        *,
        prefix: bytes = b"",
        key: bytes | None = None,
        index: int,
        timeout: float,  # noqa: ASYNC109 - running out of time is an answer, not an error
    ) -> None:
        """Return once ``key`` (or a key under ``prefix``) has a change with an
        index above ``index``, or after ``timeout`` seconds (no error either way)."""
        ...

    async def lock(
        self,
        name: bytes,
        lease: int,
        timeout: float,  # noqa: ASYNC109 - on time out the node deletes its key, then raises 408
    ) -> LockHeld:
        """Acquire lock ``name`` for ``lease`` (etcd's concurrency recipe).

        Raises:
            LeaseNotFoundError, RequestTimeoutError (not acquired within
            ``timeout``: the waiting key was deleted), and as :meth:`put`.
        """
        ...

    async def unlock(self, name: bytes, lease: int) -> None:
        """Release lock ``name`` held by ``lease`` (delete its key).

        Raises:
            LockNotHeldError: ``lease`` holds no key of the lock; and as :meth:`put`.
        """
        ...

    async def add_member(self, node_id: int, peer_url: str, learner: bool = False) -> Member:
        """Add a voter or learner (or promote a learner: same id, learner=False).

        Raises:
            BadRequestError: bad id or URL, or the id is taken by another URL.
            ServiceUnavailableError: another change is in progress, or no leader.
        """
        ...

    async def remove_member(self, node_id: int) -> None:
        """Remove a member once the change is committed.

        Raises:
            MemberNotFoundError, ServiceUnavailableError.
        """
        ...

    def members(self) -> list[Member]:
        """The membership as this node has applied it."""
        ...

    async def transfer_leader(self, node_id: int) -> None:
        """Hand leadership to voter ``node_id``; returns once it leads (or raises).

        Raises:
            MemberNotFoundError, BadRequestError (a learner), ServiceUnavailableError.
        """
        ...

    def status(self) -> NodeStatus:
        """This node's view of the cluster now."""
        ...

    def is_ready(self) -> bool:
        """True when a leader is known and everything committed is applied here."""
        ...

    def metrics_text(self) -> str:
        """Prometheus text exposition of the node's metrics."""
        ...
