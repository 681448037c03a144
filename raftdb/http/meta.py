"""The node's own routes: ``/v1/status``, health, readiness, metrics, the docs, the index.

Everything here is cheap and answers without the cluster (``/readyz`` says
why the node is not ready rather than waiting). The OpenAPI document and its
HTML page are built once, when the app is, and served as bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from raftdb.config import NodeConfig
from raftdb.http.errors import JSON_TYPE, json_response
from raftdb.http.openapi import docs_html, openapi_schema
from raftdb.node.errors import NotReadyError
from raftdb.node.handle import NodeHandle

__all__ = ["METRICS_CONTENT_TYPE", "meta_routes"]

#: The Prometheus text exposition format's content type.
METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def meta_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The routes about the node itself, and the API's own description."""
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

    async def status(request: Request) -> Response:
        return json_response(asdict(node.status()))

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok", "id": node.id})

    async def readyz(request: Request) -> Response:
        if node.is_ready():
            return json_response({"status": "ready", "id": node.id})
        now = node.status()
        if not now.leader:
            why = "no leader is known"
        elif now.applied_index < now.commit_index:
            why = f"applied index {now.applied_index} is behind commit index {now.commit_index}"
        else:
            why = "the node is starting or stopping"
        raise NotReadyError(f"node {now.id} is not ready: {why}")

    async def metrics(request: Request) -> Response:
        return Response(node.metrics_text(), headers={"content-type": METRICS_CONTENT_TYPE})

    async def openapi(request: Request) -> Response:
        return Response(schema_body, media_type=JSON_TYPE)

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_body)

    async def root(request: Request) -> Response:
        return json_response(index)

    return [
        Route("/v1/status", status, methods=["GET"], name="status"),
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Route("/readyz", readyz, methods=["GET"], name="readyz"),
        Route("/metrics", metrics, methods=["GET"], name="metrics"),
        Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
        Route("/docs", docs, methods=["GET"], name="docs"),
        Route("/", root, methods=["GET"], name="index"),
    ]
