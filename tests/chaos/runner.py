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
5. a value is only ever seen at one index (ETags agree with the log).

It returns a :class:`ChaosReport` whose :meth:`~ChaosReport.summary` is the
one line a run prints.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from raftdb.testing.linearizability import (
    Get,
    KVModel,
    KVOperation,
    Operation,
    check_linearizability,
)
from tests.chaos.cluster import ChaosCluster, poll
from tests.chaos.nemesis import READY_BOUND, Nemesis
from tests.chaos.workload import Workload

__all__ = [
    "SCENARIOS",
    "ChaosReport",
    "Scenario",
    "check_indexes",
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
            f"{self.ledger['failed']} refused); faults {faults}; "
            f"proxy frames {links or 'untouched'}; "
            f"recovery max {worst:.1f}s; converged at index {self.applied_index}; "
            f"check {self.check_seconds:.1f}s: {result}"
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
        tick_ms=50,
        election_ticks=10,
        settings={"request_timeout_s": 2.0, **dict(scenario.settings)},
        **({"peer_tls": True} if scenario.peer_tls else {}),
    )
    c.start_all()
    c.wait_leader()
    urls = [c.nodes[i].api_url for i in sorted(c.nodes)]
    workload = Workload(lambda: urls, seed=seed, clients=scenario.clients)
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
    report.links = c.proxy.stats()
    report.ops = Counter(workload.counts)
    report.ledger = workload.ledger_counts()
    report.problems += workload.errors

    applied = converge(c)
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

    history = workload.ops + final_reads(c, workload.keys, rng)
    report.keys = len(workload.keys)
    report.ops["checked"] = len(history)
    result = check_linearizability(KVModel(), history, timeout=CHECK_BUDGET)
    report.check_seconds = result.elapsed
    if not result.ok:
        report.problems.append(f"not linearizable ({result.status.value}): {result.describe()}")
    log(report.summary())
    return report


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
