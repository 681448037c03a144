"""Node errors become the right HTTP answers; unexpected ones a logged 500."""

from __future__ import annotations

import asyncio
import logging

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.node.errors import (
    BadRequestError,
    NodeError,
    NodeRemovedError,
    NotReadyError,
    OutcomeUnknownError,
    ServiceUnavailableError,
    TooLargeError,
)
from tests.http.fake_node import FakeNode, fail_with
from tests.http.helpers import TestClient, error_of

REQUESTS = [
    ("PUT", "/v1/kv/k", b"v"),
    ("GET", "/v1/kv/k", None),
    ("DELETE", "/v1/kv/k", None),
    ("GET", "/v1/kv?prefix=a", None),
    ("PUT", "/k", b"v"),
    ("POST", "/4", b"http://127.0.0.1:42379"),
    ("DELETE", "/3", None),
    ("POST", "/v1/cluster/members", b'{"id": 4, "peer_url": "http://127.0.0.1:42379"}'),
    ("DELETE", "/v1/cluster/members/3", None),
    ("POST", "/v1/cluster/leader", b'{"id": 2}'),
]


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (ServiceUnavailableError("no leader", retry_after=2.5), 503, "unavailable"),
        (NotReadyError("starting"), 503, "not_ready"),
        (NodeRemovedError("node 1 was removed from the cluster"), 503, "node_removed"),
        (OutcomeUnknownError("timed out waiting for commit"), 504, "outcome_unknown"),
        (BadRequestError("nope"), 400, "bad_request"),
        (TooLargeError("entry too large"), 413, "too_large"),
    ],
)
def test_node_errors_map_to_http(
    client: TestClient,
    node: FakeNode,
    method: str,
    path: str,
    body: bytes | None,
    exc: NodeError,
    status: int,
    code: str,
) -> None:
    fail_with(node, exc)
    response = client.request(method, path, content=body)
    assert error_of(response, status) == code
    assert response.json()["message"] == exc.message
    if status == 503:
        assert response.headers["retry-after"] == ("3" if code == "unavailable" else "1")
    else:
        assert "retry-after" not in response.headers


def test_leader_hint_is_in_the_503(client: TestClient, node: FakeNode) -> None:
    fail_with(node, ServiceUnavailableError("not the leader", retry_after=0.1, leader=2))
    response = client.put("/v1/kv/k", content=b"v")
    assert error_of(response, 503) == "unavailable"
    assert response.json()["leader"] == 2
    assert response.headers["retry-after"] == "1"


def test_unexpected_exception_is_a_logged_500(
    client: TestClient, node: FakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    fail_with(node, RuntimeError("driver bug"))
    with caplog.at_level(logging.ERROR, logger="raftdb.api"):
        response = client.put("/v1/kv/k", content=b"v")
    assert error_of(response, 500) == "internal"
    assert "driver bug" not in response.text
    assert any("driver bug" in str(record.exc_info) for record in caplog.records)
    # The app keeps serving.
    assert client.put("/v1/kv/k", content=b"v").status_code == 204


def test_client_disconnect_while_sending_the_body(node: FakeNode, config: NodeConfig) -> None:
    app = create_api(node, config)
    sent: list[dict[str, object]] = []
    messages: list[dict[str, object]] = [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": "/v1/kv/k",
        "raw_path": b"/v1/kv/k",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("127.0.0.1", 12380),
        "client": ("127.0.0.1", 5000),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert node.calls == []
    assert sent[0]["type"] == "http.response.start"
