"""The watch's logic without I/O: server-sent events parsed into typed events, and the
cursor that knows where to resume after a reconnection.

Resumption never splits a transaction: the events of one log index (a transaction's
changes, an ended lease's deletions) come one after another. The cursor remembers the
last index all of whose events were delivered (``complete``) and how many events of
the index being delivered were handed out; a new stream starts at ``since=complete``
and the events already handed out are dropped, so each event is delivered once, in
order, whichever member the stream comes from.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

from raftdb.client._core import Request, path_key, query
from raftdb.client.errors import CompactedError, RaftdbError, error_for
from raftdb.client.types import key_of, to_bytes

__all__ = ["ProgressEvent", "WatchEvent"]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: ``type`` ``put`` or ``delete``; ``index`` is its log index (= the
    ``mod_index``; a transaction's changes share one). ``prev_*`` only with ``prev=True``
    (``prev_value`` ``None`` when the history no longer holds it)."""

    type: Literal["put", "delete"]
    key: bytes
    value: bytes
    index: int
    create_index: int
    prev_mod_index: int | None = None
    prev_value: bytes | None = None


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """The watch has seen every change up to ``index`` (sent when it is idle)."""

    index: int


@dataclass(slots=True)
class RawEvent:
    """One server-sent event as received."""

    id: str | None
    event: str
    data: str


class SSEParser:
    """Server-sent events from lines (the ``data:`` of one event may span lines)."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._event = "message"
        self._data: list[str] = []

    def line(self, line: str) -> RawEvent | None:
        """Feed one line (without its end); returns an event at the blank line ending it."""
        if not line:
            if not self._data and self._event == "message":
                return None
            ev = RawEvent(self._id, self._event, "\n".join(self._data))
            self._id, self._event, self._data = None, "message", []
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


class StreamClosed(Exception):
    """The node ended the stream with a ``closed`` event that allows resuming."""


class WatchCursor:
    """Where a watch is, and what to drop after a reconnection (module docstring)."""

    def __init__(
        self, *, prefix: bytes | None, key: bytes | None, since: int | None, prev: bool
    ) -> None:
        self.prefix = prefix
        self.key = key
        self.prev = prev
        #: Every event up to this index was delivered (``None``: not started yet).
        self.complete = since
        #: The index of the last event delivered, and how many of its events were.
        self.current = since or 0
        self.delivered = 0
        #: Events of ``current`` to drop on the stream being read (already delivered).
        self.skip = 0

    def start_request(self) -> Request:
        """A linearizable read whose ``X-Raftdb-Index`` starts a watch "from now" (so a
        reconnection before the first event still misses nothing)."""
        if self.key is not None:
            return Request("GET", f"/v1/kv/{path_key(self.key)}")
        return Request("GET", "/v1/kv" + query([("prefix", self.prefix or b""), ("limit", 1)]))

    def started(self, index: int) -> None:
        """The read's index: the watch starts after it."""
        self.complete = self.current = index
        self.delivered = 0

    def stream_request(self) -> Request:
        """The ``GET /v1/watch`` that continues after ``complete``."""
        params: list[tuple[str, bytes | str | int | None]] = []
        if self.key is not None:
            params.append(("key", self.key))
        elif self.prefix:
            params.append(("prefix", self.prefix))
        params.append(("since", self.complete))
        if self.prev:
            params.append(("prev", "true"))
        self.skip = self.delivered if self.current != self.complete else 0
        return Request("GET", "/v1/watch" + query(params), headers={"accept": "text/event-stream"})

    def on_event(self, raw: RawEvent) -> WatchEvent | ProgressEvent | None:
        """The event to deliver for ``raw`` (``None``: nothing, or already delivered).

        Raises:
            CompactedError: the history no longer holds where the watch is.
            StreamClosed: the node ended the stream; reconnect.
        """
        if raw.event == "closed":
            body = _json(raw.data)
            if body.get("error") == "compacted":
                raise CompactedError(
                    f"compacted: {body.get('message', 'the watch fell behind the history')}",
                    status=410,
                    body=body,
                )
            raise StreamClosed(str(body.get("error", "closed")))
        if raw.event == "progress":
            index = int(_json(raw.data).get("applied_index", raw.id or 0))
            if index >= self.current:
                self.complete = self.current = index
                self.delivered = 0
            return ProgressEvent(index)
        if raw.event not in ("put", "delete"):
            return None
        index = int(raw.id or 0)
        if index < self.current:
            return None
        if index == self.current and self.skip:
            self.skip -= 1
            return None
        if index > self.current:
            self.complete = self.current
            self.current = index
            self.delivered = 0
            self.skip = 0
        self.delivered += 1
        return parse_event(raw.event, index, _json(raw.data))


def parse_event(kind: str, index: int, body: dict[str, Any]) -> WatchEvent:
    """A ``put``/``delete`` event's data as a :class:`WatchEvent`."""
    prev_value = None
    if "prev_value_b64" in body:
        prev_value = base64.b64decode(body["prev_value_b64"])
    prev_mod = body.get("prev_mod_index")
    return WatchEvent(
        "put" if kind == "put" else "delete",
        key_of(body),
        base64.b64decode(body.get("value_b64", "")),
        index,
        int(body.get("create_index", 0)),
        None if prev_mod is None else int(prev_mod),
        prev_value,
    )


def _json(data: str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def open_error(status: int, content: bytes) -> RaftdbError:
    """The error of a watch that did not start (a non-200 answer)."""
    try:
        body = json.loads(content)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return error_for(status, body)


def watch_keys(
    prefix: bytes | str | None, key: bytes | str | None
) -> tuple[bytes | None, bytes | None]:
    """Validated ``prefix``/``key`` of a watch (one of them at most)."""
    if prefix is not None and key is not None:
        raise ValueError("watch a prefix or a key, not both")
    return (
        None if prefix is None else to_bytes(prefix),
        None if key is None else to_bytes(key),
    )
