"""The chaos workload: concurrent clients whose every operation is recorded.

Clients run as asyncio tasks on a thread of their own (:class:`Workload`),
each with its own ``httpx.AsyncClient``, against a node picked at random for
every request. On a small set of keys they do:

======================  =============================  ===============================
operation               request                        model (``linearizability``)
======================  =============================  ===============================
read                    ``GET`` (linearizable)         ``Get``: value or ``None``
write                   ``PUT``                        ``Put``
compare-and-set         ``PUT`` + ``If-Match: "<i>"``  ``CompareAndSet(expected=v)``
create                  ``PUT`` + ``If-None-Match: *`` ``PutIfAbsent``
delete                  ``DELETE``                     ``Delete`` (``X-Raftdb-Existed``)
compare-and-delete      ``DELETE`` + ``If-Match``      ``CompareAndDelete``
======================  =============================  ===============================

Every written value is unique, so a key's ``mod_index`` names exactly one
value: ``If-Match: "<i>"`` with ``i`` the index at which the client saw value
``v`` is exactly "the key still holds ``v``" (the checker compares values).

Outcomes. Each write carries an ``Idempotency-Key`` and is retried with it
(on a random node) after an answer that leaves its outcome open, up to
:data:`ATTEMPTS` times. The operation then enters the history as:

- *completed* with the first definite answer (``204``, or ``412`` for a
  conditional write), even from a retry: the node answers a retry from the
  first attempt's session, so the one application lies within the interval;
- *failed* (left out: it had no effect) if every attempt was definitely not
  applied: ``429``, ``503`` or ``507`` (the contract: nothing was done) or a connection
  that was never made;
- *unknown* otherwise (a ``504``, a timeout, a connection lost mid-request):
  it may take effect at any later time, or never (Jepsen's ``:info``).

A read that does not answer ``200``/``404`` is left out (reads change
nothing). Keys are rotated every :data:`ROTATE_OPS` operations on a slot so
that per-key histories stay short for the checker.

*Ledger* writers write keys ``ledger/<w>/<n>`` once each. At the end, every
acknowledged one must be on every node with its value and every definitely
failed one on none: that checks durability and the meaning of ``503`` directly.

The primitives of issue 12 join the same run when asked for (the runner does;
the disk and crash tests keep the plain workload): *bank* clients
(:mod:`tests.chaos.bank`: transfers and audits in transactions), *lease*
clients (:mod:`tests.chaos.leases`) and *watchers* on every member
(:mod:`tests.chaos.watch`), all tasks of the same thread.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import httpx

from raftdb.testing.linearizability import (
    CompareAndDelete,
    CompareAndSet,
    Delete,
    Get,
    KVInput,
    KVOperation,
    KVOutput,
    Operation,
    Put,
    PutIfAbsent,
)
from tests.chaos.attempts import ATTEMPTS, REFUSED, Attempt, Outcome, UnexpectedAnswer
from tests.chaos.bank import Bank
from tests.chaos.leases import LeaseClients
from tests.chaos.watch import HANG_UP, Watcher

__all__ = [
    "ATTEMPTS",
    "ROTATE_OPS",
    "WATCH_PREFIXES",
    "LedgerEntry",
    "UnexpectedAnswer",
    "Workload",
]

#: Operations on one key before its slot moves to a fresh key.
ROTATE_OPS: Final = 150
#: The prefixes watched: every member's first watcher takes everything (``""``),
#: its others the writers' own prefixes, in turn from member to member.
WATCH_PREFIXES: Final = ("", "bank/", "lease/", "ledger/")


def watch_prefix(node: int, n: int) -> str:
    """The prefix of watcher ``n`` of member ``node`` (both from 0)."""
    if n == 0:
        return WATCH_PREFIXES[0]
    return WATCH_PREFIXES[1 + (node + n - 1) % (len(WATCH_PREFIXES) - 1)]


@dataclass
class LedgerEntry:
    """One ledger write and how it ended."""

    key: str
    value: str
    outcome: Outcome = "unknown"
    index: int = 0


@dataclass
class _Answer:
    """One write attempt's result: how definite it is, and the model output if it is."""

    kind: Attempt
    output: KVOutput = None
    etag: int = 0
    status: int = 0


@dataclass
class _ClientState:
    """What a client last saw of each key: (value, mod_index)."""

    seen: dict[str, tuple[str, int]] = field(default_factory=dict)


