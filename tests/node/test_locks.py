"""Locks on leases through real in-process nodes: exclusion, fences, time-outs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp
from raftdb.node import Node
from raftdb.node.errors import (
    BadRequestError,
    LeaseNotFoundError,
    LockNotHeldError,
    RequestTimeoutError,
)
from raftdb.node.locks import lock_key

from .cluster import LocalCluster, eventually


async def queued(node: Node, name: bytes) -> list[bytes]:
    keys, _ = await node.range(name + b"/", values=False)
    return [kv.key for kv in keys]


def guarded_write(key: bytes, fence: int, value: bytes) -> Txn:
    """A write that only a holder of the lock with this fence may make."""
    return Txn(
        compare=(Compare(key, Target.CREATE_INDEX, CmpOp.EQ, fence),),
        success=(TxnOp.put(b"resource", value),),
    )


def test_two_holders_exclude_each_other_and_fences_increase(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        a, b = c.nodes[1], c.nodes[2]
        lease_a = (await a.lease_grant(60)).id
        lease_b = (await b.lease_grant(60)).id
        held_a = await a.lock(b"job", lease_a, timeout=5)
        assert held_a.key == lock_key(b"job", lease_a) == b"job/" + f"{lease_a:016x}".encode()
        assert (await a.txn(guarded_write(held_a.key, held_a.fence, b"a"))).succeeded
        waiting = asyncio.create_task(b.lock(b"job", lease_b, timeout=10))
        await eventually(lambda: b._hub.count > 0, "b watching the key before its own")
        assert await queued(c.nodes[3], b"job") == sorted([held_a.key, lock_key(b"job", lease_b)])
        assert not waiting.done()  # a holds it: b waits
        # Re-entry with the same lease: the same place, the same fence.
        again = await c.nodes[3].lock(b"job", lease_a, timeout=1)
        assert again == held_a
        await a.unlock(b"job", lease_a)
        held_b = await asyncio.wait_for(waiting, 5)
        assert held_b.fence > held_a.fence
        # The former holder's fenced write fails; the new holder's succeeds.
        assert not (await a.txn(guarded_write(held_a.key, held_a.fence, b"late a"))).succeeded
        assert (await b.txn(guarded_write(held_b.key, held_b.fence, b"b"))).succeeded
        kv, _ = await c.nodes[3].get(b"resource")
        assert kv is not None
        assert kv.value == b"b"
        with pytest.raises(LockNotHeldError):
            await a.unlock(b"job", lease_a)

    LocalCluster(tmp_path, 3, "memory").run(body)


def test_a_lock_not_acquired_in_time_leaves_no_key(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        node = c.nodes[2]
        holder = (await node.lease_grant(60)).id
        other = (await node.lease_grant(60)).id
        await node.lock(b"l", holder, timeout=1)
        with pytest.raises(RequestTimeoutError, match="not acquired in time"):
            await node.lock(b"l", other, timeout=0.2)
        assert await queued(node, b"l") == [lock_key(b"l", holder)]
        assert node._hub.count == 0  # its watcher is closed

    LocalCluster(tmp_path, 3, "memory").run(body)


def test_revoking_the_holders_lease_passes_the_lock_on(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        node = c.nodes[3]
        first = (await node.lease_grant(60)).id
        second = (await node.lease_grant(60)).id
        held = await node.lock(b"l", first, timeout=1)
        waiting = asyncio.create_task(c.nodes[1].lock(b"l", second, timeout=10))
        await eventually(lambda: c.nodes[1]._hub.count > 0, "waiting for the lock")
        await c.nodes[2].lease_revoke(first)
        now = await asyncio.wait_for(waiting, 5)
        assert now.fence > held.fence
        with pytest.raises(LeaseNotFoundError):
            await node.lock(b"l", first, timeout=1)

    LocalCluster(tmp_path, 3, "memory").run(body)


def test_bad_lock_requests_are_refused(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        lease = (await node.lease_grant(60)).id
        with pytest.raises(BadRequestError):
            await node.lock(b"", lease, timeout=1)
        with pytest.raises(BadRequestError):
            await node.lock(b"l", lease, timeout=-1)
        with pytest.raises(BadRequestError):
            await node.lock(b"l", 0, timeout=1)
        with pytest.raises(LockNotHeldError):
            await node.unlock(b"l", lease)

    LocalCluster(tmp_path, 3, "memory").run(body)
