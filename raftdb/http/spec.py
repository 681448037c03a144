"""What the route modules describe their operations with, for the OpenAPI document.

Each route module declares, next to its routes, the OpenAPI path items of
those routes (``OPENAPI_PATHS``); :mod:`raftdb.http.openapi` gathers them into
one document. This module holds the pieces they share: the error answer every
route may give, headers and JSON bodies, and :func:`dataclass_schema`, which
derives a component schema from a typed dataclass (``NodeStatus``,
``Member``) so that the document cannot drift from what the API writes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias, Union

from raftdb.node.handle import (
    ClusterCounters,
    ClusterMember,
    ClusterStatus,
    LeaderChange,
    Member,
    NodeStatus,
)

__all__ = [
    "DATACLASS_COMPONENTS",
    "ERROR_SCHEMA",
    "INT",
    "Operation",
    "PathItem",
    "Schema",
    "dataclass_schema",
    "error",
    "errors",
    "header",
    "json_body",
    "ref",
    "type_schema",
]

#: A JSON Schema (or any OpenAPI object: they are all JSON objects here).
Schema: TypeAlias = dict[str, Any]
#: One operation: ``summary``, ``operationId``, ``tags``, ``parameters``, ``responses``…
Operation: TypeAlias = dict[str, Any]
#: The operations of one path, by lower-case method (``"get"``, ``"put"``…).
PathItem: TypeAlias = dict[str, Operation]

#: A count, index or id: never negative.
INT: Final[Schema] = {"type": "integer", "minimum": 0}


def ref(name: str) -> Schema:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


#: The body of every error answer, as :func:`raftdb.http.errors.error_response` writes it.
ERROR_SCHEMA: Final[Schema] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "A stable code (docs/api.md)."},
        "message": {"type": "string", "description": "What went wrong and why."},
        "mod_index": {**INT, "description": "412 only: the key's current index."},
        "leader": {**INT, "description": "503 only: the leader, when known."},
        "oldest_index": {
            **INT,
            "description": "410 only: the oldest index a watch may start from (`since`).",
        },
    },
}
_JSON_ERROR: Final = {"application/json": {"schema": ref("Error")}}
#: What each error status means, across the API (the codes are docs/api.md's).
_ERRORS: Final = {
    "400": "Bad key, body, parameter or header (`bad_request`, `reserved_path`).",
    "401": "No valid bearer token (`unauthorized`): send `Authorization: Bearer <token>`; "
    "`WWW-Authenticate` names the scheme. Only when the node has a tokens_file.",
    "403": "The token lacks the role, or the key (or listing prefix) is outside its "
    "prefixes (`forbidden`). Only when the node has a tokens_file.",
    "404": "No such key, member, lease or endpoint (`not_found`, `member_not_found`, "
    "`lease_not_found`).",
    "408": "The body took longer than `body_timeout_s` to arrive (`request_timeout`); "
    "the connection is closed.",
    "412": "The `If-Match` / `If-None-Match` condition failed (`condition_failed`); "
    "`mod_index` is the key's current index, 0 when absent.",
    "413": "Key, value or body over its limit (`too_large`); the connection is closed.",
    "429": "The node holds `max_pending_requests` waiting requests, applies too far "
    "behind its commit index, or builds as many large listings as it may "
    "(`too_many_requests`); nothing was done: retry after `Retry-After` seconds.",
    "503": "No leader or quorum now, the node is not ready, or it was removed "
    "(`unavailable`, `not_ready`, `node_removed`); retry after `Retry-After` seconds.",
    "504": "The write's outcome is unknown (`outcome_unknown`): it may still commit; "
    "retry with the same `Idempotency-Key`.",
}
_RETRY_AFTER: Final = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": INT}
}

_CHALLENGE: Final = {
    "WWW-Authenticate": {
        "description": '`Bearer realm="raftdb"` (with `error="invalid_token"` for a bad token).',
        "schema": {"type": "string"},
    }
}


def error(status: str, description: str | None = None) -> Schema:
    """The error answer with ``status``, described by ``description`` or as the API-wide one."""
    response: Schema = {"description": description or _ERRORS[status], "content": _JSON_ERROR}
    if status in ("429", "503"):
        response["headers"] = _RETRY_AFTER
    elif status == "401":
        response["headers"] = _CHALLENGE
    return response


def errors(*statuses: str) -> dict[str, Schema]:
    """The error answers with ``statuses``, described as across the API."""
    return {status: error(status) for status in statuses}


def json_body(schema: Schema, description: str) -> Schema:
    """A JSON answer of ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def header(description: str, schema: Schema | None = None) -> Schema:
    """An answer's header (a string unless ``schema`` says otherwise)."""
    return {"description": description, "schema": schema or {"type": "string"}}


#: The dataclasses the API writes as JSON, by their component name in the document.
DATACLASS_COMPONENTS: Final[Mapping[type, str]] = {
    NodeStatus: "Status",
    Member: "Member",
    ClusterStatus: "ClusterStatus",
    ClusterMember: "ClusterMember",
    LeaderChange: "LeaderChange",
    ClusterCounters: "ClusterCounters",
}

_SCALARS: Final[dict[object, Schema]] = {
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
}


def type_schema(hint: object, names: Mapping[type, str]) -> Schema:
    """The JSON Schema of values of the type ``hint``, as ``json.dumps(asdict(...))`` writes them.

    Args:
        hint: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]`` of one of
            those, ``list[X]``, ``X | None``, or a dataclass named in ``names``.
        names: the component name of each dataclass that may appear; it
            becomes a ``$ref`` there.

    Raises:
        TypeError: a type this does not map (rather than a wrong schema).
    """
    if hint in _SCALARS:
        return dict(_SCALARS[hint])
    if isinstance(hint, type) and hint in names:
        return ref(names[hint])
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        kinds = {type(value) for value in args}
        if len(kinds) != 1 or next(iter(kinds)) not in _SCALARS:
            raise TypeError(f"a Literal of one scalar type maps to JSON Schema, not {hint!r}")
        return {**_SCALARS[next(iter(kinds))], "enum": list(args)}
    if origin is list:
        return {"type": "array", "items": type_schema(args[0], names)}
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = type_schema(args[0] if args[1] is type(None) else args[1], names)
        if isinstance(inner.get("type"), str):
            return {**inner, "type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    raise TypeError(f"no JSON Schema for {hint!r}: map it in raftdb.http.spec.type_schema")


def dataclass_schema(cls: type, names: Mapping[type, str]) -> Schema:
    """The component schema of dataclass ``cls`` as the API writes it (``asdict``).

    Each property comes from the field's type hint (:func:`type_schema`),
    then its ``metadata``, which holds JSON Schema keywords: a
    ``description``, and bounds or examples the type cannot say
    (``{"minimum": 1}``). Every field is required: ``asdict`` writes them all,
    defaults included.

    Args:
        cls: the dataclass.
        names: component names of the dataclasses its fields may hold.
    """
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    return {
        "type": "object",
        "required": [field.name for field in fields],
        "properties": {
            field.name: {**type_schema(hints[field.name], names), **field.metadata}
            for field in fields
        },
    }
