"""Cluster routes: ``/v1/cluster/members``, ``/v1/cluster/leader``."""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from raftdb.config import ConfigError, NodeConfig, check_peer_url
from raftdb.http.errors import json_response
from raftdb.http.params import read_json_object
from raftdb.http.spec import (
    DATACLASS_COMPONENTS,
    PathItem,
    Schema,
    dataclass_schema,
    error,
    errors,
    header,
    json_body,
    ref,
)
from raftdb.node.errors import BadRequestError
from raftdb.node.handle import Member, NodeHandle

__all__ = [
    "LEADER_REQUEST_SCHEMA",
    "MEMBER_CHANGED",
    "MEMBER_NOT_FOUND",
    "MEMBER_SCHEMA",
    "NEW_MEMBER_SCHEMA",
    "OPENAPI_PATHS",
    "cluster_routes",
    "member_json",
]

_MEMBER_FIELDS: Final = frozenset({"id", "peer_url", "learner"})


def member_json(member: Member) -> dict[str, Any]:
    """A member as the API shows it."""
    return {"id": member.id, "peer_url": member.peer_url, "learner": member.learner}


def _node_id(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequestError(f"{where} must be a member id, an integer ≥ 1 (got {value!r})")
    return value


def _path_id(request: Request) -> int:
    text: str = request.path_params["id"]
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise BadRequestError(f"member id must be an integer ≥ 1 (got {text!r})")
    return int(text)


# -- OpenAPI: what these routes answer (raftdb.http.openapi gathers it) ---------------

#: ``Member``, from the dataclass the routes answer with.
MEMBER_SCHEMA: Final = dataclass_schema(Member, DATACLASS_COMPONENTS)
_MEMBER_PROPERTIES: Final = MEMBER_SCHEMA["properties"]
#: ``NewMember``, the body of ``POST /v1/cluster/members``: a member, ``learner`` optional.
NEW_MEMBER_SCHEMA: Final[Schema] = {
    "type": "object",
    "required": ["id", "peer_url"],
    "additionalProperties": False,
    "properties": {
        **_MEMBER_PROPERTIES,
        "learner": {**_MEMBER_PROPERTIES["learner"], "default": False},
    },
}
#: ``LeaderRequest``, the body of ``POST /v1/cluster/leader``: the member to lead.
LEADER_REQUEST_SCHEMA: Final[Schema] = {
    "type": "object",
    "required": ["id"],
    "additionalProperties": False,
    "properties": {"id": _MEMBER_PROPERTIES["id"]},
}
#: A membership change's answers, shared with raftexample's ``POST``/``DELETE /{id}``.
MEMBER_CHANGED: Final[Schema] = {"description": "The change is committed."}
MEMBER_NOT_FOUND: Final = error("404", "No such member (`member_not_found`).")
#: The OpenAPI path items of :func:`cluster_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    "/v1/cluster/members": {
        "get": {
            "summary": "List the members",
            "operationId": "members_list",
            "tags": ["cluster"],
            "responses": {
                "200": json_body({"type": "array", "items": ref("Member")}, "The members.")
            },
        },
        "post": {
            "summary": "Add a voter or a learner (or promote a learner)",
            "operationId": "members_add",
            "tags": ["cluster"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("NewMember")}},
            },
            "responses": {
                "201": {
                    **json_body(ref("Member"), "The change is committed."),
                    "headers": {"Location": header("`/v1/cluster/members/<id>`.")},
                },
                **errors("400", "408", "413", "429", "503", "504"),
            },
        },
    },
    "/v1/cluster/members/{id}": {
        "delete": {
            "summary": "Remove a member",
            "operationId": "members_remove",
            "tags": ["cluster"],
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": _MEMBER_PROPERTIES["id"],
                },
            ],
            "responses": {
                "204": MEMBER_CHANGED,
                "404": MEMBER_NOT_FOUND,
                **errors("400", "429", "503", "504"),
            },
        },
    },
    "/v1/cluster/leader": {
        "post": {
            "summary": "Transfer leadership to a voter",
            "operationId": "leader_transfer",
            "tags": ["cluster"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("LeaderRequest")}},
            },
            "responses": {
                "200": json_body(
                    {"type": "object", "properties": {"leader": {"type": "integer"}}},
                    "The member now leads.",
                ),
                "404": MEMBER_NOT_FOUND,
                **errors("400", "408", "413", "503", "504"),
            },
        },
    },
}


def cluster_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The ``/v1/cluster`` routes."""
    limit = config.max_request_bytes
    body_timeout = config.body_timeout_s

    async def members(request: Request) -> Response:
        if request.method == "POST":
            return await add_member(request)
        return json_response([member_json(member) for member in node.members()])

    async def add_member(request: Request) -> Response:
        data = await read_json_object(request, limit, time_limit=body_timeout)
        unknown = sorted(set(data) - _MEMBER_FIELDS)
        if unknown:
            raise BadRequestError(
                f"unknown field {unknown[0]!r} (a member has: id, peer_url, learner)"
            )
        for name in ("id", "peer_url"):
            if name not in data:
                raise BadRequestError(f"field {name!r} is required")
        node_id = _node_id(data["id"], "field 'id'")
        peer_url = data["peer_url"]
        if not isinstance(peer_url, str):
            raise BadRequestError(f"field 'peer_url' must be a string (got {peer_url!r})")
        try:
            peer_url = check_peer_url(peer_url, "peer_url")
        except ConfigError as exc:
            raise BadRequestError(f"field 'peer_url' {exc.why}") from None
        learner = data.get("learner", False)
        if not isinstance(learner, bool):
            raise BadRequestError(f"field 'learner' must be true or false (got {learner!r})")
        member = await node.add_member(node_id, peer_url, learner)
        return json_response(
            member_json(member), 201, {"location": f"/v1/cluster/members/{member.id}"}
        )

    async def remove_member(request: Request) -> Response:
        await node.remove_member(_path_id(request))
        return Response(status_code=204)

    async def transfer_leader(request: Request) -> Response:
        data = await read_json_object(request, limit, time_limit=body_timeout)
        unknown = sorted(set(data) - {"id"})
        if unknown:
            raise BadRequestError(f'unknown field {unknown[0]!r} (the body is {{"id": <n>}})')
        if "id" not in data:
            raise BadRequestError("field 'id' is required: the member to hand leadership to")
        node_id = _node_id(data["id"], "field 'id'")
        await node.transfer_leader(node_id)
        return json_response({"leader": node_id})

    return [
        Route("/v1/cluster/members", members, methods=["GET", "POST"], name="members"),
        Route("/v1/cluster/members/{id}", remove_member, methods=["DELETE"], name="members_remove"),
        Route("/v1/cluster/leader", transfer_leader, methods=["POST"], name="leader_transfer"),
    ]
