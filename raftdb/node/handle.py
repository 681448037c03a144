"""What the REST API needs from a running node: the ``NodeHandle`` protocol.

``raftdb.node.Node`` implements it; API tests may use a fake. Every method
raises only :mod:`raftdb.node.errors` exceptions for expected failures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from raftdb.kv.commands import KeyValue

__all__ = ["Alarm", "Consistency", "Member", "NodeHandle", "NodeStatus", "WriteResult"]

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
    ) -> WriteResult:
        """Write ``key`` once committed and applied on this node.

        Raises:
            ConditionFailedError, BadRequestError, TooLargeError,
            ServiceUnavailableError, OutcomeUnknownError, NodeRemovedError.
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
