"""Errors raised by the Raft core and by Storage implementations.

One root, :class:`RaftError`, with the subclasses a caller handles. Two families
are kept apart on purpose (as h11 keeps ``LocalProtocolError`` apart from
``RemoteProtocolError``): a caller misusing the core (:class:`UsageError`) and a
request the core refuses for a reason of the moment (:class:`ProposalDroppedError`,
:class:`NotLeaderError`). A message from a misbehaving or stale peer is never an
exception: the core logs it and ignores it.
"""

from __future__ import annotations

__all__ = [
    "CompactedError",
    "InvalidMessageError",
    "RaftConfigError",
    "NotLeaderError",
    "ProposalDroppedError",
    "RaftError",
    "SnapshotTemporarilyUnavailableError",
    "StorageError",
    "UnavailableError",
    "UsageError",
]


class RaftError(Exception):
    """Root of every error the Raft core or a Storage raises on purpose."""


class StorageError(RaftError):
    """A Storage read could not be served as asked (see the subclasses)."""


class CompactedError(StorageError):
    """The requested index is older than the storage's first index: compacted away."""


class UnavailableError(StorageError):
    """The requested index is newer than the storage's last index."""


class SnapshotTemporarilyUnavailableError(StorageError):
    """The storage is preparing a snapshot; ask again later."""


class RaftConfigError(RaftError):
    """The core's configuration is invalid; the message names the field."""


class UsageError(RaftError):
    """The caller broke the core's contract (e.g. ``ready()`` twice without ``advance()``)."""


class ProposalDroppedError(RaftError):
    """A proposal, conf change, read or transfer was refused; ``reason`` says why.

    The caller may retry later (typically once a leader is known again).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotLeaderError(ProposalDroppedError):
    """The request needs the leader and this node is not it.

    ``leader`` is the node this one believes leads now (0 when unknown), so the
    caller can redirect.
    """

    def __init__(self, reason: str, leader: int) -> None:
        super().__init__(reason)
        self.leader = leader


class InvalidMessageError(RaftError):
    """A message that can never be stepped (wrong recipient, local-only type from a peer).

    The peer sending it is misbehaving; the driver logs it and drops it.
    """
