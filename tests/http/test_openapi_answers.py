"""The answers of the issue-12 routes are what the OpenAPI document says they are.

Each request's answer must have a status the document lists for its
operation, and its body must match the documented schema (schemathesis's
own check, as tests/chaos/test_api_schema.py applies it to a real node).
"""

from __future__ import annotations

import datetime
from typing import Any

import httpx
import pytest
import schemathesis

from raftdb.config import NodeConfig
from raftdb.http.openapi import openapi_schema
from raftdb.http.watch import event_bytes
from raftdb.kv.changes import Change, ChangeKind
from raftdb.kv.commands import KeyValue
from raftdb.node.handle import WatchEvent
from tests.http.fake_node import FakeNode, seed_changes
from tests.http.helpers import TestClient


@pytest.fixture
def document(config: NodeConfig) -> Any:
    return schemathesis.openapi.from_dict(openapi_schema(config))


#: (operation path, method, request path, JSON body)
REQUESTS: list[tuple[str, str, str, Any]] = [
    ("/v1/leases", "POST", "/v1/leases", {"ttl": 10}),
    ("/v1/leases", "POST", "/v1/leases", {"ttl": 1}),
    ("/v1/leases", "POST", "/v1/leases", {"x": 1}),
    ("/v1/leases", "GET", "/v1/leases", None),
    ("/v1/leases/{id}", "GET", "/v1/leases/2", None),
    ("/v1/leases/{id}", "GET", "/v1/leases/99", None),
    ("/v1/leases/{id}", "GET", "/v1/leases/x", None),
    ("/v1/leases/{id}/keepalive", "POST", "/v1/leases/2/keepalive", None),
    ("/v1/leases/{id}/keepalive", "POST", "/v1/leases/99/keepalive", None),
    ("/v1/kv/{key}", "PUT", "/v1/kv/leased?lease=2", None),
    ("/v1/kv/{key}", "PUT", "/v1/kv/leased?lease=99", None),
    ("/v1/kv/{key}", "GET", "/v1/kv/a?wait_index=1&wait=1ms", None),
    ("/v1/kv", "GET", "/v1/kv?prefix=&wait_index=1&wait=1ms&values=true", None),
    (
        "/v1/txn",
        "POST",
        "/v1/txn",
        {
            "compare": [{"key": "a", "target": "mod_index", "op": ">", "value": 0}],
            "success": [
                {"op": "put", "key": "b", "value_b64": "/w==", "lease": "2"},
                {"op": "delete", "key": "a"},
                {"op": "get", "key": "b"},
                {"op": "get", "key": "a"},
                {"op": "list", "prefix": "", "limit": 1},
            ],
        },
    ),
    ("/v1/txn", "POST", "/v1/txn", {"success": [{"op": "nope"}]}),
    ("/v1/txn", "POST", "/v1/txn", {"success": [{"op": "get", "key": "a"}] * 129}),
    (
        "/v1/txn",
        "POST",
        "/v1/txn",
        {"success": [{"op": "put", "key": "x", "value": "", "lease": 9}]},
    ),
    ("/v1/lock/{name}", "POST", "/v1/lock/l", {"lease": "2"}),
    ("/v1/lock/{name}", "POST", "/v1/lock/%FF", {"lease": "2"}),
    ("/v1/lock/{name}", "POST", "/v1/lock/l", {"lease": "99"}),
    ("/v1/lock/{name}", "DELETE", "/v1/lock/l?lease=2", None),
    ("/v1/lock/{name}", "DELETE", "/v1/lock/l?lease=2", None),
    ("/v1/watch", "GET", "/v1/watch?since=999", None),
    ("/v1/watch", "GET", "/v1/watch?since=0", None),  # compacted, below
    ("/v1/leases/{id}", "DELETE", "/v1/leases/2", None),
    ("/v1/leases/{id}", "DELETE", "/v1/leases/2", None),
]


def test_every_answer_is_documented(
    client: TestClient, node: FakeNode, config: NodeConfig, document: Any
) -> None:
    seed_changes(node, [(b"a", b"1")])
    node.compact(1)
    statuses = set()
    for path, method, url, body in REQUESTS:
        response = client.request(method, url, json=body)
        operation = document[path][method]
        documented = openapi_schema(config)["paths"][path][method.lower()]["responses"]
        assert str(response.status_code) in documented, (method, url, response.text)
        operation.validate_response(response)
        statuses.add(response.status_code)
    assert statuses >= {200, 201, 204, 400, 404, 410, 413}


def test_every_kind_of_watch_event_is_documented(document: Any) -> None:
    """Each event of a stream against the event schema (OpenAPI 3.1: ``schema`` is per event)."""
    change = Change(7, ChangeKind.PUT, b"\xff", b"v", 3, 7, 5)
    events = [
        WatchEvent("put", 7, change, KeyValue(b"\xff", b"\x00", 3, 5)),
        WatchEvent("delete", 8, Change(8, ChangeKind.DELETE, b"k", b"", 0, 8, 2)),
        WatchEvent("progress", 8),
        WatchEvent("closed", 8, data={"error": "watcher_too_slow", "since": 8}),
        WatchEvent("closed", 8, data={"error": "compacted", "oldest_index": 9}),
    ]
    body = b"".join(event_bytes(event, prev=True) for event in events)
    response = httpx.Response(
        200,
        content=body,
        headers={"content-type": "text/event-stream; charset=utf-8"},
        request=httpx.Request("GET", "http://127.0.0.1/v1/watch"),
    )
    response.elapsed = datetime.timedelta(0)
    document["/v1/watch"]["GET"].validate_response(response)
    broken = httpx.Response(
        200,
        content=b'id: 1\nevent: put\ndata: {"key": "k"}\n\n',
        headers={"content-type": "text/event-stream"},
        request=httpx.Request("GET", "http://127.0.0.1/v1/watch"),
    )
    broken.elapsed = datetime.timedelta(0)
    with pytest.raises(Exception, match="violates"):
        document["/v1/watch"]["GET"].validate_response(broken)
