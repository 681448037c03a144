"""One request of a chaos client, and what its answer proves about its effect.

Every chaos client (:mod:`tests.chaos.workload`, :mod:`tests.chaos.bank`,
:mod:`tests.chaos.leases`) classifies an attempt the same way, from the
contract (docs/api.md, "Errors"):

- ``definite``: an answer the request's route gives for a request that was
  applied, or definitely decided (``2xx``, and the statuses a caller lists,
  such as ``412`` for a conditional write or ``404`` ``lease_not_found``);
- ``refused``: nothing was done: ``503`` (no leader or quorum), ``507`` (a full
  disk refused it before proposing), ``429`` (overload, refused at the door),
  or a connection that was never made;
- ``unknown``: ``504``, a timeout, a connection lost mid-request: the write may
  take effect at any later time, or never (Jepsen's ``:info``).

Anything else is a contract violation and raises :class:`UnexpectedAnswer`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx

__all__ = [
    "ATTEMPTS",
    "Attempt",
    "Outcome",
    "Sent",
    "UnexpectedAnswer",
    "attempt",
    "retried",
]

#: Attempts per write (the first and its retries with the same Idempotency-Key).
ATTEMPTS: Final = 3

Outcome = Literal["ok", "unknown", "failed"]
Attempt = Literal["definite", "unknown", "refused"]

#: Answers that say the request was refused before anything was proposed.
REFUSED: Final = frozenset({429, 503, 507})


class UnexpectedAnswer(AssertionError):
    """A node answered something the contract does not allow for the request."""


@dataclass
class Sent:
    """One request, possibly retried: its outcome and the definite answer, if any.

    ``call`` is when the first attempt was sent, ``acked_call`` when the attempt
    that got the definite answer was sent, ``ret`` when that answer arrived
    (monotonic seconds).
    """

    outcome: Outcome = "failed"
    response: httpx.Response | None = None
    call: float = 0.0
    acked_call: float = 0.0
    ret: float = 0.0
    kinds: list[Attempt] = field(default_factory=list)

    @property
    def status(self) -> int:
        return self.response.status_code if self.response is not None else 0

    def json(self) -> Any:
        """The definite answer's JSON body."""
        assert self.response is not None
        return self.response.json()


async def attempt(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    definite: Collection[int],
    json: Any = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
) -> tuple[Attempt, httpx.Response | None]:
    """Send one request; classify its answer (see the module docstring)."""
    try:
        r = await http.request(
            method, url, json=json, params=params, headers=headers, content=content
        )
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
        return "refused", None  # the request never reached a node
    except httpx.HTTPError:
        return "unknown", None
    if r.status_code in definite:
        return "definite", r
    if r.status_code in REFUSED:
        return "refused", r
    if r.status_code == 504:
        return "unknown", r
    raise UnexpectedAnswer(f"{method} {url}: unexpected answer {r.status_code} {r.text[:300]}")


async def retried(
    send: Callable[[], Awaitable[tuple[Attempt, httpx.Response | None]]],
    rng: random.Random,
    halted: Callable[[], bool],
    attempts: int = ATTEMPTS,
) -> Sent:
    """``send()`` until a definite answer, at most ``attempts`` times (a short random
    pause between attempts, as the workload's writes); stops retrying once ``halted()``.

    The outcome is ``ok`` with the definite answer, else ``unknown`` if any
    attempt's fate is open, else ``failed`` (nothing was done)."""
    sent = Sent(call=time.monotonic())
    for n in range(attempts):
        if n:
            await asyncio.sleep(rng.uniform(0.05, 0.3))
        call = time.monotonic()
        kind, response = await send()
        sent.kinds.append(kind)
        if kind == "definite":
            sent.outcome, sent.response = "ok", response
            sent.acked_call, sent.ret = call, time.monotonic()
            return sent
        if halted():
            break
    sent.outcome = "unknown" if "unknown" in sent.kinds else "failed"
    return sent
