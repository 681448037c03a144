"""Bearer tokens in front of the whole API (raftdb.http.auth, raftdb.http.tokens).

Every request is sent twice, through the fast path and through Starlette
alone: the check sits in front of both, so both must answer alike. The tokens
below are the text a client sends; the file holds only their SHA-256.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.http.auth import Authorizer, Keys, access_of, template_of
from raftdb.http.openapi import openapi_schema
from raftdb.http.tokens import Role, TokenStore, hash_token
from tests.http.conftest import CLUSTER
from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient, error_of

#: name → (token text, role, prefixes)
TOKENS = {
    "reader": ("r-3f1c9b2e7a", "read", None),
    "writer": ("w-9a8b7c6d5e", "write", None),
    "admin": ("a-0d1e2f3a4b", "admin", None),
    "app-writer": ("aw-5c6d7e8f9a", "write", ["app/", "config/"]),
    "app-reader": ("ar-1a2b3c4d5e", "read", ["app/"]),
}


def tokens_toml(tokens: Mapping[str, tuple[str, str, list[str] | None]]) -> str:
    lines = []
    for name, (text, role, prefixes) in tokens.items():
        lines += ["[[token]]", f'name = "{name}"', f'sha256 = "{hash_token(text)}"']
        lines.append(f'role = "{role}"')
        if prefixes is not None:
            lines.append("prefixes = [" + ", ".join(f'"{p}"' for p in prefixes) + "]")
    return "\n".join(lines) + "\n"


def bearer(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[name][0]}"}


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(tokens_toml(TOKENS))
    return path


def _config(tokens_file: Path, public_status: bool = True) -> NodeConfig:
    return NodeConfig(
        id=1, cluster=CLUSTER, tokens_file=str(tokens_file), public_status=public_status
    )


@pytest.fixture(params=[True, False], ids=["fast-path", "starlette"])
def fast_path(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def node() -> FakeNode:
    node = FakeNode()
    node.data.clear()
    return node


@pytest.fixture
def secured(node: FakeNode, tokens_file: Path, fast_path: bool) -> Iterator[TestClient]:
    with TestClient(create_api(node, _config(tokens_file), fast_path=fast_path)) as client:
        yield client


def _seed(client: TestClient) -> None:
    for key in ("app/a", "config/c", "other/o", "top"):
        assert client.put(f"/v1/kv/{key}", content=b"v", headers=bearer("admin")).status_code == 204


class TestUnauthorized:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"authorization": "Bearer not-a-token"},
            {"authorization": "Bearer"},
            {"authorization": "Bearer "},
            {"authorization": f"Basic {TOKENS['admin'][0]}"},
            {"authorization": TOKENS["admin"][0]},
            {"authorization": f"Bearer {hash_token(TOKENS['admin'][0])}"},  # the hash is no token
            {"x-token": TOKENS["admin"][0]},
        ],
        ids=["none", "wrong", "empty", "blank", "basic", "no-scheme", "the-hash", "other-header"],
    )
    @pytest.mark.parametrize(
        ("method", "path"),
        [("GET", "/v1/kv/k"), ("PUT", "/v1/kv/k"), ("GET", "/k"), ("GET", "/v1/cluster/members")],
    )
    def test_without_a_valid_token_is_401(
        self, secured: TestClient, node: FakeNode, headers: dict[str, str], method: str, path: str
    ) -> None:
        response = secured.request(method, path, headers=headers, content=b"v")
        assert error_of(response, 401) == "unauthorized"
        assert response.headers["www-authenticate"].startswith('Bearer realm="raftdb"')
        assert node.calls == []

    def test_two_authorization_headers_are_refused(self, secured: TestClient) -> None:
        headers = httpx.Headers(
            [
                ("authorization", "Bearer not-a-token"),
                ("authorization", bearer("admin")["authorization"]),
            ]
        )
        assert error_of(secured.get("/v1/kv/k", headers=headers), 401) == "unauthorized"

    def test_an_unknown_token_says_invalid_token(self, secured: TestClient) -> None:
        response = secured.get("/v1/kv/k", headers={"authorization": "Bearer nope"})
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    def test_scheme_is_case_insensitive(self, secured: TestClient) -> None:
        headers = {"authorization": f"bearer {TOKENS['reader'][0]}"}
        assert secured.get("/v1/kv/k", headers=headers).status_code == 404


class TestRoles:
    @pytest.mark.parametrize(
        ("method", "path", "body", "allowed"),
        [
            ("GET", "/v1/kv/top", b"", {"reader", "writer", "admin"}),
            ("HEAD", "/v1/kv/top", b"", {"reader", "writer", "admin"}),
            ("GET", "/v1/kv?prefix=", b"", {"reader", "writer", "admin"}),
            ("GET", "/v1/cluster/members", b"", {"reader", "writer", "admin"}),
            ("PUT", "/v1/kv/top", b"v", {"writer", "admin"}),
            ("DELETE", "/v1/kv/top", b"", {"writer", "admin"}),
            ("GET", "/top", b"", {"reader", "writer", "admin"}),
            ("PUT", "/top", b"v", {"writer", "admin"}),
            (
                "POST",
                "/v1/cluster/members",
                b'{"id": 7, "peer_url": "http://127.0.0.1:7"}',
                {"admin"},
            ),
            ("DELETE", "/v1/cluster/members/3", b"", {"admin"}),
            ("POST", "/v1/cluster/leader", b'{"id": 2}', {"admin"}),
            ("POST", "/8", b"http://127.0.0.1:8", {"admin"}),  # raftexample: add member
            ("DELETE", "/2", b"", {"admin"}),  # raftexample: remove member
            ("GET", "/v1/snapshot", b"", {"admin"}),
            ("GET", "/v1/no-such-route", b"", {"admin"}),  # unknown under a reserved root
        ],
    )
    @pytest.mark.parametrize("who", ["reader", "writer", "admin"])
    def test_role_table(
        self, secured: TestClient, who: str, method: str, path: str, body: bytes, allowed: set[str]
    ) -> None:
        _seed(secured)
        response = secured.request(method, path, content=body, headers=bearer(who))
        if who in allowed:
            assert response.status_code not in (401, 403), response.text
        else:
            assert error_of(response, 403) == "forbidden"
            assert who in response.json()["message"]

    def test_a_read_token_cannot_write(self, secured: TestClient, node: FakeNode) -> None:
        response = secured.put("/v1/kv/k", content=b"v", headers=bearer("reader"))
        assert error_of(response, 403) == "forbidden"
        assert "write role" in response.json()["message"]
        assert node.calls == []

    def test_a_lower_case_method_needs_the_role_of_its_upper_case(self, tokens_file: Path) -> None:
        """httpx upper-cases methods, so this one is sent to the ASGI app directly."""
        reached: list[str] = []

        async def inner(scope: Any, receive: Any, send: Any) -> None:
            reached.append(scope["method"])

        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        app = Authorizer(inner, TokenStore(tokens_file), public_status=True)
        scope = {
            "type": "http",
            "method": "put",
            "path": "/v1/kv/k",
            "raw_path": b"/v1/kv/k",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"authorization", bearer("reader")["authorization"].encode())],
        }
        asyncio.run(app(scope, receive, send))
        assert reached == []
        assert sent[0]["status"] == 403

    def test_a_method_the_path_does_not_take_needs_any_token(self, secured: TestClient) -> None:
        assert secured.patch("/v1/kv/k", headers=bearer("reader")).status_code == 405
        assert secured.patch("/v1/kv/k").status_code == 401


class TestPrefixes:
    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [
            ("PUT", "/v1/kv/app/x", 204),
            ("PUT", "/v1/kv/config/x", 204),
            ("GET", "/v1/kv/app/a", 200),
            ("DELETE", "/v1/kv/app/a", 204),
            ("PUT", "/app/y", 204),  # raftexample
            ("GET", "/app/a", 200),
            ("GET", "/v1/kv?prefix=app/", 200),
            ("GET", "/v1/kv?prefix=app/sub&start=app/sub/m&limit=5&values=true", 200),
            ("GET", "/v1/kv?prefix=app%2F", 200),
            ("PUT", "/v1/kv/other/x", 403),
            ("GET", "/v1/kv/other/o", 403),
            ("DELETE", "/v1/kv/top", 403),
            ("PUT", "/other", 403),
            ("GET", "/other/o", 403),
            ("PUT", "/v1/kv/ap", 403),  # a prefix of the prefix is not under it
            ("PUT", "/v1/kv/app", 403),
            ("GET", "/v1/kv", 403),  # no prefix: every key
            ("GET", "/v1/kv?prefix=", 403),
            ("GET", "/v1/kv?prefix=other/", 403),
            ("GET", "/v1/kv?prefix=ap", 403),
            ("GET", "/v1/kv?pre%66ix=other/", 403),  # the name decoded as the route decodes it
            ("GET", "/v1/kv?prefix=app/&prefix=other/", 403),
            ("GET", "/v1/kv?prefix=app/&key=other/o", 403),  # a parameter the check does not know
            ("GET", "/v1/kv%2Fother/o", 403),  # routed as /v1/kv/other/o
            ("GET", "/%76%31/kv/other/o", 403),
            ("PUT", "/v1/kv/app%2F..%2Fother", 204),  # keys are bytes: no path traversal
        ],
    )
    def test_prefix_limited_writer(
        self, secured: TestClient, node: FakeNode, method: str, path: str, status: int
    ) -> None:
        _seed(secured)
        calls = len(node.calls)
        response = secured.request(method, path, content=b"v", headers=bearer("app-writer"))
        assert response.status_code == status, response.text
        if status == 403:
            assert error_of(response, 403) == "forbidden"
            assert "app-writer" in response.json()["message"]
            assert len(node.calls) == calls  # refused before the node was asked

    def test_prefix_limited_reader_cannot_write_inside(self, secured: TestClient) -> None:
        response = secured.put("/v1/kv/app/x", content=b"v", headers=bearer("app-reader"))
        assert error_of(response, 403) == "forbidden"

    def test_prefix_limited_admin_may_change_membership(
        self, tmp_path: Path, node: FakeNode
    ) -> None:
        path = tmp_path / "t.toml"
        path.write_text(tokens_toml({"ops": ("ops-token", "admin", ["app/"])}))
        with TestClient(create_api(node, _config(path))) as client:
            headers = {"authorization": "Bearer ops-token"}
            assert client.delete("/v1/cluster/members/3", headers=headers).status_code == 204
            assert client.get("/v1/kv?prefix=", headers=headers).status_code == 403


class TestOpenPaths:
    @pytest.mark.parametrize(
        "path", ["/healthz", "/readyz", "/docs", "/openapi.json", "/", "/ui", "/ui/ui.js"]
    )
    def test_always_open(self, secured: TestClient, path: str) -> None:
        assert secured.get(path).status_code == 200
        assert secured.get(path, headers={"authorization": "Bearer wrong"}).status_code == 200

    @pytest.mark.parametrize("path", ["/v1/status", "/v1/cluster/status", "/metrics"])
    def test_status_follows_public_status(
        self, node: FakeNode, tokens_file: Path, fast_path: bool, path: str
    ) -> None:
        with TestClient(create_api(node, _config(tokens_file), fast_path=fast_path)) as client:
            assert client.get(path).status_code == 200
        closed = _config(tokens_file, public_status=False)
        with TestClient(create_api(node, closed, fast_path=fast_path)) as client:
            assert error_of(client.get(path), 401) == "unauthorized"
            assert client.get(path, headers=bearer("app-reader")).status_code == 200

    def test_no_tokens_file_is_open(self, node: FakeNode) -> None:
        with TestClient(create_api(node, NodeConfig(id=1, cluster=CLUSTER))) as client:
            assert client.put("/v1/kv/k", content=b"v").status_code == 204
            assert client.delete("/3").status_code == 204


class TestLogs:
    def test_tokens_are_never_logged(
        self, secured: TestClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.DEBUG):
            secured.put("/v1/kv/k", headers=bearer("reader"))
            secured.put("/v1/kv/other/k", headers=bearer("app-writer"))
            secured.get("/v1/kv/k", headers={"authorization": "Bearer guess-123"})
        text = caplog.text
        assert "reader" in text
        assert "app-writer" in text
        for token, _, _ in TOKENS.values():
            assert token not in text
        assert "guess-123" not in text


class TestRotation:
    def test_a_changed_file_is_read_at_most_once_per_interval(
        self, node: FakeNode, tokens_file: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        now = [0.0]
        store = TokenStore(tokens_file, check_interval=1.0, clock=lambda: now[0])
        with TestClient(create_api(node, _config(tokens_file), tokens=store)) as client:
            old, new = bearer("reader"), {"authorization": "Bearer rotated-token"}
            assert client.get("/v1/kv/k", headers=old).status_code == 404
            rotated = {"reader": ("rotated-token", "read", None)}
            tokens_file.write_text(tokens_toml(rotated))
            now[0] = 0.5  # not yet looked at
            assert client.get("/v1/kv/k", headers=old).status_code == 404
            now[0] = 1.0
            assert client.get("/v1/kv/k", headers=new).status_code == 404
            assert error_of(client.get("/v1/kv/k", headers=old), 401) == "unauthorized"
            # A broken file keeps the tokens in force, and says why once.
            tokens_file.write_text("[[token]]\nname = 'x'\n")
            now[0] = 2.0
            with caplog.at_level(logging.ERROR, logger="raftdb.auth"):
                assert client.get("/v1/kv/k", headers=new).status_code == 404
                now[0] = 3.0
                assert client.get("/v1/kv/k", headers=new).status_code == 404
            assert len(caplog.records) == 1
            assert "stay in force" in caplog.records[0].getMessage()
            # So does a file that is gone.
            tokens_file.unlink()
            now[0] = 4.0
            assert client.get("/v1/kv/k", headers=new).status_code == 404


class TestClassification:
    def test_every_documented_operation_is_classified(self) -> None:
        """No path of the OpenAPI document falls to the fail-closed default by mistake."""
        for template, operations in openapi_schema()["paths"].items():
            for method in operations:
                access = access_of(method.upper(), template, public_status=False)
                assert template_of(template.replace("{key}", "k").replace("{id}", "3")) in (
                    template,
                    "/{key}" if template == "/{key}" else template,
                )
                if template.startswith("/v1/cluster/") and method != "get":
                    assert access.role is Role.ADMIN
                if "{key}" in template:
                    assert access.keys in (Keys.PATH, Keys.ROOT_PATH, Keys.NONE)

    def test_the_document_describes_security_only_with_tokens(self, tokens_file: Path) -> None:
        open_doc = openapi_schema(NodeConfig(id=1, cluster=CLUSTER))
        assert "securitySchemes" not in open_doc["components"]
        doc = openapi_schema(_config(tokens_file, public_status=False))
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        put = doc["paths"]["/v1/kv/{key}"]["put"]
        assert put["security"] == [{"bearer": []}]
        assert {"401", "403"} <= set(put["responses"])
        assert doc["paths"]["/healthz"]["get"]["security"] == []
        assert doc["paths"]["/v1/status"]["get"]["security"] == [{"bearer": []}]
        public = openapi_schema(_config(tokens_file, public_status=True))
        assert public["paths"]["/v1/status"]["get"]["security"] == []


class TestRequireHTTPS:
    def test_plain_http_is_refused_when_tls_is_configured(
        self, node: FakeNode, tmp_path: Path
    ) -> None:
        cert = tmp_path / "c.pem"
        cert.write_text("x")
        config = NodeConfig(id=1, cluster=CLUSTER, tls_cert_file=str(cert), tls_key_file=str(cert))
        api = create_api(node, config)
        with TestClient(api) as client:
            assert error_of(client.get("/v1/kv/k"), 400) == "https_required"
        with TestClient(api, base_url="https://testserver") as client:
            assert client.get("/v1/kv/k").status_code == 404
