"""Key-value routes: ``/v1/kv/{key}`` and ``/v1/kv`` (listing).

This is the hot path: handlers are closures over the node and the limits,
parse only what the request carries, and build small responses by hand.
:class:`KeyValueEndpoints` holds the operations, so that raftexample's
``/{key}`` (:mod:`raftdb.http.raftexample`) answers exactly as ``/v1/kv/{key}``.

A read or a listing with ``wait_index`` is a Consul-style blocking read: it
waits (``NodeHandle.wait_for_change``, at most ``wait``, and no longer than
its client stays) for a change after that index, then reads as usual. A
``PUT`` may attach the key to a lease (``?lease=ID``). Both take the
Starlette route: the fast path answers only requests without such parameters.

A listing page is bounded in keys (``limit``) and in bytes (``max_list_bytes``,
its JSON): the state machine hands over one page bounded so, and the page
ends before the entry that would take its JSON past the limit (at least one
entry). A large listing (values, or more than :data:`_INLINE_LIST_KEYS` keys)
is read and encoded in threads, off the event loop that drives Raft, and at
most :data:`_LARGE_LISTINGS_AT_ONCE` are built at a time (``429`` beyond), so
that what listings hold in memory stays bounded however many clients ask.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, Final
from urllib.parse import quote_from_bytes

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from raftdb.config import NodeConfig
from raftdb.http.errors import JSON_TYPE, NotFoundError, error_response
from raftdb.http.params import (
    DEFAULT_WAIT_S,
    KEY_CONVERTOR,
    MAX_IDEMPOTENCY_KEY_BYTES,
    MAX_WAIT_S,
    parse_blocking,
    parse_bool,
    parse_conditions,
    parse_consistency,
    parse_id,
    parse_idempotency_key,
    parse_query,
    path_key,
    read_body,
    show_key,
    until_disconnected,
)
from raftdb.http.spec import (
    INT,
    Operation,
    PathItem,
    Schema,
    error,
    errors,
    header,
    json_body,
    ref,
)
from raftdb.kv.commands import KeyValue
from raftdb.node.errors import BadRequestError, TooManyRequestsError
from raftdb.node.handle import Consistency, NodeHandle, WriteResult

__all__ = [
    "DEFAULT_LIST_LIMIT",
    "KEY_ENTRY_SCHEMA",
    "KEY_PARAM",
    "KeyValueEndpoints",
    "MAX_LIST_LIMIT",
    "OCTETS",
    "OPENAPI_PATHS",
    "WAIT_PARAM",
    "get_operation",
    "key_not_found",
    "kv_routes",
    "put_operation",
    "value_headers",
    "written_headers",
]

#: Keys a listing returns when ``limit`` is not given.
DEFAULT_LIST_LIMIT: Final = 1000
#: The largest ``limit`` a listing accepts.
MAX_LIST_LIMIT: Final = 10_000
#: A listing of more keys than this, or with values, is read and encoded off the loop.
_INLINE_LIST_KEYS: Final = 256
#: Large listings a node builds at once; one more is refused ``429``. Each holds
#: up to about three times ``max_list_bytes`` (its page, entries and JSON).
_LARGE_LISTINGS_AT_ONCE: Final = 8
#: The encoder of :func:`raftdb.http.errors.json_response`, one entry at a time.
_JSON: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

_GET_QUERY: Final = frozenset({"consistency", "wait_index", "wait"})
_PUT_QUERY: Final = frozenset({"lease"})
_NO_QUERY: Final = frozenset[str]()
_LIST_QUERY: Final = frozenset(
    {"prefix", "start", "limit", "values", "consistency", "wait_index", "wait"}
)
#: The content type of a value as ``GET`` answers it.
OCTETS: Final = "application/octet-stream"


def written_headers(result: WriteResult, *, delete: bool = False) -> dict[str, str]:
    """The headers of a committed write's ``204``: its index as the ``ETag``.

    Shared with :mod:`raftdb.http.fast_path`, so the two paths answer alike.
    """
    index = str(result.index)
    headers = {"etag": f'"{index}"', "x-raftdb-index": index}
    if delete:
        headers["x-raftdb-existed"] = "true" if result.existed else "false"
    if result.duplicate:
        headers["x-raftdb-duplicate"] = "true"
    return headers


def value_headers(kv: KeyValue, read_index: int, consistency: Consistency) -> dict[str, str]:
    """The headers of a read's ``200`` (shared with :mod:`raftdb.http.fast_path`)."""
    return {
        "etag": f'"{kv.mod_index}"',
        "x-raftdb-index": str(read_index),
        "x-raftdb-consistency": consistency,
    }


