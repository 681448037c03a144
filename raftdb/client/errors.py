"""The client's exceptions: one class per error code of the API, all under :class:`RaftdbError`.

A node answers every error as JSON ``{"error": code, "message": ...}``; the client
raises the class registered for ``code`` (:func:`error_for`), so callers catch what
they can handle (``except ConditionFailedError``) and let the rest propagate.
Two classes are the client's own: :class:`OutcomeUnknownError` (a write may or may
not have been applied) and :class:`EndpointsUnavailableError` (no member answered
within the call's timeout).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequestError",
    "CompactedError",
    "ConditionFailedError",
    "EndpointsUnavailableError",
    "ForbiddenError",
    "HttpsRequiredError",
    "InternalError",
    "LeaseNotFoundError",
    "LockNotHeldError",
    "MemberNotFoundError",
    "MethodNotAllowedError",
    "NoSpaceError",
    "NodeRemovedError",
    "NotFoundError",
    "NotReadyError",
    "OutcomeUnknownError",
    "RaftdbError",
    "RequestTimeoutError",
    "ReservedPathError",
    "TooLargeError",
    "TooManyOperationsError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
    "error_for",
]


class RaftdbError(Exception):
    """Any error the client reports. ``code`` is the API's error code, ``status`` the
    HTTP status (0 when no node answered), ``body`` the error's JSON object."""

    code: ClassVar[str] = "error"

    def __init__(
        self, message: str, *, status: int = 0, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body: dict[str, Any] = body or {}


class BadRequestError(RaftdbError):
    """400 ``bad_request``: the request is malformed (a bug in the caller's input)."""

    code = "bad_request"


class ReservedPathError(RaftdbError):
    """400 ``reserved_path``: a raftexample-style key under a reserved root path."""

    code = "reserved_path"


class HttpsRequiredError(RaftdbError):
    """400 ``https_required``: the node wants TLS; use an ``https://`` endpoint."""

    code = "https_required"


class UnauthorizedError(RaftdbError):
    """401 ``unauthorized``: no valid bearer token was sent."""

    code = "unauthorized"


class ForbiddenError(RaftdbError):
    """403 ``forbidden``: the token's role or prefixes do not allow this request."""

    code = "forbidden"


class NotFoundError(RaftdbError):
    """404 ``not_found``: no such endpoint (a missing key is ``None`` from ``get``)."""

    code = "not_found"


class MemberNotFoundError(RaftdbError):
    """404 ``member_not_found``: no member with that id."""

    code = "member_not_found"


class LeaseNotFoundError(RaftdbError):
    """404 ``lease_not_found``: the lease was never granted, was revoked, or expired."""

    code = "lease_not_found"


class LockNotHeldError(RaftdbError):
    """404 ``lock_not_held``: the lease holds no key of that lock."""

    code = "lock_not_held"


class MethodNotAllowedError(RaftdbError):
    """405 ``method_not_allowed``."""

    code = "method_not_allowed"


class RequestTimeoutError(RaftdbError):
    """408 ``request_timeout``: the body was too slow, or a lock was not acquired in its wait."""

    code = "request_timeout"


class ConditionFailedError(RaftdbError):
    """412 ``condition_failed``: ``if_match``/``create_only`` did not hold; nothing changed.
    ``mod_index`` is the key's current modify index (0: the key is absent)."""

    code = "condition_failed"

    @property
    def mod_index(self) -> int:
        """The key's modify index when the condition was checked (0 when absent)."""
        return int(self.body.get("mod_index", 0))


class CompactedError(RaftdbError):
    """410 ``compacted`` (or a watch ``closed`` event with it): the history no longer holds
    the index asked for; read afresh and watch from the read's index (``oldest_index``)."""

    code = "compacted"

    @property
    def oldest_index(self) -> int:
        """The oldest index a watch may start from."""
        return int(self.body.get("oldest_index", 0))


class TooLargeError(RaftdbError):
    """413 ``too_large``: a key, value or body over its limit."""

    code = "too_large"


class TooManyOperationsError(RaftdbError):
    """413 ``too_many_operations``: a transaction with more than 128 compares or operations."""

    code = "too_many_operations"


class TooManyRequestsError(RaftdbError):
    """429 ``too_many_requests``: the node stayed busy for the whole call; nothing was done."""

    code = "too_many_requests"


class UnavailableError(RaftdbError):
    """503 ``unavailable``: no leader or quorum for the whole call; nothing was done."""

    code = "unavailable"


class NotReadyError(RaftdbError):
    """503 ``not_ready``: the node is starting, catching up or stopping."""

    code = "not_ready"


class NodeRemovedError(RaftdbError):
    """503 ``node_removed``: the member was removed from the cluster."""

    code = "node_removed"


class NoSpaceError(RaftdbError):
    """507 ``nospace``: the member's disk is full (it serves reads, takes no writes); every
    member answered so for the whole call. Nothing was written."""

    code = "nospace"


class InternalError(RaftdbError):
    """500 ``internal``: a bug in the node (its log has the traceback)."""

    code = "internal"


class OutcomeUnknownError(RaftdbError):
    """A write may or may not have been applied: the node answered 504, or the connection
    was lost after the request was sent, and no retry (with the same ``Idempotency-Key``)
    settled it within the call's timeout. ``idempotency_key`` is the key it carried:
    retry with it (``idempotency_key=``) to learn the outcome without applying it twice."""

    code = "outcome_unknown"

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.idempotency_key = idempotency_key


class EndpointsUnavailableError(RaftdbError):
    """No endpoint could be reached (connection refused, reset or timed out) within the
    call's timeout; nothing was sent, or the request was a read."""

    code = "endpoints_unavailable"


_BY_CODE: dict[str, type[RaftdbError]] = {
    cls.code: cls
    for cls in (
        BadRequestError,
        ReservedPathError,
        HttpsRequiredError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        MemberNotFoundError,
        LeaseNotFoundError,
        LockNotHeldError,
        MethodNotAllowedError,
        RequestTimeoutError,
        ConditionFailedError,
        CompactedError,
        TooLargeError,
        TooManyOperationsError,
        TooManyRequestsError,
        UnavailableError,
        NotReadyError,
        NodeRemovedError,
        NoSpaceError,
        InternalError,
        OutcomeUnknownError,
    )
}


def error_for(status: int, body: dict[str, Any]) -> RaftdbError:
    """The exception for an error answer: by its ``error`` code, else :class:`RaftdbError`."""
    code = str(body.get("error", ""))
    message = str(body.get("message", f"HTTP {status}"))
    cls = _BY_CODE.get(code, RaftdbError)
    return cls(f"{code or status}: {message}", status=status, body=body)
