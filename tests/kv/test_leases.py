"""Leases in the Applier: grant, attach and detach keys, keep-alive, revoke, expire; sessions."""

from __future__ import annotations

import msgpack
import pytest

from raftdb.kv.applier import Applier
from raftdb.kv.changes import Lease
from raftdb.kv.commands import Command, CommandStatus, InvalidCommandError, KeyValue, KVResult
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp, TxnResult
from raftdb.raft.messages import ConfState
from tests.kv.machine import Log, delete_change, one, put_change
from tests.kv.test_commands import DictBackend

OK, NOT_FOUND = CommandStatus.OK, CommandStatus.LEASE_NOT_FOUND


def test_a_grant_names_the_lease_by_its_index() -> None:
    m, log = MemoryStateMachine(), Log()
    m.apply([log.noop(), log.put(b"k")])
    entry = log.grant(30)
    result = one(m, entry)
    assert result == KVResult(entry.index, OK, lease=entry.index, ttl=30)
    assert m.lease(entry.index) == Lease(entry.index, 30, entry.index, frozenset())
    assert m.lease(entry.index + 1) is None
    second = one(m, log.grant(5))
    assert [lease.id for lease in m.leases()] == [entry.index, second.lease]


def test_a_grant_out_of_range_is_invalid() -> None:
    for ttl in (0, 9_000_000_001):
        with pytest.raises(InvalidCommandError, match="ttl"):
            Command.lease_grant(ttl)
    m, log = MemoryStateMachine(), Log()
    fields = [2, 4, b"", b"", None, None, 0, 0, 0, 0]
    result = one(m, log.raw(msgpack.packb(fields, use_bin_type=True)))
    assert result.status == CommandStatus.INVALID
    assert m.leases() == []


def test_put_with_a_lease_attaches_and_a_plain_put_or_delete_detaches() -> None:
    m, log = MemoryStateMachine(), Log()
    a = one(m, log.grant()).lease
    b = one(m, log.grant()).lease
    attached = log.put(b"k", b"1", lease=a)
    result = one(m, attached)
    assert result == KVResult(
        attached.index,
        OK,
        attached.index,
        attached.index,
        0,
        changes=(put_change(attached.index, b"k", b"1", attached.index, 0),),
        lease=a,
    )
    one(m, log.put(b"j", b"1", lease=a))
    assert m.lease(a).keys == {b"k", b"j"}  # type: ignore[union-attr]
    one(m, log.put(b"k", b"2", lease=a))  # same lease again: nothing moves
    assert m.lease(a).keys == {b"k", b"j"}  # type: ignore[union-attr]
    one(m, log.put(b"k", b"3", lease=b))  # moves to b
    assert (m.lease(a).keys, m.lease(b).keys) == ({b"j"}, {b"k"})  # type: ignore[union-attr]
    one(m, log.put(b"k", b"4"))  # a put without a lease leaves it (etcd)
    assert m.lease(b).keys == frozenset()  # type: ignore[union-attr]
    one(m, log.delete(b"j"))
    assert m.lease(a).keys == frozenset()  # type: ignore[union-attr]
    # The leases themselves stay until revoked or expired.
    assert [lease.id for lease in m.leases()] == [a, b]
    # Revoking a lease now deletes nothing: its keys left it.
    assert one(m, log.revoke(a)).changes == ()
    assert m.get(b"k") == KeyValue(b"k", b"4", attached.index, log.index - 2)


def test_a_put_naming_an_unknown_lease_changes_nothing() -> None:
    m, log = MemoryStateMachine(), Log()
    lease = one(m, log.grant()).lease
    m.apply([log.put(b"k", b"1", lease=lease)])
    entry = log.put(b"k", b"2", lease=99)
    result = one(m, entry)
    assert result == KVResult(
        entry.index, NOT_FOUND, 2, 2, 2, message="lease 99 not found", lease=99
    )
    assert m.get(b"k") == KeyValue(b"k", b"1", 2, 2)
    assert m.lease(lease).keys == {b"k"}  # type: ignore[union-attr]
    assert one(m, log.put(b"new", b"x", lease=99)).status == NOT_FOUND
    assert m.get(b"new") is None
    # The condition is checked first.
    failed = one(m, log.put(b"k", b"3", if_mod=1, lease=99))
    assert failed.status == CommandStatus.CONDITION_FAILED


