"""The OpenAPI 3.1 document, and the routes serving it: ``/openapi.json``, ``/docs``, ``/``.

The document is gathered, not written here: each route module declares the
path items of its routes beside them (``OPENAPI_PATHS``), and the schemas of
what they answer; the ``Status``, ``Member`` and ``ClusterStatus`` schemas are
generated from the node's dataclasses (:func:`raftdb.http.spec.dataclass_schema`). This module
adds what belongs to the whole API (info, tags, the ``Error`` schema) and the
operations of its own three routes. ``tests/http`` checks that every route is
described and that nothing is described that the app lacks. The document and
its HTML page (:mod:`raftdb.http.docs_page`) are built once, with the app.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from raftdb.config import NodeConfig
from raftdb.http import (
    cluster,
    cluster_status,
    kv,
    leases,
    lock,
    meta,
    raftexample,
    snapshot,
    txn,
    ui,
    watch,
)
from raftdb.http.auth import describe_security
from raftdb.http.docs_page import docs_html
from raftdb.http.errors import JSON_TYPE, json_response
from raftdb.http.spec import ERROR_SCHEMA, PathItem, json_body
from raftdb.node.handle import NodeHandle

__all__ = ["OPENAPI_PATHS", "docs_routes", "openapi_schema"]

#: The OpenAPI path items of :func:`docs_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "tags": ["docs"],
            "responses": {"200": json_body({"type": "object"}, "The OpenAPI document.")},
        },
    },
    "/docs": {
        "get": {
            "summary": "This document as an HTML page",
            "operationId": "docs",
            "tags": ["docs"],
            "responses": {
                "200": {
                    "description": "HTML.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        },
    },
    "/": {
        "get": {
            "summary": "Where the API and its docs are",
            "operationId": "index",
            "tags": ["docs"],
            "responses": {"200": json_body({"type": "object"}, "Links.")},
        },
    },
}
_TAGS: Final = [
    {"name": "kv", "description": "Keys and values (and blocking reads)."},
    {"name": "watch", "description": "Changes as server-sent events."},
    {"name": "txn", "description": "Multi-key transactions."},
    {"name": "leases", "description": "Keys with a time to live."},
    {"name": "lock", "description": "Locks on leases, with fencing tokens."},
    {"name": "cluster", "description": "Membership and leadership."},
    {"name": "backup", "description": "Consistent snapshots of the whole state."},
    {"name": "node", "description": "Status, health, metrics."},
    {"name": "ui", "description": "The status page: static HTML, script and style, open to all."},
    {"name": "raftexample", "description": "etcd raftexample's API, verbatim."},
    {"name": "docs", "description": "This documentation."},
]


def openapi_schema(config: NodeConfig | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (limits from ``config`` when given).

    With a ``tokens_file`` in ``config``, the document also has the bearer
    security scheme, and ``401``/``403`` on the operations that need a token
    (:func:`raftdb.http.auth.describe_security`).

    Paths come in the order the app routes them (:func:`raftdb.http.app.create_api`).
    The document is a fresh copy: a caller may change it (a test tool
    loading it might) without changing the route modules' tables.
    """
    limits = ""
    if config is not None:
        limits = (
            f" This node's limits: key {config.max_key_bytes} bytes, value "
            f"{config.max_value_bytes} bytes, request body {config.max_request_bytes} bytes."
        )
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "raftdb",
            "version": "1",
            "description": "A Raft-replicated key-value store. Any node answers any request: "
            "writes and linearizable reads on a follower go through the leader. Errors are "
            '`{"error": "<code>", "message": "..."}`. The root paths `v1/`, `healthz`, '
            "`readyz`, `metrics`, `docs`, `openapi.json` and `ui` are reserved: raftexample-style "
            "keys (`/{key}`) cannot start with them." + limits,
        },
        "tags": _TAGS,
        "paths": {
            **kv.OPENAPI_PATHS,
            **watch.OPENAPI_PATHS,
            **txn.OPENAPI_PATHS,
            **leases.OPENAPI_PATHS,
            **lock.OPENAPI_PATHS,
            **cluster.OPENAPI_PATHS,
            **cluster_status.OPENAPI_PATHS,
            **snapshot.OPENAPI_PATHS,
            **meta.OPENAPI_PATHS,
            **ui.OPENAPI_PATHS,
            **OPENAPI_PATHS,
            **raftexample.OPENAPI_PATHS,
        },
        "components": {
            "schemas": {
                "Error": ERROR_SCHEMA,
                "Member": cluster.MEMBER_SCHEMA,
                "NewMember": cluster.NEW_MEMBER_SCHEMA,
                "LeaderRequest": cluster.LEADER_REQUEST_SCHEMA,
                "KeyEntry": kv.KEY_ENTRY_SCHEMA,
                "Status": meta.STATUS_SCHEMA,
                **cluster_status.SCHEMAS,
                **watch.SCHEMAS,
                **txn.SCHEMAS,
                **leases.SCHEMAS,
                **lock.SCHEMAS,
            }
        },
    }
    document = copy.deepcopy(document)
    if config is not None and config.tokens_file:
        describe_security(document, public_status=config.public_status)
    return document


def docs_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The routes that describe the API: the document, its HTML page, and the index."""
    schema = openapi_schema(config)
    schema_body = json.dumps(schema, ensure_ascii=False, indent=1).encode()
    docs_body = docs_html(schema)
    index = {
        "name": "raftdb",
        "id": node.id,
        "api": "/v1/",
        "docs": "/docs",
        "openapi": "/openapi.json",
    }

    async def openapi(request: Request) -> Response:
        return Response(schema_body, media_type=JSON_TYPE)

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_body)

    async def root(request: Request) -> Response:
        return json_response(index)

    return [
        Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
        Route("/docs", docs, methods=["GET"], name="docs"),
        Route("/", root, methods=["GET"], name="index"),
    ]
