"""One chaos run: a cluster, the workload, the nemesis, then every check.

:func:`run_chaos` starts a :class:`ChaosCluster`, runs the recorded workload
(:mod:`tests.chaos.workload`) while the nemesis (:mod:`tests.chaos.nemesis`)
injects faults, heals everything, and checks:

1. after every fault, a write was acknowledged within ``RECOVERY_BOUND``
   (the nemesis fails the run otherwise);
2. every member converges: same applied index, and the same keys, values and
   indexes in its state machine (``GET /v1/kv?values=true&consistency=stale``
   from each node, compared whole);
3. no acknowledged write is missing: every acknowledged ledger key is on every
   node with its value at the index its ``204`` gave, and no ledger write
   answered ``503`` (or never sent) is anywhere;
4. the history, closed by a linearizable read of every key after the heal,
   is linearizable per key (``raftdb.testing.linearizability``), with
   unknown outcomes free to have happened or not;
5. a value is only ever seen at one index (ETags agree with the log);
6. leases (:mod:`tests.chaos.leases`): once healthy, every key of an ended
   lease goes within TTL + election timeout, and no lease is left; no key
   was ever deleted while its lease was kept alive; a lease's keys go in one
   entry;
7. the committed history (:mod:`tests.chaos.watch`): the same on every member
   (a watch from ``since=0``), consistent in itself, and replayed from the
   empty store it gives exactly the final state; every watcher's stream on
   every member, across faults and reconnects, is exactly the history of its
   prefix — no gap, no duplicate, no reordering;
8. transactions (:mod:`tests.chaos.bank`): every audit sums to the initial
   total, the total holds after every index of the history, every
   acknowledged transaction agrees with the history at its index, and every
   member ends with the total.

It returns a :class:`ChaosReport` whose :meth:`~ChaosReport.summary` is the
one line a run prints.
"""

from __future__ import annotations

import base64
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from raftdb.testing.linearizability import (
    Get,
    KVModel,
    KVOperation,
    Operation,
    check_linearizability,
)
from tests.chaos.bank import check_bank
from tests.chaos.cluster import ChaosCluster, poll
from tests.chaos.leases import check_leases, settle_leases
from tests.chaos.nemesis import READY_BOUND, Nemesis
from tests.chaos.watch import WatchEvent, check_streams, fetch_history, replay
from tests.chaos.workload import Workload

__all__ = [
    "SCENARIOS",
    "ChaosReport",
    "Scenario",
    "check_indexes",
    "check_run",
    "chaos_workload",
    "cluster_settings",
    "check_ledger",
    "converge",
    "final_reads",
    "run_chaos",
    "write_summary",
]

#: Longest the members may take to agree on one applied index once healed.
CONVERGE_BOUND: Final = 60.0
#: Wall-clock budget of the linearizability check.
CHECK_BUDGET: Final = 120.0
#: The chaos cluster's timing: 50 ms ticks, elections after 10 to 20 of them.
TICK_MS: Final = 50
ELECTION_TICKS: Final = 10
#: The longest randomised election timeout, seconds (``[n, 2n)`` ticks).
ELECTION_TIMEOUT: Final = 2 * ELECTION_TICKS * TICK_MS / 1000
#: Lease TTL of the workload: 3 s, or the API's minimum if that is higher
#: (``max(2, ceil(2 * election timeout))``, the configured timeout: 0.5 s here).
LEASE_TTL: Final = max(3, 2, math.ceil(2 * ELECTION_TICKS * TICK_MS / 1000))
#: Every node keeps the whole run's changes, so that a watch from ``since=0``
#: is the complete history (a long run makes a few tens of thousands).
WATCH_HISTORY: Final = 500_000
#: Idle watch streams say how far they are this often (the reference read at the
#: end stops at the first ``progress`` past the final index; watchers notice a
#: dead stream within ``watch.READ_TIMEOUT``).
WATCH_PROGRESS_S: Final = 0.5
#: Events a node buffers per watcher: small, so that the bursts of entries a node
#: applies after a fault overflow it now and then, and watchers are closed as too
#: slow (with the index to resume from) and resume, as the contract says.
WATCH_BUFFER: Final = 32


@dataclass(frozen=True)
class Scenario:
    """A named set of faults and the cluster they run on."""

    name: str
    nodes: int
    faults: tuple[str, ...]
    clients: int = 4
    settings: tuple[tuple[str, Any], ...] = ()
    #: Members authenticate each other with certificates (mutual TLS).
    peer_tls: bool = False


#: Small snapshots so that restarted and re-added nodes catch up through them.
_SNAPSHOTS = (("snapshot_entries", 300), ("snapshot_keep_entries", 100))

