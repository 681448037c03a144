"""The API's OpenAPI 3.1 description (``/openapi.json``) and its HTML rendering (``/docs``).

Written by hand, next to the routes it describes; ``tests/http`` checks that
every route is in it and that it describes no route the app lacks. The docs
page is generated from the schema, self-contained (no scripts, no CDN), so it
works on a machine without internet access.
"""

from __future__ import annotations

import html
from typing import Any, Final

from raftdb.config import NodeConfig

__all__ = ["docs_html", "openapi_schema"]

_ERROR_REF: Final = {"$ref": "#/components/schemas/Error"}
_JSON_ERROR: Final = {"application/json": {"schema": _ERROR_REF}}
_INT: Final = {"type": "integer", "minimum": 0}

_ERRORS: Final = {
    "400": "Bad key, body, parameter or header (`bad_request`, `reserved_path`).",
    "404": "No such key, member or endpoint (`not_found`, `member_not_found`).",
    "412": "The `If-Match` / `If-None-Match` condition failed (`condition_failed`); "
    "`mod_index` is the key's current index, 0 when absent.",
    "413": "Key, value or body over its limit (`too_large`).",
    "503": "No leader or quorum now, the node is not ready, or it was removed "
    "(`unavailable`, `not_ready`, `node_removed`); retry after `Retry-After` seconds.",
    "504": "The write's outcome is unknown (`outcome_unknown`): it may still commit; "
    "retry with the same `Idempotency-Key`.",
}
_RETRY_AFTER: Final = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": _INT}
}


def _error(status: str, description: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description or _ERRORS[status],
        "content": _JSON_ERROR,
    }
    if status == "503":
        response["headers"] = _RETRY_AFTER
    return response


def _errors(*statuses: str) -> dict[str, Any]:
    return {status: _error(status) for status in statuses}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


_ETAG: Final = _header("The write's (or key's) log index, quoted: `\"42\"`.")
_INDEX: Final = _header("The same index, unquoted.", _INT)
_CONSISTENCY_HEADER: Final = _header(
    "Which consistency served the read.", {"type": "string", "enum": ["linearizable", "stale"]}
)
_KEY_PARAM: Final = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "The key: the rest of the path, percent-decoded to bytes (may contain `/`).",
    "schema": {"type": "string"},
}
#: A raftexample-style key (``/{key}``): anything but a path under a reserved root,
#: which is the API's own (``GET /readyz`` is the readiness check, not a key).
_ROOT_KEY_PARAM: Final = {
    **_KEY_PARAM,
    "description": "The key, as for /v1/kv/{key}; it may not start with a reserved root "
    "(v1, healthz, readyz, metrics, docs, openapi.json) followed by `/` or the end.",
    "schema": {
        "type": "string",
        "pattern": "^(?!(v1|healthz|readyz|metrics|docs|openapi\\.json)(/|$))",
    },
}
_CONSISTENCY_PARAM: Final = {
    "name": "consistency",
    "in": "query",
    "description": "`linearizable` (default: ReadIndex through the leader) or `stale` "
    "(this node's state machine, no round trip).",
    "schema": {"type": "string", "enum": ["linearizable", "stale"], "default": "linearizable"},
}
_IF_MATCH: Final = {
    "name": "If-Match",
    "in": "header",
    "description": 'Compare-and-set: write only if the key\'s ETag is this `"<index>"`.',
    "schema": {"type": "string"},
}
_IF_NONE_MATCH: Final = {
    "name": "If-None-Match",
    "in": "header",
    "description": "`*`: create only (write only if the key does not exist).",
    "schema": {"type": "string", "enum": ["*"]},
}
_IDEMPOTENCY_KEY: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": "1-128 bytes naming this write: a retry with the same key is applied "
    "at most once, and answered like the first attempt (`X-Raftdb-Duplicate: true`).",
    "schema": {"type": "string", "maxLength": 128},
}


def _written(description: str, delete: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "ETag": _ETAG,
        "X-Raftdb-Index": _INDEX,
        "X-Raftdb-Duplicate": _header(
            "`true` when an `Idempotency-Key` retry was answered from the first attempt."
        ),
    }
    if delete:
        headers["X-Raftdb-Existed"] = _header("`true` if the key existed.")
    return {"description": description, "headers": headers}


