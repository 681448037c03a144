"""The raw-ASGI fast path answers byte for byte as the Starlette app does.

Each request goes through ``create_api(...)`` (the fast path in front) and
``create_api(..., fast_path=False)`` (Starlette alone), each over its own
FakeNode seeded alike; status, headers, body, the node calls, the store and
the log must be the same. A spy on the Starlette app behind the fast path
tells which of the two answered, so the comparison cannot pass by having
Starlette answer everything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from raftdb.config import NodeConfig
from raftdb.http import app as api
from raftdb.http.app import create_api
from raftdb.http.fast_path import KVFastPath
from raftdb.http.meta import meta_routes
from raftdb.kv.commands import KeyValue
from raftdb.node.errors import (
    BadRequestError,
    ConditionFailedError,
    NodeRemovedError,
    NotReadyError,
    OutcomeUnknownError,
    ServiceUnavailableError,
    TooLargeError,
)
from raftdb.node.handle import NodeHandle
from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient

#: What both nodes hold before each request.
SEED = {
    b"k": b"value",
    b"empty": b"",
    b"a/b": b"slash",
    b"\xff": b"\x00\xffbinary",
    b"\n": b"newline",
    b"sp ace": b"space",
    b"plus+sign": b"plus",
    b"v1": b"v1 as a key",
    b"healthz": b"healthz as a key",
    b"healthzz": b"lookalike",
    b"my-key": b"bar",
}


class Spy:
    """Wraps the Starlette app behind the fast path: counts what reached it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


def seeded() -> FakeNode:
    node = FakeNode()
    for key, value in SEED.items():
        node.index += 1
        node.data[key] = KeyValue(key, value, node.index, node.index)
    return node


def fast_app(node: FakeNode, config: NodeConfig) -> tuple[KVFastPath, Spy]:
    app = create_api(node, config)
    assert isinstance(app, KVFastPath)
    spy = Spy(app.app)
    app.app = spy
    return app, spy


@dataclass(frozen=True)
class Case:
    """One request; ``fast``: whether the fast path must answer it itself."""

    method: str
    path: str
    fast: bool
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Stream this many bytes in 100-byte chunks, without Content-Length.
    chunked: int | None = None
    fail: BaseException | None = None

    def content(self) -> bytes | Iterator[bytes] | None:
        if self.chunked is None:
            return self.body
        return (b"x" * min(100, self.chunked - sent) for sent in range(0, self.chunked, 100))


#: Paths the fast path reads from, with GET and with HEAD.
FAST_READS = [
    "/v1/kv/k",
    "/v1/kv/missing",
    "/v1/kv/k?consistency=stale",
    "/v1/kv/k?consistency=linearizable",
    "/v1/kv/missing?consistency=stale",
    "/v1/kv/empty",
    "/v1/kv/a/b",
    "/v1/kv/a%2Fb",
    "/v1/kv/%FF",
    "/v1/kv/%ff",
    "/v1/kv/%0A",
    "/v1/kv/sp%20ace",
    "/v1/kv/plus+sign",
    "/v1/kv/v1",
    "/v1/kv/healthz",
    "/v1/kv/" + "k" * 64,
    "/k",
    "/missing",
    "/k?consistency=stale",
    "/a/b",
    "/a%2Fb",
    "/%FF",
    "/%0A",
    "/healthzz",
    "/v1x",
    "/" + "%FF" * 64,
]
#: Requests without a body or headers that Starlette must answer.
SLOW_REQUESTS = [
    # Query strings other than one consistency parameter.
    "GET /v1/kv/k?consistency=STALE",
    "GET /v1/kv/k?consistency=strong",
    "GET /v1/kv/k?consistency=",
    "GET /v1/kv/k?consistancy=stale",
    "GET /v1/kv/k?consistency=stale&consistency=stale",
    "GET /v1/kv/k?consistency=stale&",
    "GET /v1/kv/k?consistency=%73tale",
    "HEAD /k?x",
    "DELETE /v1/kv/k?x",
    # Keys path_key refuses.
    "GET /v1/kv/",
    "DELETE /v1/kv/",
    "GET /v1/kv/" + "k" * 65,
    "HEAD /" + "%FF" * 65,
    # Reserved roots, meta routes, listing, membership, other methods.
    "GET /",
    "HEAD /",
    "GET /healthz",
    "GET /healthz/x",
    "GET /healthz%2Fx",
    "GET /metrics/",
    "GET /openapi.json",
    "GET /v1/status",
    "GET /v1%2Fstatus",
    "GET /v1",
    "GET /v1/nothing",
    "GET /v1/kv",
    "GET /v1/kv?prefix=a",
    "GET /v1/kv2/x",
    "GET /v1/cluster/members",
    "DELETE /3",
    "DELETE /9",
    "DELETE /my-key",
    "OPTIONS /v1/kv/k",
]
_FORM = {"content-type": "application/x-www-form-urlencoded"}


