"""Watchers on every member, and the check of their streams against the committed history.

During a run, :class:`Watcher` tasks (started by the workload, a few per node)
follow ``GET /v1/watch?prefix=P&prev=true`` and record every event they get.
After an error (a killed or paused node, a partition that stalls the stream
past :data:`READ_TIMEOUT`, a ``watcher_too_slow`` close) a watcher reconnects
to the same member or another one, resuming with ``Last-Event-ID`` or
``since`` (chosen at random, so both are used) from the last index it has seen
*completely*:

- a transaction's changes are consecutive events with one id, so the events
  of an index are complete only once an event of a later index, a
  ``progress`` event, or a ``closed`` event naming that index arrives; the
  events of the last, possibly cut, index of a connection are kept apart
  (``partial``) and the watcher resumes before it, so that it never loses the
  rest of a transaction (resuming after the cut index would);
- a ``progress`` event with index ``I`` says everything up to ``I`` was
  delivered: the resume point moves to ``I``; so does a ``closed`` event with
  ``since`` (too slow, node removed or stopping: resume after ``since``).
  A ``closed`` without it (``compacted``) is a failure here: the chaos
  cluster keeps the whole history.

Besides, a watcher may hang up on its own after a random 1 to 5 s
(:data:`HANG_UP`), so that resuming is exercised anywhere in the stream; the
workload leaves one watcher per member without it, following as ``curl -N``
does, only ever cut by the faults (a node that cannot stop gracefully while a
stream is open shows up as a ``stop`` fault that fails).

A connection's record is a :class:`Segment`: the index it started after, the
index up to which it claims to have seen everything (``end``), and the events.

At the end the runner reads the *reference*: one watch from ``since=0`` with
``prev=true`` on every member, once the cluster is healthy, until a
``progress`` event reaches the final applied index (the chaos cluster keeps
the whole run's history: ``watch_history`` is set above the run's changes).
The references of all members must be equal; then every segment must be
exactly the reference's events of its prefix with index in ``(since, end]``,
in order: a missing event is a gap, an extra one a duplicate or reordering,
a different one a wrong value. :func:`replay` also checks the reference
itself: indexes never decrease, a put's ``create_index``/``mod_index`` and
``prev`` fields follow from the history before it, a delete deletes an
existing key, and the history replayed from the empty store gives exactly the
final state of every member.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

__all__ = [
    "HANG_UP",
    "READ_TIMEOUT",
    "KeyState",
    "Segment",
    "SSEParser",
    "WatchEvent",
    "Watcher",
    "check_streams",
    "fetch_history",
    "replay",
]

#: A stream silent this long is taken as dead (the nodes send ``progress`` every
#: ``watch_progress_s``, 0.5 s in the chaos cluster): the watcher reconnects.
READ_TIMEOUT: Final = 2.0
#: A watcher also hangs up on its own after this many seconds (drawn for each
#: connection), wherever the stream is, so that resuming is exercised at every
#: kind of point (mid-transaction too), between faults as well as during them.
HANG_UP: Final = (1.0, 5.0)


@dataclass(frozen=True)
class WatchEvent:
    """One ``put`` or ``delete`` event: its id (the change's log index), kind and data.

    ``data`` is the event's JSON object re-encoded with sorted keys, so that
    two events are equal exactly when the server sent the same thing."""

    index: int
    kind: str
    data: str

    @property
    def fields(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.data)
        return decoded

    @property
    def key(self) -> bytes:
        f = self.fields
        if "key_b64" in f:
            return base64.b64decode(f["key_b64"])
        return str(f["key"]).encode()

    @property
    def value(self) -> bytes:
        return base64.b64decode(self.fields.get("value_b64", ""))

    def __str__(self) -> str:
        return f"{self.index}:{self.kind} {self.data}"


@dataclass
class SSEParser:
    """Server-sent events, one line at a time (the WHATWG rules the server's use)."""

    _id: str | None = None
    _event: str = "message"
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> tuple[str, str | None, str] | None:
        """Take one line (without its end); a blank line dispatches ``(event, id, data)``."""
        if not line:
            if not self._data and self._id is None:
                self._event = "message"
                return None
            out = (self._event, self._id, "\n".join(self._data))
            self._id, self._event, self._data = None, "message", []
            return out
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def parse_event(event: str, id_: str | None, data: str) -> tuple[str, int, dict[str, Any]]:
    """``(kind, index, data)`` of a dispatched event; ``ValueError`` if malformed."""
    if id_ is None and event != "closed":
        raise ValueError(f"{event} event without an id: {data!r}")
    index = int(id_) if id_ is not None else 0
    body = json.loads(data) if data else {}
    if not isinstance(body, dict):
        raise ValueError(f"{event} event whose data is not an object: {data!r}")
    return event, index, body


@dataclass
class Segment:
    """What one connection of a watcher delivered; see the module docstring."""

    node: int
    since: int
    resume_by: str
    end: int = 0
    events: list[WatchEvent] = field(default_factory=list)
    received: list[float] = field(default_factory=list)
    #: Events of the connection's last index, not known to be complete.
    partial: list[WatchEvent] = field(default_factory=list)
    ended_by: str = ""


@dataclass
class Watcher:
    """One watcher task of the workload: ``prefix`` from ``since=0``, first on node
    ``home`` (an index into ``urls()``); see the module docstring."""

    name: str
    prefix: str
    home: int
    urls: Callable[[], list[str]]
    rng: random.Random
    halt: threading.Event
    segments: list[Segment] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    #: Hang up after a random time in this range (seconds); None: only after errors.
    hang_up: tuple[float, float] | None = HANG_UP
    #: The HTTP transport (tests give a mock one); None: the network.
    transport: httpx.AsyncBaseTransport | None = None

    async def run(self) -> None:
        """Watch until the workload halts, reconnecting after every error."""
        resume, node = 0, self.home
        timeout = httpx.Timeout(READ_TIMEOUT, connect=1.0)
        async with httpx.AsyncClient(timeout=timeout, transport=self.transport) as http:
            while not self.halt.is_set():
                by = "since" if not self.segments or self.rng.random() < 0.5 else "last-event-id"
                segment = Segment(node, resume, by, end=resume)
                self.segments.append(segment)
                await self._connect(http, segment)
                resume = segment.end
                self.counts[f"ended_{segment.ended_by}"] += 1
                if self.halt.is_set():
                    break
                self.counts["reconnects"] += 1
                node = self._next_node(node, segment)
                if segment.ended_by in ("refused", "http_error", "busy", "malformed"):
                    await asyncio.sleep(self.rng.uniform(0.1, 0.3))  # nobody serves: do not spin

    def _next_node(self, node: int, segment: Segment) -> int:
        """Where to reconnect. A watcher that hangs up: the same member half the time,
        else another. One that does not (``curl -N``): home, unless home has just
        refused it; away from home, it goes back after a while."""
        others = [i for i in range(len(self.urls())) if i != node] or [node]
        if self.hang_up is not None:
            return node if self.rng.random() < 0.5 else self.rng.choice(others)
        if node == self.home and segment.ended_by in ("refused", "busy"):
            return self.rng.choice(others)
        return self.home

    async def _connect(self, http: httpx.AsyncClient, segment: Segment) -> None:
        url = f"{self.urls()[segment.node]}/v1/watch"
        params = {"prefix": self.prefix, "prev": "true"}
        headers = {}
        if segment.resume_by == "since":
            params["since"] = str(segment.since)
        else:
            headers["last-event-id"] = str(segment.since)
        try:
            async with http.stream("GET", url, params=params, headers=headers) as r:
                if r.status_code != 200:
                    body = (await r.aread()).decode(errors="replace")[:300]
                    busy = r.status_code in (429, 503, 504)
                    segment.ended_by = "busy" if busy else "refused"
                    if not busy:
                        self.errors.append(
                            f"watcher {self.name}: {r.status_code} {body} for since "
                            f"{segment.since} on node {segment.node + 1}"
                        )
                    return
                await self._follow(r, segment)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            segment.ended_by = "refused"
        except httpx.HTTPError:
            segment.ended_by = "http_error"
        except ValueError as exc:
            segment.ended_by = "malformed"
            self.errors.append(f"watcher {self.name} on node {segment.node + 1}: {exc}")
        finally:
            if segment.partial:
                self.counts["partial_dropped"] += 1

    async def _follow(self, r: httpx.Response, segment: Segment) -> None:
        parser = SSEParser()
        if self.hang_up is not None:
            hang_up = time.monotonic() + self.rng.uniform(*self.hang_up)
        elif segment.node != self.home:
            hang_up = time.monotonic() + self.rng.uniform(*HANG_UP)  # then home again
        else:
            hang_up = math.inf
        async for line in r.aiter_lines():
            if self.halt.is_set():
                segment.ended_by = "halt"
                return
            if time.monotonic() > hang_up:
                segment.ended_by = "hang_up"
                return
            dispatched = parser.feed(line)
            if dispatched is None:
                continue
            kind, index, data = parse_event(*dispatched)
            now = time.monotonic()
            if kind in ("put", "delete"):
                if segment.partial and index != segment.partial[0].index:
                    self._complete(segment)
                ev = WatchEvent(index, kind, json.dumps(data, sort_keys=True))
                segment.partial.append(ev)
                segment.received.append(now)
                self.counts["events"] += 1
            elif kind == "progress":
                self._complete(segment)
                self.counts["progress"] += 1
                if index < segment.end:
                    self.errors.append(
                        f"watcher {self.name} on node {segment.node + 1}: progress {index} "
                        f"after everything up to {segment.end} was delivered"
                    )
                segment.end = max(segment.end, index)
            elif kind == "closed":
                self._closed(segment, data)
                return
            else:
                raise ValueError(f"unknown event {kind!r} (id {index}): {data}")
        segment.ended_by = "eof"

    def _complete(self, segment: Segment) -> None:
        """The partial index is complete: it joins the segment's events."""
        if segment.partial:
            segment.events.extend(segment.partial)
            segment.end = max(segment.end, segment.partial[0].index)
            segment.partial = []

    def _closed(self, segment: Segment, data: dict[str, Any]) -> None:
        """A ``closed`` event: with ``since`` (too slow, node removed or stopping) the
        watch resumes after it, elsewhere too; without (``compacted``) it cannot."""
        error = data.get("error")
        since = data.get("since")
        segment.ended_by = f"closed_{error}"
        self.counts[f"closed_{error}"] += 1
        if isinstance(since, int):
            if segment.partial and segment.partial[0].index <= since:
                self._complete(segment)  # the server never splits an index
            segment.end = max(segment.end, since)
            if error == "watcher_too_slow":
                self.counts["too_slow"] += 1
            return
        self.errors.append(f"watcher {self.name} on node {segment.node + 1}: closed with {data}")


def fetch_history(
    client: httpx.Client, base_url: str, applied: int, timeout: float = 60.0
) -> list[WatchEvent]:
    """Every change the member at ``base_url`` retained (``since=0``, all keys,
    ``prev=true``) up to ``applied``: read until a ``progress`` event reaches it."""
    deadline = time.monotonic() + timeout
    events: list[WatchEvent] = []
    params = {"prefix": "", "since": "0", "prev": "true"}
    stream_timeout = httpx.Timeout(10.0, connect=2.0)
    with client.stream("GET", f"{base_url}/v1/watch", params=params, timeout=stream_timeout) as r:
        if r.status_code != 200:
            r.read()
            raise AssertionError(f"watch since=0 on {base_url}: {r.status_code} {r.text[:300]}")
        parser = SSEParser()
        for line in r.iter_lines():
            if time.monotonic() > deadline:
                break
            dispatched = parser.feed(line)
            if dispatched is None:
                continue
            kind, index, data = parse_event(*dispatched)
            if kind in ("put", "delete"):
                events.append(WatchEvent(index, kind, json.dumps(data, sort_keys=True)))
            elif kind == "progress" and index >= applied:
                return events
            elif kind == "closed":
                raise AssertionError(f"watch since=0 on {base_url} closed: {data}")
    raise AssertionError(
        f"watch since=0 on {base_url} did not reach index {applied} in {timeout:g}s "
        f"(last event {events[-1] if events else None})"
    )


@dataclass(frozen=True)
class KeyState:
    """A key as the history leaves it."""

    value: bytes
    create_index: int
    mod_index: int


def replay(
    history: Iterable[WatchEvent], problems: list[str], *, upto: int | None = None
) -> Iterator[tuple[int, dict[bytes, KeyState]]]:
    """Apply ``history`` to an empty store, checking each event against what came
    before (see the module docstring; findings go to ``problems``). Yields
    ``(index, state)`` after the last event of each index (the state is live:
    copy what must be kept)."""
    state: dict[bytes, KeyState] = {}
    last = 0
    for ev in history:
        if upto is not None and ev.index > upto:
            break
        if ev.index < last:
            problems.append(f"history goes back from index {last} to {ev}")
        elif ev.index > last and last:
            yield last, state
        last = max(last, ev.index)
        f = ev.fields
        key, old = ev.key, state.get(ev.key)
        if f.get("mod_index") != ev.index:
            problems.append(f"event {ev} has mod_index {f.get('mod_index')}, not its id")
        if ev.kind == "put":
            create = old.create_index if old is not None else ev.index
            if f.get("create_index") != create:
                problems.append(f"event {ev}: create_index should be {create}")
            state[key] = KeyState(ev.value, create, ev.index)
        else:
            if old is None:
                problems.append(f"event {ev} deletes a key that does not exist")
            state.pop(key, None)
        _check_prev(ev, f, old, problems)
    if last:
        yield last, state


def _check_prev(
    ev: WatchEvent, f: dict[str, Any], old: KeyState | None, problems: list[str]
) -> None:
    """``prev=true`` fields: the key's previous value and mod_index, if it existed."""
    prev_mod = f.get("prev_mod_index") or 0
    if old is None:
        if prev_mod or "prev_value_b64" in f:
            problems.append(f"event {ev} names a previous value of a key that did not exist")
        return
    if prev_mod != old.mod_index:
        problems.append(f"event {ev}: prev_mod_index should be {old.mod_index}")
    if "prev_value_b64" not in f:
        problems.append(f"event {ev}: no previous value although the history holds it")
    elif base64.b64decode(f["prev_value_b64"]) != old.value:
        problems.append(f"event {ev}: previous value should be {old.value!r}")


def check_streams(
    watchers: Iterable[Watcher], reference: list[WatchEvent]
) -> tuple[Counter[str], list[str]]:
    """Every segment of every watcher against ``reference``; returns counts
    (``events`` checked, ``segments``, ``watchers``) and problems."""
    counts: Counter[str] = Counter()
    problems: list[str] = []
    by_prefix: dict[str, tuple[list[WatchEvent], list[int]]] = {}
    for w in watchers:
        counts["watchers"] += 1
        counts.update({k: v for k, v in w.counts.items() if k in ("reconnects", "too_slow")})
        if w.prefix not in by_prefix:
            wanted = w.prefix.encode()
            events = [e for e in reference if e.key.startswith(wanted)]
            by_prefix[w.prefix] = (events, [e.index for e in events])
        events, indexes = by_prefix[w.prefix]
        for n, seg in enumerate(w.segments):
            counts["segments"] += 1
            lo = bisect.bisect_right(indexes, seg.since)
            hi = bisect.bisect_right(indexes, seg.end)
            expected = events[lo:hi]
            where = f"watcher {w.name} connection {n} (node {seg.node + 1}, after {seg.since})"
            if seg.events != expected:
                problems.append(f"{where}: {_difference(seg.events, expected)}")
            counts["events"] += len(seg.events)
            if seg.partial:
                at = bisect.bisect_right(indexes, seg.end)
                rest = [e for e in events[at:] if e.index == seg.partial[0].index]
                if seg.partial != rest[: len(seg.partial)]:
                    problems.append(
                        f"{where}: cut index {seg.partial[0].index} delivered "
                        f"{[str(e) for e in seg.partial][:3]}, not the start of "
                        f"{[str(e) for e in rest][:3]}"
                    )
                counts["events"] += len(seg.partial)
    return counts, problems


def _difference(got: list[WatchEvent], want: list[WatchEvent]) -> str:
    """The first place two event lists part, named as a gap, a duplicate or a reordering."""
    position = {e: n for n, e in enumerate(want)}
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g == w:
            continue
        if g in got[:i]:
            kind = "duplicate"
        elif g not in position:
            kind = "event not in the history"
        elif position[g] > i and w not in got[i:]:
            kind = "gap"
        else:
            kind = "reordered events"
        return f"{kind} at position {i}: got {g}, the history has {w}"
    if len(got) > len(want):
        return f"{len(got) - len(want)} events beyond the history, first {got[len(want)]}"
    return (
        f"gap: {len(want) - len(got)} events missing at the end, first {want[len(got)]} "
        f"({len(got)} delivered)"
    )