def key_not_found(key: bytes, read_index: int, consistency: Consistency) -> Response:
    """A read's ``404``: it still says at which index and how it was read."""
    return error_response(
        NotFoundError(f"key {show_key(key)} not found"),
        {"x-raftdb-consistency": consistency, "x-raftdb-index": str(read_index)},
    )


def _text_or_base64(data: bytes) -> tuple[str, bool]:
    """``(text, is_base64)``: UTF-8 text when ``data`` decodes, else base64."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def _entry(kv: KeyValue, values: bool) -> dict[str, Any]:
    """One key of a listing (see docs/api.md: UTF-8 strings, else base64 flagged)."""
    key, key_b64 = _text_or_base64(kv.key)
    entry: dict[str, Any] = {
        "key": key,
        "create_index": kv.create_index,
        "mod_index": kv.mod_index,
    }
    if key_b64:
        entry["key_encoding"] = "base64"
    if values:
        value, value_b64 = _text_or_base64(kv.value)
        entry["value"] = value
        if value_b64:
            entry["value_encoding"] = "base64"
    return entry


def list_page(
    found: list[KeyValue], limit: int, values: bool, max_bytes: int
) -> tuple[bytes, bytes | None]:
    """The JSON body of a listing page, and the key the next page starts at.

    Args:
        found: what ``NodeHandle.range`` gave for ``limit + 1`` keys and
            ``max_bytes``: one more than the page, or fewer where it ended
            early on ``max_bytes`` or on the last key.
        limit, values: the listing's parameters.
        max_bytes: ``max_list_bytes``: the page ends before the entry that
            would take its JSON over it (the first entry is kept, whatever its size).

    Returns:
        ``(body, start)``: ``start`` is the last key returned plus ``b"\\x00"``
        when more may follow, else ``None``. It is exact but in one case: a
        page of a single entry of ``max_bytes`` stored bytes or more, where the
        range stopped on bytes, is always followed (perhaps by an empty page).
    """
    page = found[:limit]
    entries = [_entry(kv, values) for kv in page]
    body = _JSON.encode(entries).encode()
    kept = len(page)
    if len(body) > max_bytes:
        parts: list[bytes] = []
        size = 1  # "[", then each entry with the "," or "]" after it
        for entry in entries:
            part = _JSON.encode(entry).encode()
            if parts and size + len(part) + 1 > max_bytes:
                break
            parts.append(part)
            size += len(part) + 1
        kept = len(parts)
        body = b"[" + b",".join(parts) + b"]"
    # A page's JSON is larger than the bytes it lists, so a range that stopped
    # on max_bytes has an entry past what fits, unless it gave one entry only.
    if kept < len(found) or (kept and sum(len(kv.key) + len(kv.value) for kv in page) >= max_bytes):
        return body, page[kept - 1].key + b"\x00"
    return body, None


def _parse_limit(value: bytes | None) -> int:
    if value is None:
        return DEFAULT_LIST_LIMIT
    text = value.decode("utf-8", "replace")
    if not text.isdigit() or not text.isascii() or not 1 <= int(text) <= MAX_LIST_LIMIT:
        raise BadRequestError(f"limit must be an integer from 1 to {MAX_LIST_LIMIT} (got {text!r})")
    return int(text)


class KeyValueEndpoints:
    """The KV operations, shared by ``/v1/kv/{key}`` and raftexample's ``/{key}``."""

    def __init__(self, node: NodeHandle, config: NodeConfig) -> None:
        self.node = node
        self.max_key_bytes = config.max_key_bytes
        self.max_value_bytes = config.max_value_bytes
        self.body_timeout = config.body_timeout_s
        self.max_list_bytes = config.max_list_bytes
        self._large_listings = 0  # being built now (see _LARGE_LISTINGS_AT_ONCE)

    async def _block(
        self, request: Request, query: dict[str, bytes], *, key: bytes | None, prefix: bytes
    ) -> None:
        """Consul's blocking read: with ``wait_index``, wait for a change after it first.

        Returns once ``key`` (or a key under ``prefix``) changed after
        ``wait_index``, at once if it already has, or when ``wait`` ends, and
        then the read is done as usual. ``wait_index=0`` does not wait, as in
        Consul. A client that goes away ends the wait (and the request).
        """
        blocking = parse_blocking(query)
        if blocking is None or blocking[0] == 0:
            return
        index, wait = blocking
        await until_disconnected(
            request.receive,
            self.node.wait_for_change(prefix=prefix, key=key, index=index, timeout=wait),
        )

    async def get(self, request: Request, key: bytes) -> Response:
        consistency: Consistency = "linearizable"
        if request.scope["query_string"]:
            query = parse_query(request.scope, _GET_QUERY)
            consistency = parse_consistency(query.get("consistency"))
            await self._block(request, query, key=key, prefix=b"")
        kv, read_index = await self.node.get(key, consistency)
        if kv is None:
            return key_not_found(key, read_index, consistency)
        return Response(
            kv.value, media_type=OCTETS, headers=value_headers(kv, read_index, consistency)
        )

    async def put(self, request: Request, key: bytes) -> Response:
        lease = 0
        if request.scope["query_string"]:
            query = parse_query(request.scope, _PUT_QUERY)
            if "lease" in query:
                lease = parse_id("lease", query["lease"].decode("utf-8", "replace"))
        headers = request.headers
        if_match, if_none_match = parse_conditions(headers, allow_none_match=True)
        idempotency_key = parse_idempotency_key(headers)
        value = await read_body(
            request, self.max_value_bytes, "value", "max_value_bytes", time_limit=self.body_timeout
        )
        result = await self.node.put(
            key,
            value,
            if_match=if_match,
            if_none_match=if_none_match,
            idempotency_key=idempotency_key,
            lease=lease,
        )
        return Response(status_code=204, headers=written_headers(result))

    async def delete(self, request: Request, key: bytes) -> Response:
        if request.scope["query_string"]:
            parse_query(request.scope, _NO_QUERY)
        headers = request.headers
        if_match, _ = parse_conditions(headers, allow_none_match=False)
        idempotency_key = parse_idempotency_key(headers)
        result = await self.node.delete(key, if_match=if_match, idempotency_key=idempotency_key)
        return Response(status_code=204, headers=written_headers(result, delete=True))

    async def list(self, request: Request) -> Response:
        query = parse_query(request.scope, _LIST_QUERY)
        prefix = query.get("prefix", b"")
        start = query.get("start")
        limit = _parse_limit(query.get("limit"))
        values = parse_bool("values", query.get("values"))
        consistency = parse_consistency(query.get("consistency"))
        await self._block(request, query, key=None, prefix=prefix)
        max_bytes = self.max_list_bytes
        large = values or limit > _INLINE_LIST_KEYS
        if large:
            if self._large_listings >= _LARGE_LISTINGS_AT_ONCE:
                raise TooManyRequestsError(
                    f"{self._large_listings} large listings are being built; retry shortly", 1
                )
            self._large_listings += 1
        try:
            found, read_index = await self.node.range(
                prefix,
                start=start,
                limit=limit + 1,
                consistency=consistency,
                values=values,
                max_bytes=max_bytes,
            )
            if large:  # the node read it in a thread too (Node.range)
                body, after = await asyncio.to_thread(list_page, found, limit, values, max_bytes)
            else:
                body, after = list_page(found, limit, values, max_bytes)
        finally:
            if large:
                self._large_listings -= 1
        headers = {"x-raftdb-consistency": consistency, "x-raftdb-index": str(read_index)}
        if after is not None:
            # The next page starts just after the last key returned.
            link = (
                f"/v1/kv?prefix={quote_from_bytes(prefix, safe='')}"
                f"&start={quote_from_bytes(after, safe='')}&limit={limit}"
            )
            if values:
                link += "&values=true"
            if consistency == "stale":
                link += "&consistency=stale"
            headers["link"] = f'<{link}>; rel="next"'
        return Response(body, media_type=JSON_TYPE, headers=headers)


