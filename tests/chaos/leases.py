"""Leases under faults: keys that must live exactly as long as their lease.

Each lease client grants a lease (``POST /v1/leases``, with an
``Idempotency-Key``) every second or so, and gives it a life of its own (an
asyncio task): attach one or two keys ``lease/<client>/<n>/<j>`` with
``PUT ?lease=ID`` (unique values, ``Idempotency-Key``), then keep it alive
for 0 to 8 periods of TTL/3 (0: abandoned at once), then revoke it or
abandon it (half each). When the workload halts, every lease still being kept
is read (its keys must be there) and revoked. Each acknowledged grant or
keep-alive is a *renewal*, recorded with the monotonic times its attempt was
sent and answered.

The contract (docs/api.md, leases; the lease keeper in ``raftdb/node``) is
that only the leader expires a lease, using its monotonic clock: a renewal
applied at ``a`` puts the lease's deadline at ``a + ttl``, and a new leader
gives every lease a fresh full TTL. Two bounds follow, checked here:

- **never early** (:func:`check_leases`): a renewal is applied after its
  request was sent, so a lease whose last acknowledged renewal was sent at
  ``c`` cannot end before ``c + ttl`` (unless revoked, after the revoke was
  sent). The nodes run on this machine and read the same ``CLOCK_MONOTONIC``
  as the test, so any *evidence* that a key of the lease was gone earlier is a
  violation: a watcher (any member, any connection) receiving its ``delete``
  event, or an answer saying the lease or key was gone (``404`` to a
  keep-alive, attach or revoke — unless an earlier attempt of that revoke may
  have been applied —, a read not finding a key whose attach was
  acknowledged), each time-stamped when it *arrived*, which is after the
  deletion. Comparing an upper bound of the deletion with a lower bound of
  the deadline needs only the clocks' resolution as a margin
  (:data:`EARLY_SLACK`): the node's ``loop.time()`` under uvloop is libuv's
  loop time in whole milliseconds, read from ``CLOCK_MONOTONIC`` or its
  coarse variant (one jiffy, at most 4 ms), so it may be a few ms behind the
  test's ``time.monotonic()``;
- **never late** (:func:`settle_leases`): once the cluster is healthy (the
  runner has healed every fault and the members agree on an index: time
  ``H``), no key may outlive its lease by more than TTL + election timeout: a
  linearizable read (a transaction listing ``lease/``) *sent* after
  ``H + ttl + election timeout + MARGIN`` that still finds a key, or a lease
  listing that still shows a lease, is a violation. Every renewal was
  answered before ``H`` (the workload stops first), and the leader at ``H``
  gave the lease a fresh TTL no later than ``H``, so the lease ends by
  ``H + ttl`` by contract; the election timeout covers one more election,
  and :data:`MARGIN` the keeper's 100 ms tick plus the expiry entry's trip
  through the write path. Sending time against a bound again needs no margin
  for the harness's clock (``time.monotonic``, nanoseconds); the 0.1 s
  between polls only makes the check later, never stricter.

The history (:mod:`tests.chaos.watch`) adds one more: the keys of a lease are
deleted together, in one log entry (a revoke or an expiry).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from tests.chaos.attempts import Outcome, Sent, UnexpectedAnswer, attempt, retried
from tests.chaos.cluster import ChaosCluster
from tests.chaos.watch import Watcher, WatchEvent

__all__ = ["EARLY_SLACK", "MARGIN", "LeaseClients", "LeaseRecord", "check_leases", "settle_leases"]

PREFIX: Final = "lease/"
#: Added to TTL + election timeout for the server's own steps: the lease keeper
#: looks every 100 ms, then proposes the expiry through the normal write path.
MARGIN: Final = 0.5
#: How far the node's lease clock may lag the test's (see the module docstring).
EARLY_SLACK: Final = 0.01
#: Most keep-alive periods a lease is kept for.
MAX_KEEPS: Final = 8


@dataclass
class LeaseRecord:
    """One lease of a lease client and everything that happened to it."""

    name: str
    grant: Sent
    id: int = 0
    #: key -> (value, outcome of its attach)
    keys: dict[str, tuple[str, Outcome]] = field(default_factory=dict)
    #: (sent, answered) of every acknowledged renewal, the grant first.
    renewals: list[tuple[float, float]] = field(default_factory=list)
    keepalives: int = 0
    #: "revoked", "abandoned", "lapsed" (gone while kept), "revoke_unknown"
    end: str = ""
    revoke_sent: float | None = None
    revoke_acked: float | None = None
    #: How each attempt of the revoke ended (see ``tests.chaos.attempts``).
    revoke_attempts: list[str] = field(default_factory=list)
    #: (arrival time, what): proof that the lease or one of its keys was gone by then.
    gone: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class LeaseClients:
    """The lease clients of one workload; see the module docstring."""

    urls: Callable[[], list[str]]
    seed: int
    run_id: str
    halt: threading.Event
    ttl: int
    records: list[LeaseRecord] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def _url(self, rng: random.Random, path: str) -> str:
        return f"{rng.choice(self.urls())}{path}"

    async def client(self, n: int, http: httpx.AsyncClient) -> None:
        """Grant leases until the workload halts; wait for their lives to end."""
        rng = random.Random(self.seed * 1000 + 800 + n)
        lives: list[asyncio.Task[None]] = []
        seq = 0
        while not self.halt.is_set():
            seq += 1
            record = await self._grant(http, rng, f"{n}/{seq}")
            if record is not None:
                life_rng = random.Random(rng.getrandbits(64))
                lives.append(asyncio.create_task(self._life(http, life_rng, record)))
            await asyncio.sleep(rng.uniform(0.5, 1.5))  # the rate of new leases
        for result in await asyncio.gather(*lives, return_exceptions=True):
            if isinstance(result, BaseException):
                self.errors.append(f"lease life: {type(result).__name__}: {result}")

    async def _grant(
        self, http: httpx.AsyncClient, rng: random.Random, name: str
    ) -> LeaseRecord | None:
        key = f"{self.run_id}-lease-{name}"
        sent = await retried(
            lambda: attempt(
                http,
                "POST",
                self._url(rng, "/v1/leases"),
                definite={201},
                json={"ttl": self.ttl},
                headers={"idempotency-key": key},
            ),
            rng,
            self.halt.is_set,
        )
        self.counts[f"grant_{sent.outcome}"] += 1
        if sent.outcome != "ok":
            return None  # an unknown grant may have made a lease: it has no keys, and expires
        body = sent.json()
        if body.get("ttl") != self.ttl or not str(body.get("id", "")).isdigit():
            self.errors.append(f"lease grant answered {body}")
            return None
        record = LeaseRecord(name, sent, int(body["id"]))
        # The grant was applied after its first attempt was sent: that is its renewal time.
        record.renewals.append((sent.call, sent.ret))
        self.records.append(record)
        return record

    async def _life(self, http: httpx.AsyncClient, rng: random.Random, rec: LeaseRecord) -> None:
        for j in range(rng.choice([1, 2])):
            if not await self._attach(http, rng, rec, f"{PREFIX}{rec.name}/{j}"):
                return
        keeps = rng.choice([0, 0, 2, 4, MAX_KEEPS])
        for _ in range(keeps):
            if not await self._pause(rng, self.ttl / 3):
                break
            if not await self._keepalive(http, rng, rec):
                return
        if keeps and not await self._read_keys(http, rng, rec):
            return
        if keeps and (self.halt.is_set() or rng.random() < 0.5):
            await self._revoke(http, rng, rec)
        else:
            rec.end = "abandoned"

    async def _pause(self, rng: random.Random, seconds: float) -> bool:
        """Wait about ``seconds`` (the keep-alive rate); False once the workload halts."""
        end = time.monotonic() + rng.uniform(0.8, 1.0) * seconds
        while time.monotonic() < end:
            if self.halt.is_set():
                return False
            await asyncio.sleep(min(0.1, max(0.0, end - time.monotonic())))
        return not self.halt.is_set()

    def _lapsed(self, rec: LeaseRecord, when: float, what: str) -> None:
        rec.end = "lapsed"
        rec.gone.append((when, what))
        self.counts["lapsed"] += 1

    async def _attach(
        self, http: httpx.AsyncClient, rng: random.Random, rec: LeaseRecord, key: str
    ) -> bool:
        value = f"{self.run_id}-E{rec.name}-{key.rsplit('/', 1)[1]}"
        sent = await retried(
            lambda: attempt(
                http,
                "PUT",
                self._url(rng, f"/v1/kv/{key}"),
                definite={204, 404},
                params={"lease": str(rec.id)},
                headers={"idempotency-key": value},
                content=value.encode(),
            ),
            rng,
            self.halt.is_set,
        )
        self.counts[f"attach_{sent.outcome}"] += 1
        if sent.outcome == "ok" and sent.status == 404:
            self._not_found(sent, f"attach of {key}")
            self._lapsed(rec, sent.ret, f"attach of {key} answered 404")
            return False
        rec.keys[key] = (value, sent.outcome)
        return True

    def _not_found(self, sent: Sent, what: str) -> None:
        """A 404 must be the lease's: ``lease_not_found``."""
        error = sent.json().get("error") if sent.response is not None else None
        if error != "lease_not_found":
            raise UnexpectedAnswer(
                f"{what}: 404 {sent.response.text[:200] if sent.response else ''}"
            )

    async def _keepalive(
        self, http: httpx.AsyncClient, rng: random.Random, rec: LeaseRecord
    ) -> bool:
        """Renew until acknowledged, or until TTL has passed since the last renewal was
        sent (renewing later cannot keep the lease anyway). False once the lease is gone."""
        url = self._url(rng, f"/v1/leases/{rec.id}/keepalive")
        while True:
            call = time.monotonic()
            kind, r = await attempt(http, "POST", url, definite={200, 404})
            ret = time.monotonic()
            if kind == "definite" and r is not None and r.status_code == 200:
                body = r.json()
                if str(body.get("id")) != str(rec.id) or body.get("ttl") != self.ttl:
                    self.errors.append(f"keep-alive of lease {rec.id} answered {body}")
                rec.renewals.append((call, ret))
                rec.keepalives += 1
                self.counts["keepalives"] += 1
                return True
            if kind == "definite" and r is not None:
                if r.json().get("error") != "lease_not_found":
                    raise UnexpectedAnswer(f"keep-alive of {rec.id}: 404 {r.text[:200]}")
                self._lapsed(rec, ret, "keep-alive answered 404")
                return False
            self.counts["keepalive_retries"] += 1
            if self.halt.is_set() or ret - rec.renewals[-1][0] > self.ttl:
                return True  # go on (or to the end): the next answer tells what became of it
            await asyncio.sleep(rng.uniform(0.05, 0.2))
            url = self._url(rng, f"/v1/leases/{rec.id}/keepalive")

    async def _read_keys(
        self, http: httpx.AsyncClient, rng: random.Random, rec: LeaseRecord
    ) -> bool:
        """A linearizable read of the lease's keys (one transaction); a key whose attach
        was acknowledged and is gone is evidence the lease ended. False if it did."""
        keys = sorted(rec.keys)
        body = {"success": [{"op": "get", "key": k} for k in keys]}
        sent = await retried(
            lambda: attempt(http, "POST", self._url(rng, "/v1/txn"), definite={200}, json=body),
            rng,
            self.halt.is_set,
        )
        if sent.outcome != "ok":
            return True
        results = sent.json().get("results") or []
        for key, result in zip(keys, results, strict=False):
            value, outcome = rec.keys[key]
            if not result.get("found") and outcome == "ok":
                self._lapsed(rec, sent.ret, f"read found {key} gone")
                return False
            if result.get("found") and result.get("value") != value:
                self.errors.append(f"lease key {key} holds {result}, not {value!r}")
        return True

    async def _revoke(self, http: httpx.AsyncClient, rng: random.Random, rec: LeaseRecord) -> None:
        sent = await retried(
            lambda: attempt(
                http, "DELETE", self._url(rng, f"/v1/leases/{rec.id}"), definite={204, 404}
            ),
            rng,
            lambda: False,  # the revoke at the end is retried too
        )
        self.revoked(rec, sent)

    def revoked(self, rec: LeaseRecord, sent: Sent) -> None:
        """Record what the revoke ``sent`` (all its attempts) proves.

        A ``404`` proves the lease was gone before the attempt that got it, but
        not before the revoke: an earlier attempt whose fate is open (a timeout,
        a lost connection) may be the one that revoked it, and its answer never
        arrived. Only a ``404`` to a revoke none of whose attempts may have been
        applied is evidence that the lease ended without it.
        """
        rec.revoke_attempts = list(sent.kinds)
        if sent.outcome == "ok" and sent.status == 204:
            rec.end, rec.revoke_sent, rec.revoke_acked = "revoked", sent.call, sent.ret
            self.counts["revoked"] += 1
        elif sent.outcome == "ok":
            self._not_found(sent, f"revoke of {rec.id}")
            if "unknown" in sent.kinds:  # an earlier attempt may have revoked it
                rec.end, rec.revoke_sent = "revoke_unknown", sent.call
            else:  # the lease was gone before the revoke: it deleted nothing
                self._lapsed(rec, sent.ret, "revoke answered 404")
        elif sent.outcome == "unknown":  # it may have deleted the keys, from when it was sent
            rec.end, rec.revoke_sent = "revoke_unknown", sent.call
        else:
            rec.end = "abandoned"

    def figures(self) -> Counter[str]:
        """granted / kept / keepalives / revoked / expired / lapsed, for the summary."""
        out: Counter[str] = Counter()
        out["granted"] = len(self.records)
        out["grant_unknown"] = self.counts["grant_unknown"]
        out["kept"] = sum(1 for r in self.records if r.keepalives)
        out["keepalives"] = self.counts["keepalives"]
        out["revoked"] = self.counts["revoked"]
        out["expired"] = sum(1 for r in self.records if r.end not in ("revoked", ""))
        out["lapsed"] = self.counts["lapsed"]
        return out


