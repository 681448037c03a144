"""A raw-ASGI fast path for the common key-value requests, in front of Starlette.

Under load, Starlette's routing, ``Request`` and ``Response`` cost more CPU
per request than the handlers themselves. :class:`KVFastPath` wraps the
Starlette app (outermost) and answers the few request shapes that make up
nearly all traffic directly from the ASGI scope:

- ``GET``/``HEAD`` ``/v1/kv/<key>`` and raftexample's ``/<key>``, with no
  query string or exactly ``consistency=stale`` / ``consistency=linearizable``;
- ``PUT`` of those paths with no query string and no ``If-Match``,
  ``If-None-Match`` or ``Idempotency-Key``;
- ``DELETE /v1/kv/<key>`` likewise (``DELETE /<id>`` removes a member).

Everything else, including every request it would answer with an error of
its own making (a bad key, an odd query), goes to the Starlette app
unchanged, which stays the reference: the answers here must be the same
bytes (``tests/http/test_fast_path.py`` checks it request by request). To keep
the two paths from drifting, the pieces that decide an answer are shared:
key parsing and body limits (:mod:`raftdb.http.params`), the answers'
headers (:mod:`raftdb.http.kv`), and errors (:func:`error_response`, as
Starlette's exception handlers and its last guard give them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, TypeAlias

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from raftdb.config import NodeConfig
from raftdb.http.errors import error_response, log_late_error
from raftdb.http.kv import OCTETS, key_not_found, value_headers, written_headers
from raftdb.http.params import (
    check_content_length,
    check_key,
    raw_path_key,
    receive_body,
    route_path,
)
from raftdb.http.raftexample import RESERVED_ROOTS
from raftdb.node.errors import NodeError
from raftdb.node.handle import Consistency, NodeHandle

__all__ = ["KVFastPath"]

RawHeaders: TypeAlias = list[tuple[bytes, bytes]]
#: What the fast path answers: status, headers, body (as ``Response.__call__`` sends them).
Answer: TypeAlias = tuple[int, RawHeaders, bytes | memoryview]

_KV_PREFIX: Final = b"/v1/kv/"
_KV_ROUTE_PREFIX: Final = "/v1/kv/"
_ROOT_PREFIX: Final = b"/"
_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE"})
_READS: Final = frozenset({"GET", "HEAD"})
#: The reserved roots as the router sees them (decoded path text).
_RESERVED_TEXT: Final = frozenset(root.decode("ascii") for root in RESERVED_ROOTS)
#: Request headers that make a write conditional or idempotent: Starlette parses those.
_SLOW_WRITE_HEADERS: Final = frozenset({b"if-match", b"if-none-match", b"idempotency-key"})
_CONSISTENCY: Final[Mapping[bytes, Consistency]] = {
    b"": "linearizable",
    b"consistency=linearizable": "linearizable",
    b"consistency=stale": "stale",
}
_CONTENT_TYPE: Final = (b"content-type", OCTETS.encode("latin-1"))
_NO_BODY: Final = b""


def _raw(headers: Mapping[str, str]) -> RawHeaders:
    """``headers`` encoded as Starlette's ``Response`` encodes them.

    Starlette also lower-cases the names; the shared builders in
    :mod:`raftdb.http.kv` write them lower-case already, which saves a copy
    per header (the differential test would see one that is not).
    """
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


def _answer_of(response: Response) -> Answer:
    """What ``response`` would send (it has no background task)."""
    return response.status_code, response.raw_headers, response.body


class KVFastPath:
    """ASGI app answering the common KV requests itself; the rest goes to ``app``.

    Args:
        app: the Starlette app of :func:`raftdb.http.app.create_api`; every route
            it has other than ``/`` and the KV routes must lie under a root
            of :data:`~raftdb.http.raftexample.RESERVED_ROOTS`, or raftexample's
            ``/<key>`` answered here would shadow it (``create_api`` checks).
        node: the node the KV routes use.
        config: its limits (``max_key_bytes``, ``max_value_bytes``, ``body_timeout_s``).
    """

    def __init__(self, app: ASGIApp, node: NodeHandle, config: NodeConfig) -> None:
        self.app = app
        self.node = node
        self.max_key_bytes = config.max_key_bytes
        self.max_value_bytes = config.max_value_bytes
        self.body_timeout = config.body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer: Answer | None = None
        if scope["type"] == "http" and scope["method"] in _METHODS:
            try:
                answer = await self._answer(scope, receive)
            except Exception as exc:
                # As Starlette's exception handlers and _Guard answer: a
                # NodeError (or ClientDisconnect) by its class, anything else
                # a logged 500.
                answer = _answer_of(error_response(exc))
        if answer is None:
            await self.app(scope, receive, send)
            return
        status, headers, body = answer
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except Exception as exc:
            log_late_error(exc)
            raise

    def _key(self, scope: Scope, method: str) -> bytes | None:
        """The key, if the router would send this request to a KV handler with it.

        ``None`` when it would not (another route, a reserved root) or when
        the key is refused: Starlette then routes it and answers the error.
        """
        path = route_path(scope)  # what Starlette's router matches
        if path.startswith(_KV_ROUTE_PREFIX):
            key = raw_path_key(scope, _KV_PREFIX)
        elif (
            method == "DELETE"  # raftexample's DELETE /<id> removes a member
            or not path.startswith("/")
            or path[1:].partition("/")[0] in _RESERVED_TEXT
        ):
            return None
        else:
            key = raw_path_key(scope, _ROOT_PREFIX)
            if key is not None and key.partition(b"/")[0] in RESERVED_ROOTS:
                return None
        if key is None:  # the raw path does not carry it: path_key reads the route's
            return None
        # An empty key (also "/", the index for GET) or one too long: Starlette answers.
        try:
            return check_key(key, self.max_key_bytes)
        except NodeError:
            return None

    async def _answer(self, scope: Scope, receive: Receive) -> Answer | None:
        """The answer to a fast-path request, or ``None`` to let Starlette answer."""
        method: str = scope["method"]
        key = self._key(scope, method)
        if key is None:
            return None
        if method in _READS:
            consistency = _CONSISTENCY.get(scope["query_string"])
            if consistency is None:
                return None
            kv, read_index = await self.node.get(key, consistency)
            if kv is None:
                return _answer_of(key_not_found(key, read_index, consistency))
            value = kv.value
            headers = _raw(value_headers(kv, read_index, consistency))
            headers.append((b"content-length", str(len(value)).encode("latin-1")))
            headers.append(_CONTENT_TYPE)
            return 200, headers, value
        if scope["query_string"]:
            return None
        length: bytes | None = None
        for name, header in scope["headers"]:
            if name in _SLOW_WRITE_HEADERS:
                return None
            if length is None and name == b"content-length":
                length = header
        if method == "DELETE":
            result = await self.node.delete(key)
            return 204, _raw(written_headers(result, delete=True)), _NO_BODY
        limit = self.max_value_bytes
        if length is not None:
            check_content_length(length.decode("latin-1"), limit, "value", "max_value_bytes")
        value = await receive_body(
            receive, limit, "value", "max_value_bytes", time_limit=self.body_timeout
        )
        result = await self.node.put(key, value)
        return 204, _raw(written_headers(result)), _NO_BODY
