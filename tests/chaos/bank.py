"""Bank transfers in transactions: the chaos check of ``POST /v1/txn``.

:data:`ACCOUNTS` accounts ``bank/<i>`` are created once, in one transaction
(create-only: every account's ``exists == false``), with :data:`BALANCE` each.
Then each bank client loops over:

- a *transfer*: read two accounts in one transaction (``get``, ``get``), then a
  transaction that compares both accounts' ``mod_index`` with what it read and
  puts both new balances (``failure`` branch: ``get`` both, which the next
  transfer starts from). It carries an ``Idempotency-Key`` and is retried
  with it as the workload's writes are (:mod:`tests.chaos.attempts`);
- an *audit* (a quarter of the time): one transaction that gets every
  account. A transaction is one log entry, so an audit is linearizable by
  construction: every audit must sum to the initial total.

Checks, from the clients' answers alone: every audit sums to the total
(while the run goes). With the committed history (:mod:`tests.chaos.watch`,
the reference read at the end), :func:`check_bank`:

- replays the history of ``bank/``: after every index, the accounts sum to the
  total (so no transaction, acknowledged or not, ever broke the invariant);
- every acknowledged transaction agrees with the history at its index: a
  succeeded transfer's index holds exactly its two puts (and its compares held
  on the state before), a failed one's compares did not hold and its ``get``
  results are the state there, a read's and an audit's results are the state
  at their index;
- the final state of every member has the accounts and the total.

Unknown outcomes need no special case: any transfer preserves the total.
"""

from __future__ import annotations

import asyncio
import base64
import random
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx

from tests.chaos.attempts import Sent, attempt, retried
from tests.chaos.watch import KeyState, WatchEvent, replay

__all__ = ["ACCOUNTS", "BALANCE", "Bank", "TxnRecord", "account", "check_bank"]

ACCOUNTS: Final = 5
BALANCE: Final = 100
PREFIX: Final = "bank/"

TxnKind = Literal["init", "read", "transfer", "audit"]


def account(i: int) -> str:
    return f"{PREFIX}{i}"


@dataclass
class TxnRecord:
    """One transaction a bank client sent, and its definite answer if it got one."""

    kind: TxnKind
    body: dict[str, Any]
    sent: Sent
    #: For a transfer: (from, to, amount, new balances) it would write.
    writes: dict[str, int] = field(default_factory=dict)


def _get(key: str) -> dict[str, Any]:
    return {"op": "get", "key": key}


def _balance(result: dict[str, Any]) -> tuple[int, int] | None:
    """(balance, mod_index) of a get result, None if the key is absent."""
    if not result.get("found"):
        return None
    raw = result.get("value")
    if raw is None:
        raw = base64.b64decode(result["value_b64"]).decode()
    return int(raw), int(result["mod_index"])