# -- OpenAPI: what these routes answer (raftdb.http.openapi gathers it) ---------------

_ETAG: Final = header("The write's (or key's) log index, quoted: `\"42\"`.")
_INDEX: Final = header("The same index, unquoted.", INT)
_CONSISTENCY_HEADER: Final = header(
    "Which consistency served the read.", {"type": "string", "enum": ["linearizable", "stale"]}
)
#: The ``{key}`` path parameter of ``/v1/kv/{key}``.
KEY_PARAM: Final[Schema] = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "The key: the rest of the path, percent-decoded to bytes (may contain `/`).",
    "schema": {"type": "string"},
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
    "description": f"1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes naming this write: a retry with the "
    "same key is applied at most once, and answered like the first attempt "
    "(`X-Raftdb-Duplicate: true`).",
    "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY_BYTES},
}


#: ``wait``: the longest a blocking read (or a lock) waits.
WAIT_PARAM: Final[Schema] = {
    "name": "wait",
    "in": "query",
    "description": f"The longest wait: `30s`, `500ms`, `5m`, or seconds (default "
    f"{DEFAULT_WAIT_S / 60:g}m; at most {MAX_WAIT_S / 60:g}m: longer is cut to it, as in Consul).",
    "schema": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m)?$"},
}
_WAIT_INDEX_PARAM: Final[Schema] = {
    "name": "wait_index",
    "in": "query",
    "description": "A blocking read (Consul's): answer once the key (the prefix) changes "
    "after this index, or when `wait` ends. Give the `X-Raftdb-Index` of the previous "
    "answer; `0` does not wait.",
    "schema": INT,
}
_LEASE_PARAM: Final[Schema] = {
    "name": "lease",
    "in": "query",
    "description": "Attach the key to this lease (its id): the key is deleted when the "
    "lease ends. Without it, the key leaves any lease it had.",
    "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,18}$"},
}
_BLOCKING_NOTE: Final = (
    " With `wait_index`, a blocking read: it answers once the key changes after that "
    "index, or when `wait` ends (then with what is there)."
)


