"""The client's logic without I/O: requests, answers, and the retry/failover policy.

Every API call is an :class:`Op` (a :class:`Request` and a function that turns the
answer into a typed result). :func:`run_call` is a generator that decides, for one
call, which member to ask and what to do with each outcome: it yields :class:`Send`
(ask this endpoint, within this timeout) or :class:`Sleep`, and is sent back a
:class:`Answer` or a :class:`Failure`. The sync and async clients are two thin drivers
of the same generator, so they retry, fail over and raise alike.

Retry rules (docs/client.md):

- a connection that could not be made (refused, connect timeout): any request is
  retried on the next member; nothing was sent;
- ``503``, ``507`` and ``429`` mean *nothing was done*: retried (another member first
  for ``503`` and ``507``), never before ``Retry-After``, within the call's timeout;
- a read (``write=False``) is retried on any connection error;
- a write is retried after a lost connection or a ``504`` only with its
  ``Idempotency-Key`` (every KV write, transaction and lease grant carries one),
  so it is applied at most once; a write without one (membership, leadership,
  lease revocation) is never retried once it may have been sent, and raises
  :class:`OutcomeUnknownError`, as does a keyed write whose outcome is still unknown
  when the call's timeout ends;
- every other error answer is raised at once as its class (:func:`error_for`).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote_from_bytes

from raftdb.client.errors import (
    EndpointsUnavailableError,
    OutcomeUnknownError,
    RaftdbError,
    error_for,
)
from raftdb.client.types import Status

T = TypeVar("T")

#: Longest wait between two rounds over every endpoint after connection failures.
MAX_BACKOFF = 1.0
#: Longest a ``Retry-After`` is trusted for (a node says 1 s; guard against nonsense).
MAX_RETRY_AFTER = 5.0
#: Timeout of one ``GET /v1/status`` while finding the leader.
DISCOVERY_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, relative to an endpoint: ``target`` is the path and query,
    already percent-encoded. ``write``: not safe to resend once it may have been sent,
    unless it carries ``idempotency_key``."""

    method: str
    target: str
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    write: bool = False
    idempotency_key: str | None = None

    def all_headers(self, token: str | None) -> dict[str, str]:
        """The headers to send: the request's, the token's and the idempotency key."""
        h = dict(self.headers)
        if token:
            h["authorization"] = f"Bearer {token}"
        if self.idempotency_key:
            h["idempotency-key"] = self.idempotency_key
        return h


@dataclass(frozen=True, slots=True)
class Answer:
    """A node's answer: status, headers (names lowercase) and body."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.content)

    def error_body(self) -> dict[str, Any]:
        """The error object of an error answer (a stand-in when the body is not one)."""
        try:
            body = json.loads(self.content)
        except ValueError:
            body = None
        if isinstance(body, dict):
            return body
        text = self.content[:200].decode(errors="replace")
        return {"error": "", "message": f"HTTP {self.status}: {text}"}


@dataclass(frozen=True, slots=True)
class Failure:
    """A transport error; ``maybe_sent``: the request may have reached the node."""

    error: Exception
    maybe_sent: bool


@dataclass(frozen=True, slots=True)
class Send:
    """Step: send ``request`` to ``endpoint`` within ``timeout`` seconds."""

    endpoint: str
    request: Request
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Step: wait this long before the next attempt."""

    seconds: float


Step = Send | Sleep
Outcome = Answer | Failure | None


@dataclass(frozen=True, slots=True)
class Op(Generic[T]):
    """An API call: its request and how its successful answer becomes a result."""

    request: Request
    parse: Callable[[Answer], T]
    #: Error statuses that are results, not errors (``get``'s 404: ``None``).
    accept: frozenset[int] = frozenset()


def describe_failure(error: BaseException) -> str:
    """A transport failure in words for an error message: its kind and text
    (``ConnectError: [Errno 111] Connection refused``), not its repr."""
    text = " ".join(str(error).split())
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def new_idempotency_key() -> str:
    """A fresh key for one write call (random: unique across processes and restarts)."""
    return uuid.uuid4().hex


def path_key(key: bytes) -> str:
    """A key as a path segment: every byte but unreserved ones percent-encoded, so ``/``
    and dot segments reach the node as the key's bytes."""
    return quote_from_bytes(key, safe="").replace(".", "%2E")


def query(params: Sequence[tuple[str, bytes | str | int | None]]) -> str:
    """``?a=1&b=...`` of the parameters that are not ``None`` (bytes percent-encoded)."""
    parts = []
    for name, value in params:
        if value is None:
            continue
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(f"{name}={quote_from_bytes(raw, safe='')}")
    return "?" + "&".join(parts) if parts else ""


def json_body(obj: Any) -> bytes:
    """A JSON request body."""
    return json.dumps(obj, separators=(",", ":")).encode()


