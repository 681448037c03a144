"""``GET /v1/watch``: the changes under a prefix (or to one key) as server-sent events.

One event per change, in index order, from the node's
:class:`~raftdb.node.handle.Watcher`::

    id: 57
    event: put
    data: {"key":"app/a","value_b64":"Mg==","value":"2","create_index":12,"mod_index":57}

``id`` is the change's log index (a transaction's changes share it and come
one after the other), so a client that reconnects with ``Last-Event-ID``
(or ``since``) resumes exactly after what it saw, on any member. Idle, the
node sends ``progress`` events (``id`` = the index up to which this watch has
seen everything); a watch the node ends gets a final ``closed`` event saying
why (too slow to keep up, with the index to resume from). Everything that
can go wrong before the stream starts is an ordinary JSON error: ``400``
(bad parameters, ``since`` after the node's index), ``410 compacted`` (with
``oldest_index``), ``429`` (``max_watchers``), ``503``.

The stream (:class:`EventStream`, a :class:`~raftdb.http.streaming.StreamAnswer`)
listens for the client's disconnect while it waits for events (an idle watch
writes nothing for seconds, and under ASGI 2.3 a write to a gone client is
silently dropped), and it always closes the node's watcher when it ends,
however it ends, so that a client that goes away frees its watcher at once.
"""

from __future__ import annotations

import collections
import json
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Send

from raftdb.config import NodeConfig
from raftdb.http.bodies import key_json, value_json
from raftdb.http.params import parse_bool, parse_index, parse_query, show_key
from raftdb.http.spec import INT, PathItem, Schema, error, errors, header
from raftdb.http.streaming import StreamAnswer
from raftdb.kv.changes import Change, ChangeKind
from raftdb.node.errors import BadRequestError, TooLargeError
from raftdb.node.handle import NodeHandle, Watcher, WatchEvent

__all__ = [
    "EVENT_SCHEMA",
    "EVENT_STREAM",
    "OPENAPI_PATHS",
    "SCHEMAS",
    "EventStream",
    "event_bytes",
    "watch_routes",
]

#: The content type of a server-sent event stream.
EVENT_STREAM: Final = "text/event-stream"
_WATCH_QUERY: Final = frozenset({"prefix", "key", "since", "prev"})
_JSON: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_HEADERS: Final = {
    "cache-control": "no-cache",
    # Proxies (nginx) must pass events on as they come, not buffer them.
    "x-accel-buffering": "no",
}


def event_bytes(event: WatchEvent, *, prev: bool) -> bytes:
    """One event in the ``text/event-stream`` format (``docs/api.md``).

    Args:
        event: from the node's watcher.
        prev: the watch asked for ``prev=true``: add the previous value (when the
            history holds it) and ``prev_mod_index``.
    """
    kind = event.kind
    if kind == "progress":
        data: dict[str, Any] = {"applied_index": event.index}
        return f"id: {event.index}\nevent: progress\ndata: {_JSON.encode(data)}\n\n".encode()
    if kind == "closed":
        return f"event: closed\ndata: {_JSON.encode(event.data or {})}\n\n".encode()
    change = event.change
    assert change is not None, event
    head, body = _change_text(change)
    if prev:
        extra: dict[str, Any] = {"prev_mod_index": change.prev_mod_index}
        if event.prev is not None:
            extra.update(value_json(event.prev.value, "prev_value"))
        body = body[:-1] + "," + _JSON.encode(extra)[1:]
    return f"{head}{body}\n\n".encode()


class _ChangeText:
    """The text of recent changes' events, made once for every watcher that sends them.

    The hub hands every watcher of a change the same :class:`Change` object, so
    a watch with a hundred watchers encoded the same JSON a hundred times
    (6 µs each, on the loop that also drives Raft). Kept by identity (a
    ``Change`` is not hashable), for the last :data:`_TEXT_CACHE` changes.
    """

    __slots__ = ("_texts",)

    def __init__(self) -> None:
        self._texts: collections.OrderedDict[int, tuple[Change, str, str]] = (
            collections.OrderedDict()
        )

    def __call__(self, change: Change) -> tuple[str, str]:
        """``(the id and event lines, the data line without its end)``."""
        found = self._texts.get(id(change))
        if found is not None and found[0] is change:
            return found[1], found[2]
        data = {
            **key_json(change.key),
            **value_json(change.value),
            "create_index": change.create_index,
            "mod_index": change.mod_index,
        }
        name = "put" if change.kind is ChangeKind.PUT else "delete"
        head = f"id: {change.index}\nevent: {name}\ndata: "
        body = _JSON.encode(data)
        texts = self._texts
        texts[id(change)] = (change, head, body)
        if len(texts) > _TEXT_CACHE:
            texts.popitem(last=False)
        return head, body