def _deleted_seen(watchers: Iterable[Watcher]) -> dict[str, tuple[float, int]]:
    """key -> (earliest arrival of its delete event at any watcher, the event's index)."""
    seen: dict[str, tuple[float, int]] = {}
    wanted = PREFIX.encode()
    for w in watchers:
        for seg in w.segments:
            for ev, when in zip(seg.events + seg.partial, seg.received, strict=False):
                if ev.kind == "delete" and ev.key.startswith(wanted):
                    key = ev.key.decode()
                    if key not in seen or when < seen[key][0]:
                        seen[key] = (when, ev.index)
    return seen


def check_leases(
    clients: LeaseClients, watchers: Iterable[Watcher], history: list[WatchEvent]
) -> list[str]:
    """Never early (see the module docstring), and a lease's keys go in one entry.

    A revoke counts as the deleter only if it answered 204 or its outcome is
    unknown, and then from when it was sent."""
    problems: list[str] = []
    deleted = _deleted_seen(watchers)
    for rec in clients.records:
        sent, _ = rec.renewals[-1]
        earliest = sent + clients.ttl
        if rec.revoke_sent is not None:
            earliest = min(earliest, rec.revoke_sent)
        evidence = list(rec.gone)
        for key in rec.keys:
            if key in deleted:
                when, index = deleted[key]
                evidence.append((when, f"a watcher got the delete of {key} (index {index})"))
        for when, what in evidence:
            if when < earliest - EARLY_SLACK:
                problems.append(
                    f"lease {rec.id} ({rec.name}) ended early: {what} {earliest - when:.3f}s "
                    f"before it could (last renewal sent {sent:.3f}, ttl {clients.ttl}s, "
                    f"{rec.keepalives} keep-alives, revoke sent {rec.revoke_sent}, "
                    f"its attempts {rec.revoke_attempts})"
                )
    # One entry deletes all the keys of a lease (revoke or expiry).
    by_lease: dict[str, set[int]] = {}
    for ev in history:
        key = ev.key.decode(errors="replace")
        if key.startswith(PREFIX) and ev.kind == "delete":
            by_lease.setdefault(key.rsplit("/", 1)[0], set()).add(ev.index)
    for lease, indexes in sorted(by_lease.items()):
        if len(indexes) > 1:
            problems.append(f"the keys of lease {lease} were deleted at {sorted(indexes)}")
    return problems