def test_keepalive_renews_and_unknown_leases_are_not_found() -> None:
    m, log = MemoryStateMachine(), Log()
    lease = one(m, log.grant(7)).lease
    m.apply([log.put(b"k", lease=lease)])
    entry = log.keepalive(lease)
    assert one(m, entry) == KVResult(entry.index, OK, lease=lease, ttl=7)
    assert m.lease(lease) == Lease(lease, 7, entry.index, frozenset({b"k"}))
    for unknown in (log.keepalive(99), log.revoke(99), log.expire(99, 1)):
        result = one(m, unknown)
        assert (result.status, result.lease, result.changes) == (NOT_FOUND, 99, ())
    assert m.lease(lease) == Lease(lease, 7, entry.index, frozenset({b"k"}))


def test_revoke_deletes_the_keys_in_key_order_at_its_index() -> None:
    m, log = MemoryStateMachine(), Log()
    lease = one(m, log.grant()).lease
    m.apply([log.put(k, b"x", lease=lease) for k in (b"c", b"a", b"b")] + [log.put(b"other")])
    m.apply([log.put(b"a", b"y", lease=lease)])  # a is now at 6
    entry = log.revoke(lease)
    result = one(m, entry)
    i = entry.index
    assert result.status == OK
    assert result.changes == (
        delete_change(i, b"a", 6),
        delete_change(i, b"b", 4),
        delete_change(i, b"c", 2),
    )
    assert [kv.key for kv in m.range()] == [b"other"]
    assert m.lease(lease) is None
    assert m.leases() == []
    assert m.history(i - 1, 1) == (0, list(result.changes))
    assert one(m, log.revoke(lease)).status == NOT_FOUND


def test_expire_does_nothing_if_the_lease_was_renewed_since() -> None:
    m, log = MemoryStateMachine(), Log()
    lease = one(m, log.grant()).lease
    m.apply([log.put(b"k", lease=lease)])
    renewal = log.keepalive(lease)
    m.apply([renewal])
    stale = one(m, log.expire(lease, lease))  # the leader saw the grant expire
    assert stale.status == CommandStatus.CONDITION_FAILED
    assert stale.changes == ()
    assert "renewed" in stale.message
    assert m.get(b"k") is not None
    assert m.lease(lease) is not None
    entry = log.expire(lease, renewal.index)
    expired = one(m, entry)
    assert expired.status == OK
    assert expired.changes == (delete_change(entry.index, b"k", 2),)
    assert m.get(b"k") is None
    assert m.lease(lease) is None


def test_transactions_attach_and_detach_keys() -> None:
    m, log = MemoryStateMachine(), Log()
    lease = one(m, log.grant()).lease
    m.apply([log.put(b"d", lease=lease), log.put(b"p", lease=lease)])
    one(
        m,
        log.txn(
            success=(
                TxnOp.put(b"n", b"1", lease=lease),
                TxnOp.put(b"p", b"2"),  # without a lease: leaves it
                TxnOp.delete(b"d"),
            )
        ),
    )
    assert m.lease(lease).keys == {b"n"}  # type: ignore[union-attr]
    result = one(m, log.revoke(lease))
    assert [c.key for c in result.changes] == [b"n"]
    assert m.get(b"p") is not None


def test_the_batch_reports_each_lease_it_changed_once_by_id() -> None:
    applier, backend = Applier(), DictBackend()
    log = Log()
    first = applier.apply([log.grant(), log.grant(), log.put(b"k", lease=1)], backend)
    assert first.leases == {1: Lease(1, 10, 1, frozenset({b"k"})), 2: Lease(2, 10, 2, frozenset())}
    second = applier.apply(
        [log.grant(), log.revoke(4), log.put(b"j", lease=2), log.keepalive(1), log.revoke(1)],
        backend,
    )
    # Lease 4 was granted and revoked within the batch: never seen, not reported.
    assert second.leases == {1: None, 2: Lease(2, 10, 2, frozenset({b"j"}))}
    assert list(second.leases) == sorted(second.leases)
    assert applier.leases() == [Lease(2, 10, 2, frozenset({b"j"}))]
    assert applier.apply([log.noop()], backend).leases == {}


