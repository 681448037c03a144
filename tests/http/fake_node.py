"""An in-memory :class:`~raftdb.node.handle.NodeHandle` for API tests.

A real little key-value store: every write takes the next log index, keys
keep ``create_index``/``mod_index``, conditions and idempotency keys behave as
the node's do, and membership changes are checked. Tests set ``fail`` to make
the next node call raise, and read ``calls`` to see what the API asked for.

It also does what issue 12 adds, as the spec (``/work/spec12.md``) says the
node does it, in memory and on one event loop:

- every change is kept in ``history`` (a :class:`~raftdb.kv.changes.Change`
  each; :meth:`FakeNode.compact` drops the oldest and raises ``floor``);
- transactions are evaluated as the Applier evaluates them (compares on the
  state before, a branch's reads see its earlier writes, an unknown lease in
  a put refuses the whole transaction, idempotency keys answer duplicates);
- leases run on a fake clock: :meth:`FakeNode.advance` moves it and expires
  what is due (one entry per lease, deleting its keys), as the leader would;
- watchers catch up from ``history`` and then follow new changes; tests make
  ``progress`` (:meth:`FakeNode.progress`) and ``closed`` events
  (:meth:`FakeNode.end_watchers`), and see which watchers were closed;
- ``wait_for_change`` and ``lock`` (etcd's recipe) wait on the changes.

Waiting calls use asyncio on the loop that runs them: a test that makes
changes while a watch or a blocking read waits must make them on that loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from raftdb.kv.changes import Change, ChangeKind
from raftdb.kv.commands import KeyValue
from raftdb.kv.snapshot import SnapshotAbortedError, SnapshotInfo, SnapshotStream, encode_stream
from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOpKind, TxnOpResult
from raftdb.node.backup import BackupStream
from raftdb.node.errors import (
    BadRequestError,
    CompactedError,
    ConditionFailedError,
    LeaseNotFoundError,
    LockNotHeldError,
    MemberNotFoundError,
    NodeError,
    RequestTimeoutError,
    TooManyRequestsError,
)
from raftdb.node.handle import (
    ClusterCounters,
    ClusterMember,
    ClusterStatus,
    Consistency,
    LeaderChange,
    LeaseInfo,
    LockHeld,
    Member,
    NodeStatus,
    RoleName,
    TxnAnswer,
    WatchEvent,
    WatchEventKind,
    WriteResult,
)
from raftdb.raft.messages import ConfState

METRICS = """\
# HELP raftdb_term The current Raft term.
# TYPE raftdb_term gauge
raftdb_term 3.0
"""


@dataclass
class FakeLease:
    """A lease of the fake: its keys, and when it expires on the fake clock."""

    id: int
    ttl: int
    deadline: float
    keys: set[bytes] = field(default_factory=set)

    def info(self, now: float) -> LeaseInfo:
        return LeaseInfo(self.id, self.ttl, max(0.0, self.deadline - now), tuple(sorted(self.keys)))


class FakeWatcher:
    """A watcher of the fake: catches up from the history, then follows live changes."""

    def __init__(
        self, node: FakeNode, prefix: bytes, key: bytes | None, since: int, prev: bool
    ) -> None:
        self.node = node
        self.prefix = prefix
        self.key = key
        self.since = since
        self.prev = prev
        self.queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self.ended = False  # a closed event was delivered
        self.closed = False  # aclose() was called

    def matches(self, key: bytes) -> bool:
        return key == self.key if self.key is not None else key.startswith(self.prefix)

    def offer(self, change: Change) -> None:
        if not self.closed and change.index > self.since and self.matches(change.key):
            kind: WatchEventKind = "put" if change.kind is ChangeKind.PUT else "delete"
            prev = self.node.prev_of(change) if self.prev else None
            self.queue.put_nowait(WatchEvent(kind, change.index, change, prev))

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self

    async def __anext__(self) -> WatchEvent:
        if self.ended or self.closed:
            raise StopAsyncIteration
        event = await self.queue.get()
        if event.kind == "closed":
            self.ended = True
        return event

    @property
    def ready(self) -> bool:
        return not self.queue.empty() or self.ended or self.closed

    async def aclose(self) -> None:
        self.closed = True
        if self in self.node.watchers:
            self.node.watchers.remove(self)


class FakeNode:
    """A single-process stand-in for ``raftdb.node.Node``."""

    def __init__(self, node_id: int = 1, peers: int = 3) -> None:
        self._id = node_id
        self.data: dict[bytes, KeyValue] = {}
        self.index = 0
        self.term = 3
        self.leader = 1
        self.ready = True
        self.started = False
        self.stopped = False
        self.fail: BaseException | None = None
        self.calls: list[tuple[object, ...]] = []
        self.range_answers: list[list[KeyValue]] = []  # what each range call returned
        self.answers: dict[bytes, WriteResult] = {}
        self._members: dict[int, Member] = {
            n: Member(n, f"http://127.0.0.1:{n}2379", False) for n in range(1, peers + 1)
        }
        # -- issue 12: history, leases, watchers, waits
        self.history: list[Change] = []
        self.floor = 0  # every change above it is in history
        self.clock = 0.0  # the fake lease clock (seconds), moved by advance()
        self.lease_table: dict[int, FakeLease] = {}  # by id
        self.key_lease: dict[bytes, int] = {}
        self.watchers: list[FakeWatcher] = []
        self.all_watchers: list[FakeWatcher] = []  # every watcher made, closed ones too
        self.max_watchers = 100
        self.waiters: list[tuple[bytes, bytes | None, asyncio.Event]] = []
        self.txn_answers: dict[bytes, TxnAnswer] = {}
        self.grant_answers: dict[bytes, LeaseInfo] = {}
        # -- issue 13: backups (snapshot)
        self.snapshot_chunk_size = 4096
        self.snapshot_break_after: int | None = None  # chunks before a snapshot fails
        self.backups: list[BackupStream] = []
        # -- issue 14: what GET /v1/cluster/status reports
        self.cluster_id: str | None = "0123456789abcdef"
        self.leader_changes: list[LeaderChange] = [LeaderChange(self.term, self.leader, 1.7e9)]
        self.writes = 0  # puts and deletes asked (the node counts proposals)
        self.reads = {"linearizable": 0, "stale": 0}

    def last(self) -> tuple[object, ...]:
        """The last call the API made."""
        return self.calls[-1]

    # -- lifecycle (what raftdb.app uses) ------------------------------------------

    async def start(self) -> None:
        self._check()
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def end_streams(self) -> None:
        self.end_watchers({"error": "not_ready", "message": "the node is stopping"})

    # -- NodeHandle ------------------------------------------------------------------

    @property
    def id(self) -> int:
        return self._id

    def _check(self) -> None:
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc

    def _next_index(self) -> int:
        self.index += 1
        return self.index

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
        self.calls.append(("put", key, value, if_match, if_none_match, idempotency_key, lease))
        self._check()
        self.writes += 1
        if idempotency_key is not None and idempotency_key in self.answers:
            return replace(self.answers[idempotency_key], duplicate=True)
        old = self.data.get(key)
        mod = old.mod_index if old else 0
        if if_none_match and old is not None:
            raise ConditionFailedError(f"key {key!r} exists (index {mod})", mod)
        if if_match is not None and if_match != mod:
            raise ConditionFailedError(f"key {key!r} is at index {mod}, not {if_match}", mod)
        if lease and lease not in self.lease_table:
            raise LeaseNotFoundError(f"lease {lease} not found")
        index = self._next_index()
        self._commit([self._write(key, value, index, lease)])
        result = WriteResult(index, old is not None)
        if idempotency_key is not None:
            self.answers[idempotency_key] = result
        return result

    async def delete(
        self,
        key: bytes,
        *,
        if_match: int | None = None,
        idempotency_key: bytes | None = None,
    ) -> WriteResult:
        self.calls.append(("delete", key, if_match, idempotency_key))
        self._check()
        self.writes += 1
        if idempotency_key is not None and idempotency_key in self.answers:
            return replace(self.answers[idempotency_key], duplicate=True)
        old = self.data.get(key)
        mod = old.mod_index if old else 0
        if if_match is not None and if_match != mod:
            raise ConditionFailedError(f"key {key!r} is at index {mod}, not {if_match}", mod)
        index = self._next_index()
        self._commit([c for c in [self._remove(key, index)] if c is not None])
        result = WriteResult(index, old is not None)
        if idempotency_key is not None:
            self.answers[idempotency_key] = result
        return result

    async def get(
        self, key: bytes, consistency: Consistency = "linearizable"
    ) -> tuple[KeyValue | None, int]:
        self.calls.append(("get", key, consistency))
        self._count_read(consistency)
        self._check()
        return self.data.get(key), self.index

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
        self.calls.append(("range", prefix, start, limit, consistency))
        self._count_read(consistency)
        self._check()
        keys = sorted(
            key for key in self.data if key.startswith(prefix) and (start is None or key >= start)
        )
        if limit is not None:
            keys = keys[:limit]
        found: list[KeyValue] = []
        size = 0
        for key in keys:  # as StateMachine.range bounds it
            kv = self.data[key] if values else replace(self.data[key], value=b"")
            found.append(kv)
            size += len(kv.key) + len(kv.value)
            if max_bytes is not None and size >= max_bytes:
                break
        self.range_answers.append(found)
        return found, self.index

    async def add_member(self, node_id: int, peer_url: str, learner: bool = False) -> Member:
        self.calls.append(("add_member", node_id, peer_url, learner))
        self._check()
        old = self._members.get(node_id)
        if old is not None and old.peer_url != peer_url:
            raise BadRequestError(f"member {node_id} has the peer URL {old.peer_url}")
        if any(m.peer_url == peer_url and m.id != node_id for m in self._members.values()):
            raise BadRequestError(f"{peer_url} is another member's peer URL")
        member = Member(node_id, peer_url, learner)
        self._next_index()
        self._members[node_id] = member
        return member

    async def remove_member(self, node_id: int) -> None:
        self.calls.append(("remove_member", node_id))
        self._check()
        if node_id not in self._members:
            raise MemberNotFoundError(f"no member {node_id}")
        self._next_index()
        del self._members[node_id]

    def members(self) -> list[Member]:
        return [self._members[n] for n in sorted(self._members)]

    async def transfer_leader(self, node_id: int) -> None:
        self.calls.append(("transfer_leader", node_id))
        self._check()
        member = self._members.get(node_id)
        if member is None:
            raise MemberNotFoundError(f"no member {node_id}")
        if member.learner:
            raise BadRequestError(f"member {node_id} is a learner")
        self.leader = node_id

    def status(self) -> NodeStatus:
        return NodeStatus(
            id=self._id,
            role="leader" if self.leader == self._id else "follower",
            leader=self.leader,
            term=self.term,
            commit_index=self.index,
            applied_index=self.index,
            first_index=1,
            last_index=self.index,
            members=self.members(),
        )

    def cluster_status(self) -> ClusterStatus:
        """As the node builds it (``raftdb.node.cluster_view``): a leader's rows carry
        ``match`` (every member caught up), a follower's only its own and its leader's."""
        self._check()
        leading = self.leader == self._id
        rows = []
        for m in self.members():
            mine = m.id == self._id
            role: RoleName = (
                "leader" if m.id == self.leader else "learner" if m.learner else "follower"
            )
            if mine:
                rows.append(
                    ClusterMember(
                        m.id,
                        m.peer_url,
                        m.learner,
                        role,
                        True,
                        self.index if leading else None,
                        0,
                        True,
                        None,
                    )
                )
            elif leading:
                rows.append(
                    ClusterMember(
                        m.id, m.peer_url, m.learner, role, False, self.index, 0, True, 0.05
                    )
                )
            else:
                heard = m.id == self.leader
                rows.append(
                    ClusterMember(
                        m.id,
                        m.peer_url,
                        m.learner,
                        role,
                        False,
                        None,
                        None,
                        True if heard else None,
                        0.05 if heard else None,
                    )
                )
        return ClusterStatus(
            id=self._id,
            cluster_id=self.cluster_id,
            role="leader" if leading else "follower",
            leader=self.leader or None,
            term=self.term,
            commit_index=self.index,
            applied_index=self.index,
            first_index=1,
            last_index=self.index,
            view="leader" if leading else "member",
            members=rows,
            leader_changes=list(self.leader_changes),
            counters=ClusterCounters(self.writes, self.reads["linearizable"], self.reads["stale"]),
            at=self.clock + 1_700_000_000.0,
        )

    def _count_read(self, consistency: Consistency) -> None:
        self.reads["linearizable" if consistency == "linearizable" else "stale"] += 1

    def is_ready(self) -> bool:
        return self.ready

    async def snapshot(self) -> BackupStream:
        """The keys as a snapshot stream (no sessions, leases or history), in chunks
        of ``snapshot_chunk_size``; with ``snapshot_break_after``, the stream fails
        after that many chunks, as a state machine restored under a reader does."""
        self.calls.append(("snapshot",))
        self._check()
        members = self.members()
        info = SnapshotInfo(
            self.index,
            self.term,
            ConfState(
                voters=tuple(m.id for m in members if not m.learner),
                learners=tuple(m.id for m in members if m.learner),
            ),
            {m.id: m.peer_url for m in members},
        )
        records = [(k, v.value, v.create_index, v.mod_index) for k, v in sorted(self.data.items())]
        chunks = encode_stream(
            info, records, (), self.snapshot_chunk_size, history_floor=self.index
        )
        if self.snapshot_break_after is not None:
            chunks = _broken(chunks, self.snapshot_break_after)
        backup = BackupStream(SnapshotStream(info, chunks))
        self.backups.append(backup)
        return backup

    def metrics_text(self) -> str:
        return METRICS

    # -- changes: what every write goes through ---------------------------------------

    def _write(self, key: bytes, value: bytes, index: int, lease: int) -> Change:
        """Put ``key`` at ``index``: its lease membership as the Applier keeps it."""
        old = self.data.get(key)
        create = old.create_index if old else index
        self.data[key] = KeyValue(key, value, create, index)
        was = self.key_lease.pop(key, 0)
        if was and was in self.lease_table:
            self.lease_table[was].keys.discard(key)
        if lease:
            self.lease_table[lease].keys.add(key)
            self.key_lease[key] = lease
        return Change(index, ChangeKind.PUT, key, value, create, index, old.mod_index if old else 0)

    def _remove(self, key: bytes, index: int) -> Change | None:
        """Delete ``key`` at ``index`` (``None``: it was absent, no change)."""
        old = self.data.pop(key, None)
        if old is None:
            return None
        was = self.key_lease.pop(key, 0)
        if was and was in self.lease_table:
            self.lease_table[was].keys.discard(key)
        return Change(index, ChangeKind.DELETE, key, b"", 0, index, old.mod_index)

    def _commit(self, changes: list[Change]) -> None:
        """Keep ``changes`` in the history and tell the watchers and waiters."""
        self.history.extend(changes)
        for change in changes:
            for watcher in list(self.watchers):
                watcher.offer(change)
        for prefix, key, event in self.waiters:
            if any(_matches(c.key, prefix, key) for c in changes):
                event.set()

    def prev_of(self, change: Change) -> KeyValue | None:
        """The key before ``change``, when the history still holds the put that made it."""
        if not change.prev_mod_index:
            return None
        for old in self.history:
            if (old.key, old.index, old.kind) == (
                change.key,
                change.prev_mod_index,
                ChangeKind.PUT,
            ):
                return KeyValue(old.key, old.value, old.create_index, old.mod_index)
        return None

    def compact(self, floor: int) -> None:
        """Drop the history up to ``floor`` (as the Applier trims it)."""
        self.history = [c for c in self.history if c.index > floor]
        self.floor = max(self.floor, floor)

    # -- transactions -----------------------------------------------------------------

    def _holds(self, compare: Compare) -> bool:
        kv = self.data.get(compare.key)
        op = compare.op
        value: bytes | int | bool
        if compare.target is Target.VALUE:
            if kv is None:
                return op is CmpOp.NE
            value = kv.value
        elif compare.target is Target.MOD_INDEX:
            value = kv.mod_index if kv else 0
        elif compare.target is Target.CREATE_INDEX:
            value = kv.create_index if kv else 0
        else:
            value = kv is not None
        want = compare.value
        if op is CmpOp.EQ:
            return value == want
        if op is CmpOp.NE:
            return value != want
        if op is CmpOp.LT:
            return value < want  # type: ignore[operator]  # same types, by Compare's checks
        return value > want  # type: ignore[operator]

    async def txn(self, txn: Txn, *, idempotency_key: bytes | None = None) -> TxnAnswer:
        self.calls.append(("txn", txn, idempotency_key))
        self._check()
        if idempotency_key is not None and idempotency_key in self.txn_answers:
            return replace(self.txn_answers[idempotency_key], results=None, duplicate=True)
        succeeded = all(self._holds(c) for c in txn.compare)
        ops = txn.success if succeeded else txn.failure
        for op in ops:
            if op.kind is TxnOpKind.PUT and op.lease and op.lease not in self.lease_table:
                raise LeaseNotFoundError(f"lease {op.lease} not found")
        index = self._next_index()
        results: list[TxnOpResult] = []
        changes: list[Change] = []
        for op in ops:
            kind = op.kind
            if kind is TxnOpKind.PUT:
                change = self._write(op.key, op.value, index, op.lease)
                changes.append(change)
                results.append(
                    TxnOpResult(
                        kind,
                        create_index=change.create_index,
                        mod_index=index,
                        prev_mod_index=change.prev_mod_index,
                    )
                )
            elif kind is TxnOpKind.DELETE:
                removed = self._remove(op.key, index)
                if removed is not None:
                    changes.append(removed)
                prev = removed.prev_mod_index if removed else 0
                results.append(TxnOpResult(kind, found=removed is not None, prev_mod_index=prev))
            elif kind is TxnOpKind.GET:
                kv = self.data.get(op.key)
                results.append(TxnOpResult(kind, found=kv is not None, kv=kv))
            else:
                keys = sorted(k for k in self.data if k.startswith(op.prefix))
                kvs = tuple(self.data[k] for k in keys[: op.limit])
                results.append(TxnOpResult(kind, kvs=kvs, more=len(keys) > op.limit))
        self._commit(changes)
        answer = TxnAnswer(index, succeeded, tuple(results))
        if idempotency_key is not None:
            self.txn_answers[idempotency_key] = answer
        return answer

    # -- leases -----------------------------------------------------------------------

    def advance(self, seconds: float) -> list[int]:
        """Move the lease clock on; expire (as the leader would) what is due. Returns their ids."""
        self.clock += seconds
        due = sorted(i for i, lease in self.lease_table.items() if lease.deadline <= self.clock)
        for lease_id in due:
            self._end_lease(lease_id)
        return due

    def _end_lease(self, lease_id: int) -> None:
        lease = self.lease_table[lease_id]
        index = self._next_index()
        changes = [self._remove(key, index) for key in sorted(lease.keys)]
        del self.lease_table[lease_id]
        self._commit([c for c in changes if c is not None])

    def _lease(self, lease_id: int) -> FakeLease:
        lease = self.lease_table.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError(
                f"lease {lease_id} not found (never granted, revoked or expired)"
            )
        return lease

    async def lease_grant(self, ttl: int, *, idempotency_key: bytes | None = None) -> LeaseInfo:
        self.calls.append(("lease_grant", ttl, idempotency_key))
        self._check()
        if idempotency_key is not None and idempotency_key in self.grant_answers:
            return self.grant_answers[idempotency_key]
        if ttl < 1:
            raise BadRequestError(f"ttl must be at least 1 (got {ttl})")
        index = self._next_index()
        self.lease_table[index] = FakeLease(index, ttl, self.clock + ttl)
        info = self.lease_table[index].info(self.clock)
        if idempotency_key is not None:
            self.grant_answers[idempotency_key] = info
        return info

    async def lease_keepalive(self, lease_id: int) -> LeaseInfo:
        self.calls.append(("lease_keepalive", lease_id))
        self._check()
        lease = self._lease(lease_id)
        self._next_index()
        lease.deadline = self.clock + lease.ttl
        return lease.info(self.clock)

    async def lease_revoke(self, lease_id: int) -> None:
        self.calls.append(("lease_revoke", lease_id))
        self._check()
        self._lease(lease_id)
        self._end_lease(lease_id)

    async def lease_info(
        self, lease_id: int, consistency: Consistency = "linearizable"
    ) -> LeaseInfo:
        self.calls.append(("lease_info", lease_id, consistency))
        self._check()
        return self._lease(lease_id).info(self.clock)

    async def leases(self, consistency: Consistency = "linearizable") -> list[LeaseInfo]:
        self.calls.append(("leases", consistency))
        self._check()
        return [
            replace(self.lease_table[i].info(self.clock), keys=()) for i in sorted(self.lease_table)
        ]

    # -- watch ------------------------------------------------------------------------

    async def watch(
        self,
        *,
        prefix: bytes = b"",
        key: bytes | None = None,
        since: int | None = None,
        prev: bool = True,
    ) -> FakeWatcher:
        self.calls.append(("watch", prefix, key, since, prev))
        self._check()
        if since is None:
            since = self.index  # "now": the fake's read index
        elif since > self.index:
            raise BadRequestError(f"since {since} is after this node's index {self.index}")
        elif since < self.floor:
            raise CompactedError(
                f"the changes after {since} are compacted: the history starts after "
                f"index {self.floor}",
                self.floor,
            )
        if len(self.watchers) >= self.max_watchers:
            raise TooManyRequestsError(f"{len(self.watchers)} watchers (max_watchers)")
        watcher = FakeWatcher(self, prefix, key, since, prev)
        for change in self.history:
            watcher.offer(change)
        self.watchers.append(watcher)
        self.all_watchers.append(watcher)
        return watcher

    def progress(self) -> None:
        """Send every live watcher a ``progress`` event at the current index."""
        for watcher in self.watchers:
            watcher.queue.put_nowait(WatchEvent("progress", self.index))

    def end_watchers(self, data: dict[str, Any]) -> None:
        """End every live watcher with a ``closed`` event carrying ``data``."""
        for watcher in self.watchers:
            watcher.queue.put_nowait(WatchEvent("closed", self.index, data=data))

    async def wait_for_change(
        self,
        *,
        prefix: bytes = b"",
        key: bytes | None = None,
        index: int,
        timeout: float,  # noqa: ASYNC109 - as NodeHandle's
    ) -> None:
        self.calls.append(("wait_for_change", prefix, key, index, timeout))
        self._check()
        if index < self.floor or any(
            c.index > index and _matches(c.key, prefix, key) for c in self.history
        ):
            return
        event = asyncio.Event()
        waiter = (prefix, key, event)
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            self.waiters.remove(waiter)

    # -- locks ------------------------------------------------------------------------

    async def lock(
        self,
        name: bytes,
        lease: int,
        timeout: float,  # noqa: ASYNC109 - as NodeHandle's
    ) -> LockHeld:
        self.calls.append(("lock", name, lease, timeout))
        self._check()
        self._lease(lease)
        own = name + b"/" + f"{lease:016x}".encode()
        made = own not in self.data
        if made:
            index = self._next_index()
            self._commit([self._write(own, b"", index, lease)])
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                mine = self.data.get(own)
                if mine is None:  # its lease ended while it waited
                    raise LeaseNotFoundError(f"lease {lease} ended while waiting for the lock")
                under = sorted(
                    (kv for k, kv in self.data.items() if k.startswith(name + b"/")),
                    key=lambda kv: kv.create_index,
                )
                lower = [kv for kv in under if kv.create_index < mine.create_index]
                if not lower:
                    return LockHeld(own, mine.create_index)
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise RequestTimeoutError(
                        f"lock {name!r} was not acquired within {timeout:g}s (wait)"
                    )
                await self.wait_for_change(key=lower[-1].key, index=self.index, timeout=left)
        except BaseException:
            if made and own in self.data:
                index = self._next_index()
                self._commit([c for c in [self._remove(own, index)] if c is not None])
            raise

    async def unlock(self, name: bytes, lease: int) -> None:
        self.calls.append(("unlock", name, lease))
        self._check()
        own = name + b"/" + f"{lease:016x}".encode()
        if own not in self.data:
            raise LockNotHeldError(f"lease {lease} holds no key of lock {name!r}")
        index = self._next_index()
        self._commit([c for c in [self._remove(own, index)] if c is not None])


def _broken(chunks: Iterator[bytes], after: int) -> Iterator[bytes]:
    for n, chunk in enumerate(chunks):
        if n == after:
            raise SnapshotAbortedError("the fake's state was restored while it was read")
        yield chunk


def _matches(changed: bytes, prefix: bytes, key: bytes | None) -> bool:
    return changed == key if key is not None else changed.startswith(prefix)


def seed_changes(node: FakeNode, writes: Iterable[tuple[bytes, bytes]]) -> None:
    """Put each ``(key, value)`` through the fake's write path, synchronously."""
    for key, value in writes:
        index = node._next_index()
        node._commit([node._write(key, value, index, 0)])


def fail_with(node: FakeNode, exc: NodeError | Exception) -> None:
    """Make ``node``'s next call raise ``exc``."""
    node.fail = exc
