"""Errors to HTTP: the one place where an exception becomes an answer.

:func:`error_response` turns an exception into ``{"error": "<code>",
"message": "<what and why>"}`` with the status the error class carries
(:mod:`raftdb.node.errors`), plus ``Retry-After`` on 429, 503 and 507,
``oldest_index`` in the body of a ``410 compacted``,
``WWW-Authenticate`` on 401 and ``Connection: close`` on 408 and 413. Route handlers just
raise; Starlette's exception handlers (:func:`handle_error`), the app's last
guard and the fast path all answer through it, so the three cannot drift. The
few errors only HTTP has (no such endpoint, a method a path does not take, a
reserved path, no token or not the right one) live here rather than in the node's errors.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from raftdb.node.errors import (
    BadRequestError,
    CompactedError,
    ConditionFailedError,
    NodeError,
    RequestTimeoutError,
    RetryLaterError,
    ServiceUnavailableError,
    TooLargeError,
)

__all__ = [
    "JSON_TYPE",
    "ForbiddenError",
    "MethodNotAllowedError",
    "NotFoundError",
    "ReservedPathError",
    "TooManyOperationsError",
    "UnauthorizedError",
    "error_response",
    "handle_error",
    "json_response",
    "log_late_error",
]

logger = logging.getLogger("raftdb.api")

JSON_TYPE: Final = "application/json"


class NotFoundError(NodeError):
    """No such key or endpoint."""

    code = "not_found"
    status = 404


class MethodNotAllowedError(NodeError):
    """The path exists, not with this method. ``allow`` lists the methods it takes."""

    code = "method_not_allowed"
    status = 405

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message)
        self.allow = allow


class ReservedPathError(BadRequestError):
    """A raftexample-style key under a root path the API keeps for itself."""

    code = "reserved_path"


class TooManyOperationsError(NodeError):
    """A transaction with more compares, or operations in a branch, than it may hold.

    ``413`` as for a body over its limit, but the body was read whole, so the
    connection stays open (unlike :class:`~raftdb.node.errors.TooLargeError`).
    """

    code = "too_many_operations"
    status = 413


class UnauthorizedError(NodeError):
    """No valid bearer token (:mod:`raftdb.http.auth`); the answer says how to send one.

    ``invalid``: a token was sent and is unknown (RFC 6750's ``invalid_token``),
    rather than none at all.
    """

    code = "unauthorized"
    status = 401

    def __init__(self, message: str, *, invalid: bool = False) -> None:
        super().__init__(message)
        self.challenge = 'Bearer realm="raftdb"' + (', error="invalid_token"' if invalid else "")


class ForbiddenError(NodeError):
    """A valid token without the right: its role is too low, or the key is outside its prefixes."""

    code = "forbidden"
    status = 403


_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A compact JSON answer."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, headers=headers, media_type=JSON_TYPE)


def error_response(exc: BaseException, headers: Mapping[str, str] | None = None) -> Response:
    """The HTTP answer for ``exc``: the single mapping from errors to statuses.

    Args:
        exc: a :class:`~raftdb.node.errors.NodeError` (its ``code`` and ``status``),
            a Starlette ``HTTPException`` (routing's 404/405), or anything
            else (500, logged with its traceback).
        headers: extra headers for the answer.
    """
    extra = dict(headers) if headers else {}
    body: dict[str, Any]
    if isinstance(exc, NodeError):
        status = exc.status
        body = {"error": exc.code, "message": exc.message}
        if isinstance(exc, ConditionFailedError):
            body["mod_index"] = exc.mod_index
            if exc.mod_index:
                extra["etag"] = f'"{exc.mod_index}"'
        elif isinstance(exc, RetryLaterError):
            extra["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
            if isinstance(exc, ServiceUnavailableError) and exc.leader:
                body["leader"] = exc.leader
        elif isinstance(exc, CompactedError):
            body["oldest_index"] = exc.oldest_index
        elif isinstance(exc, MethodNotAllowedError):
            extra["allow"] = exc.allow
        elif isinstance(exc, UnauthorizedError):
            extra["www-authenticate"] = exc.challenge
        elif isinstance(exc, (RequestTimeoutError, TooLargeError)):
            # The body was not read, or not whole: the server would read (and
            # drop) the rest before the next request on the connection, which a
            # huge or trickled body must not get. uvicorn closes it after this.
            extra["connection"] = "close"
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        body = {"error": _HTTP_CODES.get(status, f"http_{status}"), "message": exc.detail}
        if exc.headers:
            extra.update(exc.headers)
    elif isinstance(exc, ClientDisconnect):
        # The client went away while sending its body: nobody reads this answer.
        status = 400
        body = {"error": "bad_request", "message": "the client disconnected"}
    else:
        logger.error("internal error answering a request", exc_info=exc)
        status = 500
        body = {"error": "internal", "message": "internal error; the server log has the details"}
    return json_response(body, status, extra)


def log_late_error(exc: BaseException) -> None:
    """Log ``exc``, raised once the answer had started: too late for an error answer.

    The caller re-raises, so that the server closes the connection rather
    than leave the client with half an answer.
    """
    logger.error("error after the answer started", exc_info=exc)


async def handle_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: see :func:`error_response`."""
    if isinstance(exc, HTTPException) and exc.status_code in (404, 405):
        # Routing's own errors: say which request, rather than "Not Found".
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            exc = MethodNotAllowedError(f"{where} is not allowed (this path takes {allow})", allow)
        else:
            exc = NotFoundError(f"no endpoint {where}; /docs lists the API")
    return error_response(exc)