SCENARIOS: Final = {
    s.name: s
    for s in (
        Scenario("crash", 3, ("kill", "kill", "stop", "restart_all"), settings=_SNAPSHOTS),
        Scenario("partition", 3, ("partition", "partition", "pause"), settings=_SNAPSHOTS),
        Scenario("slow", 3, ("slow", "transfer", "pause"), settings=_SNAPSHOTS),
        Scenario("membership", 3, ("member", "transfer"), settings=_SNAPSHOTS),
        # Over peer TLS the proxy cannot tell callers apart: faults of whole nodes only.
        Scenario(
            "tls", 3, ("kill", "stop", "pause", "restart_all"), settings=_SNAPSHOTS, peer_tls=True
        ),
        Scenario(
            "mixed",
            5,
            ("kill", "stop", "pause", "partition", "slow", "transfer", "member", "restart_all"),
            clients=5,
            settings=_SNAPSHOTS,
        ),
    )
}


@dataclass
class ChaosReport:
    """What a run did and found."""

    scenario: str
    seed: int
    nodes: int
    seconds: float = 0.0
    ops: Counter[str] = field(default_factory=Counter)
    keys: int = 0
    ledger: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    recoveries: list[float] = field(default_factory=list)
    applied_index: int = 0
    links: dict[str, int] = field(default_factory=dict)
    check_seconds: float = 0.0
    txns: Counter[str] = field(default_factory=Counter)
    watch: Counter[str] = field(default_factory=Counter)
    leases: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """The one line a run prints."""
        ops = self.ops
        faults = " ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        shown = ("dropped", "delayed", "refused", "cut", "snapshot_cut")
        links = " ".join(f"{k}={self.links[k]}" for k in shown if self.links.get(k))
        worst = max(self.recoveries, default=0.0)
        result = "PASS" if self.ok else f"FAIL ({len(self.problems)}: {self.problems[0][:200]})"
        return (
            f"chaos {self.scenario} seed={self.seed} nodes={self.nodes} {self.seconds:.0f}s: "
            f"{ops['checked']} ops checked on {self.keys} keys ({ops['ok']} ok, "
            f"{ops['unknown']} unknown; {ops['failed']} writes and {ops['read_failed']} "
            f"reads refused), ledger {sum(self.ledger.values())} "
            f"({self.ledger['ok']} ok, {self.ledger['unknown']} unknown, "
            f"{self.ledger['failed']} refused); {self.primitives()}; faults {faults}; "
            f"proxy frames {links or 'untouched'}; "
            f"recovery max {worst:.1f}s; converged at index {self.applied_index}; "
            f"check {self.check_seconds:.1f}s: {result}"
        )

    def primitives(self) -> str:
        """The summary's part on transactions, watches and leases."""
        t, w, le = self.txns, self.watch, self.leases
        return (
            f"txns {t['ok'] + t['unknown']} ({t['ok']} ok, {t['unknown']} unknown, "
            f"{t['failed']} refused; {t['transfer_ok']} transfers, {t['audits']} audits, "
            f"{t['answers']} answers checked on {t['indexes']} indexes), "
            f"watch {w['events']} events checked in {w['segments']} streams of "
            f"{w['watchers']} watchers ({w['reconnects']} reconnects, {w['too_slow']} too slow; "
            f"history {w['history']} changes), "
            f"leases {le['granted']} granted ({le['kept']} kept by {le['keepalives']} "
            f"keep-alives, {le['revoked']} revoked, {le['expired']} expired of which "
            f"{le['lapsed']} while kept; keys gone {le['keys_settled_ms'] / 1000:.1f}s "
            f"after healthy)"
        )


def run_chaos(
    make_cluster: Callable[..., ChaosCluster],
    scenario: Scenario,
    seed: int,
    seconds: float,
    *,
    log: Callable[[str], None] = print,
) -> ChaosReport:
    """Run ``scenario`` for ``seconds`` with ``seed``; see the module docstring."""
    rng = random.Random(seed)
    report = ChaosReport(scenario.name, seed, scenario.nodes)
    c = make_cluster(
        scenario.nodes,
        tick_ms=TICK_MS,
        election_ticks=ELECTION_TICKS,
        settings=cluster_settings(scenario),
        **({"peer_tls": True} if scenario.peer_tls else {}),
    )
    c.start_all()
    c.wait_leader()
    workload = chaos_workload(c, scenario, seed)
    nemesis = Nemesis(c, rng, scenario.faults)
    started = time.monotonic()
    workload.start()
    try:
        nemesis.run(seconds)
    finally:
        workload.stop()
        report.faults = nemesis.counts
        report.recoveries = nemesis.recoveries
    report.seconds = time.monotonic() - started
    check_run(c, workload, report, rng)
    log(report.summary())
    return report