@dataclass
class Bank:
    """The bank clients of one workload; see the module docstring."""

    urls: Callable[[], list[str]]
    seed: int
    run_id: str
    halt: threading.Event
    records: list[TxnRecord] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    #: Awaited before each transfer or audit (the workload's rate limit; none by default).
    pace: Callable[[], Awaitable[None]] | None = None

    @property
    def total(self) -> int:
        return ACCOUNTS * BALANCE

    async def run(self, clients: int, http: Callable[[], httpx.AsyncClient]) -> None:
        """Create the accounts, then run ``clients`` bank clients until the halt."""
        if not clients:
            return
        async with http() as h:
            rng = random.Random(self.seed * 1000 + 700)
            if not await self._init(h, rng):
                return
        await asyncio.gather(*(self._client_with(n, http) for n in range(clients)))

    async def _client_with(self, n: int, http: Callable[[], httpx.AsyncClient]) -> None:
        async with http() as h:
            await self.client(n, h)

    async def client(self, n: int, http: httpx.AsyncClient) -> None:
        """Client ``n``: transfers and audits (the accounts exist)."""
        rng = random.Random(self.seed * 1000 + 701 + n)
        known: dict[str, tuple[int, int]] = {}
        seq = 0
        while not self.halt.is_set():
            seq += 1
            if self.pace is not None:
                await self.pace()
            if rng.random() < 0.25:
                await self._audit(http, rng)
                continue
            a, b = rng.sample(range(ACCOUNTS), 2)
            ka, kb = account(a), account(b)
            if ka not in known or kb not in known:
                seen = await self._read(http, rng, [ka, kb])
                if seen is None:
                    continue
                known.update(seen)
            known = await self._transfer(http, rng, ka, kb, known, f"{self.run_id}-B{n}-{seq}")

    async def _txn(
        self, http: httpx.AsyncClient, rng: random.Random, body: dict[str, Any], key: str | None
    ) -> Sent:
        headers = {"idempotency-key": key} if key else {}
        return await retried(
            lambda: attempt(
                http,
                "POST",
                f"{rng.choice(self.urls())}/v1/txn",
                definite={200},
                json=body,
                headers=headers,
            ),
            rng,
            self.halt.is_set,
        )

    def _record(self, record: TxnRecord) -> None:
        self.records.append(record)
        self.counts[record.sent.outcome] += 1
        if record.sent.outcome == "ok" and record.sent.json().get("duplicate"):
            self.counts["duplicate"] += 1

    async def _init(self, http: httpx.AsyncClient, rng: random.Random) -> bool:
        """Create the accounts (retried until definite); False if the run halted first."""
        keys = [account(i) for i in range(ACCOUNTS)]
        body = {
            "compare": [{"key": k, "target": "exists", "op": "==", "value": False} for k in keys],
            "success": [{"op": "put", "key": k, "value": str(BALANCE)} for k in keys],
            "failure": [_get(k) for k in keys],
        }
        while not self.halt.is_set():
            # One Idempotency-Key for the whole creation: it is applied at most once.
            sent = await self._txn(http, rng, body, f"{self.run_id}-bank-init")
            record = TxnRecord("init", body, sent)
            self._record(record)
            if sent.outcome == "ok":
                answer = sent.json()
                if not answer["succeeded"]:
                    self.errors.append(
                        f"bank: the accounts existed before they were made: {answer}"
                    )
                return True
            await asyncio.sleep(0.1)  # nobody serves now: do not spin
        return False

    async def _read(
        self, http: httpx.AsyncClient, rng: random.Random, keys: list[str]
    ) -> dict[str, tuple[int, int]] | None:
        body = {"success": [_get(k) for k in keys]}
        sent = await self._txn(http, rng, body, None)
        record = TxnRecord("read", body, sent)
        self._record(record)
        if sent.outcome != "ok":
            return None
        return self._balances(record, keys)

    def _balances(self, record: TxnRecord, keys: list[str]) -> dict[str, tuple[int, int]] | None:
        """The accounts a definite answer's ``get`` results give (all must be found)."""
        answer = record.sent.json()
        results = answer.get("results") or []
        out: dict[str, tuple[int, int]] = {}
        for key, result in zip(keys, results, strict=False):
            found = _balance(result)
            if found is None:
                self.errors.append(f"bank {record.kind} at {answer.get('index')}: {key} missing")
                return None
            out[key] = found
        return out if len(out) == len(keys) else None

    async def _transfer(
        self,
        http: httpx.AsyncClient,
        rng: random.Random,
        ka: str,
        kb: str,
        known: dict[str, tuple[int, int]],
        idempotency_key: str,
    ) -> dict[str, tuple[int, int]]:
        (va, ma), (vb, mb) = known[ka], known[kb]
        if va == 0:
            (ka, va, ma), (kb, vb, mb) = (kb, vb, mb), (ka, va, ma)
        amount = rng.randint(1, va) if va else 0
        writes = {ka: va - amount, kb: vb + amount}
        body = {
            "compare": [
                {"key": ka, "target": "mod_index", "op": "==", "value": ma},
                {"key": kb, "target": "mod_index", "op": "==", "value": mb},
            ],
            "success": [{"op": "put", "key": k, "value": str(v)} for k, v in writes.items()],
            "failure": [_get(ka), _get(kb)],
        }
        sent = await self._txn(http, rng, body, idempotency_key)
        record = TxnRecord("transfer", body, sent, writes)
        self._record(record)
        known = dict(known)
        if sent.outcome != "ok":  # unknown or refused: read them again
            known.pop(ka, None)
            known.pop(kb, None)
            return known
        answer = sent.json()
        self.counts["transfer_ok" if answer["succeeded"] else "transfer_conflict"] += 1
        if answer["succeeded"]:
            known[ka], known[kb] = (writes[ka], answer["index"]), (writes[kb], answer["index"])
        elif answer.get("results") is not None:
            fresh = self._balances(record, [ka, kb])
            known.update(fresh or {})
        else:  # a duplicate answer has no results
            known.pop(ka, None)
            known.pop(kb, None)
        return known

    async def _audit(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        keys = [account(i) for i in range(ACCOUNTS)]
        body = {"success": [_get(k) for k in keys]}
        sent = await self._txn(http, rng, body, None)
        record = TxnRecord("audit", body, sent)
        self._record(record)
        if sent.outcome != "ok":
            return
        self.counts["audits"] += 1
        balances = self._balances(record, keys)
        total = sum(v for v, _ in balances.values()) if balances else None
        if total != self.total:
            self.errors.append(
                f"audit at index {sent.json().get('index')} sums to {total}, not {self.total}: "
                f"{sent.json().get('results')}"
            )


def check_bank(
    bank: Bank, history: list[WatchEvent], listings: dict[int, list[dict[str, Any]]]
) -> tuple[Counter[str], list[str]]:
    """The checks of the module docstring against the committed ``history`` and the
    final listings of every member; returns counts and problems."""
    problems: list[str] = []
    counts: Counter[str] = Counter()
    ours = [e for e in history if e.key.startswith(PREFIX.encode())]
    by_index: dict[int, list[WatchEvent]] = {}
    for ev in ours:
        by_index.setdefault(ev.index, []).append(ev)
    answered = sorted(
        (r for r in bank.records if r.sent.outcome == "ok"), key=lambda r: r.sent.json()["index"]
    )
    before: dict[bytes, KeyState] = {}
    pending = iter(answered)
    nxt = next(pending, None)

    def settle(upto: int, after: dict[bytes, KeyState]) -> None:
        """Check the answered txns with index <= upto against ``before`` (the state
        after every index < upto), or ``after`` for a read answered at an index
        that holds other writes (a read served at an applied index, not an entry)."""
        nonlocal nxt
        while nxt is not None and nxt.sent.json()["index"] <= upto:
            index = nxt.sent.json()["index"]
            reads_only = not any(op["op"] == "put" for op in _branch(nxt))
            if reads_only and index == upto and by_index.get(index):
                counts["reads_at_applied_index"] += 1
                _check_answer(nxt, after, {}, problems, counts)
            else:
                _check_answer(nxt, before, by_index, problems, counts)
            nxt = next(pending, None)

    created = False
    names = {account(i).encode() for i in range(ACCOUNTS)}
    for index, state in replay(ours, problems):
        settle(index, state)
        if any(ev.kind == "delete" for ev in by_index.get(index, [])):
            problems.append(f"an account was deleted at index {index}")
        if set(state) != names:
            if created or set(state) - names:
                problems.append(f"after index {index} the accounts are {sorted(state)}")
        else:
            created = True
            total = sum(int(s.value) for s in state.values())
            if total != bank.total:
                problems.append(f"after index {index} the accounts sum to {total}")
        counts["indexes"] += 1
        before = dict(state)
    settle(2**63, before)

    for node, listing in listings.items():
        balances = {e["key"]: e.get("value") for e in listing if e["key"].startswith(PREFIX)}
        total = sum(int(v) for v in balances.values() if v is not None)
        if len(balances) != ACCOUNTS or total != bank.total:
            problems.append(f"node {node} ends with accounts {balances} (total {total})")
    return counts, problems


def _check_answer(
    record: TxnRecord,
    state: dict[bytes, KeyState],
    by_index: dict[int, list[WatchEvent]],
    problems: list[str],
    counts: Counter[str],
) -> None:
    """One acknowledged transaction against ``state``, the state its reads saw, and
    ``by_index``, the history's writes by index."""
    answer = record.sent.json()
    index = answer["index"]
    writes = by_index.get(index, [])
    succeeded = answer["succeeded"]
    what = f"{record.kind} txn at index {index} ({'succeeded' if succeeded else 'failed'})"
    counts["answers"] += 1
    if succeeded != _compares_hold(record.body.get("compare", []), state):
        problems.append(f"{what}: its compares {record.body.get('compare')} say otherwise")
    branch = _branch(record)
    expected = [
        (op["key"].encode(), str(op["value"]).encode()) for op in branch if op["op"] == "put"
    ]
    got = [(ev.key, ev.value) for ev in writes if ev.kind == "put"]
    if got != expected:
        problems.append(f"{what}: the history has {[str(e) for e in writes]}, not {expected}")
    results = answer.get("results")
    if results is None:
        return  # a duplicate: answered from the session, without results
    for op, result in zip(branch, results, strict=False):
        if op["op"] != "get":
            continue
        key = op["key"].encode()
        now = state.get(key)
        seen = _balance(result)
        want = None if now is None else (int(now.value), now.mod_index)
        if seen != want:
            problems.append(f"{what}: get {op['key']} gave {seen}, the history {want}")


def _branch(record: TxnRecord) -> list[dict[str, Any]]:
    """The operations of the branch an acknowledged transaction ran."""
    ops: list[dict[str, Any]] = record.body.get(
        "success" if record.sent.json()["succeeded"] else "failure", []
    )
    return ops


def _compares_hold(compares: list[dict[str, Any]], state: dict[bytes, KeyState]) -> bool:
    """The bank's compares (``exists ==`` and ``mod_index ==`` only) on ``state``."""
    for cmp in compares:
        now = state.get(cmp["key"].encode())
        if cmp["target"] == "exists":
            if (now is not None) != cmp["value"]:
                return False
        elif cmp["target"] == "mod_index":
            if (now.mod_index if now else 0) != cmp["value"]:
                return False
        else:
            raise AssertionError(f"the bank does not use {cmp}")
    return True