#: Changes whose event text is kept (a burst that every watcher sends).
_TEXT_CACHE: Final = 4096
_change_text = _ChangeText()
#: Most events written in one send: a watcher behind by many sends them in
#: bursts, so one slow client cannot make one huge write.
_SEND_EVENTS: Final = 256


class EventStream(StreamAnswer):
    """The answer to a watch: the watcher's events as they come, until one side ends it.

    It ends after a ``closed`` event or when the watcher runs out, or when
    the client disconnects (then quietly: nobody is left to tell). In every
    case the watcher is closed before the answer returns.
    """

    def __init__(self, watcher: Watcher, *, prev: bool, head: bool = False) -> None:
        super().__init__(media_type=EVENT_STREAM, headers=_HEADERS, head=head)
        self.watcher = watcher
        self.prev = prev

    async def close(self) -> None:
        await self.watcher.aclose()

    async def stream(self, send: Send) -> None:
        """Write the events, every one already queued in the same send: one
        socket write per event per watcher was most of what a watch cost the
        node's loop (30-40 µs an event; benchmarks/test_watch_bench.py)."""
        prev = self.prev
        watcher = self.watcher
        async for event in watcher:
            parts = [event_bytes(event, prev=prev)]
            closed = event.kind == "closed"
            while not closed and watcher.ready and len(parts) < _SEND_EVENTS:
                try:
                    event = await anext(watcher)
                except StopAsyncIteration:
                    break
                parts.append(event_bytes(event, prev=prev))
                closed = event.kind == "closed"
            body = b"".join(parts)
            await send({"type": "http.response.body", "body": body, "more_body": True})
            if closed:
                return


# -- OpenAPI: what this route answers (raftdb.http.openapi gathers it) ----------------

#: The ``data`` of a ``put`` or ``delete`` event.
_CHANGE_DATA: Final[Schema] = {
    "type": "object",
    "description": "The `data` of a `put` or `delete` event (the `id` line is its "
    "`mod_index`). A delete has an empty value and `create_index` 0.",
    "required": ["value_b64", "create_index", "mod_index"],
    "properties": {
        "key": {"type": "string", "description": "The key, when it is UTF-8."},
        "key_b64": {
            "type": "string",
            "contentEncoding": "base64",
            "description": "The key in base64, when it is not UTF-8.",
        },
        "value_b64": {"type": "string", "contentEncoding": "base64"},
        "value": {"type": "string", "description": "The value, when it is UTF-8."},
        "create_index": INT,
        "mod_index": INT,
        "prev_mod_index": {**INT, "description": "With `prev=true`: 0 if it was absent."},
        "prev_value_b64": {
            "type": "string",
            "contentEncoding": "base64",
            "description": "With `prev=true`: the previous value, when the history holds it.",
        },
        "prev_value": {"type": "string", "description": "The same, when it is UTF-8."},
    },
}
_PROGRESS_DATA: Final[Schema] = {
    "type": "object",
    "required": ["applied_index"],
    "properties": {"applied_index": INT},
}
_CLOSED_DATA: Final[Schema] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "string",
            "description": "`watcher_too_slow`, `compacted`, or a node error's code.",
        },
        "since": {**INT, "description": "Resume with `since` = this."},
        "oldest_index": {**INT, "description": "`compacted`: the oldest `since` served."},
        "message": {"type": "string"},
    },
}
_EVENT_ID: Final[Schema] = {"type": "string", "pattern": "^[0-9]+$"}


