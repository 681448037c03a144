"""Errors the node server raises to its callers (the REST API maps each to HTTP).

Each carries a stable ``code`` (the JSON ``error`` field) and the HTTP status
the API answers with, so the mapping lives in one place (``raftdb.http.errors``).
An error that carries ``retry_after`` (:class:`RetryLaterError`) is answered
with a ``Retry-After`` header: nothing was done, and the same request may
succeed later.
"""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "CompactedError",
    "ConditionFailedError",
    "LeaseNotFoundError",
    "LockNotHeldError",
    "MemberNotFoundError",
    "NoSpaceError",
    "NodeError",
    "NodeRemovedError",
    "NotReadyError",
    "OutcomeUnknownError",
    "RequestTimeoutError",
    "RetryLaterError",
    "ServiceUnavailableError",
    "TooLargeError",
    "TooManyRequestsError",
]


class NodeError(Exception):
    """Root of the server's errors. ``code`` and ``status`` shape the HTTP answer."""

    code = "internal"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(NodeError):
    """The request is malformed (bad key, body, parameter)."""

    code = "bad_request"
    status = 400


class TooLargeError(NodeError):
    """A key, value or body is over its configured limit."""

    code = "too_large"
    status = 413


class ConditionFailedError(NodeError):
    """An ``If-Match`` / ``If-None-Match`` condition did not hold; nothing changed.

    ``mod_index`` is the key's current modify index (0: the key does not exist).
    """

    code = "condition_failed"
    status = 412

    def __init__(self, message: str, mod_index: int) -> None:
        super().__init__(message)
        self.mod_index = mod_index


class MemberNotFoundError(NodeError):
    """The cluster has no member with that id."""

    code = "member_not_found"
    status = 404


class LeaseNotFoundError(NodeError):
    """No such lease: it never existed, was revoked, or expired (its keys are gone too)."""

    code = "lease_not_found"
    status = 404


class LockNotHeldError(NodeError):
    """An unlock by a lease that holds no key of the lock (it was released, or its lease ended)."""

    code = "lock_not_held"
    status = 404


class CompactedError(NodeError):
    """A watch asked for changes older than the retained history (etcd's ErrCompacted).

    ``oldest_index`` is the history floor: a watch may start from it (``since``
    = it) and miss nothing after it; anything older must be read afresh.
    """

    code = "compacted"
    status = 410

    def __init__(self, message: str, oldest_index: int) -> None:
        super().__init__(message)
        self.oldest_index = oldest_index


class RetryLaterError(NodeError):
    """Nothing was done, for a reason of the moment: retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailableError(RetryLaterError):
    """No leader or no quorum now: retry after ``retry_after`` seconds. Nothing was done."""

    code = "unavailable"
    status = 503

    def __init__(self, message: str, retry_after: float = 1.0, leader: int = 0) -> None:
        super().__init__(message, retry_after)
        self.leader = leader


class TooManyRequestsError(RetryLaterError):
    """The node holds as many waiting requests as it may (or applies too far behind).

    Admission control (``max_pending_requests``): a slow or hostile client
    cannot make a node hold unbounded work. Nothing was done.
    """

    code = "too_many_requests"
    status = 429


class NoSpaceError(RetryLaterError):
    """The node's disk is full: it serves reads but takes no writes until space returns."""

    code = "nospace"
    status = 507


class NotReadyError(ServiceUnavailableError):
    """The node is starting, catching up, or stopping."""

    code = "not_ready"


class NodeRemovedError(ServiceUnavailableError):
    """This node was removed from the cluster and no longer serves."""

    code = "node_removed"


class OutcomeUnknownError(NodeError):
    """A write was proposed but its outcome is unknown within the deadline.

    It may still commit. Retry with the same ``Idempotency-Key`` to learn the
    outcome without applying the write twice.
    """

    code = "outcome_unknown"
    status = 504


class RequestTimeoutError(NodeError):
    """The client took longer than ``body_timeout_s`` to send its request's body, or
    a lock was not acquired within the wait it was given (its key is deleted again:
    nothing is left waiting)."""

    code = "request_timeout"
    status = 408
