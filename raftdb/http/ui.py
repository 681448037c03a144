"""``/ui``: the status page, three static files served by every node.

``GET /ui`` is the page, ``/ui/ui.js`` its script, ``/ui/ui.css`` its style,
read once from the package (``raftdb/http/ui/``) when the app is built. Plain
files with no build step and no external URL, so the page works on a
machine without internet access. The page holds no data: its script fetches
``/v1/cluster/status`` (and, in its key browser, ``/v1/kv``) with the token
the user typed, so the three files are open to anyone, always
(:mod:`raftdb.http.auth`), and the data answers follow the token rules.

Every answer carries a Content-Security-Policy that allows only this
node's own script, style and fetches (no inline script: whatever a key or
value holds, the page cannot be made to run it), ``nosniff`` and
``no-cache`` (a node upgraded in place serves its new page at once).

The files are about 25 KiB as written (readable, commented, no minifier);
a browser that accepts gzip, as every one does, is sent them compressed
once when the app is built, about 7 KiB in all.
"""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final, TypeAlias

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from raftdb.config import NodeConfig
from raftdb.http.spec import PathItem
from raftdb.node.handle import NodeHandle

__all__ = ["FILES", "HEADERS", "OPENAPI_PATHS", "ui_routes"]

Endpoint: TypeAlias = Callable[[Request], Awaitable[Response]]

#: Route path → (file in ``raftdb/http/ui/``, content type).
FILES: Final = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/ui.js": ("ui.js", "text/javascript; charset=utf-8"),
    "/ui/ui.css": ("ui.css", "text/css; charset=utf-8"),
}
#: The headers of every ``/ui`` answer.
HEADERS: Final = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}

_SUMMARIES: Final = {
    "/ui": ("The live status page of the cluster (HTML)", "ui"),
    "/ui/ui.js": ("The status page's script", "ui_script"),
    "/ui/ui.css": ("The status page's style", "ui_style"),
}
#: The OpenAPI path items of :func:`ui_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    path: {
        "get": {
            "summary": _SUMMARIES[path][0],
            "operationId": _SUMMARIES[path][1],
            "tags": ["ui"],
            "responses": {
                "200": {
                    "description": "The file (static; open without a token).",
                    "content": {kind.split(";")[0]: {"schema": {"type": "string"}}},
                }
            },
        }
    }
    for path, (_, kind) in FILES.items()
}


def _read(name: str) -> bytes:
    """A file of the page, from the installed package."""
    return resources.files("raftdb.http").joinpath("ui", name).read_bytes()


def _accepts_gzip(request: Request) -> bool:
    """Whether the request's ``Accept-Encoding`` allows gzip (``gzip`` or ``*``, not at ``q=0``)."""
    for item in request.headers.get("accept-encoding", "").split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding.lower() not in ("gzip", "*"):
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False


def _endpoint(body: bytes, headers: dict[str, str]) -> Endpoint:
    """The handler answering ``body`` with ``headers``: gzip-compressed (once, here)
    to a client that accepts it."""
    plain = {**headers, "vary": "Accept-Encoding"}
    packed = gzip.compress(body, compresslevel=9, mtime=0)
    compressed = {**plain, "content-encoding": "gzip"}

    async def serve(request: Request) -> Response:
        if _accepts_gzip(request):
            return Response(packed, headers=compressed)
        return Response(body, headers=plain)

    return serve


def ui_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The three routes of the status page (its files are read once, here)."""
    return [
        Route(
            path,
            _endpoint(_read(name), {**HEADERS, "content-type": kind}),
            methods=["GET"],
            name=_SUMMARIES[path][1],
        )
        for path, (name, kind) in FILES.items()
    ]