def cluster_settings(scenario: Scenario) -> dict[str, Any]:
    """The node settings of a chaos cluster running ``scenario``."""
    return {
        "request_timeout_s": 2.0,
        "watch_history": WATCH_HISTORY,
        "watch_progress_s": WATCH_PROGRESS_S,
        "watch_buffer": WATCH_BUFFER,
        **dict(scenario.settings),
    }


def chaos_workload(c: ChaosCluster, scenario: Scenario, seed: int, **options: Any) -> Workload:
    """The full workload of a run on ``c`` (``options``: more :class:`Workload` arguments)."""
    urls = [c.nodes[i].api_url for i in sorted(c.nodes)]
    return Workload(
        lambda: urls,
        seed=seed,
        clients=scenario.clients,
        banks=2,
        lease_clients=2,
        lease_ttl=LEASE_TTL,
        watchers=2,
        **options,
    )


def check_run(
    c: ChaosCluster,
    workload: Workload,
    report: ChaosReport,
    rng: random.Random,
    *,
    history: bool = True,
) -> None:
    """Heal ``c`` and run every end check of the module docstring on what
    ``workload`` (stopped) recorded; figures and findings go to ``report``.

    Without ``history`` (a run longer than its nodes' ``watch_history``, such as
    the soak's) the checks that need the whole committed history (7, 8 and the
    history part of 6) are left out; convergence, the ledger, the indexes, the
    lease settling and linearizability remain."""
    report.links = c.proxy.stats()
    report.ops = Counter(workload.counts)
    report.ledger = workload.ledger_counts()
    report.problems += workload.errors
    report.txns = Counter(workload.bank.counts)

    converge(c)
    healthy = time.monotonic()
    figures, problems = settle_leases(c, workload.leases, healthy, ELECTION_TIMEOUT, rng)
    report.leases = workload.leases.figures() + figures
    report.problems += problems
    applied = converge(c)  # again: the expiries were entries
    report.applied_index = applied
    listings = {i: c.listing(i) for i in sorted(c.membership)}
    first = min(listings)
    for i, listing in listings.items():
        if listing != listings[first]:
            report.problems.append(
                f"node {i} differs from node {first}: {_diff(listing, listings[first])}"
            )
    state = {entry["key"]: entry for entry in listings[first]}
    report.problems += check_ledger(workload, state)
    report.problems += check_indexes(workload, state)
    if history:
        changes = check_history(c, applied, listings[first], report)
        watched, problems = check_streams(workload.watchers, changes)
        report.watch.update(watched)
        report.problems += problems
        checked, problems = check_bank(workload.bank, changes, listings)
        report.txns.update(checked)
        report.problems += problems
        report.problems += check_leases(workload.leases, workload.watchers, changes)

    ops = workload.ops + final_reads(c, workload.keys, rng)
    report.keys = len(workload.keys)
    report.ops["checked"] = len(ops)
    result = check_linearizability(KVModel(), ops, timeout=CHECK_BUDGET)
    report.check_seconds = result.elapsed
    if not result.ok:
        report.problems.append(f"not linearizable ({result.status.value}): {result.describe()}")


def converge(c: ChaosCluster) -> int:
    """Heal everything and wait until every member applied the same, committed index."""
    c.heal()
    for i in sorted(c.membership):
        node = c.nodes[i]
        if node.paused:
            c.resume(i)
        if not node.running:
            c.start(i, wait=False)
    for i in sorted(c.membership):
        c.wait_ready(i, timeout=READY_BOUND)

    def agreed() -> int | None:
        statuses = c.statuses(c.membership)
        if set(statuses) != c.membership:
            return None
        points = {(s["applied_index"], s["commit_index"]) for s in statuses.values()}
        if len(points) != 1:
            return None
        applied, commit = points.pop()
        return applied if applied == commit else None

    return poll("the members to apply the same index", agreed, CONVERGE_BOUND, 0.1)


