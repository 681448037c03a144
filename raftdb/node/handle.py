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
from raftdb.kv.snapshot import SnapshotInfo
from raftdb.kv.txn import Txn, TxnOpResult

__all__ = [
    "Alarm",
    "Backup",
    "ClusterCounters",
    "ClusterMember",
    "ClusterStatus",
    "Consistency",
    "LeaderChange",
    "LeaseInfo",
    "LockHeld",
    "Member",
    "NodeHandle",
    "NodeStatus",
    "RoleName",
    "TxnAnswer",
    "WatchEvent",
    "WatchEventKind",
    "Watcher",
    "WriteResult",
]

Consistency = Literal["linearizable", "stale"]
#: A member's Raft role as the API names it (a pre-candidate is a ``candidate``).
RoleName = Literal["leader", "follower", "candidate", "learner"]
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
    cluster_id: str | None = field(
        default=None,
        metadata={
            "description": "This node's cluster identity, 16 hex digits: members of "
            "different clusters refuse each other. Null when its data directory records "
            "none (made before cluster ids, or a joining member that has not met a member "
            "yet).",
            "pattern": "^[0-9a-f]{16}$",
        },
    )


@dataclass(frozen=True, slots=True)
class ClusterMember:
    """One member as the node answering ``GET /v1/cluster/status`` sees it.

    A node knows every member's peer URL and the role it can infer; only the
    leader tracks the others' logs (Raft's progress), so a follower's rows of
    the other members carry ``null`` where only the leader would know.
    Each field's ``metadata`` is JSON Schema, as for :class:`Member`.
    """

    id: int = field(metadata={"description": "The member's id.", "minimum": 1})
    peer_url: str = field(
        metadata={"description": "Where the other members reach it (its Raft transport)."}
    )
    learner: bool = field(metadata={"description": "Whether it is a learner (no vote)."})
    role: RoleName = field(
        metadata={
            "description": "This node's own role for its own row; `leader` for the member "
            "this node knows as leader; otherwise `learner` or `follower` (what its "
            "membership says: this node cannot see another member's elections)."
        }
    )
    self: bool = field(metadata={"description": "Whether this row is the answering node."})
    match_index: int | None = field(
        metadata={
            "description": "When this node leads: the highest log index known to be on the "
            "member (Raft's match index; the leader's own row: its last index). Null in a "
            "follower's answer: only the leader tracks it.",
            "minimum": 0,
        }
    )
    lag: int | None = field(
        metadata={
            "description": "Entries behind. The answering node's own row: its commit index "
            "minus its applied index. When it leads, another member's row: its commit "
            "index minus the member's match index. Otherwise null. Never negative.",
            "minimum": 0,
        }
    )
    reachable: bool | None = field(
        metadata={
            "description": "The answering node's own row: true. When it leads: the member "
            "answered within the last election timeout (Raft's recent activity, or a peer "
            "message received). A follower's row of its leader: a message from it arrived "
            "within an election timeout. Otherwise null (unknown)."
        }
    )
    last_contact_s: float | None = field(
        metadata={
            "description": "Seconds since this node last received a peer message from the "
            "member; null for its own row and for a member it never heard from.",
            "minimum": 0,
        }
    )


@dataclass(frozen=True, slots=True)
class LeaderChange:
    """A change of (term, leader) that the answering node observed.

    Each field's ``metadata`` is JSON Schema, as for :class:`Member`.
    """

    term: int = field(metadata={"description": "The term from then on.", "minimum": 0})
    leader: int | None = field(
        metadata={
            "description": "The leader from then on; null: none known (an election).",
            "minimum": 1,
        }
    )
    at: float = field(
        metadata={"description": "When this node saw it, in Unix seconds (its wall clock)."}
    )


