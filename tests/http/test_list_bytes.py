"""``GET /v1/kv`` bounded in bytes (``max_list_bytes``) as well as in keys, and the
cap on large listings built at once."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.http.kv import list_page
from raftdb.kv.commands import KeyValue
from tests.http.conftest import CLUSTER
from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient, error_of


def _client(node: FakeNode, max_list_bytes: int) -> TestClient:
    config = NodeConfig(id=1, cluster=CLUSTER, max_list_bytes=max_list_bytes)
    return TestClient(create_api(node, config))


def _store(node: FakeNode, items: dict[bytes, bytes]) -> None:
    for key, value in items.items():
        node.index += 1
        node.data[key] = KeyValue(key, value, node.index, node.index)


def _pages(client: TestClient, url: str) -> Iterator[tuple[bytes, list[dict[str, Any]]]]:
    """Each page's raw body and entries, following ``Link: rel="next"`` to the end."""
    for _ in range(10_000):
        response = client.get(url)
        assert response.status_code == 200, response.text
        yield response.content, response.json()
        link = response.headers.get("link")
        if link is None:
            return
        assert link.endswith('>; rel="next"')
        url = link[1 : link.index(">")]
    raise AssertionError("the pages never ended")


def _key(entry: dict[str, Any]) -> bytes:
    if entry.get("key_encoding") == "base64":
        return base64.b64decode(entry["key"])
    return str(entry["key"]).encode()


# Keys and values whose JSON is larger than their bytes, each in its own way.
ITEMS = {
    **{b"k/%03d" % i: b"v" * (i % 7) * 10 for i in range(60)},
    b"k/quote": b'"' * 40,  # escaped: twice the bytes
    b"k/control": b"\x01" * 20,  # \u0001: six times
    b"k/\xff-binary": b"\x80" * 30,  # base64
    "k/naïve".encode(): "é".encode() * 20,
}


@pytest.mark.parametrize("values", [True, False])
@pytest.mark.parametrize("max_list_bytes", [200, 333, 1000, 100_000])
@pytest.mark.parametrize("limit", [1, 7, 1000])
def test_pages_stay_within_the_byte_bound_and_cover_every_key_once(
    max_list_bytes: int, limit: int, values: bool
) -> None:
    node = FakeNode()
    _store(node, ITEMS)
    url = f"/v1/kv?prefix=k/&limit={limit}" + ("&values=true" if values else "")
    seen: list[bytes] = []
    with _client(node, max_list_bytes) as client:
        for body, entries in _pages(client, url):
            assert len(entries) <= limit
            assert len(body) <= max_list_bytes or len(entries) == 1
            if entries:
                assert ("value" in entries[0]) == values
            seen += [_key(entry) for entry in entries]
    assert seen == sorted(ITEMS)  # each key once, in order


def test_an_entry_larger_than_the_bound_is_a_page_of_its_own() -> None:
    node = FakeNode()
    _store(node, {b"a": b"x" * 500, b"b": b"y", b"c": b"z" * 500})
    with _client(node, 300) as client:
        pages = [entries for _, entries in _pages(client, "/v1/kv?values=true")]
    assert [[e["key"] for e in page] for page in pages] == [["a"], ["b"], ["c"], []]
    # The last Link led to an empty page: the range had stopped on bytes after "c"
    # alone, so whether more followed was not known (see list_page).


def test_the_node_is_asked_for_a_page_bounded_in_bytes_and_without_values() -> None:
    node = FakeNode()
    _store(node, {b"a": b"x" * 10_000, b"b": b"y" * 10_000})
    with _client(node, 1000) as client:
        keys = client.get("/v1/kv?limit=10").json()
        assert [entry["key"] for entry in keys] == ["a", "b"]  # values do not count
        assert [kv.value for kv in node.range_answers[-1]] == [b"", b""]
        with_values = client.get("/v1/kv?limit=10&values=true")
        assert [entry["key"] for entry in with_values.json()] == ["a"]
        assert len(node.range_answers[-1]) == 1  # the node stopped at the bound
        assert "start=a%00" in with_values.headers["link"]


def test_list_page_is_one_json_document_as_json_response_writes_it() -> None:
    found = [KeyValue(b"k%d" % i, b"v", i, i) for i in range(5)]
    body, after = list_page(found, 10, True, 1 << 20)
    assert after is None
    assert (
        body
        == json.dumps(
            [{"key": f"k{i}", "create_index": i, "mod_index": i, "value": "v"} for i in range(5)],
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    )
    body, after = list_page(found, 4, True, 1 << 20)
    assert (len(json.loads(body)), after) == (4, b"k3\x00")


class _HeldRange(FakeNode):
    """Its ``range`` waits until ``release`` is set (on the TestClient's loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = 0
        self.changed = asyncio.Condition()
        self.release = asyncio.Event()

    async def range(self, *args: Any, **kwargs: Any) -> tuple[list[KeyValue], int]:
        async with self.changed:
            self.entered += 1
            self.changed.notify_all()
        await self.release.wait()
        return await super().range(*args, **kwargs)

    async def wait_entered(self, count: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.entered >= count)


def test_large_listings_beyond_the_cap_are_refused_429_small_ones_are_not() -> None:
    async def body() -> None:
        node = _HeldRange()
        _store(node, {b"a": b"1"})
        config = NodeConfig(id=1, cluster=CLUSTER)
        transport = httpx.ASGITransport(app=create_api(node, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            large = [asyncio.create_task(client.get("/v1/kv?values=true")) for _ in range(8)]
            await node.wait_entered(8)
            refused = await client.get("/v1/kv?limit=1000")
            assert error_of(refused, 429) == "too_many_requests"
            assert "retry-after" in refused.headers
            small = asyncio.create_task(client.get("/v1/kv?limit=10"))
            await node.wait_entered(9)
            node.release.set()
            for answer in await asyncio.gather(*large, small):
                assert answer.status_code == 200
            again = await client.get("/v1/kv?values=true")  # the slots were given back
            assert again.status_code == 200

    asyncio.run(asyncio.wait_for(body(), 30))
