"""Health, readiness, metrics, the OpenAPI document and the docs page."""

from __future__ import annotations

import re
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.http.meta import METRICS_CONTENT_TYPE
from tests.http.fake_node import METRICS, FakeNode
from tests.http.helpers import TestClient, error_of


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "id": 1}


def test_readyz_ready(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_readyz_not_ready_is_503_with_reason(client: TestClient, node: FakeNode) -> None:
    node.ready = False
    node.leader = 0
    response = client.get("/readyz")
    assert error_of(response, 503) == "not_ready"
    assert "no leader" in response.json()["message"]
    assert response.headers["retry-after"] == "1"
    node.leader = 2
    assert "starting or stopping" in client.get("/readyz").json()["message"]


def test_metrics(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == METRICS_CONTENT_TYPE
    assert response.text == METRICS


def test_index(client: TestClient) -> None:
    data = client.get("/").json()
    assert data["docs"] == "/docs"
    assert data["openapi"] == "/openapi.json"
    assert data["id"] == 1


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if "$ref" in value else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def _routed(config: NodeConfig) -> set[tuple[str, str]]:
    """(OpenAPI path, method) for every route of the app."""
    app = create_api(FakeNode(), config, fast_path=False)
    assert isinstance(app, Starlette)
    found = set()
    for route in app.routes:
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in route.methods or ():
            if method != "HEAD":
                found.add((path, method.lower()))
    return found


def test_openapi_describes_exactly_the_routes(client: TestClient, config: NodeConfig) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    schema = response.json()
    described = {
        (path, method)
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head")
    }
    assert described == _routed(config)
    assert ("/v1/kv/{key}", "put") in described
    assert ("/{key}", "post") in described


def test_openapi_is_well_formed(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"]
    assert schema["info"]["version"]
    components = schema["components"]["schemas"]
    for ref in _refs(schema):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[-1] in components, ref
    operation_ids = []
    tags = {tag["name"] for tag in schema["tags"]}
    for path, item in schema["paths"].items():
        assert path.startswith("/")
        templated = set(re.findall(r"\{(\w+)\}", path))
        for operation in item.values():
            operation_ids.append(operation["operationId"])
            assert operation["summary"]
            assert set(operation["tags"]) <= tags
            assert operation["responses"]
            for status, answer in operation["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status)
                assert answer["description"]
            params = operation.get("parameters", [])
            assert {p["name"] for p in params if p["in"] == "path"} == templated, path
            for param in params:
                assert param["in"] in ("path", "query", "header")
                if param["in"] == "path":
                    assert param["required"] is True
    assert len(operation_ids) == len(set(operation_ids))


def test_openapi_states_the_limits(client: TestClient) -> None:
    description = client.get("/openapi.json").json()["info"]["description"]
    assert "key 64 bytes" in description
    assert "value 1000 bytes" in description


def test_docs_page_lists_every_operation(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<script" not in page
    assert "http://" not in page.replace("http://127.0.0.1", "")
    schema = client.get("/openapi.json").json()
    for item in schema["paths"].values():
        for operation in item.values():
            assert f'id="{operation["operationId"]}"' in page