def _written(description: str, delete: bool = False) -> Schema:
    """A committed write's ``204``, with the headers of :func:`written_headers`."""
    headers: Schema = {
        "ETag": _ETAG,
        "X-Raftdb-Index": _INDEX,
        "X-Raftdb-Duplicate": header(
            "`true` when an `Idempotency-Key` retry was answered from the first attempt."
        ),
    }
    if delete:
        headers["X-Raftdb-Existed"] = header("`true` if the key existed.")
    return {"description": description, "headers": headers}


def get_operation(summary: str, operation_id: str, tag: str, key: Schema) -> Operation:
    """A read of one key, :meth:`KeyValueEndpoints.get`: ``key`` is its path parameter."""
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": [tag],
        "description": "Linearizable unless `consistency=stale`." + _BLOCKING_NOTE,
        "parameters": [key, _CONSISTENCY_PARAM, _WAIT_INDEX_PARAM, WAIT_PARAM],
        "responses": {
            "200": {
                "description": "The raw value.",
                "headers": {
                    "ETag": header('The key\'s mod index, quoted: `"42"`.'),
                    "X-Raftdb-Index": header(
                        "The index the read was served at (for the next `wait_index`).", INT
                    ),
                    "X-Raftdb-Consistency": _CONSISTENCY_HEADER,
                },
                "content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}},
            },
            "404": error("404", "No such key (`not_found`)."),
            **errors("400", "413", "429", "503"),
        },
    }