@dataclass(frozen=True, slots=True)
class ClusterCounters:
    """What the answering node served since it started (rates: deltas between answers).

    Each field's ``metadata`` is JSON Schema, as for :class:`Member`.
    """

    writes: int = field(
        metadata={
            "description": "Writes proposed through this node (`raftdb_proposals_total`).",
            "minimum": 0,
        }
    )
    reads_linearizable: int = field(
        metadata={
            "description": "Linearizable single-key reads and listings asked of this node "
            '(`raftdb_reads_total{consistency="linearizable"}`).',
            "minimum": 0,
        }
    )
    reads_stale: int = field(
        metadata={
            "description": "Stale single-key reads and listings asked of this node "
            '(`raftdb_reads_total{consistency="stale"}`).',
            "minimum": 0,
        }
    )


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """``GET /v1/cluster/status``: the cluster as the answering node sees it.

    What the status page (``/ui``) shows. No peer asks another anything for
    it: a leader answers with its progress of every member, a follower with
    what a follower knows (its own numbers, and whether its leader is heard
    from), and ``null`` wherever it cannot know. Each field's ``metadata`` is
    JSON Schema, as for :class:`Member`.
    """

    id: int = field(metadata={"description": "The answering node's id.", "minimum": 1})
    cluster_id: str | None = field(
        metadata={
            "description": "Its cluster identity (16 hex digits), as in `/v1/status`.",
            "pattern": "^[0-9a-f]{16}$",
        }
    )
    role: RoleName = field(metadata={"description": "Its Raft role now."})
    leader: int | None = field(
        metadata={"description": "The leader it knows; null: none.", "minimum": 1}
    )
    term: int = field(metadata={"description": "Its current term.", "minimum": 0})
    commit_index: int = field(
        metadata={"description": "The highest log index it knows committed.", "minimum": 0}
    )
    applied_index: int = field(
        metadata={"description": "The highest log index it applied.", "minimum": 0}
    )
    first_index: int = field(
        metadata={"description": "The first log index it still holds.", "minimum": 0}
    )
    last_index: int = field(metadata={"description": "The last log index it holds.", "minimum": 0})
    view: Literal["leader", "member"] = field(
        metadata={
            "description": "`leader`: it leads, and the member rows carry its progress of "
            "each member; `member`: it does not, and rows of other members hold only what "
            "it knows."
        }
    )
    members: list[ClusterMember] = field(
        metadata={"description": "The membership as it has applied it, by id."}
    )
    leader_changes: list[LeaderChange] = field(
        metadata={
            "description": "The last (at most 20) changes of its (term, leader), oldest "
            "first, as this node observed them since it started."
        }
    )
    counters: ClusterCounters = field(
        metadata={"description": "Cumulative counts since this node started."}
    )
    at: float = field(
        metadata={
            "description": "When the answer was made, in Unix seconds (its wall clock): "
            "rates are counter deltas over deltas of `at`."
        }
    )


@dataclass(frozen=True, slots=True)
class TxnAnswer:
    """A committed, applied transaction (``POST /v1/txn``).

    Each field's ``metadata`` is JSON Schema, as for :class:`Member`.
    """

    index: int = field(
        metadata={
            "description": "The log index the transaction was applied at: the `mod_index` "
            "of every key it wrote, and the `id` of its watch events.",
            "minimum": 1,
        }
    )
    succeeded: bool = field(
        metadata={
            "description": "Whether every compare held, so that the `success` operations "
            "ran (else the `failure` ones)."
        }
    )
    results: tuple[TxnOpResult, ...] | None = field(
        metadata={
            "description": "One result per operation of the branch that ran, in order; "
            "null for a duplicate (an `Idempotency-Key` retry, or a transaction that writes "
            "whose node caught up through a snapshot before applying it: the first "
            "attempt's results are not kept)."
        }
    )
    duplicate: bool = field(
        default=False,
        metadata={
            "description": "The answer came from the first attempt's session record, not "
            "its results: a retry (same `Idempotency-Key`), or a transaction that writes, "
            "proposed again by its node after the node caught up through a snapshot. It was "
            "applied once, at `index`."
        },
    )


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease as this node sees it (``/v1/leases``).

    Each field's ``metadata`` is JSON Schema, as for :class:`Member`.
    """

    id: int = field(
        metadata={
            "description": "The lease's id: the log index of the grant (a decimal string in JSON).",
            "minimum": 1,
        }
    )
    ttl: int = field(metadata={"description": "Its time to live, in seconds.", "minimum": 1})
    remaining: float = field(
        metadata={
            "description": "Seconds left before the lease expires unless kept alive, as "
            "this member estimates it (from when it applied the grant or the last "
            "keep-alive; the leader decides expiry, with a fresh full TTL after a leader "
            "change).",
            "minimum": 0,
        }
    )
    keys: tuple[bytes, ...] = field(
        default=(),
        metadata={
            "description": "The keys attached to the lease, sorted (`GET /v1/leases/{id}`); "
            "left empty by a grant, a keep-alive and the listing."
        },
    )


@dataclass(frozen=True, slots=True)
class LockHeld:
    """A lock held (``POST /v1/lock/{name}``): the holder's key and fencing token.

    Each field's ``metadata`` is JSON Schema, as for :class:`Member`.
    """

    key: bytes = field(
        metadata={
            "description": "The holder's key, `<name>/<lease id as 16 hex digits>`, attached "
            "to the lease: the lock is released when it is deleted (unlock, revoke, expiry)."
        }
    )
    fence: int = field(
        metadata={
            "description": "The fencing token: the key's `create_index`. It increases with "
            "every acquisition of the lock; guard a write with a transaction comparing "
            "the key's `create_index` with it, so that a holder paused past its lease's "
            "TTL cannot write after another took the lock.",
            "minimum": 1,
        }
    )


#: The kinds of :class:`WatchEvent`.
WatchEventKind = Literal["put", "delete", "progress", "closed"]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch stream (``GET /v1/watch``).

    Each field's ``metadata`` is JSON Schema, as for :class:`Member`.
    """

    kind: WatchEventKind = field(
        metadata={
            "description": "`put` or `delete` (a change of a watched key); `progress` (an "
            "idle stream: everything up to `index` was seen); `closed` (the last event: "
            "`data` says why and where to resume)."
        }
    )
    index: int = field(
        metadata={
            "description": "A change's log index (a transaction's changes share it); for "
            "`progress`, the index up to which the stream has seen everything; for "
            "`closed`, the `since` to resume from when `data` gives one.",
            "minimum": 0,
        }
    )
    change: Change | None = field(
        default=None,
        metadata={
            "description": "The change (`put`, `delete`): key, value (empty for a delete), "
            "`create_index`, `mod_index` and the key's `prev_mod_index`."
        },
    )
    prev: KeyValue | None = field(
        default=None,
        metadata={
            "description": "The key before the change, when asked for and still in the "
            "retained history (absent otherwise)."
        },
    )
    data: dict[str, Any] | None = field(
        default=None,
        metadata={
            "description": '`progress`: `{"applied_index": I}`. `closed`: '
            '`{"error": "watcher_too_slow", "since": I}` (resume with `since=I`), '
            '`{"error": "compacted", "oldest_index": N}` (the history moved past '
            "the stream's position), or a node error's `error`, `message` and `since`."
        },
    )


