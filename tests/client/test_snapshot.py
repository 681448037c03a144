"""``Client.snapshot`` / ``AsyncClient.snapshot``: the body written as it is, what the
headers say, failover before the body starts, and a body cut short reported as such."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Callable, Iterator

import httpx
import pytest

from raftdb.client import (
    AsyncClient,
    Client,
    EndpointsUnavailableError,
    ForbiddenError,
    RaftdbError,
)
from raftdb.kv.snapshot import check_stream
from tests.client.conftest import endpoints
from tests.integration.harness import ProcessCluster

_HEADERS = {
    "content-type": "application/octet-stream",
    "x-raftdb-snapshot-index": "12",
    "x-raftdb-snapshot-term": "3",
    "x-raftdb-snapshot-members": "1=http://a:1,2=http://b%2Cc:2,4=http://d:4",
    "x-raftdb-snapshot-learners": "4",
}


def test_a_snapshot_of_the_cluster(client: Client) -> None:
    last = client.put("snapshot/k", "v").index
    dest = io.BytesIO()
    seen: list[int] = []
    saved = client.snapshot(dest, progress=seen.append)
    data = dest.getvalue()
    info = check_stream([data])
    assert (saved.index, saved.term) == (info.index, info.term)
    assert saved.index >= last
    assert dict(saved.members) == dict(info.members)
    assert saved.learners == ()
    assert saved.size == len(data) == sum(seen)
    assert saved.sha256 == hashlib.sha256(data).hexdigest()
    assert saved.endpoint in client.endpoints


def test_the_async_client_takes_one_too(shared: ProcessCluster) -> None:
    async def scenario() -> None:
        async with AsyncClient(endpoints(shared)) as c:
            last = (await c.put("snapshot/async", "v")).index
            dest = io.BytesIO()
            saved = await c.snapshot(dest)
            assert check_stream([dest.getvalue()]).index == saved.index >= last
            assert saved.size == len(dest.getvalue())

    asyncio.run(scenario())


# -- the policy, over a scripted transport ----------------------------------------------


class _Cut(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"RDBSNAP1..."
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def _scripted(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    c = Client(["http://a:1", "http://b:2"], timeout=3.0)
    c._http = httpx.Client(transport=httpx.MockTransport(handler))
    return c


def test_a_member_without_a_leader_is_passed_over() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        if request.url.host == "a":
            return httpx.Response(
                503,
                json={"error": "unavailable", "message": "no leader"},
                headers={"retry-after": "1"},
            )
        return httpx.Response(200, headers=_HEADERS, content=b"the stream")

    with _scripted(handler) as c:
        dest = io.BytesIO()
        saved = c.snapshot(dest)
    assert asked == ["a", "b"]
    assert dest.getvalue() == b"the stream"
    assert saved.index == 12
    assert saved.term == 3
    assert dict(saved.members) == {1: "http://a:1", 2: "http://b,c:2", 4: "http://d:4"}
    assert saved.learners == (4,)
    assert saved.endpoint == "http://b:2"


def test_a_refusal_is_raised_at_once() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        return httpx.Response(403, json={"error": "forbidden", "message": "needs admin"})

    with _scripted(handler) as c, pytest.raises(ForbiddenError, match="needs admin"):
        c.snapshot(io.BytesIO())
    assert asked == ["a"]


def test_a_body_cut_short_is_not_retried_and_says_so() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        return httpx.Response(200, headers=_HEADERS, stream=_Cut())

    with _scripted(handler) as c, pytest.raises(EndpointsUnavailableError) as caught:
        c.snapshot(io.BytesIO())
    assert asked == ["a"]
    assert "cut off after 11 bytes" in caught.value.message


def test_an_answer_without_snapshot_headers_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>a proxy's page</html>")

    with _scripted(handler) as c, pytest.raises(RaftdbError, match="bad snapshot headers"):
        c.snapshot(io.BytesIO())