def check_history(
    c: ChaosCluster, applied: int, listing: list[dict[str, Any]], report: ChaosReport
) -> list[WatchEvent]:
    """The committed history from every member (a watch from ``since=0`` up to
    ``applied``): all equal, consistent, and replayed it gives ``listing``.
    Returns the first member's; findings go to ``report.problems``."""
    histories: dict[int, list[WatchEvent]] = {}
    for i in sorted(c.membership):
        try:
            histories[i] = fetch_history(c.client, c.nodes[i].api_url, applied)
        except (AssertionError, httpx.HTTPError) as exc:
            report.problems.append(f"the history of node {i}: {exc}")
    if not histories:
        return []
    first = min(histories)
    for i, history in histories.items():
        if history != histories[first]:
            at = next(
                (
                    n
                    for n, (a, b) in enumerate(zip(history, histories[first], strict=False))
                    if a != b
                ),
                min(len(history), len(histories[first])),
            )
            report.problems.append(
                f"the history of node {i} differs from node {first}'s at change {at} "
                f"({len(history)} and {len(histories[first])} changes): "
                f"{history[at : at + 1]} vs {histories[first][at : at + 1]}"
            )
    history = histories[first]
    report.watch["history"] = len(history)
    final: dict[bytes, Any] = {}
    for _, state in replay(history, report.problems):
        final = state
    stored = {
        _bytes(e["key"], e.get("key_encoding")): (
            _bytes(e.get("value", ""), e.get("value_encoding")),
            e["create_index"],
            e["mod_index"],
        )
        for e in listing
    }
    replayed = {k: (s.value, s.create_index, s.mod_index) for k, s in final.items()}
    if replayed != stored:
        only_h = sorted(set(replayed) - set(stored))[:5]
        only_s = sorted(set(stored) - set(replayed))[:5]
        differ = [k for k in sorted(set(stored) & set(replayed)) if stored[k] != replayed[k]][:5]
        report.problems.append(
            f"the history replayed is not the final state: only in the history {only_h}, "
            f"only stored {only_s}, different {[(k, replayed[k], stored[k]) for k in differ]}"
        )
    return history


def _bytes(text: str, encoding: str | None) -> bytes:
    return base64.b64decode(text) if encoding == "base64" else text.encode()


def final_reads(c: ChaosCluster, keys: list[str], rng: random.Random) -> list[KVOperation]:
    """A linearizable read of every key, as client ``"final"``, closing the history."""
    ops: list[KVOperation] = []
    members = sorted(c.membership)
    for key in keys:

        def read(key: str = key) -> KVOperation | None:
            node = rng.choice(members)
            call = time.monotonic()
            r = c.client.get(c.url(node, f"/v1/kv/{key}"), timeout=10.0)
            if r.status_code == 200:
                return Operation("final", Get(key), r.content.decode(), call, time.monotonic())
            if r.status_code == 404:
                return Operation("final", Get(key), None, call, time.monotonic())
            if r.status_code in (503, 504):
                return None
            raise AssertionError(f"final read of {key}: {r.status_code} {r.text}")

        ops.append(poll(f"a final read of {key}", read, 30.0, 0.1))
    return ops


def check_ledger(workload: Workload, state: dict[str, dict[str, Any]]) -> list[str]:
    """Acknowledged ledger writes present at their index; refused ones absent."""
    problems = []
    for entry in workload.ledger:
        found = state.get(entry.key)
        if entry.outcome == "ok":
            if found is None:
                problems.append(f"acknowledged write {entry.key} (index {entry.index}) is lost")
            elif found["value"] != entry.value or found["mod_index"] != entry.index:
                problems.append(f"acknowledged write {entry.key}@{entry.index} reads {found}")
        elif entry.outcome == "failed" and found is not None:
            problems.append(f"write {entry.key} answered 503 (not applied) but is there: {found}")
        elif entry.outcome == "unknown" and found is not None and found["value"] != entry.value:
            problems.append(f"ledger key {entry.key} holds a foreign value: {found}")
    return problems


def check_indexes(workload: Workload, state: dict[str, dict[str, Any]]) -> list[str]:
    """Every value that is still stored sits at the index its write or reads gave."""
    problems = []
    for key, entry in state.items():
        index = workload.value_index.get(entry.get("value", ""))
        if index is not None and index != entry["mod_index"]:
            problems.append(
                f"{key}={entry['value']!r} is at index {entry['mod_index']}, not {index}"
            )
    return problems


def _diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str:
    ka = {e["key"]: e for e in a}
    kb = {e["key"]: e for e in b}
    only_a = sorted(set(ka) - set(kb))[:5]
    only_b = sorted(set(kb) - set(ka))[:5]
    changed = [k for k in sorted(set(ka) & set(kb)) if ka[k] != kb[k]][:5]
    return f"only here {only_a}, only there {only_b}, different {changed}"


def write_summary(path: Path, line: str) -> None:
    """Append a summary line to ``path`` (``make chaos`` collects them)."""
    with path.open("a") as f:
        f.write(line + "\n")
