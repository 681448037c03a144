"""``GET /v1/cluster/status``: the cluster as the answering node sees it.

The status page (:mod:`raftdb.http.ui`) polls it. The answer is the node's
:class:`~raftdb.node.handle.ClusterStatus` as JSON; its schema components
are generated from that dataclass and the ones it holds. Access is that of
``/v1/status`` (:mod:`raftdb.http.auth`): open with ``public_status``, else
the ``read`` role.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from raftdb.config import NodeConfig
from raftdb.http.errors import json_response
from raftdb.http.spec import (
    DATACLASS_COMPONENTS,
    PathItem,
    Schema,
    dataclass_schema,
    error,
    json_body,
    ref,
)
from raftdb.node.handle import (
    ClusterCounters,
    ClusterMember,
    ClusterStatus,
    LeaderChange,
    NodeHandle,
)

__all__ = ["OPENAPI_PATHS", "SCHEMAS", "cluster_status_routes"]

# -- OpenAPI: what this route answers (raftdb.http.openapi gathers it) ----------------

#: The component schemas of the answer, from its dataclasses.
SCHEMAS: Final[dict[str, Schema]] = {
    DATACLASS_COMPONENTS[cls]: dataclass_schema(cls, DATACLASS_COMPONENTS)
    for cls in (ClusterStatus, ClusterMember, LeaderChange, ClusterCounters)
}
#: The OpenAPI path item of :func:`cluster_status_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    "/v1/cluster/status": {
        "get": {
            "summary": "The cluster as this node sees it: members (with the leader's "
            "progress of each when it leads), leader changes, read and write counters",
            "operationId": "cluster_status",
            "tags": ["cluster"],
            "responses": {
                "200": json_body(ref("ClusterStatus"), "The cluster as this node sees it."),
                "503": error("503", "The node is starting (`not_ready`)."),
            },
        },
    },
}


def cluster_status_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The route of ``GET /v1/cluster/status``."""

    async def cluster_status(request: Request) -> Response:
        return json_response(asdict(node.cluster_status()))

    return [Route("/v1/cluster/status", cluster_status, methods=["GET"], name="cluster_status")]
