"""The backup download's logic without I/O: the request, what the answer's headers say,
the bytes written so far, and when another member is asked.

``GET /v1/snapshot`` streams a snapshot of the whole state (docs/api.md); the client
writes its body, as it is, to a binary file. Members are tried as for a read until one
starts its answer: a connection that could not be made, ``503``, ``507`` and ``429``
move on to the next (after ``Retry-After``), within the call's timeout; any other error
answer is raised. Once the body has started, a failure is not retried: the bytes
already written cannot be taken back from a file the caller owns, so the call raises
:class:`~raftdb.client.errors.EndpointsUnavailableError` saying how far it got, and the
caller throws the file away (``raftdb snapshot save`` writes to ``FILE.part`` first).

The call's timeout bounds the wait for an answer to start (the node confirms a read
point first) and each wait for more of the body, not the whole transfer, whose length
depends on the size of the database.

The client does not parse the stream (it imports nothing of raftdb's server side):
checking it is the caller's (``raftdb.kv.snapshot.check_stream``; the CLI does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Final
from urllib.parse import unquote

from raftdb.client._core import Answer, ClusterView, Request, _retry_after, describe_failure
from raftdb.client.errors import EndpointsUnavailableError, RaftdbError, error_for

__all__ = ["SnapshotSaved"]

SNAPSHOT_REQUEST: Final = Request("GET", "/v1/snapshot")
#: Statuses after which another member is asked (nothing was done).
_RETRY_STATUSES: Final = frozenset({429, 503, 507})

#: Called with the number of bytes just written (a progress bar's ``advance``).
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class SnapshotSaved:
    """A snapshot written by ``Client.snapshot``: what the node's headers said, and
    the bytes written (``size`` and their ``sha256``, hex).

    ``index`` and ``term``: the last entry applied into the snapshot; ``members``: the
    membership at ``index`` (``{id: peer URL}``), ``learners`` the ids among them that
    are learners; ``endpoint``: the member that served it.
    """

    index: int
    term: int
    members: Mapping[int, str] = field(hash=False)
    learners: tuple[int, ...]
    size: int
    sha256: str
    endpoint: str


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """The facts of an answer's ``X-Raftdb-Snapshot-*`` headers."""

    index: int
    term: int
    members: Mapping[int, str]
    learners: tuple[int, ...]


def parse_header(headers: Mapping[str, str]) -> SnapshotHeader:
    """The ``X-Raftdb-Snapshot-*`` headers of a ``200`` answer.

    Raises:
        RaftdbError: a header is missing or malformed (not a raftdb snapshot answer).
    """
    try:
        index = int(headers["x-raftdb-snapshot-index"])
        term = int(headers["x-raftdb-snapshot-term"])
        members: dict[int, str] = {}
        for part in headers.get("x-raftdb-snapshot-members", "").split(","):
            if part:
                node_id, _, url = part.partition("=")
                members[int(node_id)] = unquote(url)
        learners = tuple(
            int(n) for n in headers.get("x-raftdb-snapshot-learners", "").split(",") if n
        )
    except (KeyError, ValueError) as e:
        raise RaftdbError(f"the answer to GET /v1/snapshot has bad snapshot headers: {e!r}") from e
    return SnapshotHeader(index, term, members, learners)


def refusal(view: ClusterView, endpoint: str, answer: Answer, now: float) -> RaftdbError:
    """The error of an answer that is not ``200``; for a status that says "nothing was
    done, ask later", ``endpoint`` is marked down until its ``Retry-After`` (the caller
    tries the next member); any other the caller raises (see :func:`retried`)."""
    body = answer.error_body()
    if answer.status in _RETRY_STATUSES:
        view.down(endpoint, now, _retry_after(answer))
    return error_for(answer.status, body)


def retried(error: RaftdbError) -> bool:
    """Whether another member is asked after ``error`` (from :func:`refusal`)."""
    return error.status in _RETRY_STATUSES


class Download:
    """The body being written to ``dest``: its size, checksum and progress reports."""

    def __init__(self, dest: BinaryIO, header: SnapshotHeader, progress: Progress | None) -> None:
        self.dest = dest
        self.header = header
        self.progress = progress
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        """Write one piece of the body."""
        if not chunk:
            return
        self.dest.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)
        if self.progress is not None:
            self.progress(len(chunk))

    def cut(self, endpoint: str, error: Exception) -> EndpointsUnavailableError:
        """The error for a body that stopped before its end."""
        return EndpointsUnavailableError(
            f"the snapshot from {endpoint} was cut off after {self.size} bytes "
            f"({describe_failure(error)}): "
            "what was written is incomplete; take the snapshot again"
        )

    def saved(self, endpoint: str) -> SnapshotSaved:
        """The result, once the body ended."""
        h = self.header
        return SnapshotSaved(
            h.index, h.term, h.members, h.learners, self.size, self._hash.hexdigest(), endpoint
        )


def gave_up(timeout: float, last: RaftdbError | None) -> RaftdbError:
    """The error when no member started a snapshot within ``timeout``."""
    if last is not None:
        last.message = f"GET /v1/snapshot: gave up after {timeout:g}s: {last.message}"
        last.args = (last.message,)
        return last
    return EndpointsUnavailableError(f"GET /v1/snapshot: no endpoint answered within {timeout:g}s")


def next_member(
    view: ClusterView, deadline: float, timeout: float, last: RaftdbError | None, now: float
) -> tuple[str | None, float]:
    """The member to ask now, or ``None`` and how long to wait before looking again.

    Raises:
        RaftdbError: the call's time is up (:func:`gave_up`).
    """
    if now >= deadline:
        raise gave_up(timeout, last)
    endpoint, when = view.pick(False, now)
    if endpoint is None or when > now:
        if when >= deadline:
            raise gave_up(timeout, last)
        return None, when - now
    return endpoint, 0.0
