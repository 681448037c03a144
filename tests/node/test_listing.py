"""Listings on a real node: built off the event loop, bounded in bytes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx

from raftdb.http.app import create_api
from raftdb.kv.commands import KeyValue
from raftdb.kv.state_machine import MemoryStateMachine

from .cluster import LocalCluster, eventually


class _GatedRange(MemoryStateMachine):
    """The memory state machine; a ``range`` with values waits while ``open`` is clear."""

    open = threading.Event()
    entered = threading.Event()

    def range(self, *args: Any, **kwargs: Any) -> list[KeyValue]:
        if kwargs.get("values", True) and not _GatedRange.open.is_set():
            _GatedRange.entered.set()
            if not _GatedRange.open.wait(timeout=30):
                raise TimeoutError("the test never opened the gate")
        return super().range(*args, **kwargs)


def gated_range_memory(path: Path | None = None, *, sync: bool = True) -> MemoryStateMachine:
    return _GatedRange(path, sync=sync)


async def _fill(node: Any, count: int, size: int) -> None:
    for i in range(count):
        await node.put(b"k/%04d" % i, b"%04d" % i * (size // 4))


def test_the_event_loop_keeps_serving_while_a_large_listing_is_built(tmp_path: Path) -> None:
    """The state machine's range is held: were the listing read on the loop,
    nothing else would be answered until it returned (the loop would be stuck
    in ``open.wait``). Off the loop, health checks, reads and writes go on, and
    the listing completes once released."""
    _GatedRange.open.set()

    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        await _fill(node, 300, 100)
        transport = httpx.ASGITransport(app=create_api(node, node.config))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            _GatedRange.entered.clear()
            _GatedRange.open.clear()
            listing = asyncio.create_task(client.get("/v1/kv?prefix=k/&values=true&limit=1000"))
            await eventually(_GatedRange.entered.is_set, "the listing to read the state machine")
            assert (await client.get("/healthz")).status_code == 200
            stale = await client.get("/v1/kv/k/0001?consistency=stale")
            assert stale.content == b"0001" * 25
            assert (await client.put("/v1/kv/other", content=b"x")).status_code == 204
            assert (await client.get("/v1/kv/other")).content == b"x"
            assert (await client.get("/readyz")).status_code == 200
            assert not listing.done()
            _GatedRange.open.set()
            answer = await listing
            assert answer.status_code == 200
            entries = answer.json()
            assert [e["key"] for e in entries] == [f"k/{i:04d}" for i in range(300)]
            assert entries[7]["value"] == "0007" * 25

    try:
        LocalCluster(tmp_path, 1, "memory", state_machine=f"{__name__}:gated_range_memory").run(
            body
        )
    finally:
        _GatedRange.open.set()


def test_pages_of_a_real_node_are_bounded_in_bytes_and_cover_every_key(tmp_path: Path) -> None:
    max_list_bytes = 2000

    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        await _fill(node, 120, 40)
        transport = httpx.ASGITransport(app=create_api(node, node.config))
        seen: list[str] = []
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            url: str | None = "/v1/kv?prefix=k/&values=true"
            while url is not None:
                page = await client.get(url)
                assert page.status_code == 200
                assert len(page.content) <= max_list_bytes
                seen += [entry["key"] for entry in page.json()]
                link = page.headers.get("link")
                url = link[1 : link.index(">")] if link else None
        assert seen == [f"k/{i:04d}" for i in range(120)]

    LocalCluster(tmp_path, 1, "leveldb", max_list_bytes=max_list_bytes).run(body)
