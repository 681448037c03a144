"""etcd raftexample's API, verbatim: ``PUT/GET /{key}``, ``POST/DELETE /{id}``.

raftexample puts keys at the root of the path, so every other route of the
API must lie under a root it keeps for itself (:data:`RESERVED_ROOTS`); a key
starting with one is refused with a message saying to use ``/v1/kv``. Key
reads and writes are :class:`~raftdb.http.kv.KeyValueEndpoints`', so they
answer as ``/v1/kv/{key}`` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from raftdb.config import ConfigError, NodeConfig, check_peer_url
from raftdb.http.cluster import MEMBER_CHANGED, MEMBER_NOT_FOUND, MEMBER_SCHEMA
from raftdb.http.errors import MethodNotAllowedError
from raftdb.http.kv import KEY_PARAM, KeyValueEndpoints, get_operation, put_operation
from raftdb.http.params import KEY_CONVERTOR, path_key, read_body
from raftdb.http.spec import PathItem, errors
from raftdb.node.errors import BadRequestError
from raftdb.node.handle import NodeHandle

__all__ = ["OPENAPI_PATHS", "RESERVED_ROOTS", "raftexample_routes"]

_RESERVED_NAMES: Final = ("v1", "healthz", "readyz", "metrics", "docs", "openapi.json", "ui")
#: First path segments the API keeps for itself: not raftexample-style keys.
RESERVED_ROOTS: Final = frozenset(name.encode("ascii") for name in _RESERVED_NAMES)


def _member_id(key: bytes, method: str) -> int:
    text = key.decode("utf-8", "replace")
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        action = "adds a member" if method == "POST" else "removes a member"
        hint = "" if method == "POST" else "; to delete a key use DELETE /v1/kv/<key>"
        raise BadRequestError(
            f"raftexample's {method} /<id> {action}: {text!r} is not a member id "
            f"(an integer ≥ 1){hint}"
        )
    return int(text)


# -- OpenAPI: what this route answers (raftdb.http.openapi gathers it) ----------------

#: A raftexample-style key: anything but a path under a reserved root, which is
#: the API's own (``GET /readyz`` is the readiness check, not a key).
_ROOT_KEY_PARAM: Final = {
    **KEY_PARAM,
    "description": "The key, as for /v1/kv/{key}; it may not start with a reserved root "
    f"({', '.join(_RESERVED_NAMES)}) followed by `/` or the end.",
    "schema": {
        "type": "string",
        "pattern": f"^(?!({'|'.join(map(re.escape, _RESERVED_NAMES))})(/|$))",
    },
}
#: The OpenAPI path item of :func:`raftexample_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    "/{key}": {
        "get": get_operation(
            "raftexample: read a key (as GET /v1/kv/{key})",
            "raftexample_get",
            "raftexample",
            _ROOT_KEY_PARAM,
        ),
        "put": put_operation(
            "raftexample: write a key (as PUT /v1/kv/{key})",
            "raftexample_put",
            "raftexample",
            _ROOT_KEY_PARAM,
        ),
        "post": {
            "summary": "raftexample: add member {key} (an id); the body is its peer URL",
            "operationId": "raftexample_add_member",
            "tags": ["raftexample"],
            "parameters": [_ROOT_KEY_PARAM],
            "requestBody": {
                "required": True,
                "content": {"*/*": {"schema": MEMBER_SCHEMA["properties"]["peer_url"]}},
            },
            "responses": {
                "204": MEMBER_CHANGED,
                **errors("400", "408", "413", "429", "503", "504"),
            },
        },
        "delete": {
            "summary": "raftexample: remove member {key} (an id)",
            "operationId": "raftexample_remove_member",
            "tags": ["raftexample"],
            "parameters": [_ROOT_KEY_PARAM],
            "responses": {
                "204": MEMBER_CHANGED,
                "404": MEMBER_NOT_FOUND,
                **errors("400", "429", "503", "504"),
            },
        },
    },
}


def raftexample_routes(
    node: NodeHandle, config: NodeConfig, reserved: Callable[[Request, bytes], Response]
) -> list[BaseRoute]:
    """etcd raftexample's API, verbatim: ``PUT/GET /<key>``, ``POST/DELETE /<id>``.

    Args:
        node: the node.
        config: its configuration (limits).
        reserved: called as ``reserved(request, key)`` for a path under a
            reserved root; returns the error answer.
    """
    endpoints = KeyValueEndpoints(node, config)
    max_key_bytes = config.max_key_bytes
    max_request_bytes = config.max_request_bytes
    body_timeout = config.body_timeout_s

    async def root_key(request: Request) -> Response:
        key = path_key(request.scope, b"/", max_key_bytes)
        if key.partition(b"/")[0] in RESERVED_ROOTS:
            return reserved(request, key)
        method = request.method
        if method == "PUT":
            return await endpoints.put(request, key)
        if method in ("GET", "HEAD"):
            return await endpoints.get(request, key)
        if method == "POST":
            node_id = _member_id(key, method)
            body = await read_body(
                request,
                max_request_bytes,
                "request body",
                "max_request_bytes",
                time_limit=body_timeout,
            )
            try:
                url = check_peer_url(body.decode("utf-8", "replace"), "peer_url")
            except ConfigError as exc:
                raise BadRequestError(
                    f"POST /{node_id}: the body must be the new member's peer URL, "
                    f"http://host:port (got {body[:100]!r}): {exc.why}"
                ) from None
            await node.add_member(node_id, url)
            return Response(status_code=204)
        if method == "DELETE":
            await node.remove_member(_member_id(key, method))
            return Response(status_code=204)
        raise MethodNotAllowedError(  # pragma: no cover - the route lists its methods
            f"{method} is not allowed here", "GET, HEAD, PUT, POST, DELETE"
        )

    return [
        Route(
            f"/{{key:{KEY_CONVERTOR}}}",
            root_key,
            methods=["GET", "PUT", "POST", "DELETE"],
            name="raftexample",
        )
    ]
