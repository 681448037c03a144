"""The two ceilings: a trivial Starlette app and a bare ASGI app, same REST shape.

Both answer ``PUT /v1/kv/{key}`` with ``204`` after reading the body, and
``GET /v1/kv/{key}`` (any query) with ``200`` and a fixed 100-byte value, as a
raftdb read of a benchmark key would; they store nothing. The Starlette one
goes through Starlette's routing, ``Request`` and ``Response``, as raftdb's API
does: the most any Starlette node could serve on this machine. The bare one is
the ASGI callable alone: the most uvicorn itself serves.

Run one with ``uvicorn benchmarks.cluster.apps:starlette_app`` (or
``:bare_app``) from the repository root; the benchmark does.
"""

from __future__ import annotations

from typing import Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = ["VALUE", "bare_app", "starlette_app"]

#: What a GET answers: the size of the benchmark's values.
VALUE: Final = b"v" * 100


async def _kv(request: Request) -> Response:
    if request.method == "PUT":
        await request.body()
        return Response(status_code=204)
    return Response(VALUE, media_type="application/octet-stream")


#: The trivial Starlette app: one route, a handler that does nothing.
starlette_app: Final = Starlette(
    routes=[Route("/v1/kv/{key:path}", _kv, methods=["GET", "PUT"])],
)

_GET_HEADERS: Final = [
    (b"content-type", b"application/octet-stream"),
    (b"content-length", str(len(VALUE)).encode()),
]


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The bare ASGI app: no routing, no request object; lifespan accepted."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] == "PUT":
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": _GET_HEADERS})
    await send({"type": "http.response.body", "body": VALUE})