def _kv_get(
    summary: str, operation: str, tag: str, key: dict[str, Any] = _KEY_PARAM
) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": operation,
        "tags": [tag],
        "parameters": [key, _CONSISTENCY_PARAM],
        "responses": {
            "200": {
                "description": "The raw value.",
                "headers": {
                    "ETag": _header('The key\'s mod index, quoted: `"42"`.'),
                    "X-Raftdb-Index": _header("The key's mod index.", _INT),
                    "X-Raftdb-Consistency": _CONSISTENCY_HEADER,
                },
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            },
            "404": _error("404", "No such key (`not_found`)."),
            **_errors("400", "413", "503"),
        },
    }


def _kv_put(
    summary: str, operation: str, tag: str, key: dict[str, Any] = _KEY_PARAM
) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": operation,
        "tags": [tag],
        "parameters": [key, _IF_MATCH, _IF_NONE_MATCH, _IDEMPOTENCY_KEY],
        "requestBody": {
            "required": False,
            "description": "The raw value (any bytes; `max_value_bytes`).",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        "responses": {
            "204": _written("Committed and applied."),
            **_errors("400", "412", "413", "503", "504"),
        },
    }


def openapi_schema(config: NodeConfig | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (limits from ``config`` when given)."""
    limits = ""
    if config is not None:
        limits = (
            f" This node's limits: key {config.max_key_bytes} bytes, value "
            f"{config.max_value_bytes} bytes, request body {config.max_request_bytes} bytes."
        )
    status_schema = {
        "type": "object",
        "required": [
            "id",
            "role",
            "leader",
            "term",
            "commit_index",
            "applied_index",
            "first_index",
            "last_index",
            "members",
        ],
        "properties": {
            "id": _INT,
            "role": {"type": "string", "enum": ["leader", "follower", "candidate", "learner"]},
            "leader": {**_INT, "description": "The leader's id; 0 when none is known."},
            "term": _INT,
            "commit_index": _INT,
            "applied_index": _INT,
            "first_index": _INT,
            "last_index": _INT,
            "members": {"type": "array", "items": _ref("Member")},
        },
    }
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "A stable code (docs/api.md)."},
                "message": {"type": "string", "description": "What went wrong and why."},
                "mod_index": {**_INT, "description": "412 only: the key's current index."},
                "leader": {**_INT, "description": "503 only: the leader, when known."},
            },
        },
        "Member": {
            "type": "object",
            "required": ["id", "peer_url", "learner"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "peer_url": {"type": "string", "examples": ["http://127.0.0.1:42379"]},
                "learner": {"type": "boolean"},
            },
        },
        "NewMember": {
            "type": "object",
            "required": ["id", "peer_url"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "peer_url": {"type": "string", "examples": ["http://127.0.0.1:42379"]},
                "learner": {"type": "boolean", "default": False},
            },
        },
        "LeaderRequest": {
            "type": "object",
            "required": ["id"],
            "additionalProperties": False,
            "properties": {"id": {"type": "integer", "minimum": 1}},
        },
        "KeyEntry": {
            "type": "object",
            "required": ["key", "create_index", "mod_index"],
            "properties": {
                "key": {
                    "type": "string",
                    "description": "UTF-8 text, or base64 (see key_encoding).",
                },
                "key_encoding": {
                    "type": "string",
                    "enum": ["base64"],
                    "description": "Present only when the key is not valid UTF-8.",
                },
                "create_index": _INT,
                "mod_index": _INT,
                "value": {
                    "type": "string",
                    "description": "With `values=true`: UTF-8 text, "
                    "or base64 (see value_encoding).",
                },
                "value_encoding": {
                    "type": "string",
                    "enum": ["base64"],
                    "description": "Present only when the value is not valid UTF-8.",
                },
            },
        },
        "Status": status_schema,
    }
    paths: dict[str, Any] = {
        "/v1/kv/{key}": {
            "get": _kv_get("Read a key", "kv_get", "kv"),
            "put": _kv_put("Write a key", "kv_put", "kv"),
            "delete": {
                "summary": "Delete a key",
                "operationId": "kv_delete",
                "tags": ["kv"],
                "parameters": [_KEY_PARAM, _IF_MATCH, _IDEMPOTENCY_KEY],
                "responses": {
                    "204": _written("Committed and applied (also when the key was absent).", True),
                    **_errors("400", "412", "413", "503", "504"),
                },
            },
        },
        "/v1/kv": {
            "get": {
                "summary": "List keys by prefix, sorted",
                "operationId": "kv_list",
                "tags": ["kv"],
                "parameters": [
                    {
                        "name": "prefix",
                        "in": "query",
                        "description": "Only keys starting with these (percent-decoded) bytes.",
                        "schema": {"type": "string", "default": ""},
                    },
                    {
                        "name": "start",
                        "in": "query",
                        "description": "Only keys ≥ this one (pagination: see `Link`).",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "At most this many keys.",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 10000,
                            "default": 1000,
                        },
                    },
                    {
                        "name": "values",
                        "in": "query",
                        "description": "Include the values.",
                        "schema": {"type": "boolean", "default": False},
                    },
                    _CONSISTENCY_PARAM,
                ],
                "responses": {
                    "200": {
                        **_json({"type": "array", "items": _ref("KeyEntry")}, "The keys."),
                        "headers": {
                            "X-Raftdb-Consistency": _CONSISTENCY_HEADER,
                            "Link": _header('`<next page URL>; rel="next"` when more keys follow.'),
                        },
                    },
                    **_errors("400", "503"),
                },
            },
        },
        "/v1/cluster/members": {
            "get": {
                "summary": "List the members",
                "operationId": "members_list",
                "tags": ["cluster"],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Member")}, "The members.")
                },
            },
            "post": {
                "summary": "Add a voter or a learner (or promote a learner)",
                "operationId": "members_add",
                "tags": ["cluster"],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewMember")}},
                },
                "responses": {
                    "201": {
                        **_json(_ref("Member"), "The change is committed."),
                        "headers": {"Location": _header("`/v1/cluster/members/<id>`.")},
                    },
                    **_errors("400", "413", "503", "504"),
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
                        "schema": {"type": "integer", "minimum": 1},
                    },
                ],
                "responses": {
                    "204": {"description": "The change is committed."},
                    "404": _error("404", "No such member (`member_not_found`)."),
                    **_errors("400", "503", "504"),
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
                    "content": {"application/json": {"schema": _ref("LeaderRequest")}},
                },
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"leader": {"type": "integer"}}},
                        "The member now leads.",
                    ),
                    "404": _error("404", "No such member (`member_not_found`)."),
                    **_errors("400", "413", "503", "504"),
                },
            },
        },
        "/v1/status": {
            "get": {
                "summary": "This node's view of the cluster",
                "operationId": "status",
                "tags": ["node"],
                "responses": {"200": _json(_ref("Status"), "The status.")},
            },
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the process answers",
                "operationId": "healthz",
                "tags": ["node"],
                "responses": {"200": _json({"type": "object"}, "Alive.")},
            },
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: a leader is known and all committed entries are applied",
                "operationId": "readyz",
                "tags": ["node"],
                "responses": {
                    "200": _json({"type": "object"}, "Ready."),
                    "503": _error("503", "Not ready (`not_ready`); the message says why."),
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
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "tags": ["docs"],
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
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
                "responses": {"200": _json({"type": "object"}, "Links.")},
            },
        },
        "/{key}": {
            "get": _kv_get(
                "raftexample: read a key (as GET /v1/kv/{key})",
                "raftexample_get",
                "raftexample",
                _ROOT_KEY_PARAM,
            ),
            "put": _kv_put(
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
                    "content": {
                        "*/*": {
                            "schema": {"type": "string", "examples": ["http://127.0.0.1:42379"]}
                        }
                    },
                },
                "responses": {
                    "204": {"description": "The change is committed."},
                    **_errors("400", "413", "503", "504"),
                },
            },
            "delete": {
                "summary": "raftexample: remove member {key} (an id)",
                "operationId": "raftexample_remove_member",
                "tags": ["raftexample"],
                "parameters": [_ROOT_KEY_PARAM],
                "responses": {
                    "204": {"description": "The change is committed."},
                    "404": _error("404", "No such member (`member_not_found`)."),
                    **_errors("400", "503", "504"),
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "raftdb",
            "version": "1",
            "description": "A Raft-replicated key-value store. Any node answers any request: "
            "writes and linearizable reads on a follower go through the leader. Errors are "
            '`{"error": "<code>", "message": "..."}`. The root paths `v1/`, `healthz`, '
            "`readyz`, `metrics`, `docs` and `openapi.json` are reserved: raftexample-style "
            "keys (`/{key}`) cannot start with them." + limits,
        },
        "tags": [
            {"name": "kv", "description": "Keys and values."},
            {"name": "cluster", "description": "Membership and leadership."},
            {"name": "node", "description": "Status, health, metrics."},
            {"name": "raftexample", "description": "etcd raftexample's API, verbatim."},
            {"name": "docs", "description": "This documentation."},
        ],
        "paths": paths,
        "components": {"schemas": schemas},
    }


_METHODS: Final = ("get", "put", "post", "delete")
_STYLE: Final = """
body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#222}
h1{margin-bottom:0}code,td.path{font-family:ui-monospace,monospace}
section{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
.m{display:inline-block;min-width:4.5rem;font-weight:700;font-family:ui-monospace,monospace}
.get{color:#0a6}.put{color:#a60}.post{color:#06a}.delete{color:#c22}
table{border-collapse:collapse;margin:.3rem 0}td,th{padding:.15rem .6rem;text-align:left;
vertical-align:top;border-bottom:1px solid #eee}th{font-weight:600}
"""


def _md(text: str) -> str:
    """Escape ``text`` for HTML, rendering `code` spans."""
    parts = html.escape(text).split("`")
    return "".join(
        f"<code>{part}</code>" if odd else part
        for odd, part in ((i % 2 == 1, p) for i, p in enumerate(parts))
    )


def _schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"list of {_schema_name(schema.get('items', {}))}"
    return str(schema.get("type", ""))


def docs_html(schema: dict[str, Any]) -> str:
    """A self-contained HTML page listing every operation of ``schema``."""
    info = schema["info"]
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(info['title'])} API</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(info['title'])} API</h1>",
        f"<p>{_md(info['description'])}</p>",
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI '
        f"{html.escape(schema['openapi'])}).</p>",
    ]
    for tag in schema["tags"]:
        out.append(f"<h2>{html.escape(tag['name'])}</h2><p>{_md(tag['description'])}</p>")
        for path, item in schema["paths"].items():
            for method in _METHODS:
                operation = item.get(method)
                if operation is None or tag["name"] not in operation.get("tags", ()):
                    continue
                out.append(
                    f'<section id="{html.escape(operation["operationId"])}">'
                    f'<p><span class="m {method}">{method.upper()}</span>'
                    f"<code>{html.escape(path)}</code> — {_md(operation['summary'])}</p>"
                )
                params = operation.get("parameters", [])
                if params:
                    out.append("<table><tr><th>parameter</th><th>in</th><th>meaning</th></tr>")
                    for param in params:
                        out.append(
                            f"<tr><td><code>{html.escape(param['name'])}</code></td>"
                            f"<td>{html.escape(param['in'])}</td>"
                            f"<td>{_md(param.get('description', ''))}</td></tr>"
                        )
                    out.append("</table>")
                body = operation.get("requestBody")
                if body:
                    kinds = ", ".join(
                        f"{kind} ({_schema_name(media.get('schema', {}))})"
                        for kind, media in body["content"].items()
                    )
                    out.append(
                        f"<p>Body: {_md(body.get('description', ''))} <code>"
                        f"{html.escape(kinds)}</code></p>"
                    )
                out.append("<table><tr><th>status</th><th>meaning</th></tr>")
                for status, response in operation["responses"].items():
                    out.append(
                        f"<tr><td>{html.escape(status)}</td>"
                        f"<td>{_md(response['description'])}</td></tr>"
                    )
                out.append("</table></section>")
    out.append("<h2>Schemas</h2>")
    for name, component in schema["components"]["schemas"].items():
        fields = ", ".join(
            f"<code>{html.escape(field)}</code>" for field in component.get("properties", {})
        )
        out.append(f"<p><b>{html.escape(name)}</b>: {fields}</p>")
    out.append("</body></html>")
    return "\n".join(out)
