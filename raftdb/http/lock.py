"""Lock routes: ``POST /v1/lock/{name}`` (acquire, waiting) and ``DELETE`` (release).

For curl users; the node does the work (``NodeHandle.lock``), on etcd's
``concurrency`` recipe: each contender creates ``<name>/<lease id in 16 hex
digits>`` attached to its lease, the lowest ``create_index`` under ``<name>/``
holds the lock, and the others wait for the key just below theirs to go.
The holder's ``create_index`` is answered as ``fence``, a fencing token:
``docs/api.md`` shows how a holder guards its writes with it in a
transaction, and what the lock does not promise (a holder that pauses past
its lease's TTL has lost the lock without knowing).

A waiting ``POST`` ends at ``wait`` (``408``; its key is deleted) or when the
client goes away (the node is told at once, and deletes the key), whichever
comes first.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from raftdb.config import NodeConfig
from raftdb.http.bodies import check_fields, key_json
from raftdb.http.errors import json_response
from raftdb.http.kv import WAIT_PARAM
from raftdb.http.params import (
    KEY_CONVERTOR,
    parse_id,
    parse_query,
    parse_wait,
    raw_path_key,
    read_json_object,
    until_disconnected,
)
from raftdb.http.spec import INT, PathItem, Schema, error, errors, json_body, ref
from raftdb.node.errors import BadRequestError, TooLargeError
from raftdb.node.handle import NodeHandle

__all__ = ["LOCK_SUFFIX_BYTES", "OPENAPI_PATHS", "SCHEMAS", "lock_routes"]

#: What the node adds to a lock's name for each contender's key: ``/`` and 16 hex digits.
LOCK_SUFFIX_BYTES: Final = 17
_PREFIX: Final = b"/v1/lock/"
_LOCK_QUERY: Final = frozenset({"wait"})
_UNLOCK_QUERY: Final = frozenset({"lease"})
_LOCK_FIELDS: Final = frozenset({"lease"})


def _name(request: Request, max_key_bytes: int) -> bytes:
    """The lock's name: the rest of the path, percent-decoded to bytes (may hold ``/``)."""
    name = raw_path_key(request.scope, _PREFIX)
    if name is None:
        name = request.path_params["name"].encode("utf-8", "surrogateescape")
    if not name:
        raise BadRequestError("the lock name is empty: give it in the path, as /v1/lock/<name>")
    limit = max_key_bytes - LOCK_SUFFIX_BYTES
    if len(name) > limit:
        raise TooLargeError(
            f"the lock name is {len(name)} bytes, over the limit of {limit} "
            f"(max_key_bytes, less {LOCK_SUFFIX_BYTES} for the contender's suffix)"
        )
    return name


# -- OpenAPI: what these routes answer (raftdb.http.openapi gathers it) ---------------

_NAME_PARAM: Final[Schema] = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The lock's name: the rest of the path, percent-decoded to bytes "
    "(may contain `/`). Its contenders' keys are `<name>/<lease id, 16 hex digits>`.",
    "schema": {"type": "string", "minLength": 1},
}
#: The component schemas of this module.
SCHEMAS: Final[dict[str, Schema]] = {
    "LockRequest": {
        "type": "object",
        "required": ["lease"],
        "additionalProperties": False,
        "properties": {
            "lease": {
                "description": "The lease that holds the lock: it is released when the "
                "lease ends (revoked, or expired for want of keep-alives).",
                "oneOf": [
                    {"type": "string", "pattern": "^[1-9][0-9]{0,18}$"},
                    {"type": "integer", "minimum": 1},
                ],
            }
        },
    },
    "Lock": {
        "type": "object",
        "required": ["fence"],
        "properties": {
            "key": {"type": "string", "description": "The holder's key, when it is UTF-8."},
            "key_b64": {
                "type": "string",
                "contentEncoding": "base64",
                "description": "The holder's key in base64, when it is not UTF-8.",
            },
            "fence": {
                **INT,
                "description": "The holder's key's create_index: a fencing token, larger for "
                "every later holder. Guard writes with a transaction comparing it.",
            },
        },
    },
}
#: The OpenAPI path item of :func:`lock_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    "/v1/lock/{name}": {
        "post": {
            "summary": "Acquire a lock for a lease (waits up to `wait`)",
            "operationId": "lock",
            "tags": ["lock"],
            "parameters": [_NAME_PARAM, WAIT_PARAM],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("LockRequest")}},
            },
            "responses": {
                "200": json_body(ref("Lock"), "Held."),
                "404": error(
                    "404",
                    "No such lease, or it ended while waiting (`lease_not_found`); the "
                    "waiting key was deleted by someone else (`lock_not_held`).",
                ),
                "408": error(
                    "408",
                    "Not acquired within `wait` (`request_timeout`); the waiting key "
                    "was deleted. (Also: the body took longer than `body_timeout_s`.)",
                ),
                **errors("400", "413", "429", "503", "504"),
            },
        },
        "delete": {
            "summary": "Release a lock held by a lease",
            "operationId": "unlock",
            "tags": ["lock"],
            "parameters": [
                _NAME_PARAM,
                {
                    "name": "lease",
                    "in": "query",
                    "required": True,
                    "description": "The lease that holds (or waits for) the lock.",
                    "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,18}$"},
                },
            ],
            "responses": {
                "204": {"description": "Released: the lease's key of the lock is deleted."},
                "404": error(
                    "404",
                    "The lease holds no key of this lock (`lock_not_held`), or "
                    "there is no such lease (`lease_not_found`).",
                ),
                **errors("400", "413", "429", "503", "504"),
            },
        },
    },
}


def lock_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The ``/v1/lock`` routes."""
    limit = config.max_request_bytes
    body_timeout = config.body_timeout_s
    max_key_bytes = config.max_key_bytes

    async def lock(request: Request) -> Response:
        name = _name(request, max_key_bytes)
        if request.method == "DELETE":
            return await unlock(request, name)
        query = parse_query(request.scope, _LOCK_QUERY)
        wait = parse_wait(query.get("wait"))
        data = await read_json_object(request, limit, time_limit=body_timeout)
        check_fields(data, _LOCK_FIELDS, "the body")
        if "lease" not in data:
            raise BadRequestError('field \'lease\' is required: {"lease": "<id>"}')
        lease = parse_id("field 'lease'", data["lease"])
        held = await until_disconnected(request.receive, node.lock(name, lease, wait))
        return json_response({**key_json(held.key), "fence": held.fence})

    async def unlock(request: Request, name: bytes) -> Response:
        query = parse_query(request.scope, _UNLOCK_QUERY)
        if "lease" not in query:
            raise BadRequestError("query parameter 'lease' is required: ?lease=<id>")
        lease = parse_id("query parameter 'lease'", query["lease"].decode("utf-8", "replace"))
        await node.unlock(name, lease)
        return Response(status_code=204)

    return [
        Route(f"/v1/lock/{{name:{KEY_CONVERTOR}}}", lock, methods=["POST", "DELETE"], name="lock"),
    ]
