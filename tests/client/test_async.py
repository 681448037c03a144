"""AsyncClient: the same calls as Client, on asyncio (driven by ``asyncio.run``)."""

from __future__ import annotations

import asyncio

import pytest

from raftdb.client import (
    AsyncClient,
    ConditionFailedError,
    LeaseNotFoundError,
    ProgressEvent,
    Txn,
    TxnGet,
    WatchEvent,
)
from raftdb.testing.ports import free_ports
from tests.client.conftest import endpoints
from tests.integration.harness import ProcessCluster


def test_async_kv_txn_leases(shared: ProcessCluster) -> None:
    async def main() -> None:
        async with AsyncClient(endpoints(shared), timeout=10.0) as c:
            w = await c.put("async/a", b"\x00\xff")
            got = await c.get("async/a")
            assert got is not None
            assert got.value == b"\x00\xff"
            assert got.mod_index == w.index
            with pytest.raises(ConditionFailedError):
                await c.put("async/a", "x", create_only=True)
            for i in range(5):
                await c.put(f"async/l/{i}", str(i))
            keys = [kv.key async for kv in c.list("async/l/", page_size=2)]
            assert keys == [f"async/l/{i}".encode() for i in range(5)]
            t = Txn().compare("async/a", "mod_index", "==", w.index)
            t.success.get("async/a")
            r = await c.txn(t)
            assert r.succeeded
            assert r.results == (TxnGet(True, b"\x00\xff", w.index, w.index),)
            assert (await c.delete("async/a")).existed
            assert await c.get("async/a") is None
            async with c.lease(5) as kept:
                await c.put("async/leased", "v", lease=kept.id)
                info = await c.lease_info(kept.id)
                assert info.keys == (b"async/leased",)
            assert await c.get("async/leased") is None
            with pytest.raises(LeaseNotFoundError):
                await c.lease_keepalive(kept.id)
            assert sorted(m.id for m in await c.members()) == [1, 2, 3]
            assert (await c.status()).id in (1, 2, 3)

    asyncio.run(main())


def test_async_lock_and_watch(shared: ProcessCluster) -> None:
    async def main() -> None:
        async with AsyncClient(endpoints(shared), timeout=10.0) as c:
            async with c.lock("locks/async", ttl=5) as hold:
                t = Txn().compare(hold.key, "create_index", "==", hold.fence)
                t.success.put("async/guarded", "yes")
                assert (await c.txn(t)).succeeded
            async with c.election("elections/async", "me", key="leaders/async") as lead:
                got = await c.get("leaders/async")
                assert got is not None
                assert got.value == b"me"
                assert await lead.proclaim("me again")
            assert await c.get("leaders/async") is None
            assert not await lead.proclaim("deposed")
            first = await c.put("async/w/1", "1")
            second = await c.put("async/w/2", "2")
            seen: list[WatchEvent] = []
            async with c.watch("async/w/", since=first.index - 1, prev=True) as events:
                async for ev in events:
                    assert not isinstance(ev, ProgressEvent)
                    seen.append(ev)
                    if len(seen) == 2:
                        break
            assert [(e.key, e.index) for e in seen] == [
                (b"async/w/1", first.index),
                (b"async/w/2", second.index),
            ]

    asyncio.run(main())


def test_async_fails_over_past_a_dead_endpoint(shared: ProcessCluster) -> None:
    dead = [f"http://127.0.0.1:{p}" for p in free_ports(1)]

    async def main() -> None:
        async with AsyncClient([*dead, *endpoints(shared)], connect_timeout=0.5) as c:
            w = await c.put("async/dead/k", "v")
            async with c.watch(key="async/dead/k", since=w.index - 1) as events:
                ev = await events.__anext__()
                assert isinstance(ev, WatchEvent)
                assert (ev.key, ev.index) == (b"async/dead/k", w.index)

    asyncio.run(main())


def test_async_blocking_list(shared: ProcessCluster) -> None:
    async def main() -> None:
        async with AsyncClient(endpoints(shared), timeout=10.0) as c:
            first = await c.put("ablist/a", "1")
            waiting = asyncio.create_task(c.list_wait("ablist/", first.index, wait=20))
            await c.put("ablist-other/x", "not under the prefix")
            second = await c.put("ablist/b", "2")
            got = await asyncio.wait_for(waiting, 15)
            assert [e.key for e in got.entries] == [b"ablist/a", b"ablist/b"]
            assert got.index >= second.index
            same = await c.list_wait("ablist/", got.index, wait=0.2, page_size=1)
            assert [e.key for e in same.entries] == [b"ablist/a", b"ablist/b"]

    asyncio.run(main())