def put_operation(summary: str, operation_id: str, tag: str, key: Schema) -> Operation:
    """A write of one key, :meth:`KeyValueEndpoints.put`: ``key`` is its path parameter."""
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": [tag],
        "parameters": [key, _LEASE_PARAM, _IF_MATCH, _IF_NONE_MATCH, _IDEMPOTENCY_KEY],
        "requestBody": {
            "required": False,
            "description": "The raw value (any bytes; `max_value_bytes`).",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        "responses": {
            "204": _written("Committed and applied."),
            "404": error("404", "No such lease (`lease_not_found`); nothing was written."),
            **errors("400", "408", "412", "413", "429", "503", "504"),
        },
    }


#: A listing's entry, as :func:`_entry` writes it.
KEY_ENTRY_SCHEMA: Final[Schema] = {
    "type": "object",
    "required": ["key", "create_index", "mod_index"],
    "properties": {
        "key": {"type": "string", "description": "UTF-8 text, or base64 (see key_encoding)."},
        "key_encoding": {
            "type": "string",
            "enum": ["base64"],
            "description": "Present only when the key is not valid UTF-8.",
        },
        "create_index": INT,
        "mod_index": INT,
        "value": {
            "type": "string",
            "description": "With `values=true`: UTF-8 text, or base64 (see value_encoding).",
        },
        "value_encoding": {
            "type": "string",
            "enum": ["base64"],
            "description": "Present only when the value is not valid UTF-8.",
        },
    },
}
#: The OpenAPI path items of :func:`kv_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    "/v1/kv/{key}": {
        "get": get_operation("Read a key", "kv_get", "kv", KEY_PARAM),
        "put": put_operation("Write a key", "kv_put", "kv", KEY_PARAM),
        "delete": {
            "summary": "Delete a key",
            "operationId": "kv_delete",
            "tags": ["kv"],
            "parameters": [KEY_PARAM, _IF_MATCH, _IDEMPOTENCY_KEY],
            "responses": {
                "204": _written("Committed and applied (also when the key was absent).", True),
                **errors("400", "412", "413", "429", "503", "504"),
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
                        "maximum": MAX_LIST_LIMIT,
                        "default": DEFAULT_LIST_LIMIT,
                    },
                },
                {
                    "name": "values",
                    "in": "query",
                    "description": "Include the values.",
                    "schema": {"type": "boolean", "default": False},
                },
                _CONSISTENCY_PARAM,
                {
                    **_WAIT_INDEX_PARAM,
                    "description": "A blocking read: answer once a key under the prefix "
                    "changes (is written or deleted) after this index, or when `wait` ends.",
                },
                WAIT_PARAM,
            ],
            "responses": {
                "200": {
                    **json_body({"type": "array", "items": ref("KeyEntry")}, "The keys."),
                    "headers": {
                        "X-Raftdb-Index": header("The index the listing was served at.", INT),
                        "X-Raftdb-Consistency": _CONSISTENCY_HEADER,
                        "Link": header('`<next page URL>; rel="next"` when more keys follow.'),
                    },
                },
                **errors("400", "429", "503"),
            },
        },
    },
}


def kv_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The ``/v1/kv`` routes."""
    endpoints = KeyValueEndpoints(node, config)
    prefix = b"/v1/kv/"
    max_key_bytes = config.max_key_bytes

    async def kv_key(request: Request) -> Response:
        key = path_key(request.scope, prefix, max_key_bytes)
        method = request.method
        if method == "PUT":
            return await endpoints.put(request, key)
        if method == "DELETE":
            return await endpoints.delete(request, key)
        return await endpoints.get(request, key)  # GET, HEAD

    return [
        Route(
            f"/v1/kv/{{key:{KEY_CONVERTOR}}}",
            kv_key,
            methods=["GET", "PUT", "DELETE"],
            name="kv_key",
        ),
        Route("/v1/kv", endpoints.list, methods=["GET"], name="kv_list"),
    ]
