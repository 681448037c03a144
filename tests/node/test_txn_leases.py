"""Transactions and leases through real in-process nodes (3 members, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from raftdb.kv.changes import ChangeKind
from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp, TxnOpKind
from raftdb.node import Node
from raftdb.node.errors import BadRequestError, LeaseNotFoundError
from raftdb.node.handle import WatchEvent

from .cluster import LocalCluster, eventually


def cluster(tmp_path: Path) -> LocalCluster:
    return LocalCluster(tmp_path, 3, "memory")


def follower(c: LocalCluster) -> Node:
    leader = c.leader()
    assert leader is not None
    return next(n for n in c.nodes.values() if n is not leader)


async def value(node: Node, key: bytes) -> bytes | None:
    kv, _ = await node.get(key)
    return None if kv is None else kv.value


def test_a_transaction_through_a_follower_runs_one_branch_atomically(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        node = follower(c)
        await node.put(b"acct/a", b"10")
        txn = Txn(
            compare=(
                Compare(b"acct/a", Target.VALUE, CmpOp.EQ, b"10"),
                Compare(b"acct/b", Target.EXISTS, CmpOp.EQ, False),
            ),
            success=(
                TxnOp.put(b"acct/a", b"7"),
                TxnOp.put(b"acct/b", b"3"),
                TxnOp.get(b"acct/a"),
                TxnOp.list(b"acct/"),
            ),
            failure=(TxnOp.get(b"acct/a"),),
        )
        answer = await node.txn(txn)
        assert answer.succeeded
        assert not answer.duplicate
        assert answer.results is not None
        put_a, put_b, get_a, listing = answer.results
        assert (put_a.kind, put_a.mod_index, put_a.prev_mod_index > 0) == (
            TxnOpKind.PUT,
            answer.index,
            True,
        )
        assert put_b.create_index == answer.index
        assert get_a.found
        assert get_a.kv is not None
        assert get_a.kv.value == b"7"  # sees the branch's earlier put
        assert [kv.key for kv in listing.kvs] == [b"acct/a", b"acct/b"]
        for other in c.nodes.values():
            assert await value(other, b"acct/a") == b"7"
            assert await value(other, b"acct/b") == b"3"
        again = await node.txn(txn)  # the compare no longer holds
        assert not again.succeeded
        assert again.results is not None
        (get_again,) = again.results
        assert get_again.kv is not None
        assert get_again.kv.value == b"7"
        assert again.index > answer.index

    cluster(tmp_path).run(body)


def test_an_idempotent_transaction_retry_is_applied_once(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        txn = Txn(success=(TxnOp.put(b"k", b"first"),))
        first = await c.nodes[1].txn(txn, idempotency_key=b"txn-1")
        await c.nodes[2].put(b"k", b"later")
        retry = await c.nodes[3].txn(txn, idempotency_key=b"txn-1")
        assert retry.duplicate
        assert (retry.index, retry.succeeded, retry.results) == (first.index, True, None)
        assert await value(c.nodes[1], b"k") == b"later"  # not applied again

    cluster(tmp_path).run(body)


def test_unknown_leases_and_short_ttls_are_refused(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        node = follower(c)
        with pytest.raises(LeaseNotFoundError, match="lease 999 does not exist"):
            await node.put(b"k", b"v", lease=999)
        txn = Txn(success=(TxnOp.put(b"a", b"1"), TxnOp.put(b"b", b"2", lease=999)))
        with pytest.raises(LeaseNotFoundError, match="transaction"):
            await node.txn(txn)
        assert await value(node, b"a") is None  # nothing of it was applied
        assert node.config.min_lease_ttl == 2
        with pytest.raises(BadRequestError, match="at least 2 seconds"):
            await node.lease_grant(1)
        with pytest.raises(BadRequestError, match="whole number"):
            await node.lease_grant(2.5)  # type: ignore[arg-type]
        for call in (node.lease_keepalive, node.lease_revoke, node.lease_info):
            with pytest.raises(LeaseNotFoundError):
                await call(999)
        with pytest.raises(BadRequestError, match="lease id"):
            await node.lease_keepalive(0)

    cluster(tmp_path).run(body)


def test_a_lease_retry_with_the_same_key_grants_once(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        first = await c.nodes[1].lease_grant(30, idempotency_key=b"grant-1")
        retry = await c.nodes[2].lease_grant(30, idempotency_key=b"grant-1")
        assert (retry.id, retry.ttl) == (first.id, 30)
        assert [lease.id for lease in await c.nodes[3].leases()] == [first.id]

    cluster(tmp_path).run(body)


def test_lease_info_on_every_member_and_revoke_deletes_keys_seen_by_watchers(
    tmp_path: Path,
) -> None:
    async def body(c: LocalCluster) -> None:
        node = follower(c)
        lease = await node.lease_grant(60)
        assert lease.ttl == 60
        assert 0 < lease.remaining <= 60
        for key in (b"svc/b", b"svc/a", b"svc/c"):
            await node.put(key, b"up", lease=lease.id)
        await node.put(b"svc/c", b"no lease")  # a put without lease detaches
        for member in c.nodes.values():
            info = await member.lease_info(lease.id)
            assert info.keys == (b"svc/a", b"svc/b")
            assert 0 < info.remaining <= 60
        listed = await c.nodes[1].leases()
        assert [(i.id, i.ttl, i.keys) for i in listed] == [(lease.id, 60, ())]
        watchers = [await member.watch(prefix=b"svc/") for member in c.nodes.values()]
        await c.nodes[1].lease_revoke(lease.id)
        for watcher in watchers:
            events = [await asyncio.wait_for(anext(watcher), 5) for _ in range(2)]
            assert [(e.kind, e.change.key if e.change else b"") for e in events] == [
                ("delete", b"svc/a"),
                ("delete", b"svc/b"),
            ]
            assert events[0].index == events[1].index  # one entry
            await watcher.aclose()
        assert await value(node, b"svc/a") is None
        assert await value(node, b"svc/c") == b"no lease"
        with pytest.raises(LeaseNotFoundError):
            await node.lease_info(lease.id)

    cluster(tmp_path).run(body)


async def keep_alive(node: Node, lease_id: int, every: float) -> None:
    """Keep ``lease_id`` alive through ``node`` until cancelled (errors retried)."""
    while True:
        with contextlib.suppress(Exception):
            await node.lease_keepalive(lease_id)
        await asyncio.sleep(every)


def test_leases_expire_unless_kept_alive_also_across_leader_changes(tmp_path: Path) -> None:
    """A lease not kept alive expires (its keys deleted, watchers see it); one kept
    alive survives two leadership transfers (each new leader gives a fresh TTL)."""

    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        kept = await node.lease_grant(2)
        left = await node.lease_grant(2)
        await node.put(b"kept", b"1", lease=kept.id)
        await node.put(b"left", b"1", lease=left.id)
        watcher = await c.nodes[2].watch(key=b"left")
        keeper = asyncio.create_task(keep_alive(c.nodes[3], kept.id, 0.3))
        try:
            event: WatchEvent = await asyncio.wait_for(anext(watcher), 15)
            assert event.kind == "delete"
            assert event.change is not None
            assert event.change.kind == ChangeKind.DELETE
            for member in c.nodes.values():
                await eventually(
                    lambda m=member: m._sm is not None and m._sm.lease(left.id) is None,  # type: ignore[misc]
                    "the expired lease gone on every member",
                )
                assert await value(member, b"left") is None
            assert node.metrics.lease_expiries._value.get() >= 1
            # Two leader changes while the other lease is kept alive.
            for _ in range(2):
                leader = c.leader()
                assert leader is not None
                target = next(i for i in c.nodes if i != leader.id)
                await leader.transfer_leader(target)
                await eventually(lambda t=target: c.nodes[t]._leases.is_leader, "new keeper")  # type: ignore[misc]
                info = await c.nodes[target].lease_info(kept.id)
                assert info.remaining > 0
            for member in c.nodes.values():
                assert await value(member, b"kept") == b"1"
                assert (await member.lease_info(kept.id)).keys == (b"kept",)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await watcher.aclose()
        # Not kept alive any more: it expires too.
        await eventually(
            lambda: c.nodes[1]._sm is not None and c.nodes[1]._sm.get(b"kept") is None,
            "the lease no longer kept alive expired",
            within=15,
        )

    cluster(tmp_path).run(body)
