"""An in-memory :class:`~raftdb.node.handle.NodeHandle` for API tests.

A real little key-value store: every write takes the next log index, keys
keep ``create_index``/``mod_index``, conditions and idempotency keys behave as
the node's do, and membership changes are checked. Tests set ``fail`` to make
the next node call raise, and read ``calls`` to see what the API asked for.
"""

from __future__ import annotations

from dataclasses import replace

from raftdb.kv.commands import KeyValue
from raftdb.node.errors import BadRequestError, ConditionFailedError, MemberNotFoundError, NodeError
from raftdb.node.handle import Consistency, Member, NodeStatus, WriteResult

METRICS = """\
# HELP raftdb_term The current Raft term.
# TYPE raftdb_term gauge
raftdb_term 3.0
"""


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

    def last(self) -> tuple[object, ...]:
        """The last call the API made."""
        return self.calls[-1]

    # -- lifecycle (what raftdb.app uses) ------------------------------------------

    async def start(self) -> None:
        self._check()
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

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
    ) -> WriteResult:
        self.calls.append(("put", key, value, if_match, if_none_match, idempotency_key))
        self._check()
        if idempotency_key is not None and idempotency_key in self.answers:
            return replace(self.answers[idempotency_key], duplicate=True)
        old = self.data.get(key)
        mod = old.mod_index if old else 0
        if if_none_match and old is not None:
            raise ConditionFailedError(f"key {key!r} exists (index {mod})", mod)
        if if_match is not None and if_match != mod:
            raise ConditionFailedError(f"key {key!r} is at index {mod}, not {if_match}", mod)
        index = self._next_index()
        self.data[key] = KeyValue(key, value, old.create_index if old else index, index)
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
        if idempotency_key is not None and idempotency_key in self.answers:
            return replace(self.answers[idempotency_key], duplicate=True)
        old = self.data.get(key)
        mod = old.mod_index if old else 0
        if if_match is not None and if_match != mod:
            raise ConditionFailedError(f"key {key!r} is at index {mod}, not {if_match}", mod)
        index = self._next_index()
        self.data.pop(key, None)
        result = WriteResult(index, old is not None)
        if idempotency_key is not None:
            self.answers[idempotency_key] = result
        return result

    async def get(
        self, key: bytes, consistency: Consistency = "linearizable"
    ) -> tuple[KeyValue | None, int]:
        self.calls.append(("get", key, consistency))
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

    def is_ready(self) -> bool:
        return self.ready

    def metrics_text(self) -> str:
        return METRICS


def fail_with(node: FakeNode, exc: NodeError | Exception) -> None:
    """Make ``node``'s next call raise ``exc``."""
    node.fail = exc