def _present(answer: dict[str, Any]) -> list[str]:
    """The keys of a transaction's one ``list`` result (names or entries)."""
    (result,) = answer["results"]
    if result.get("more"):
        raise AssertionError(f"more than a listing's worth of lease keys: {result}")
    keys = result.get("keys", [])
    return sorted(k if isinstance(k, str) else str(k["key"]) for k in keys)


def settle_leases(
    c: ChaosCluster,
    clients: LeaseClients,
    healthy: float,
    election_timeout: float,
    rng: random.Random,
) -> tuple[Counter[str], list[str]]:
    """Never late (see the module docstring): poll until no lease key and no lease is
    left, failing past ``healthy + ttl + election_timeout + MARGIN``."""
    problems: list[str] = []
    figures: Counter[str] = Counter()
    bound = clients.ttl + election_timeout + MARGIN
    deadline = healthy + bound
    revoked = {k for r in clients.records if r.end == "revoked" for k in r.keys}
    owner = {k: r for r in clients.records for k in r.keys}
    term = _term(c)
    listing = {"success": [{"op": "list", "prefix": PREFIX, "limit": 1000}]}
    for what in ("keys", "leases"):
        while True:
            node = rng.choice(sorted(i for i in c.membership if c.nodes[i].live))
            call = time.monotonic()
            try:
                if what == "keys":
                    r = c.client.post(c.url(node, "/v1/txn"), json=listing, timeout=5.0)
                    left = _present(r.json()) if r.status_code == 200 else None
                else:
                    r = c.client.get(c.url(node, "/v1/leases"), timeout=5.0)
                    left = (
                        [str(x["id"]) for x in r.json()["leases"]] if r.status_code == 200 else None
                    )
            except httpx.HTTPError:
                left = None
            if left is not None:
                stale = sorted(set(left) & revoked)
                if stale:
                    problems.append(f"keys of revoked leases are still there: {stale[:5]}")
                    break
                if not left:
                    figures[f"{what}_settled_ms"] = round(max(0.0, call - healthy) * 1000)
                    break
                if call > deadline:
                    who = [f"{k} (lease {owner[k].id}, {owner[k].end})" for k in left if k in owner]
                    problems.append(
                        f"{len(left)} {what} outlived their lease by more than ttl + election "
                        f"timeout ({bound:.1f}s after the cluster was healthy): "
                        f"{(who or left)[:5]}"
                    )
                    break
            elif call > deadline + 30.0:
                problems.append(f"no answer listing the lease {what} for 30s")
                break
            now_term = _term(c)
            if now_term is not None and term is not None and now_term != term:
                # A new leader gives every lease a fresh TTL: the bound starts again.
                figures["elections_while_settling"] += 1
                term, deadline = now_term, time.monotonic() + bound
            time.sleep(0.1)  # the poll's rate
    return figures, problems


def _term(c: ChaosCluster) -> int | None:
    statuses = c.statuses(c.membership)
    terms = {s["term"] for s in statuses.values() if s.get("role") == "leader"}
    return max(terms) if terms else None
