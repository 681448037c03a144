"""``GET /v1/watch``: the event stream, resumption, the errors before it, and disconnects.

The stream tests drive the app by hand on their own loop (tests.http.asgi),
since a watch never completes; one test runs it behind a real uvicorn server
and follows it with an HTTP client, as ``curl -N`` would.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import Message

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.http.watch import EventStream, event_bytes
from raftdb.kv.changes import Change, ChangeKind
from raftdb.kv.commands import KeyValue
from raftdb.kv.txn import Txn, TxnOp
from raftdb.node.errors import ServiceUnavailableError, TooManyRequestsError
from raftdb.node.handle import WatchEvent
from tests.http.asgi import DEADLINE_S, Call, eventually
from tests.http.fake_node import FakeNode, fail_with, seed_changes
from tests.http.helpers import TestClient, error_of


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def put_event(index: int, key: bytes, value: bytes, create: int, prev: int = 0) -> WatchEvent:
    change = Change(index, ChangeKind.PUT, key, value, create, index, prev)
    return WatchEvent("put", index, change)


class TestEventFormat:
    def test_a_put(self) -> None:
        assert event_bytes(put_event(57, b"app/a", b"2", 12, 40), prev=False) == (
            b'id: 57\nevent: put\ndata: {"key":"app/a","value_b64":"Mg==","value":"2",'
            b'"create_index":12,"mod_index":57}\n\n'
        )

    def test_a_delete(self) -> None:
        change = Change(9, ChangeKind.DELETE, b"k", b"", 0, 9, 4)
        assert event_bytes(WatchEvent("delete", 9, change), prev=False) == (
            b'id: 9\nevent: delete\ndata: {"key":"k","value_b64":"","value":"",'
            b'"create_index":0,"mod_index":9}\n\n'
        )

    def test_binary_key_and_value_are_base64(self) -> None:
        event = put_event(3, b"\xff", b"\x00\xff", 3)
        data = json.loads(event_bytes(event, prev=False).split(b"data: ")[1])
        assert data == {"key_b64": "/w==", "value_b64": "AP8=", "create_index": 3, "mod_index": 3}

    def test_prev_adds_the_previous_value_when_known(self) -> None:
        change = Change(8, ChangeKind.PUT, b"k", b"new", 2, 8, 5)
        known = WatchEvent("put", 8, change, KeyValue(b"k", b"old", 2, 5))
        data = json.loads(event_bytes(known, prev=True).split(b"data: ")[1])
        assert data["prev_mod_index"] == 5
        assert data["prev_value"] == "old"
        assert data["prev_value_b64"] == "b2xk"
        unknown = json.loads(
            event_bytes(WatchEvent("put", 8, change), prev=True).split(b"data: ")[1]
        )
        assert unknown["prev_mod_index"] == 5
        assert "prev_value_b64" not in unknown
        without = json.loads(event_bytes(known, prev=False).split(b"data: ")[1])
        assert "prev_mod_index" not in without

    def test_progress_and_closed(self) -> None:
        assert event_bytes(WatchEvent("progress", 12), prev=False) == (
            b'id: 12\nevent: progress\ndata: {"applied_index":12}\n\n'
        )
        closed = WatchEvent("closed", 12, data={"error": "watcher_too_slow", "since": 12})
        assert event_bytes(closed, prev=False) == (
            b'event: closed\ndata: {"error":"watcher_too_slow","since":12}\n\n'
        )

    def test_a_value_with_newlines_stays_on_one_data_line(self) -> None:
        body = event_bytes(put_event(1, b"a\nb", b"x\r\ny", 1), prev=False)
        assert body.count(b"\n") == 4  # id, event, data, blank line


def _app(node: FakeNode, config: NodeConfig) -> Any:
    return create_api(node, config)


class TestStream:
    def test_catch_up_then_live_then_disconnect(self, node: FakeNode, config: NodeConfig) -> None:
        seed_changes(node, [(b"app/a", b"1"), (b"other", b"x"), (b"app/b", b"2")])

        async def scenario() -> None:
            call = Call(_app(node, config), "GET", "/v1/watch", query=b"prefix=app/&since=0")
            events = await call.events(2)
            assert call.status == 200
            assert call.headers[b"content-type"] == b"text/event-stream; charset=utf-8"
            assert call.headers[b"cache-control"] == b"no-cache"
            assert b"content-length" not in call.headers
            assert [(e["id"], e["event"]) for e in events] == [("1", "put"), ("3", "put")]
            assert json.loads(events[1]["data"])["key"] == "app/b"
            await node.put(b"app/c", b"3")  # live
            await node.delete(b"app/a")
            await node.put(b"elsewhere", b"-")
            events = await call.events(4)
            assert [(e["id"], e["event"]) for e in events[2:]] == [("4", "put"), ("5", "delete")]
            watcher = node.all_watchers[-1]
            assert node.watchers == [watcher]
            call.disconnect()
            await call.finished()
            assert watcher.closed, "the node's watcher outlived its client"
            assert node.watchers == []
            assert not call.complete  # nobody to finish the answer for

        run(scenario)

    def test_since_omitted_starts_from_now(self, node: FakeNode, config: NodeConfig) -> None:
        seed_changes(node, [(b"a", b"old")])

        async def scenario() -> None:
            call = Call(_app(node, config), "GET", "/v1/watch")
            await call.until("the watch starts", lambda: bool(node.watchers))
            assert node.calls[-1] == ("watch", b"", None, None, False)
            await node.put(b"a", b"new")
            events = await call.events(1)
            assert [e["id"] for e in events] == ["2"]
            call.disconnect()
            await call.finished()

        run(scenario)

    def test_a_transaction_s_changes_share_one_id(self, node: FakeNode, config: NodeConfig) -> None:
        async def scenario() -> None:
            call = Call(_app(node, config), "GET", "/v1/watch", query=b"since=0")
            await call.until("the watch starts", lambda: bool(node.watchers))
            await node.txn(Txn(success=(TxnOp.put(b"x", b"1"), TxnOp.put(b"y", b"2"))))
            await node.put(b"z", b"3")
            events = await call.events(3)
            assert [(e["id"], json.loads(e["data"])["key"]) for e in events] == [
                ("1", "x"),
                ("1", "y"),
                ("2", "z"),
            ]
            call.disconnect()
            await call.finished()

        run(scenario)

    def test_a_key_watch_sees_only_that_key(self, node: FakeNode, config: NodeConfig) -> None:
        seed_changes(node, [(b"k", b"1"), (b"k2", b"2"), (b"k", b"3")])

        async def scenario() -> None:
            call = Call(_app(node, config), "GET", "/v1/watch", query=b"key=k&since=0&prev=true")
            events = await call.events(2)
            assert node.calls[-1] == ("watch", b"", b"k", 0, True)
            assert [e["id"] for e in events] == ["1", "3"]
            second = json.loads(events[1]["data"])
            assert second["prev_mod_index"] == 1
            assert second["prev_value"] == "1"
            call.disconnect()
            await call.finished()

        run(scenario)

    def test_last_event_id_wins_over_since(self, node: FakeNode, config: NodeConfig) -> None:
        seed_changes(node, [(b"a", b"1"), (b"a", b"2"), (b"a", b"3")])

        async def scenario() -> None:
            call = Call(
                _app(node, config),
                "GET",
                "/v1/watch",
                query=b"since=0",
                headers=[(b"last-event-id", b"2")],
            )
            events = await call.events(1)
            assert [e["id"] for e in events] == ["3"]
            assert node.calls[-1] == ("watch", b"", None, 2, False)
            call.disconnect()
            await call.finished()

        run(scenario)

    def test_progress_events(self, node: FakeNode, config: NodeConfig) -> None:
        async def scenario() -> None:
            call = Call(_app(node, config), "GET", "/v1/watch", query=b"prefix=p/")
            await call.until("the watch starts", lambda: bool(node.watchers))
            await node.put(b"q", b"not watched")
            node.progress()
            events = await call.events(1)
            assert events == [{"id": "1", "event": "progress", "data": '{"applied_index":1}'}]
            call.disconnect()
            await call.finished()

        run(scenario)

    def test_a_closed_event_ends_the_stream(self, node: FakeNode, config: NodeConfig) -> None:
        async def scenario() -> None:
            call = Call(_app(node, config), "GET", "/v1/watch", query=b"since=0")
            await call.until("the watch starts", lambda: bool(node.watchers))
            await node.put(b"a", b"1")
            node.end_watchers({"error": "watcher_too_slow", "since": 1})
            await call.finished()
            assert call.complete
            events = await call.events(2)
            assert events[-1] == {
                "event": "closed",
                "data": '{"error":"watcher_too_slow","since":1}',
            }
            assert node.all_watchers[-1].closed

        run(scenario)

    def test_cancelled_from_outside_still_closes_the_watcher(
        self, node: FakeNode, config: NodeConfig
    ) -> None:
        """A server stopping cancels the request: the watcher is closed, the cancel goes on."""

        async def scenario() -> None:
            call = Call(_app(node, config), "GET", "/v1/watch")
            await call.until("the watch starts", lambda: bool(node.watchers))
            call.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call.task
            assert node.all_watchers[-1].closed

        run(scenario)

    def test_head_answers_the_headers_and_closes_the_watcher(
        self, node: FakeNode, config: NodeConfig
    ) -> None:
        async def scenario() -> None:
            call = Call(_app(node, config), "HEAD", "/v1/watch")
            await call.finished()
            assert call.status == 200
            assert call.body == b""
            assert node.all_watchers[-1].closed

        run(scenario)


class TestErrorsBeforeTheStream:
    def test_since_in_the_future_is_400(self, client: TestClient, node: FakeNode) -> None:
        seed_changes(node, [(b"a", b"1")])
        response = client.get("/v1/watch?since=5")
        assert error_of(response, 400) == "bad_request"
        assert "after" in response.json()["message"]
        assert node.watchers == []

    def test_compacted_is_410_with_the_oldest_index(
        self, client: TestClient, node: FakeNode
    ) -> None:
        seed_changes(node, [(b"a", b"1"), (b"a", b"2"), (b"a", b"3")])
        node.compact(2)
        response = client.get("/v1/watch?since=1")
        assert error_of(response, 410) == "compacted"
        assert response.json()["oldest_index"] == 2
        assert "compacted" in response.json()["message"]
        assert client.get("/v1/watch?since=1", headers={"last-event-id": "1"}).status_code == 410

    @pytest.mark.parametrize(
        "value", [b"x", b"-1", b"1.5", b"", b"99999999999999999999", "١".encode()]
    )
    def test_bad_last_event_id_is_400(self, client: TestClient, value: bytes) -> None:
        response = client.get("/v1/watch", headers={"last-event-id": value})
        assert error_of(response, 400) == "bad_request"
        assert "Last-Event-ID" in response.json()["message"]

    @pytest.mark.parametrize(
        ("query", "words"),
        [
            ("since=x", "since"),
            ("since=-3", "since"),
            ("prefix=a&key=b", "not both"),
            ("key=", "empty"),
            ("prev=maybe", "prev"),
            ("values=true", "unknown query parameter"),
            ("since=1&since=2", "more than once"),
        ],
    )
    def test_bad_parameters_are_400(self, client: TestClient, query: str, words: str) -> None:
        response = client.get(f"/v1/watch?{query}")
        assert error_of(response, 400) == "bad_request"
        assert words in response.json()["message"]

    def test_a_key_longer_than_any_key_is_413(self, client: TestClient) -> None:
        assert error_of(client.get("/v1/watch?key=" + "k" * 65), 413) == "too_large"

    def test_too_many_watchers_is_429(self, client: TestClient, node: FakeNode) -> None:
        fail_with(node, TooManyRequestsError("10000 watchers (max_watchers)", 1))
        response = client.get("/v1/watch")
        assert error_of(response, 429) == "too_many_requests"
        assert response.headers["retry-after"] == "1"

    def test_no_leader_is_503(self, client: TestClient, node: FakeNode) -> None:
        fail_with(node, ServiceUnavailableError("no leader"))
        assert error_of(client.get("/v1/watch"), 503) == "unavailable"


class TestEventStreamResponse:
    def test_an_error_while_closing_the_watcher_is_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Broken:
            def __aiter__(self) -> Broken:
                return self

            async def __anext__(self) -> WatchEvent:
                raise StopAsyncIteration

            ready = False

            async def aclose(self) -> None:
                raise RuntimeError("watcher bug")

        async def scenario() -> None:
            sent: list[Message] = []

            async def receive() -> Message:
                await asyncio.Event().wait()  # the client never leaves
                raise AssertionError("unreachable")

            async def send(message: Message) -> None:
                sent.append(message)

            await EventStream(Broken(), prev=False)({"type": "http"}, receive, send)
            assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}

        with caplog.at_level("ERROR", logger="raftdb.api"):
            run(scenario)
        assert "error after the answer started" in caplog.text


def test_curl_n_follows_a_watch_through_a_real_server(node: FakeNode, config: NodeConfig) -> None:
    """uvicorn on a free port: events arrive as they happen, and a client leaving ends it."""

    async def scenario() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(_app(node, config), log_level="warning", lifespan="off")
        )
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            await eventually("the server starts", lambda: server.started)
            async with httpx.AsyncClient(timeout=DEADLINE_S) as http:
                url = f"http://127.0.0.1:{port}/v1/watch?prefix=app/"
                async with http.stream("GET", url) as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/event-stream")
                    await node.put(b"app/x", b"hello")
                    lines = response.aiter_lines()
                    got = [await anext(lines) for _ in range(3)]
                    assert got[:2] == ["id: 1", "event: put"]
                    assert json.loads(got[2].removeprefix("data: "))["value"] == "hello"
            await eventually("the watcher is closed", lambda: node.all_watchers[-1].closed)
        finally:
            server.should_exit = True
            await serving
            sock.close()

    run(scenario)


class _Queued:
    """A watcher whose events are all here already, then the end."""

    def __init__(self, events: list[WatchEvent]) -> None:
        self.events = list(events)
        self.closed = False

    def __aiter__(self) -> _Queued:
        return self

    async def __anext__(self) -> WatchEvent:
        if not self.events:
            raise StopAsyncIteration
        return self.events.pop(0)

    @property
    def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        self.closed = True


def _put(index: int, key: bytes) -> WatchEvent:
    change = Change(index, ChangeKind.PUT, key, b"v%d" % index, index, index, 0)
    return WatchEvent("put", index, change)


class TestBatchedSends:
    def _bodies(self, watcher: _Queued) -> list[bytes]:
        sent: list[Message] = []

        async def scenario() -> None:
            async def receive() -> Message:
                await asyncio.Event().wait()
                raise AssertionError("unreachable")

            async def send(message: Message) -> None:
                sent.append(message)

            await EventStream(watcher, prev=True)({"type": "http"}, receive, send)

        run(scenario)
        assert watcher.closed
        return [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]

    def test_queued_events_go_out_in_one_send_in_order(self) -> None:
        events = [_put(i, b"k%d" % i) for i in range(1, 6)]
        expected = b"".join(event_bytes(e, prev=True) for e in events)
        assert self._bodies(_Queued(events)) == [expected]

    def test_a_long_backlog_is_cut_into_bounded_sends(self) -> None:
        events = [_put(i, b"k") for i in range(1, 600)]
        bodies = self._bodies(_Queued(events))
        assert [b.count(b"event: put") for b in bodies] == [256, 256, 87]
        ids = [int(line[4:]) for b in bodies for line in b.split(b"\n") if line.startswith(b"id: ")]
        assert ids == list(range(1, 600))

    def test_the_closed_event_ends_the_send_and_the_stream(self) -> None:
        closed = WatchEvent("closed", 2, data={"error": "watcher_too_slow", "since": 1})
        events = [_put(1, b"a"), closed, _put(3, b"b")]
        (body,) = self._bodies(_Queued(events))
        assert body.count(b"event: ") == 2
        assert body.endswith(event_bytes(closed, prev=True))
        assert b"id: 3" not in body

    def test_one_change_sent_to_many_watchers_reads_the_same_with_and_without_prev(
        self,
    ) -> None:
        change = Change(7, ChangeKind.PUT, b"k", b"new", 3, 7, 5)
        prev = KeyValue(b"k", b"old", 3, 5)
        plain = event_bytes(WatchEvent("put", 7, change), prev=False)
        with_prev = event_bytes(WatchEvent("put", 7, change, prev), prev=True)
        assert event_bytes(WatchEvent("put", 7, change), prev=False) == plain  # from the cache
        data = json.loads(with_prev.split(b"data: ", 1)[1])
        assert data["value"] == "new"
        assert data["prev_value"] == "old"
        assert data["prev_mod_index"] == 5
        assert json.loads(plain.split(b"data: ", 1)[1]) == {
            k: v for k, v in data.items() if not k.startswith("prev")
        }
