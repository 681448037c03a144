"""Helpers for the kv tests: a log builder and one-entry applies on a MemoryStateMachine."""

from __future__ import annotations

from raftdb.kv.changes import Change, ChangeKind
from raftdb.kv.commands import Command, KVResult
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.kv.txn import Compare, Txn, TxnOp
from raftdb.raft.messages import Entry, EntryType

PUT, DELETE = ChangeKind.PUT, ChangeKind.DELETE


class Log:
    """Consecutive entries, built one at a time."""

    def __init__(self, index: int = 0, term: int = 1) -> None:
        self.index = index
        self.term = term

    def raw(self, data: bytes) -> Entry:
        self.index += 1
        return Entry(self.term, self.index, EntryType.NORMAL, data)

    def cmd(self, command: Command) -> Entry:
        return self.raw(command.encode())

    def noop(self) -> Entry:
        return self.raw(b"")

    def put(self, key: bytes, value: bytes = b"v", **kw: object) -> Entry:
        return self.cmd(Command.put(key, value, **kw))  # type: ignore[arg-type]

    def delete(self, key: bytes, **kw: object) -> Entry:
        return self.cmd(Command.delete(key, **kw))  # type: ignore[arg-type]

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


def one(machine: MemoryStateMachine, entry: Entry) -> KVResult:
    """Apply one entry; its result, which must be a KVResult."""
    (result,) = machine.apply([entry])
    assert isinstance(result, KVResult), result
    return result


def put_change(index: int, key: bytes, value: bytes, create: int, prev: int) -> Change:
    return Change(index, PUT, key, value, create, index, prev)


def delete_change(index: int, key: bytes, prev: int) -> Change:
    return Change(index, DELETE, key, b"", 0, index, prev)