def _cases() -> list[Any]:
    fast = [Case(method, path, True) for path in FAST_READS for method in ("GET", "HEAD")]
    fast += [
        Case("GET", "/v1/kv/k", True, headers={"if-match": '"1"', "if-none-match": "*"}),
        Case("PUT", "/v1/kv/k", True, b"new"),
        Case("PUT", "/v1/kv/new", True, b"new"),
        Case("PUT", "/v1/kv/k", True, b""),
        Case("PUT", "/v1/kv/k", True, b"x" * 1000),
        Case("PUT", "/v1/kv/%FF%00raw", True, b"v"),
        Case("PUT", "/v1/kv/" + "%FF" * 64, True, b"v"),
        Case("PUT", "/v1/kv/a%2Fb/c", True, b"v"),
        Case("PUT", "/my-key", True, b"bar", _FORM),
        Case("PUT", "/new/nested", True, b"v"),
        Case("PUT", "/metrics2/a", True, b"v"),
        Case("PUT", "/v1/kv/k", True, chunked=900),
        Case("PUT", "/v1/kv/k", True, b"x" * 1001),  # 413 by Content-Length
        Case("PUT", "/k", True, b"x" * 1001),
        Case("PUT", "/v1/kv/k", True, chunked=5000),  # 413 while counting
        Case("PUT", "/v1/kv/k", True, b"x" * 5000, {"content-length": "10"}),
        Case("PUT", "/v1/kv/k", True, b"x", {"content-length": "ten"}),
        Case("DELETE", "/v1/kv/k", True),
        Case("DELETE", "/v1/kv/missing", True),
        Case("DELETE", "/v1/kv/a%2Fb", True),
        # The node's errors, answered by the fast path as Starlette's handlers do.
        Case("GET", "/v1/kv/k", True, fail=ServiceUnavailableError("no leader", retry_after=2.5)),
        Case("HEAD", "/k", True, fail=ServiceUnavailableError("not the leader", 0.2, leader=3)),
        Case(
            "PUT", "/v1/kv/k", True, b"v", fail=ServiceUnavailableError("not the leader", leader=2)
        ),
        Case("GET", "/v1/kv/k?consistency=stale", True, fail=NotReadyError("catching up")),
        Case("PUT", "/v1/kv/k", True, b"v", fail=OutcomeUnknownError("timed out")),
        Case("DELETE", "/v1/kv/k", True, fail=NodeRemovedError("removed")),
        Case("PUT", "/v1/kv/k", True, b"v", fail=ConditionFailedError("changed", 4)),
        Case("PUT", "/v1/kv/k", True, b"v", fail=TooLargeError("too much")),
        Case("DELETE", "/v1/kv/k", True, fail=BadRequestError("no")),
        Case("GET", "/v1/kv/k", True, fail=RuntimeError("driver bug")),
        Case("PUT", "/k", True, b"v", fail=RuntimeError("driver bug")),
    ]
    slow = [Case(line.split(" ")[0], line.split(" ")[1], False) for line in SLOW_REQUESTS]
    slow += [
        Case("PUT", "/v1/kv/k?ttl=5", False, b"v"),
        Case("PUT", "/k?x=1", False, b"v"),
        # Conditional and idempotent writes.
        Case("PUT", "/v1/kv/k", False, b"v", {"if-match": '"1"'}),
        Case("PUT", "/v1/kv/k", False, b"v", {"if-match": '"99"'}),
        Case("PUT", "/v1/kv/k", False, b"v", {"if-match": "abc"}),
        Case("PUT", "/v1/kv/k", False, b"v", {"if-none-match": "*"}),
        Case("PUT", "/v1/kv/new", False, b"v", {"if-none-match": "*"}),
        Case("PUT", "/v1/kv/k", False, b"v", {"idempotency-key": "req-1"}),
        Case("PUT", "/v1/kv/k", False, b"v", {"idempotency-key": ""}),
        Case("PUT", "/k", False, b"v", {"if-none-match": "*"}),
        Case("PUT", "/v1/kv/k", False, b"x" * 1001, {"idempotency-key": "r"}),
        Case("DELETE", "/v1/kv/k", False, headers={"if-match": '"1"'}),
        Case("DELETE", "/v1/kv/k", False, headers={"if-none-match": "*"}),
        Case("DELETE", "/v1/kv/k", False, headers={"idempotency-key": "d-1"}),
        # Refused keys and reserved roots, with a body.
        Case("PUT", "/v1/kv/", False, b"v"),
        Case("PUT", "/v1/kv/" + "%FF" * 65, False, b"v"),
        Case("PUT", "/" + "k" * 65, False, b"v"),
        Case("PUT", "/", False, b"v"),
        Case("PUT", "/healthz", False, b"v"),
        Case("PUT", "/docs/a/b", False, b"v"),
        Case("PUT", "/v1/status", False, b"v"),
        Case("POST", "/4", False, b"http://127.0.0.1:42379"),
        Case("POST", "/v1/kv/k", False, b"v"),
        Case("PATCH", "/v1/kv/k", False, b"v"),
        Case("PATCH", "/k", False, b"v"),
    ]
    return [
        pytest.param(case, id=f"{case.method} {case.path[:40]} {'fast' if case.fast else 'slow'}")
        for case in fast + slow
    ]


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def _send(app: ASGIApp, node: FakeNode, case: Case, caplog: pytest.LogCaptureFixture) -> Any:
    node.fail = case.fail
    caplog.clear()
    response = TestClient(app).request(
        case.method, case.path, content=case.content(), headers=case.headers
    )
    logged = [(record.levelname, record.getMessage()) for record in caplog.records]
    return _answer(response), node.calls, node.data, logged


