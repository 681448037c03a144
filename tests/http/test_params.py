"""Request parts as raftdb.http.params reads them."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Message, Scope

from raftdb.http.params import route_path

#: (path, root_path, what the router matches).
ROUTE_PATHS = [
    ("/v1/kv/k", "", "/v1/kv/k"),  # no root_path
    ("/", "", "/"),
    ("/api/v1/kv/k", "/api", "/v1/kv/k"),
    ("/api/", "/api", "/"),
    ("/api", "/api", ""),  # the root itself: nothing left
    ("/apix/k", "/api", "/apix/k"),  # not at a segment's end: kept whole
    ("/v1/kv/k", "/api", "/v1/kv/k"),  # outside the root_path: kept whole
]


@pytest.mark.parametrize(("path", "root_path", "expected"), ROUTE_PATHS)
def test_route_path(path: str, root_path: str, expected: str) -> None:
    scope = {"type": "http", "path": path, "root_path": root_path}
    assert route_path(scope) == expected


def test_route_path_without_root_path_in_the_scope() -> None:
    assert route_path({"type": "http", "path": "/k"}) == "/k"


@pytest.mark.parametrize(("path", "root_path", "expected"), ROUTE_PATHS)
def test_route_path_is_what_starlette_routes(path: str, root_path: str, expected: str) -> None:
    """Starlette's router matches the same path: a catch-all route says what it matched."""
    matched: list[str] = []

    async def catch_all(request: Request) -> Response:
        matched.append("/" + request.path_params["rest"])
        return Response()

    router = Router(routes=[Route("/{rest:path}", catch_all)], redirect_slashes=False)
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": root_path,
        "query_string": b"",
        "headers": [],
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    asyncio.run(router(scope, receive, send))
    assert matched == ([expected] if expected else [])