class Workload:
    """Concurrent recorded clients on a thread of their own; see the module docstring.

    Args:
        urls: returns the API base URLs to pick from (called per request).
        seed: seeds each client's choices.
        clients: concurrent clients (asyncio tasks).
        ledgers: concurrent ledger writers.
        keys: key slots; each slot moves to a fresh key every ``ROTATE_OPS`` operations.
        timeout: client-side timeout of one request, seconds (above the nodes'
            ``request_timeout_s``, so that a node normally answers 504 first).
        run_id: prefix of the idempotency keys (unique per run).
        banks: bank clients (:mod:`tests.chaos.bank`); 0: no accounts at all.
        lease_clients: lease clients (:mod:`tests.chaos.leases`).
        lease_ttl: the TTL of their leases, seconds.
        watchers: watchers per member (prefixes: :func:`watch_prefix`).
        rate: at most this many operations a second, over the key-value clients,
            the ledger writers and the bank clients together (``None``: as fast
            as they go; the soak, :mod:`tests.soak`, runs for hours at a modest rate).
        stale_reads: the share of the key-value clients' reads sent with
            ``consistency=stale`` (counted as ``stale_reads``, not in the history:
            a stale read may be behind, so it proves nothing about linearizability).
    """

    def __init__(
        self,
        urls: Callable[[], list[str]],
        *,
        seed: int,
        clients: int = 4,
        ledgers: int = 1,
        keys: int = 4,
        timeout: float = 4.0,
        run_id: str = "",
        banks: int = 0,
        lease_clients: int = 0,
        lease_ttl: int = 3,
        watchers: int = 0,
        rate: float | None = None,
        stale_reads: float = 0.0,
    ) -> None:
        self.urls = urls
        self.rate = rate
        self.stale_reads = stale_reads
        self._next_slot = 0.0
        self.seed = seed
        self.n_clients = clients
        self.n_ledgers = ledgers
        self.n_keys = keys
        self.timeout = timeout
        self.run_id = run_id or f"r{seed}-{random.getrandbits(32):08x}"
        self.ops: list[KVOperation] = []
        self.counts: Counter[str] = Counter()
        self.ledger: list[LedgerEntry] = []
        self.errors: list[str] = []
        #: value -> mod_index, from write ETags and from reads (each value is written once).
        self.value_index: dict[str, int] = {}
        self._generation = [0] * keys
        self._slot_ops = [0] * keys
        self._halt = threading.Event()
        self.n_banks = banks
        self.n_lease_clients = lease_clients
        self.bank = Bank(urls, seed, self.run_id, self._halt)
        if rate is not None:
            self.bank.pace = self._pace
        self.leases = LeaseClients(urls, seed, self.run_id, self._halt, lease_ttl)
        self.watchers = [
            Watcher(
                f"{node + 1}:{watch_prefix(node, n) or '*'}",
                watch_prefix(node, n),
                node,
                urls,
                random.Random(seed * 1000 + 900 + node * 10 + n),
                self._halt,
                # The first of each member follows as curl -N does: it never hangs up.
                hang_up=None if n == 0 else HANG_UP,
            )
            for node in range(len(urls()))
            for n in range(watchers)
        ]
        self._thread = threading.Thread(target=self._run, name="chaos-workload", daemon=True)
        self._started = threading.Event()

    # -- life -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the clients (returns at once)."""
        self._thread.start()
        self._started.wait(10.0)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the clients and wait for their last operations to end."""
        self._halt.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("the workload thread did not stop")

    @property
    def keys(self) -> list[str]:
        """Every key the clients used."""
        return sorted({str(op.input.key) for op in self.ops})

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._started.set()
        tasks = [asyncio.create_task(self._client(n)) for n in range(self.n_clients)]
        tasks += [asyncio.create_task(self._ledger(w)) for w in range(self.n_ledgers)]
        tasks.append(asyncio.create_task(self.bank.run(self.n_banks, self._http)))
        tasks += [
            asyncio.create_task(self._with_http(self.leases.client, n))
            for n in range(self.n_lease_clients)
        ]
        tasks += [asyncio.create_task(w.run()) for w in self.watchers]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.errors.append(f"{type(result).__name__}: {result}")
        self.errors += self.bank.errors + self.leases.errors
        for w in self.watchers:
            self.errors += w.errors

    async def _with_http(
        self, client: Callable[[int, httpx.AsyncClient], Awaitable[None]], n: int
    ) -> None:
        """Run ``client(n, http)`` with an HTTP client of its own."""
        async with self._http() as http:
            await client(n, http)

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=1.0),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )

    # -- choices --------------------------------------------------------------------

    def _key(self, rng: random.Random) -> str:
        slot = rng.randrange(self.n_keys)
        self._slot_ops[slot] += 1
        if self._slot_ops[slot] > ROTATE_OPS:
            self._slot_ops[slot] = 1
            self._generation[slot] += 1
        return f"k{slot}.{self._generation[slot]}"

    def _url(self, rng: random.Random) -> str:
        return rng.choice(self.urls())

    async def _pace(self) -> None:
        """Wait for this operation's slot under ``rate`` (one shared schedule: every
        task runs on the workload's loop)."""
        if self.rate is None:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)

    # -- recording ------------------------------------------------------------------

    def _record(self, client: int, op: KVInput, call: float, output: KVOutput, ret: float) -> None:
        self.ops.append(Operation(client, op, output, call, ret))
        self.counts["ok"] += 1

    def _record_unknown(self, client: int, op: KVInput, call: float) -> None:
        self.ops.append(Operation.unknown(client, op, call))
        self.counts["unknown"] += 1

    def _note_index(self, value: str, index: int, what: str) -> None:
        known = self.value_index.setdefault(value, index)
        if known != index:
            self.errors.append(f"value {value!r} seen at index {known} and at {index} ({what})")

    # -- clients --------------------------------------------------------------------

    async def _client(self, client: int) -> None:
        rng = random.Random(self.seed * 1000 + client)
        state = _ClientState()
        n = 0
        async with self._http() as http:
            while not self._halt.is_set():
                await self._pace()
                n += 1
                key = self._key(rng)
                roll = rng.random()
                value = f"c{client}-{n}"
                seen = state.seen.get(key)
                if roll < 0.40:
                    if self.stale_reads and rng.random() < self.stale_reads:
                        await self._stale_get(http, rng, key)
                    else:
                        await self._get(http, rng, client, key, state)
                    continue
                op: KVInput
                headers: dict[str, str] = {}
                if roll < 0.62:
                    op = Put(key, value)
                elif roll < 0.77 and seen is not None:
                    op = CompareAndSet(key, seen[0], value)
                    headers["if-match"] = f'"{seen[1]}"'
                elif roll < 0.82:
                    op = PutIfAbsent(key, value)
                    headers["if-none-match"] = "*"
                elif roll < 0.92:
                    op = Delete(key)
                elif seen is not None:
                    op = CompareAndDelete(key, seen[0])
                    headers["if-match"] = f'"{seen[1]}"'
                else:
                    op = Delete(key)
                await self._write(http, rng, client, op, headers, f"{self.run_id}-{client}-{n}")
                if isinstance(op, Put | CompareAndSet | PutIfAbsent):
                    # What the client last saw is refreshed by its reads and writes.
                    state.seen.pop(key, None)

    async def _get(
        self,
        http: httpx.AsyncClient,
        rng: random.Random,
        client: int,
        key: str,
        state: _ClientState,
    ) -> None:
        call = time.monotonic()
        try:
            r = await http.get(f"{self._url(rng)}/v1/kv/{key}")
        except httpx.HTTPError:
            self.counts["read_failed"] += 1
            return
        ret = time.monotonic()
        if r.status_code == 200:
            value = r.content.decode()
            etag = int(r.headers["etag"].strip('"'))
            self._note_index(value, etag, f"read of {key}")
            state.seen[key] = (value, etag)
            self._record(client, Get(key), call, value, ret)
        elif r.status_code == 404:
            state.seen.pop(key, None)
            self._record(client, Get(key), call, None, ret)
        elif r.status_code in (429, 503, 504, 507):
            self.counts["read_failed"] += 1
        else:
            self.errors.append(f"GET {key}: unexpected {r.status_code} {r.text[:200]}")

    async def _stale_get(self, http: httpx.AsyncClient, rng: random.Random, key: str) -> None:
        """A ``consistency=stale`` read: any node's own answer, so only its shape is checked."""
        try:
            r = await http.get(f"{self._url(rng)}/v1/kv/{key}", params={"consistency": "stale"})
        except httpx.HTTPError:
            self.counts["read_failed"] += 1
            return
        if r.status_code in (200, 404):
            self.counts["stale_reads"] += 1
        elif r.status_code in (429, 503, 504, 507):
            self.counts["read_failed"] += 1
        else:
            self.errors.append(f"stale GET {key}: unexpected {r.status_code} {r.text[:200]}")

    async def _write(
        self,
        http: httpx.AsyncClient,
        rng: random.Random,
        client: int,
        op: KVInput,
        headers: dict[str, str],
        idempotency_key: str,
    ) -> None:
        headers = {**headers, "idempotency-key": idempotency_key}
        call = time.monotonic()
        kinds: list[Attempt] = []
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(rng.uniform(0.05, 0.3))
            answer = await self._attempt(http, self._url(rng), op, headers)
            kinds.append(answer.kind)
            if answer.kind == "definite":
                self._record(client, op, call, answer.output, time.monotonic())
                if answer.etag and answer.status == 204 and not isinstance(op, Delete):
                    value = getattr(op, "value", None) or getattr(op, "new", None)
                    if isinstance(value, str):
                        self._note_index(value, answer.etag, f"write of {op.key!r}")
                return
            if self._halt.is_set():
                break
        if "unknown" in kinds:
            self._record_unknown(client, op, call)
        else:
            self.counts["failed"] += 1

    async def _attempt(
        self, http: httpx.AsyncClient, base: str, op: KVInput, headers: dict[str, str]
    ) -> _Answer:
        key = op.key.decode() if isinstance(op.key, bytes) else op.key
        url = f"{base}/v1/kv/{key}"
        try:
            if isinstance(op, Delete | CompareAndDelete):
                r = await http.delete(url, headers=headers)
            else:
                value = op.new if isinstance(op, CompareAndSet) else op.value  # type: ignore[union-attr]
                r = await http.put(url, content=str(value).encode(), headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            return _Answer("refused")  # the request never reached a node
        except httpx.HTTPError:
            return _Answer("unknown")
        status = r.status_code
        etag = r.headers.get("etag", '"0"').strip('"')
        index = int(etag) if etag.isdigit() else 0
        conditional = isinstance(op, CompareAndSet | CompareAndDelete | PutIfAbsent)
        if status == 204:
            output: KVOutput = None
            if conditional:
                output = True
            elif isinstance(op, Delete):
                existed = r.headers.get("x-raftdb-existed")
                output = None if existed is None else existed == "true"
            return _Answer("definite", output, index, status)
        if status == 412 and conditional:
            return _Answer("definite", False, 0, status)
        if status in REFUSED:  # 429, 503, 507: refused before anything was proposed
            return _Answer("refused")
        if status == 504:
            return _Answer("unknown")
        raise UnexpectedAnswer(f"{op}: unexpected answer {status} {r.text[:200]}")

    # -- the ledger -----------------------------------------------------------------

    async def _ledger(self, writer: int) -> None:
        rng = random.Random(self.seed * 1000 + 500 + writer)
        n = 0
        async with self._http() as http:
            while not self._halt.is_set():
                await self._pace()
                n += 1
                entry = LedgerEntry(f"ledger/{writer}/{n:06d}", f"{self.run_id}-L{writer}-{n}")
                self.ledger.append(entry)
                kinds: list[Attempt] = []
                for attempt in range(ATTEMPTS):
                    if attempt:
                        await asyncio.sleep(rng.uniform(0.05, 0.3))
                    answer = await self._attempt(
                        http,
                        self._url(rng),
                        Put(entry.key, entry.value),
                        {"idempotency-key": entry.value},
                    )
                    kinds.append(answer.kind)
                    if answer.kind == "definite":
                        entry.outcome, entry.index = "ok", answer.etag
                        break
                    if self._halt.is_set():
                        break
                if entry.outcome != "ok":
                    entry.outcome = "unknown" if "unknown" in kinds else "failed"
                    await asyncio.sleep(0.05)  # nobody serves now: do not spin

    def ledger_counts(self) -> Counter[str]:
        """Ledger writes by outcome."""
        return Counter(e.outcome for e in self.ledger)


def unknown_fraction(ops: list[KVOperation]) -> float:
    """The share of recorded operations whose outcome is unknown."""
    if not ops:
        return 0.0
    return sum(1 for op in ops if op.return_time == math.inf) / len(ops)
