"""Lease routes: ``/v1/leases`` (grant, list), ``/v1/leases/{id}`` (info, revoke), keep-alive.

A lease is a time to live shared by keys (``PUT /v1/kv/{key}?lease=ID``
attaches one). Ids are decimal strings in JSON and paths: they are log
indexes, which JSON numbers hold exactly, but etcd's JSON gateway writes its
64-bit ids as strings and clients written for it expect that. ``ttl`` is whole
seconds, from ``NodeConfig.min_lease_ttl`` (above the election timeout, so that a
leader change, which gives every lease a fresh full TTL, cannot expire a
lease that was kept alive) to :data:`~raftdb.kv.changes.MAX_LEASE_TTL`; a
``ttl`` outside is a ``400`` naming the bound, never silently raised.

With a tokens file, a token limited to prefixes may act on a lease only while
every key attached to it is under its prefixes (``GET``, keep-alive and
revoke look at the lease's keys first): revoking a lease deletes its keys,
and keeping one alive keeps them. Granting touches no key.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from raftdb.config import NodeConfig
from raftdb.http.auth import check_keys, scope_token
from raftdb.http.bodies import check_fields, key_json
from raftdb.http.errors import json_response
from raftdb.http.params import (
    MAX_IDEMPOTENCY_KEY_BYTES,
    parse_consistency,
    parse_id,
    parse_idempotency_key,
    parse_query,
    read_json_object,
)
from raftdb.http.spec import PathItem, Schema, error, errors, header, json_body, ref
from raftdb.kv.changes import MAX_LEASE_TTL
from raftdb.node.errors import BadRequestError
from raftdb.node.handle import LeaseInfo, NodeHandle

__all__ = [
    "LEASE_ID_PARAM",
    "OPENAPI_PATHS",
    "SCHEMAS",
    "lease_json",
    "lease_routes",
]

_GRANT_FIELDS: Final = frozenset({"ttl"})
_READ_QUERY: Final = frozenset({"consistency"})
_NO_QUERY: Final = frozenset[str]()


def lease_json(lease: LeaseInfo, *, keys: bool) -> dict[str, Any]:
    """A lease as the API shows it: id as a decimal string, ``remaining`` in seconds.

    ``keys``: add the attached keys, as ``keys`` (the UTF-8 ones, as text) and
    ``keys_b64`` (the others, base64; only when there are some), each sorted.
    """
    found: dict[str, Any] = {
        "id": str(lease.id),
        "ttl": lease.ttl,
        "remaining": round(max(0.0, lease.remaining), 3),
    }
    if keys:
        text: list[str] = []
        b64: list[str] = []
        for key in lease.keys:
            shown = key_json(key)
            if "key" in shown:
                text.append(shown["key"])
            else:
                b64.append(shown["key_b64"])
        found["keys"] = text
        if b64:
            found["keys_b64"] = b64
    return found


def _path_id(request: Request) -> int:
    text: str = request.path_params["id"]
    return parse_id("the lease id in the path", text)


# -- OpenAPI: what these routes answer (raftdb.http.openapi gathers it) ---------------

#: The ``{id}`` path parameter of ``/v1/leases/{id}``.
LEASE_ID_PARAM: Final[Schema] = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The lease id (decimal).",
    "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,18}$"},
}
_CONSISTENCY_PARAM: Final[Schema] = {
    "name": "consistency",
    "in": "query",
    "description": "`linearizable` (default) or `stale` (this member's view).",
    "schema": {"type": "string", "enum": ["linearizable", "stale"], "default": "linearizable"},
}
_ID: Final[Schema] = {"type": "string", "description": "The lease id, decimal."}
_TTL: Final[Schema] = {"type": "integer", "description": "Time to live, in seconds.", "minimum": 1}
_REMAINING: Final[Schema] = {
    "type": "number",
    "minimum": 0,
    "description": "Seconds left before this member expects the lease to expire (its own "
    "estimate: only the leader's clock expires leases).",
}
_LEASE_NOT_FOUND: Final = error(
    "404", "No such lease: never granted, revoked, or expired (`lease_not_found`)."
)
#: The component schemas of this module.
SCHEMAS: Final[dict[str, Schema]] = {
    "LeaseGrant": {
        "type": "object",
        "required": ["ttl"],
        "additionalProperties": False,
        "properties": {
            "ttl": {
                **_TTL,
                "maximum": MAX_LEASE_TTL,
                "description": "Time to live, in seconds: at least the node's minimum "
                "(2 with the default election timeout; a smaller one is a 400).",
            }
        },
    },
    "LeaseGranted": {
        "type": "object",
        "required": ["id", "ttl"],
        "properties": {"id": _ID, "ttl": _TTL},
    },
    "Lease": {
        "type": "object",
        "required": ["id", "ttl", "remaining", "keys"],
        "properties": {
            "id": _ID,
            "ttl": _TTL,
            "remaining": _REMAINING,
            "keys": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The attached keys that are UTF-8, sorted.",
            },
            "keys_b64": {
                "type": "array",
                "items": {"type": "string", "contentEncoding": "base64"},
                "description": "The attached keys that are not UTF-8, in base64, sorted "
                "(present only when there are some).",
            },
        },
    },
    "LeaseList": {
        "type": "object",
        "required": ["leases"],
        "properties": {
            "leases": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "ttl", "remaining"],
                    "properties": {"id": _ID, "ttl": _TTL, "remaining": _REMAINING},
                },
            }
        },
    },
}
#: The OpenAPI path items of :func:`lease_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    "/v1/leases": {
        "post": {
            "summary": "Grant a lease",
            "operationId": "lease_grant",
            "tags": ["leases"],
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "description": f"1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes naming this grant: "
                    "a retry is granted at most once, and answered with the same lease.",
                    "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY_BYTES},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("LeaseGrant")}},
            },
            "responses": {
                "201": {
                    **json_body(ref("LeaseGranted"), "Granted (committed and applied)."),
                    "headers": {"Location": header("`/v1/leases/<id>`.")},
                },
                **errors("400", "408", "413", "429", "503", "504"),
            },
        },
        "get": {
            "summary": "List the leases (admin)",
            "operationId": "lease_list",
            "tags": ["leases"],
            "parameters": [_CONSISTENCY_PARAM],
            "responses": {
                "200": json_body(ref("LeaseList"), "Every lease, by id."),
                **errors("400", "429", "503"),
            },
        },
    },
    "/v1/leases/{id}": {
        "get": {
            "summary": "A lease: its TTL, what remains of it, its keys",
            "operationId": "lease_info",
            "tags": ["leases"],
            "parameters": [LEASE_ID_PARAM, _CONSISTENCY_PARAM],
            "responses": {
                "200": json_body(ref("Lease"), "The lease."),
                "404": _LEASE_NOT_FOUND,
                **errors("400", "429", "503"),
            },
        },
        "delete": {
            "summary": "Revoke a lease and delete its keys (one log entry)",
            "operationId": "lease_revoke",
            "tags": ["leases"],
            "parameters": [LEASE_ID_PARAM],
            "responses": {
                "204": {"description": "Revoked; its keys are deleted."},
                "404": _LEASE_NOT_FOUND,
                **errors("400", "429", "503", "504"),
            },
        },
    },
    "/v1/leases/{id}/keepalive": {
        "post": {
            "summary": "Renew a lease for its full TTL",
            "operationId": "lease_keepalive",
            "tags": ["leases"],
            "parameters": [LEASE_ID_PARAM],
            "responses": {
                "200": json_body(ref("LeaseGranted"), "Renewed (committed and applied)."),
                "404": _LEASE_NOT_FOUND,
                **errors("400", "429", "503", "504"),
            },
        },
    },
}


def lease_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The ``/v1/leases`` routes."""
    limit = config.max_request_bytes
    body_timeout = config.body_timeout_s
    minimum = config.min_lease_ttl

    async def check_lease_keys(request: Request, lease_id: int) -> None:
        """For a token limited to prefixes: every key of the lease must be under them."""
        token = scope_token(request.scope)
        if token is not None and token.prefixes is not None:
            info = await node.lease_info(lease_id)
            check_keys(request.scope, f"lease {lease_id}", reads=info.keys)

    async def leases(request: Request) -> Response:
        if request.method == "POST":
            return await grant(request)
        query = parse_query(request.scope, _READ_QUERY)
        found = await node.leases(parse_consistency(query.get("consistency")))
        return json_response({"leases": [lease_json(lease, keys=False) for lease in found]})

    async def grant(request: Request) -> Response:
        if request.scope["query_string"]:
            parse_query(request.scope, _NO_QUERY)
        idempotency_key = parse_idempotency_key(request.headers)
        data = await read_json_object(request, limit, time_limit=body_timeout)
        check_fields(data, _GRANT_FIELDS, "the body")
        if "ttl" not in data:
            raise BadRequestError("field 'ttl' is required: {\"ttl\": <seconds>}")
        ttl = data["ttl"]
        if isinstance(ttl, bool) or not isinstance(ttl, int):
            raise BadRequestError(f"field 'ttl' must be a whole number of seconds (got {ttl!r})")
        if not minimum <= ttl <= MAX_LEASE_TTL:
            raise BadRequestError(
                f"field 'ttl' must be from {minimum} (the minimum lease TTL: twice the "
                f"election timeout) to {MAX_LEASE_TTL} seconds (got {ttl})"
            )
        lease = await node.lease_grant(ttl, idempotency_key=idempotency_key)
        return json_response(
            {"id": str(lease.id), "ttl": lease.ttl}, 201, {"location": f"/v1/leases/{lease.id}"}
        )

    async def lease(request: Request) -> Response:
        lease_id = _path_id(request)
        if request.method == "DELETE":
            if request.scope["query_string"]:
                parse_query(request.scope, _NO_QUERY)
            await check_lease_keys(request, lease_id)
            await node.lease_revoke(lease_id)
            return Response(status_code=204)
        query = parse_query(request.scope, _READ_QUERY)
        info = await node.lease_info(lease_id, parse_consistency(query.get("consistency")))
        check_keys(request.scope, f"lease {lease_id}", reads=info.keys)
        return json_response(lease_json(info, keys=True))

    async def keepalive(request: Request) -> Response:
        lease_id = _path_id(request)
        if request.scope["query_string"]:
            parse_query(request.scope, _NO_QUERY)
        await check_lease_keys(request, lease_id)
        info = await node.lease_keepalive(lease_id)
        return json_response({"id": str(info.id), "ttl": info.ttl})

    return [
        Route("/v1/leases", leases, methods=["GET", "POST"], name="leases"),
        Route("/v1/leases/{id}", lease, methods=["GET", "DELETE"], name="lease"),
        Route("/v1/leases/{id}/keepalive", keepalive, methods=["POST"], name="lease_keepalive"),
    ]