def test_reset_restores_leases_and_refuses_inconsistent_ones() -> None:
    applier, backend = Applier(), DictBackend()
    backend.data = {b"a": (b"1", 3, 3), b"b": (b"2", 4, 4)}
    leases = [Lease(2, 5, 2, frozenset({b"a"})), Lease(1, 5, 3, frozenset({b"b"}))]
    applier.reset(10, 1, ConfState((1,)), {}, [], leases=leases)
    assert applier.leases() == sorted(leases, key=lambda x: x.id)
    log = Log(10)
    out = applier.apply([log.revoke(2), log.put(b"b", b"3")], backend)
    assert [c.key for c in out.changes] == [b"a", b"b"]
    assert out.leases == {1: Lease(1, 5, 3, frozenset()), 2: None}
    bad = [
        (
            [Lease(1, 5, 1, frozenset({b"a"})), Lease(2, 5, 2, frozenset({b"a"}))],
            "on leases 1 and 2",
        ),
        ([Lease(11, 5, 11, frozenset())], "later than 10"),
        ([Lease(1, 5, 1, frozenset()), Lease(1, 5, 1, frozenset())], "repeated"),
    ]
    for leases, message in bad:
        with pytest.raises(ValueError, match=message):
            applier.reset(10, 1, ConfState((1,)), {}, [], leases=leases)
    assert applier.applied_index == 12  # nothing changed by a refused reset


# -- sessions ------------------------------------------------------------------------


def test_a_retried_transaction_is_answered_from_its_session() -> None:
    m, log = MemoryStateMachine(), Log()
    m.apply([log.put(b"a", b"1")])
    txn = Command.txn(_txn_value()).with_session(b"c", 1, 0)
    first = log.cmd(txn)
    result = one(m, first)
    assert result.status == OK
    assert result.txn is not None
    assert result.txn.succeeded
    m.apply([log.put(b"a", b"other")])
    retry = one(m, log.raw(first.data))
    assert retry == KVResult(
        retry.index, OK, 0, first.index, 0, duplicate=True, txn=TxnResult(True, ())
    )
    assert m.get(b"b") == KeyValue(b"b", b"2", first.index, first.index)  # not applied twice
    # A failed-compare transaction remembers that it failed.
    failing = log.cmd(Command.txn(_txn_value(expect=b"nope")).with_session(b"c", 2, 0))
    failed = one(m, failing).txn
    assert failed is not None
    assert not failed.succeeded
    again = one(m, log.raw(failing.data))
    assert (again.duplicate, again.txn, again.mod_index) == (
        True,
        TxnResult(False, ()),
        failing.index,
    )
    # An invalid one too.
    invalid = log.cmd(Command.txn(b"\x93\x90\x90").with_session(b"c", 3, 0))
    assert one(m, invalid).status == CommandStatus.INVALID
    repeated = one(m, log.raw(invalid.data))
    assert (repeated.status, repeated.duplicate, repeated.txn) == (
        CommandStatus.INVALID,
        True,
        None,
    )


def _txn_value(expect: bytes = b"1") -> bytes:
    compare = (Compare(b"a", Target.VALUE, CmpOp.EQ, expect),)
    return Txn(compare, (TxnOp.put(b"b", b"2"),), (TxnOp.get(b"a"),)).encode()


def test_a_retried_grant_returns_the_first_lease() -> None:
    m, log = MemoryStateMachine(), Log()
    first = log.cmd(Command.lease_grant(20).with_session(b"c", 1, 0))
    granted = one(m, first)
    assert (granted.lease, granted.ttl) == (first.index, 20)
    retry = one(m, log.raw(first.data))
    assert retry == KVResult(retry.index, OK, duplicate=True, lease=first.index, ttl=20)
    assert [lease.id for lease in m.leases()] == [first.index]  # one lease, not two
    keepalive = log.cmd(Command.lease_keepalive(first.index).with_session(b"c", 2, 1))
    assert one(m, keepalive).ttl == 20
    again = one(m, log.raw(keepalive.data))
    assert (again.duplicate, again.lease, again.ttl) == (True, first.index, 20)
    assert m.lease(first.index).renewed_index == keepalive.index  # type: ignore[union-attr]
    missing = log.cmd(Command.lease_revoke(99).with_session(b"c", 3, 2))
    assert one(m, missing).status == NOT_FOUND
    assert one(m, log.raw(missing.data)).status == NOT_FOUND
