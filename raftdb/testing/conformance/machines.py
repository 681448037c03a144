"""What the state machine checks share: a log builder, one-entry applies, the digest.

Split out of :mod:`raftdb.testing.conformance.state_machine` so that the
checks of transactions, leases and the watch history
(:mod:`raftdb.testing.conformance.watch_leases`) use the same tools.
"""

from __future__ import annotations

from typing import Any

from raftdb.kv.changes import Change, ChangeKind
from raftdb.kv.commands import Command, CommandStatus, KVResult
from raftdb.kv.txn import Compare, Txn, TxnOp
from raftdb.raft.messages import ConfChange, ConfChangeType, Entry, EntryType
from raftdb.testing.conformance.checks import expect, expect_equal

__all__ = ["ALL_HISTORY", "Log", "delete_ok", "digest", "kv_result", "one", "put_ok"]

#: A ``limit`` for ``history()`` that returns the whole retained window.
ALL_HISTORY = 1 << 40


def digest(machine: Any) -> tuple[Any, ...]:
    """Everything a state machine holds, comparable with ``==``.

    The snapshot stream format is canonical (keys, sessions and leases
    sorted, the history in log order), so two machines in the same state
    produce the same bytes; the reads, the leases, the history and the
    membership are compared through the protocol too.
    """
    stream = b"".join(machine.snapshot(chunk_size=1 << 20))
    return (
        machine.applied_index,
        machine.conf_state(),
        machine.members(),
        machine.range(),
        machine.leases(),
        machine.history(0, ALL_HISTORY),
        stream,
    )


class Log:
    """Builds consecutive entries for a check."""

    def __init__(self, index: int = 0, term: int = 1) -> None:
        self.index = index
        self.term = term

    def _next(self, kind: EntryType, data: bytes) -> Entry:
        self.index += 1
        return Entry(self.term, self.index, kind, data)

    def cmd(self, command: Command) -> Entry:
        return self._next(EntryType.NORMAL, command.encode())

    def put(self, key: bytes, value: bytes = b"v", **kw: Any) -> Entry:
        return self.cmd(Command.put(key, value, **kw))

    def delete(self, key: bytes, **kw: Any) -> Entry:
        return self.cmd(Command.delete(key, **kw))

    def txn(
        self,
        compare: tuple[Compare, ...] = (),
        success: tuple[TxnOp, ...] = (),
        failure: tuple[TxnOp, ...] = (),
    ) -> Entry:
        return self.cmd(Command.txn(Txn(compare, success, failure).encode()))

    def grant(self, ttl: int = 10) -> Entry:
        return self.cmd(Command.lease_grant(ttl))

    def keepalive(self, lease: int) -> Entry:
        return self.cmd(Command.lease_keepalive(lease))

    def revoke(self, lease: int) -> Entry:
        return self.cmd(Command.lease_revoke(lease))

    def expire(self, lease: int, renewed_index: int) -> Entry:
        return self.cmd(Command.lease_expire(lease, renewed_index))

    def noop(self) -> Entry:
        return self._next(EntryType.NORMAL, b"")

    def raw(self, data: bytes, kind: EntryType = EntryType.NORMAL) -> Entry:
        return self._next(kind, data)

    def conf(self, kind: ConfChangeType, node_id: int, url: bytes = b"") -> Entry:
        return self._next(EntryType.CONF_CHANGE, ConfChange(kind, node_id, url).encode())


def put_change(index: int, key: bytes, value: bytes, create: int, prev: int) -> Change:
    """The change a put of ``key`` at ``index`` makes."""
    return Change(index, ChangeKind.PUT, key, value, create, index, prev)


def delete_change(index: int, key: bytes, prev: int) -> Change:
    """The change a delete of ``key`` (last written at ``prev``) at ``index`` makes."""
    return Change(index, ChangeKind.DELETE, key, b"", 0, index, prev)


def put_ok(index: int, key: bytes, value: bytes, create: int, prev: int) -> KVResult:
    """The result of a put that succeeded at ``index``, with its change."""
    change = put_change(index, key, value, create, prev)
    return KVResult(index, CommandStatus.OK, create, index, prev, changes=(change,))


def delete_ok(index: int, key: bytes, prev: int) -> KVResult:
    """The result of a delete at ``index`` of a key last written at ``prev``."""
    change = delete_change(index, key, prev)
    return KVResult(index, CommandStatus.OK, 0, index, prev, changes=(change,))


def one(machine: Any, entry: Entry) -> Any:
    """Apply one entry; its one result."""
    results = machine.apply([entry])
    expect_equal(len(results), 1, "number of results for one entry")
    return results[0]


def kv_result(machine: Any, entry: Entry) -> KVResult:
    """Apply one command entry; its result, which must be a KVResult."""
    result = one(machine, entry)
    expect(isinstance(result, KVResult), f"result of a command is {result!r}")
    assert isinstance(result, KVResult)
    return result
