"""The node's own routes: ``/v1/status``, ``/healthz``, ``/readyz``, ``/metrics``.

Everything here is cheap and answers without the cluster: ``/readyz`` says
why the node is not ready rather than waiting for it. (The API's description,
``/openapi.json``, ``/docs`` and the index ``/``, is :mod:`raftdb.http.openapi`'s.)
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from raftdb.config import NodeConfig
from raftdb.http.errors import json_response
from raftdb.http.spec import DATACLASS_COMPONENTS, PathItem, dataclass_schema, error, json_body, ref
from raftdb.node.errors import NotReadyError
from raftdb.node.handle import NodeHandle, NodeStatus

__all__ = ["METRICS_CONTENT_TYPE", "OPENAPI_PATHS", "STATUS_SCHEMA", "meta_routes"]

#: The Prometheus text exposition format's content type.
METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# -- OpenAPI: what these routes answer (raftdb.http.openapi gathers it) ---------------

#: ``Status``, from the dataclass ``/v1/status`` answers with.
STATUS_SCHEMA: Final = dataclass_schema(NodeStatus, DATACLASS_COMPONENTS)
#: The OpenAPI path items of :func:`meta_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    "/v1/status": {
        "get": {
            "summary": "This node's view of the cluster",
            "operationId": "status",
            "tags": ["node"],
            "responses": {"200": json_body(ref("Status"), "The status.")},
        },
    },
    "/healthz": {
        "get": {
            "summary": "Liveness: the process answers",
            "operationId": "healthz",
            "tags": ["node"],
            "responses": {"200": json_body({"type": "object"}, "Alive.")},
        },
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: a leader is known and all committed entries are applied",
            "operationId": "readyz",
            "tags": ["node"],
            "responses": {
                "200": json_body({"type": "object"}, "Ready."),
                "503": error("503", "Not ready (`not_ready`); the message says why."),
            },
        },
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "tags": ["node"],
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        },
    },
}


def meta_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The routes about the node itself."""

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

    return [
        Route("/v1/status", status, methods=["GET"], name="status"),
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Route("/readyz", readyz, methods=["GET"], name="readyz"),
        Route("/metrics", metrics, methods=["GET"], name="metrics"),
    ]