class Watcher(Protocol):
    """What :meth:`NodeHandle.watch` returns: the stream's events, in order, then the end.

    Iterate with ``async for`` (one consumer); call :meth:`aclose` when the
    client goes away, which frees the watcher's slot (``max_watchers``).
    """

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        """The stream itself."""
        ...

    async def __anext__(self) -> WatchEvent:
        """The next event (waits for it); ``StopAsyncIteration`` after ``closed``."""
        ...

    @property
    def ready(self) -> bool:
        """Whether the next event (or the end) is already here: ``__anext__`` would not
        wait for a change. A stream writes every ready event in one send."""
        ...

    async def aclose(self) -> None:
        """End the stream now (idempotent)."""
        ...


class Backup(Protocol):
    """What :meth:`NodeHandle.snapshot` returns: a snapshot's header at once, its
    bytes (the :mod:`raftdb.kv.snapshot` stream) by ``async for``.

    Iterate it once; call :meth:`aclose` however it ends (it releases the
    state machine's point-in-time view).
    """

    @property
    def info(self) -> SnapshotInfo:
        """The snapshot's index, term, conf state and members."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The stream's chunks, in order."""
        ...

    async def aclose(self) -> None:
        """End the stream now (idempotent)."""
        ...


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

        ``lease`` attaches the key to that lease (it is deleted when the lease
        ends); 0 detaches it from any lease it had (as etcd's put does).

        Raises:
            ConditionFailedError, BadRequestError, TooLargeError,
            ServiceUnavailableError, OutcomeUnknownError, NodeRemovedError,
            LeaseNotFoundError (``lease`` does not exist; nothing changed).
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
        """Apply a transaction atomically, as one log entry, through any member.

        Raises:
            LeaseNotFoundError: a put of the branch that ran names a lease that
                does not exist (nothing was applied).
            BadRequestError, ServiceUnavailableError, OutcomeUnknownError,
            TooManyRequestsError, NodeRemovedError: as :meth:`put`.
        """
        ...

    async def lease_grant(self, ttl: int, *, idempotency_key: bytes | None = None) -> LeaseInfo:
        """Grant a lease of ``ttl`` seconds; its id is the grant's log index.

        Raises:
            BadRequestError: ``ttl`` below the minimum (``NodeConfig.min_lease_ttl``,
                named in the message) or above ``MAX_LEASE_TTL``.
            ServiceUnavailableError, OutcomeUnknownError: as :meth:`put`.
        """
        ...

    async def lease_keepalive(self, lease_id: int) -> LeaseInfo:
        """Renew the lease: a fresh full TTL from now (``keys`` not given).

        Raises:
            LeaseNotFoundError, ServiceUnavailableError, OutcomeUnknownError.
        """
        ...

    async def lease_revoke(self, lease_id: int) -> None:
        """End the lease and delete its keys, in one log entry.

        Raises:
            LeaseNotFoundError, ServiceUnavailableError, OutcomeUnknownError.
        """
        ...

    async def lease_info(
        self, lease_id: int, consistency: Consistency = "linearizable"
    ) -> LeaseInfo:
        """The lease, its remaining time as this member estimates it, and its keys.

        Raises:
            LeaseNotFoundError, ServiceUnavailableError.
        """
        ...

    async def leases(self, consistency: Consistency = "linearizable") -> list[LeaseInfo]:
        """Every lease, by id (``keys`` not given)."""
        ...

    async def watch(
        self,
        *,
        prefix: bytes = b"",
        key: bytes | None = None,
        since: int | None = None,
        prev: bool = True,
    ) -> Watcher:
        """A stream of the changes of ``key`` (or under ``prefix``) after index ``since``.

        ``since=None`` starts from now, after a ReadIndex (linearizable: every
        change committed before the call is before the stream). Each event's
        ``prev`` is the key before the change while the history holds it;
        ``prev=False`` leaves it ``None`` (no look-up: a watch that does not
        show previous values, ``GET /v1/watch`` without ``prev=true``).

        Raises:
            BadRequestError: ``since`` is after the cluster's last index (``400``).
            CompactedError: the history no longer holds the changes after
                ``since`` (``410``; ``oldest_index`` is the oldest ``since`` it can serve).
            TooManyRequestsError: ``max_watchers`` watchers on this node (``429``).
            ServiceUnavailableError: no leader to confirm the read index (``503``).
        """
        ...

    async def wait_for_change(
        self,
        *,
        prefix: bytes = b"",
        key: bytes | None = None,
        index: int,
        timeout: float,  # noqa: ASYNC109 (the API's wait: its end is an answer, not an error)
    ) -> None:
        """Return once ``key`` (or a key under ``prefix``) changed after ``index`` on
        this node, or after ``timeout`` seconds (a Consul blocking read's wait:
        the caller reads afterwards). Returns at once if it already changed.

        Raises:
            TooManyRequestsError: ``max_watchers`` watchers and waits (``429``).
        """
        ...

    async def lock(
        self,
        name: bytes,
        lease: int,
        timeout: float,  # noqa: ASYNC109 (on time-out the wait key is deleted: a 408)
    ) -> LockHeld:
        """Take the lock ``name`` for ``lease`` (etcd's concurrency recipe): returns
        once it holds it, with its fencing token.

        Raises:
            RequestTimeoutError: not acquired within ``timeout`` seconds (``408``;
                the waiting key is deleted again).
            LeaseNotFoundError: the lease does not exist, or ended while waiting.
            BadRequestError, ServiceUnavailableError, OutcomeUnknownError.
        """
        ...

    async def unlock(self, name: bytes, lease: int) -> None:
        """Release the lock ``name`` held (or waited for) by ``lease``.

        Raises:
            LockNotHeldError: ``lease`` has no key under ``name`` (``404``).
            ServiceUnavailableError, OutcomeUnknownError.
        """
        ...

    async def snapshot(self) -> Backup:
        """A consistent snapshot of the state machine, for a backup (``GET /v1/snapshot``).

        Taken after a linearizable read point (ReadIndex): every write
        acknowledged before the call is in it. Its bytes are read lazily.

        Raises:
            ServiceUnavailableError: no leader to confirm the read point.
            TooManyRequestsError: the node streams as many backups as it may.
            NoSpaceError: the disk is full (no read point can be confirmed).
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

    def cluster_status(self) -> ClusterStatus:
        """The cluster as this node sees it now (``GET /v1/cluster/status``): every
        member, with the leader's progress of each when this node leads, the
        leader changes it observed, and its read and write counters.

        Raises:
            NotReadyError: the node is starting.
        """
        ...

    def is_ready(self) -> bool:
        """True when a leader is known and everything committed is applied here."""
        ...

    def metrics_text(self) -> str:
        """Prometheus text exposition of the node's metrics."""
        ...