def _answer(response: httpx.Response) -> Answer:
    headers = sorted(
        (name.lower(), value)
        for name, value in response.headers.raw
        if name.lower() not in (b"date", b"server")
    )
    return response.status_code, headers, response.content


@pytest.mark.parametrize("case", _cases())
def test_same_answer_as_starlette(
    case: Case, config: NodeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    fast_node, slow_node = seeded(), seeded()
    app, spy = fast_app(fast_node, config)
    with caplog.at_level(logging.INFO, logger="raftdb.api"):
        got = _send(app, fast_node, case, caplog)
        want = _send(create_api(slow_node, config, fast_path=False), slow_node, case, caplog)
    assert got == want
    assert spy.calls == (0 if case.fast else 1), "the fast path did not answer as expected"


def test_the_fast_path_answers_a_session_of_requests(config: NodeConfig) -> None:
    """State carries over between fast-path requests, as through Starlette."""
    fast_node, slow_node = FakeNode(), FakeNode()
    app, spy = fast_app(fast_node, config)
    requests = [
        ("PUT", "/v1/kv/a", b"1"),
        ("PUT", "/a", b"2"),
        ("GET", "/v1/kv/a", None),
        ("DELETE", "/v1/kv/a", None),
        ("GET", "/a", None),
        ("DELETE", "/v1/kv/a", None),
    ]
    fast_client, slow_client = (
        TestClient(app),
        TestClient(create_api(slow_node, config, fast_path=False)),
    )
    for method, path, body in requests:
        got = _answer(fast_client.request(method, path, content=body))
        want = _answer(slow_client.request(method, path, content=body))
        assert got == want, (method, path)
    assert spy.calls == 0
    assert fast_node.calls == slow_node.calls


# -- raw ASGI: the messages themselves, root_path, a missing raw_path, disconnects ------


def _scope(
    method: str,
    path: str,
    raw_path: bytes | None,
    root_path: str = "",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> Scope:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:12380"), *headers],
        "server": ("127.0.0.1", 12380),
        "client": ("127.0.0.1", 5000),
    }
    if raw_path is not None:
        scope["raw_path"] = raw_path
    return scope


def _messages(app: ASGIApp, scope: Scope, incoming: list[Message]) -> list[Message]:
    sent: list[Message] = []
    pending = list(incoming)

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if "headers" in message:
            message = {**message, "headers": sorted(message["headers"])}
        sent.append(message)

    async def call() -> None:
        await app(dict(scope), receive, send)

    asyncio.run(call())
    return sent


_BODY = [{"type": "http.request", "body": b"value", "more_body": False}]
_LENGTHS = ((b"content-length", b"2000"), (b"content-length", b"5"))
_CUT = [{"type": "http.request", "body": b"abc", "more_body": True}, {"type": "http.disconnect"}]


@pytest.mark.parametrize(
    ("scope", "incoming", "fast"),
    [
        (_scope("GET", "/v1/kv/k", b"/v1/kv/k"), [], True),
        (_scope("HEAD", "/k", b"/k"), [], True),  # the body message carries the value
        (_scope("PUT", "/v1/kv/k", b"/v1/kv/k"), _BODY, True),
        (_scope("PUT", "/v1/kv/k", b"/v1/kv/k"), _CUT, True),  # client went away
        (_scope("PUT", "/k", b"/k"), [{"type": "http.request"}], True),  # no body key
        # Two Content-Length headers: the first counts, as for Starlette's Headers.get.
        (_scope("PUT", "/k", b"/k", headers=_LENGTHS), _BODY, True),
        (_scope("GET", "/api/v1/kv/k", b"/api/v1/kv/k", "/api"), [], True),
        (_scope("GET", "/api/k", b"/api/k", "/api"), [], True),
        (_scope("GET", "/v1/kv/k", b"/v1/kv/k", "/api"), [], True),
        (_scope("GET", "/api/healthz", b"/api/healthz", "/api"), [], False),
        (_scope("GET", "/api", b"/api", "/api"), [], False),
        (_scope("GET", "/api/", b"/api/", "/api"), [], False),
        (_scope("GET", "/v1/kv/k", None), [], False),  # no raw_path: the route's key
        (_scope("GET", "/k", None), [], False),
        (_scope("GET", "/v1/kv/k", b"/v1/k%76/k"), [], False),
        (_scope("get", "/v1/kv/k", b"/v1/kv/k"), [], False),
        # A path rewritten without its raw_path (as some middleware does): the
        # router goes by the path, the raftexample handler by the raw key.
        (_scope("GET", "/healthz", b"/k"), [], False),
        (_scope("GET", "/k", b"/healthz"), [], False),
    ],
)
def test_same_asgi_messages_as_starlette(
    scope: Scope, incoming: list[Message], fast: bool, config: NodeConfig
) -> None:
    fast_node, slow_node = seeded(), seeded()
    app, spy = fast_app(fast_node, config)
    got = _messages(app, scope, incoming)
    want = _messages(create_api(slow_node, config, fast_path=False), scope, incoming)
    assert got == want
    assert fast_node.calls == slow_node.calls
    assert spy.calls == (0 if fast else 1)


def test_error_while_sending_is_logged_and_raised(
    config: NodeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """As _Guard does once the answer has started: log, re-raise, let the server close."""
    app, _ = fast_app(seeded(), config)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        raise OSError("connection reset")

    with (
        caplog.at_level(logging.ERROR, logger="raftdb.api"),
        pytest.raises(OSError, match="connection reset"),
    ):
        asyncio.run(app(_scope("GET", "/v1/kv/k", b"/v1/kv/k"), receive, send))
    assert [record.getMessage() for record in caplog.records] == ["error after the answer started"]


def test_a_route_outside_the_reserved_roots_is_refused(
    config: NodeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path would take /<key> requests meant for it: create_api says so."""

    async def extra(request: object) -> Response:
        return Response()

    def with_extra(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
        return [*meta_routes(node, config), Route("/extra", extra)]

    monkeypatch.setattr(api, "meta_routes", with_extra)
    with pytest.raises(RuntimeError, match="/extra is outside the reserved roots"):
        create_api(FakeNode(), config)
    create_api(FakeNode(), config, fast_path=False)  # no fast path, nothing to shadow