def _json_data(schema: Schema) -> Schema:
    """An event's ``data`` line: one JSON object of ``schema``."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


#: One event of the stream, as OpenAPI 3.1 describes a ``text/event-stream``
#: (its ``schema`` is each event's: ``event``, ``id``, ``data``).
EVENT_SCHEMA: Final[Schema] = {
    "type": "object",
    "required": ["event", "data"],
    "oneOf": [
        {
            "required": ["id"],
            "properties": {
                "event": {"enum": ["put", "delete"]},
                "id": _EVENT_ID,
                "data": _json_data(_CHANGE_DATA),
            },
        },
        {
            "required": ["id"],
            "properties": {
                "event": {"const": "progress"},
                "id": _EVENT_ID,
                "data": _json_data(_PROGRESS_DATA),
            },
        },
        {"properties": {"event": {"const": "closed"}, "data": _json_data(_CLOSED_DATA)}},
    ],
}
#: The component schemas of this module (an event's ``data``, for the reader).
SCHEMAS: Final[dict[str, Schema]] = {"WatchEvent": _CHANGE_DATA}
_EVENTS_DESCRIPTION: Final = (
    "Server-sent events. `put`/`delete`: `id: <index>`, `data:` a `WatchEvent` object. "
    '`progress`: `id: <index>`, `data: {"applied_index": <index>}`: every change up to it '
    'was sent. `closed`, last: `data: {"error": "watcher_too_slow", "since": <index>}` '
    "(resume with `since`) or "
    '`{"error": "compacted", "oldest_index": <index>}`.'
)
#: The OpenAPI path item of :func:`watch_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    "/v1/watch": {
        "get": {
            "summary": "Follow the changes under a prefix, or to a key (server-sent events)",
            "operationId": "watch",
            "tags": ["watch"],
            "description": "Resumable: reconnect with `Last-Event-ID` (or `since`) to continue "
            "exactly after the last event seen, on any member. `curl -N` follows it.",
            "parameters": [
                {
                    "name": "prefix",
                    "in": "query",
                    "description": "Watch the keys starting with these bytes (default: all).",
                    "schema": {"type": "string", "default": ""},
                },
                {
                    "name": "key",
                    "in": "query",
                    "description": "Watch this one key (not with `prefix`).",
                    "schema": {"type": "string", "minLength": 1},
                },
                {
                    "name": "since",
                    "in": "query",
                    "description": "Send the changes after this index (default: from now, "
                    "after a linearizable read of the current index).",
                    "schema": INT,
                },
                {
                    "name": "prev",
                    "in": "query",
                    "description": "Add the previous value and `prev_mod_index` to each event.",
                    "schema": {"type": "boolean", "default": False},
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "description": "The `id` of the last event seen: wins over `since`.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
            ],
            "responses": {
                "200": {
                    "description": _EVENTS_DESCRIPTION,
                    "headers": {"Cache-Control": header("`no-cache`.")},
                    "content": {EVENT_STREAM: {"schema": EVENT_SCHEMA}},
                },
                "410": error(
                    "410",
                    "`since` is older than the retained history (`compacted`); "
                    "`oldest_index` is the oldest index a watch may start from.",
                ),
                "429": error("429", "This node has `max_watchers` watchers (`too_many_requests`)."),
                **errors("400", "413", "503"),
            },
        },
    },
}


def watch_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The ``/v1/watch`` route."""
    max_key_bytes = config.max_key_bytes

    async def watch(request: Request) -> Response:
        query = parse_query(request.scope, _WATCH_QUERY)
        prefix = query.get("prefix", b"")
        key = query.get("key")
        if key is not None:
            if "prefix" in query:
                raise BadRequestError("give prefix or key, not both")
            if not key:
                raise BadRequestError("key is empty: give the key to watch, or a prefix")
            if len(key) > max_key_bytes:
                raise TooLargeError(
                    f"the key {show_key(key)} is {len(key)} bytes, over the limit of "
                    f"{max_key_bytes} (max_key_bytes): no key can be that long"
                )
        prev = parse_bool("prev", query.get("prev"))
        since = parse_index("since", query["since"]) if "since" in query else None
        last_event_id = request.headers.get("last-event-id")
        if last_event_id is not None:  # a reconnecting EventSource: where it stopped
            since = parse_index("Last-Event-ID", last_event_id)
        watcher = await node.watch(prefix=prefix, key=key, since=since, prev=prev)
        return EventStream(watcher, prev=prev, head=request.method == "HEAD")

    return [Route("/v1/watch", watch, methods=["GET"], name="watch")]