class ClusterView:
    """What a client knows of the cluster: its endpoints, the member id behind each
    (learned from ``/v1/status``), the leader, and when each endpoint may be tried again.
    Shared by every call of one client; only touched by the calls' generators."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.ids: dict[str, int] = {}
        self.leader_id = 0
        self.discovered = False
        self.preferred = 0
        self.not_before: dict[str, float] = {}
        self.failures: dict[str, int] = {}

    def leader_endpoint(self) -> str | None:
        """The leader's endpoint, when known."""
        if not self.leader_id:
            return None
        for ep, node_id in self.ids.items():
            if node_id == self.leader_id:
                return ep
        return None

    def learn(self, endpoint: str, status: Status) -> None:
        """Remember a member's id and the leader it knows."""
        self.ids[endpoint] = status.id
        if status.role == "leader":
            self.leader_id = status.id
        elif status.leader and not self.leader_id:
            self.leader_id = status.leader

    def pick(self, write: bool, now: float) -> tuple[str | None, float]:
        """The endpoint to ask now (the leader first for writes, else the preferred one,
        else the next that may be tried), or ``None`` and when one may be."""
        order = list(self.endpoints[self.preferred :]) + list(self.endpoints[: self.preferred])
        leader = self.leader_endpoint() if write else None
        if leader is not None:
            order.remove(leader)
            order.insert(0, leader)
        for ep in order:
            if self.not_before.get(ep, 0.0) <= now:
                return ep, now
        return None, min(self.not_before.get(ep, 0.0) for ep in order)

    def ok(self, endpoint: str) -> None:
        """The endpoint answered: prefer it from now on."""
        self.failures.pop(endpoint, None)
        self.not_before.pop(endpoint, None)
        self.preferred = self.endpoints.index(endpoint)

    def down(
        self,
        endpoint: str,
        now: float,
        retry_after: float | None = None,
        *,
        forget_leader: bool = True,
    ) -> None:
        """The endpoint failed: skip it for ``retry_after`` or a growing backoff, and
        forget it as the leader (the next write finds the leader again)."""
        n = self.failures.get(endpoint, 0) + 1
        self.failures[endpoint] = n
        if retry_after is None:
            retry_after = min(MAX_BACKOFF, 0.05 * 2**n) * (0.5 + random.random() / 2)
        self.not_before[endpoint] = now + retry_after
        if forget_leader and self.ids.get(endpoint) == self.leader_id:
            self.leader_id = 0
            self.discovered = False


STATUS_REQUEST = Request("GET", "/v1/status")


def _retry_after(answer: Answer) -> float:
    try:
        return max(0.0, min(MAX_RETRY_AFTER, float(answer.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


def run_call(
    view: ClusterView, op: Op[T], timeout: float, *, pin: str | None = None
) -> Generator[Step, Outcome, T]:
    """One call, with failover and retries, within ``timeout`` seconds (module docstring).
    ``pin`` asks only that endpoint (a member's own status)."""
    request = op.request
    deadline = time.monotonic() + timeout
    if request.write and pin is None and not view.discovered and len(view.endpoints) > 1:
        yield from _discover(view, deadline)
    unknown: str | None = None
    last: RaftdbError | None = None
    while True:
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0:
            raise _gave_up(request, timeout, unknown, last)
        if pin is not None:
            endpoint: str | None = pin
            when = max(now, view.not_before.get(pin, 0.0)) if last is not None else now
        else:
            endpoint, when = view.pick(request.write, now)
        if endpoint is None or when > now:
            if when >= deadline:
                raise _gave_up(request, timeout, unknown, last)
            yield Sleep(when - now)
            if endpoint is None:
                continue
        assert endpoint is not None
        outcome = yield Send(endpoint, request, max(0.001, deadline - time.monotonic()))
        now = time.monotonic()
        if isinstance(outcome, Failure):
            view.down(endpoint, now)
            if outcome.maybe_sent and request.write:
                lost = describe_failure(outcome.error)
                unknown = f"the connection to {endpoint} was lost after sending: {lost}"
                if request.idempotency_key is None:
                    raise OutcomeUnknownError(f"{request.method} {request.target}: {unknown}")
            last = EndpointsUnavailableError(f"{endpoint}: {describe_failure(outcome.error)}")
            continue
        assert isinstance(outcome, Answer)
        status = outcome.status
        if status in (503, 507, 429):
            body = outcome.error_body()
            leader = body.get("leader")
            if isinstance(leader, int) and leader:
                view.leader_id = leader
            pause = _retry_after(outcome)
            if status != 429:
                view.down(endpoint, now, pause)
            else:
                view.not_before[endpoint] = now + pause
            last = error_for(status, body)
            continue
        if status == 504 and request.write:
            unknown = f"{endpoint} answered 504: {outcome.error_body().get('message', '')}"
            if request.idempotency_key is None:
                raise OutcomeUnknownError(
                    f"{request.method} {request.target}: {unknown}",
                    status=504,
                    body=outcome.error_body(),
                )
            view.down(endpoint, now, forget_leader=False)  # slow to commit: back off
            continue
        view.ok(endpoint)
        if status >= 400 and status not in op.accept:
            raise error_for(status, outcome.error_body())
        return op.parse(outcome)


def _discover(view: ClusterView, deadline: float) -> Generator[Step, Outcome, None]:
    """Ask each endpoint's ``/v1/status`` for its id and leader (once per leader)."""
    for endpoint in view.endpoints:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        outcome = yield Send(endpoint, STATUS_REQUEST, min(DISCOVERY_TIMEOUT, remaining))
        if isinstance(outcome, Answer) and outcome.status == 200:
            try:
                view.learn(endpoint, Status.from_json(outcome.json()))
            except (ValueError, KeyError, TypeError):
                continue
        elif isinstance(outcome, Failure):
            view.down(endpoint, time.monotonic())
    view.discovered = True


def _gave_up(
    request: Request, timeout: float, unknown: str | None, last: RaftdbError | None
) -> RaftdbError:
    what = f"{request.method} {request.target}"
    if unknown is not None:
        return OutcomeUnknownError(
            f"{what}: outcome unknown after {timeout:g}s ({unknown}); retry with "
            f"idempotency_key={request.idempotency_key!r}",
            idempotency_key=request.idempotency_key,
        )
    if last is not None:
        last.message = f"{what}: gave up after {timeout:g}s: {last.message}"
        last.args = (last.message,)
        return last
    return EndpointsUnavailableError(f"{what}: no endpoint answered within {timeout:g}s")
