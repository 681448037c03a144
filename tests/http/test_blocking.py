"""Consul-style blocking reads: ``?wait_index=I&wait=30s`` on a key and on a listing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.http.params import DEFAULT_WAIT_S, MAX_WAIT_S, parse_wait
from raftdb.node.errors import BadRequestError
from tests.http.asgi import Call
from tests.http.fake_node import FakeNode, seed_changes
from tests.http.helpers import TestClient, error_of
from tests.http.test_fast_path import fast_app


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


class TestKey:
    def test_answers_once_the_key_changes(self, node: FakeNode, config: NodeConfig) -> None:
        seed_changes(node, [(b"k", b"1"), (b"other", b"x")])

        async def scenario() -> None:
            call = Call(create_api(node, config), "GET", "/v1/kv/k", query=b"wait_index=2&wait=1m")
            await call.until("it waits", lambda: bool(node.waiters))
            assert node.calls[-1] == ("wait_for_change", b"", b"k", 2, 60.0)
            await node.put(b"other", b"y")  # not this key: still waiting
            assert not call.task.done()
            await node.put(b"k", b"2")
            await call.finished()
            assert call.status == 200
            assert call.body == b"2"
            assert call.headers[b"x-raftdb-index"] == b"4"
            assert call.headers[b"etag"] == b'"4"'

        run(scenario)

    def test_answers_at_once_when_it_already_changed(
        self, client: TestClient, node: FakeNode
    ) -> None:
        seed_changes(node, [(b"k", b"1"), (b"k", b"2")])
        response = client.get("/v1/kv/k?wait_index=1")
        assert response.content == b"2"
        assert node.calls[-2] == ("wait_for_change", b"", b"k", 1, DEFAULT_WAIT_S)

    def test_a_deletion_is_a_change(self, node: FakeNode, config: NodeConfig) -> None:
        seed_changes(node, [(b"k", b"1")])

        async def scenario() -> None:
            call = Call(create_api(node, config), "GET", "/v1/kv/k", query=b"wait_index=1")
            await call.until("it waits", lambda: bool(node.waiters))
            await node.delete(b"k")
            await call.finished()
            assert call.status == 404
            assert call.headers[b"x-raftdb-index"] == b"2"

        run(scenario)

    def test_the_wait_ending_answers_what_is_there(
        self, client: TestClient, node: FakeNode
    ) -> None:
        seed_changes(node, [(b"k", b"1")])
        response = client.get("/v1/kv/k?wait_index=1&wait=10ms&consistency=stale")
        assert response.status_code == 200
        assert response.content == b"1"
        assert response.headers["x-raftdb-consistency"] == "stale"
        assert node.waiters == []

    def test_wait_index_0_does_not_wait(self, client: TestClient, node: FakeNode) -> None:
        client.get("/v1/kv/k?wait_index=0&wait=5m")
        assert [c[0] for c in node.calls] == ["get"]

    def test_a_client_that_leaves_ends_the_wait(self, node: FakeNode, config: NodeConfig) -> None:
        async def scenario() -> None:
            call = Call(create_api(node, config), "GET", "/v1/kv/k", query=b"wait_index=5")
            await call.until("it waits", lambda: bool(node.waiters))
            call.disconnect()
            await call.finished()
            assert node.waiters == []
            assert [c[0] for c in node.calls] == ["wait_for_change"]  # no read after it

        run(scenario)

    def test_the_fast_path_leaves_blocking_reads_to_starlette(
        self, node: FakeNode, config: NodeConfig
    ) -> None:
        app, spy = fast_app(node, config)
        client = TestClient(app)  # no lifespan: the spy counts requests only
        client.get("/v1/kv/k?wait_index=0")
        client.get("/k?wait_index=0&wait=1s")
        assert spy.calls == 2
        client.get("/v1/kv/k")
        assert spy.calls == 2


class TestListing:
    def test_answers_once_a_key_under_the_prefix_changes(
        self, node: FakeNode, config: NodeConfig
    ) -> None:
        seed_changes(node, [(b"app/a", b"1")])

        async def scenario() -> None:
            call = Call(
                create_api(node, config),
                "GET",
                "/v1/kv",
                query=b"prefix=app/&wait_index=1&wait=30s&values=true",
            )
            await call.until("it waits", lambda: bool(node.waiters))
            await node.put(b"apple", b"not under app/")
            assert not call.task.done()
            await node.put(b"app/b", b"2")
            await call.finished()
            assert call.status == 200
            assert [e["key"] for e in json.loads(call.body)] == ["app/a", "app/b"]
            assert call.headers[b"x-raftdb-index"] == b"3"

        run(scenario)

    def test_the_prefix_is_what_it_waits_on(self, client: TestClient, node: FakeNode) -> None:
        client.get("/v1/kv?prefix=p/&wait_index=0")
        client.get("/v1/kv?prefix=p/&wait_index=7&wait=1ms")
        assert ("wait_for_change", b"p/", None, 7, 0.001) in node.calls


class TestRefusals:
    @pytest.mark.parametrize("path", ["/v1/kv/k", "/v1/kv", "/k"])
    @pytest.mark.parametrize(
        ("query", "words"),
        [
            ("wait=5s", "wait needs wait_index"),
            ("wait_index=x", "wait_index must be a log index"),
            ("wait_index=-1", "wait_index must be a log index"),
            ("wait_index=1&wait=soon", "wait must be a duration"),
            ("wait_index=1&wait=5h", "wait must be a duration"),
            ("wait_index=1&wait=-1s", "wait must be a duration"),
            ("wait_index=1&wait_index=2", "more than once"),
        ],
    )
    def test_bad_parameters_are_400(
        self, client: TestClient, node: FakeNode, path: str, query: str, words: str
    ) -> None:
        response = client.get(f"{path}?{query}")
        assert error_of(response, 400) == "bad_request"
        assert words in response.json()["message"]
        assert node.calls == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (b"30s", 30.0),
        (b"500ms", 0.5),
        (b"5m", 300.0),
        (b"2.5", 2.5),
        (b"0", 0.0),
        (b"10m", MAX_WAIT_S),
        (b"11m", MAX_WAIT_S),  # cut to the bound, as Consul does
        (b"99999999s", MAX_WAIT_S),
    ],
)
def test_parse_wait(text: bytes, seconds: float) -> None:
    assert parse_wait(text) == seconds


def test_parse_wait_default_and_refusal() -> None:
    assert parse_wait(None) == DEFAULT_WAIT_S == 300.0
    with pytest.raises(BadRequestError):
        parse_wait("３s".encode())
