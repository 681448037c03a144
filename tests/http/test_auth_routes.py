"""Tokens on the routes of issue 12: watch, transactions, leases, locks, blocking reads.

``401`` without a valid token on each; ``403`` for a role too low, or keys
outside a token's prefixes: in the query (watch), the path (lock), the body
(a transaction: read for what it compares and reads, write for what it
writes) or the lease (its keys, as the node has them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from tests.http.asgi import Call
from tests.http.conftest import CLUSTER
from tests.http.fake_node import FakeNode, seed_changes
from tests.http.helpers import TestClient, error_of
from tests.http.test_auth import TOKENS, bearer, tokens_toml

_PUT = {"op": "put", "key": "app/x", "value": "1"}


@pytest.fixture
def secured_config(tmp_path: Path) -> NodeConfig:
    path = tmp_path / "tokens.toml"
    path.write_text(tokens_toml(TOKENS))
    return NodeConfig(id=1, cluster=CLUSTER, tokens_file=str(path))


@pytest.fixture
def secured(node: FakeNode, secured_config: NodeConfig) -> Iterator[TestClient]:
    seed_changes(node, [(b"app/a", b"1"), (b"other/o", b"2")])
    with TestClient(create_api(node, secured_config)) as client:
        yield client


def lease_with(client: TestClient, *keys: str) -> str:
    """A lease (granted by the admin) with ``keys`` attached."""
    admin = bearer("admin")
    lease = client.post("/v1/leases", json={"ttl": 10}, headers=admin).json()["id"]
    for key in keys:
        assert client.put(f"/v1/kv/{key}?lease={lease}", headers=admin).status_code == 204
    assert isinstance(lease, str)
    return lease


#: (method, path, JSON body) of each new route, with a body where it takes one.
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/watch?prefix=app/", None),
    ("POST", "/v1/txn", {"success": [{"op": "get", "key": "app/a"}]}),
    ("POST", "/v1/leases", {"ttl": 10}),
    ("GET", "/v1/leases", None),
    ("GET", "/v1/leases/1", None),
    ("DELETE", "/v1/leases/1", None),
    ("POST", "/v1/leases/1/keepalive", None),
    ("POST", "/v1/lock/app/l", {"lease": "1"}),
    ("DELETE", "/v1/lock/app/l?lease=1", None),
    ("GET", "/v1/kv/app/a?wait_index=0", None),
    ("GET", "/v1/kv?prefix=app/&wait_index=0", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer not-a-token"}])
def test_without_a_valid_token_is_401(
    secured: TestClient,
    node: FakeNode,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    calls = len(node.calls)
    response = secured.request(method, path, json=body, headers=headers)
    assert error_of(response, 401) == "unauthorized"
    assert len(node.calls) == calls


_WRITERS = {"writer", "admin"}


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"),
    [
        ("POST", "/v1/txn", {"success": [{"op": "get", "key": "app/a"}]}, {"reader", *_WRITERS}),
        (
            "POST",
            "/v1/txn",
            {"compare": [{"key": "a", "target": "exists", "op": "==", "value": True}]},
            {"reader", *_WRITERS},
        ),
        ("POST", "/v1/txn", {"failure": [_PUT]}, _WRITERS),
        ("POST", "/v1/txn", {"success": [{"op": "delete", "key": "app/a"}]}, _WRITERS),
        ("POST", "/v1/leases", {"ttl": 10}, _WRITERS),
        ("GET", "/v1/leases", None, {"admin"}),
        ("POST", "/v1/lock/app/l", {"lease": "1"}, _WRITERS),
        ("DELETE", "/v1/lock/app/l?lease=1", None, _WRITERS),
    ],
)
@pytest.mark.parametrize("who", ["reader", "writer", "admin"])
def test_roles(
    secured: TestClient,
    node: FakeNode,
    who: str,
    method: str,
    path: str,
    body: Any,
    allowed: set[str],
) -> None:
    calls = len(node.calls)
    response = secured.request(method, path, json=body, headers=bearer(who))
    if who in allowed:
        assert response.status_code not in (401, 403), response.text
    else:
        assert error_of(response, 403) == "forbidden"
        assert who in response.json()["message"]
        assert len(node.calls) == calls


def test_a_read_token_may_read_a_lease_but_not_renew_or_revoke_it(secured: TestClient) -> None:
    lease = lease_with(secured, "app/x")
    reader = bearer("reader")
    assert secured.get(f"/v1/leases/{lease}", headers=reader).status_code == 200
    assert error_of(secured.post(f"/v1/leases/{lease}/keepalive", headers=reader), 403)
    assert error_of(secured.delete(f"/v1/leases/{lease}", headers=reader), 403)


class TestPrefixes:
    @pytest.mark.parametrize(
        ("query", "status"),
        [
            ("prefix=app/", 200),
            ("prefix=app/sub&since=0&prev=true", 200),
            ("key=app/a", 200),
            ("key=app/a&since=0", 200),
            ("", 403),  # every key
            ("prefix=", 403),
            ("prefix=other/", 403),
            ("key=other/o", 403),
            ("prefix=app/&key=other/o", 403),
            ("prefix=ap", 403),
            ("pre%66ix=other/", 403),
            ("prefix=app/&values=true", 403),  # a parameter the check does not know
        ],
    )
    def test_watch(
        self, node: FakeNode, secured_config: NodeConfig, query: str, status: int
    ) -> None:
        async def scenario() -> None:
            app = create_api(node, secured_config)
            headers = [(b"authorization", bearer("app-reader")["authorization"].encode())]
            call = Call(app, "GET", "/v1/watch", query=query.encode(), headers=headers)
            await call.until("the answer starts", lambda: call.status is not None)
            assert call.status == status, call.body
            if status == 403:
                assert node.calls == []
                assert b"app-reader" in call.body
            call.disconnect()
            await call.finished()

        asyncio.run(scenario())

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            ({"success": [_PUT]}, 200),
            (
                {
                    "compare": [{"key": "app/a", "target": "mod_index", "op": ">", "value": 0}],
                    "success": [_PUT],
                    "failure": [{"op": "list", "prefix": "app/"}],
                },
                200,
            ),
            ({"success": [{"op": "put", "key": "other/x", "value": "1"}]}, 403),
            ({"failure": [{"op": "delete", "key": "other/o"}]}, 403),
            ({"success": [{"op": "get", "key": "other/o"}]}, 403),
            ({"compare": [{"key": "other/o", "target": "exists", "op": "==", "value": True}]}, 403),
            ({"success": [{"op": "list", "prefix": ""}]}, 403),
            ({"success": [{"op": "list"}]}, 403),
            ({"success": [{"op": "put", "key_b64": "b3RoZXIveA==", "value": "1"}]}, 403),
        ],
    )
    def test_txn(self, secured: TestClient, node: FakeNode, body: Any, status: int) -> None:
        calls = len(node.calls)
        response = secured.post("/v1/txn", json=body, headers=bearer("app-writer"))
        assert response.status_code == status, response.text
        if status == 403:
            assert "app-writer" in response.json()["message"]
            assert len(node.calls) == calls

    def test_a_txn_with_a_write_needs_the_write_role_under_the_prefixes_too(
        self, secured: TestClient
    ) -> None:
        response = secured.post("/v1/txn", json={"success": [_PUT]}, headers=bearer("app-reader"))
        assert error_of(response, 403) == "forbidden"
        assert "write role" in response.json()["message"]

    def test_leases(self, secured: TestClient, node: FakeNode) -> None:
        writer = bearer("app-writer")
        granted = secured.post("/v1/leases", json={"ttl": 10}, headers=writer)
        assert granted.status_code == 201  # a grant touches no key
        mine = granted.json()["id"]
        assert secured.put(f"/v1/kv/app/x?lease={mine}", headers=writer).status_code == 204
        assert secured.get(f"/v1/leases/{mine}", headers=writer).status_code == 200
        assert secured.post(f"/v1/leases/{mine}/keepalive", headers=writer).status_code == 200
        theirs = lease_with(secured, "app/y", "other/z")
        for response in (
            secured.get(f"/v1/leases/{theirs}", headers=writer),
            secured.post(f"/v1/leases/{theirs}/keepalive", headers=writer),
            secured.delete(f"/v1/leases/{theirs}", headers=writer),
        ):
            assert error_of(response, 403) == "forbidden"
            assert "other/z" in response.json()["message"]
        assert b"other/z" in node.data
        assert secured.delete(f"/v1/leases/{mine}", headers=writer).status_code == 204
        assert error_of(secured.get("/v1/leases", headers=writer), 403) == "forbidden"

    @pytest.mark.parametrize(
        ("path", "status"),
        [
            ("/v1/lock/app/l", 200),
            ("/v1/lock/config", 200),  # its keys are config/<lease>: under config/
            ("/v1/lock/config/l", 200),
            ("/v1/lock/other/l", 403),
            ("/v1/lock/ap", 403),
            ("/v1/lock/other%2Fl", 403),
        ],
    )
    def test_lock(self, secured: TestClient, path: str, status: int) -> None:
        writer = bearer("app-writer")
        lease = secured.post("/v1/leases", json={"ttl": 10}, headers=writer).json()["id"]
        response = secured.post(f"{path}?wait=1s", json={"lease": lease}, headers=writer)
        assert response.status_code == status, response.text
        unlocked = secured.delete(f"{path}?lease={lease}", headers=writer)
        assert unlocked.status_code == (204 if status == 200 else 403)

    @pytest.mark.parametrize(
        ("path", "status"),
        [
            ("/v1/kv/app/a?wait_index=0&wait=1s", 200),
            ("/v1/kv?prefix=app/&wait_index=0&wait=1s", 200),
            ("/v1/kv/other/o?wait_index=0", 403),
            ("/v1/kv?prefix=other/&wait_index=0", 403),
        ],
    )
    def test_blocking_reads(self, secured: TestClient, path: str, status: int) -> None:
        assert secured.get(path, headers=bearer("app-reader")).status_code == status
