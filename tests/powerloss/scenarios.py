"""Power cuts of raftdb nodes under write load, and the checks after them.

Ledger writers (:mod:`tests.chaos.workload`) write unique keys as fast as the cluster
takes them while the scenario cuts the power of nodes (:meth:`PowerCluster.power_cut`:
``kill -9``, then everything not made durable is dropped) and starts them again. The
kinds of cut:

- ``one``: one node (the leader half the time) at a random moment of the load;
- ``all``: every node at once;
- ``snapshot``: a node the moment its log says it took a snapshot (its log compaction
  runs right after, so the cut lands in or just after it);
- ``install``: a follower, stopped until the leader compacted past it, then started:
  cut the moment the leader's snapshot appears in its ``snapshots-in`` directory
  (arriving, or arrived and being installed).

After every cut the node must start again and be ready within :data:`READY_BOUND`
(a node refusing to start fails the run with its log's tail: the refusal must name
the damage, and none is expected). At the end (:func:`finish`): the nodes converge to
the same keys, every acknowledged ledger write is there at its index and no refused one
is, and, with the nodes stopped, every log passes the offline checks.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.chaos.cluster import poll
from tests.chaos.runner import check_ledger, converge
from tests.chaos.workload import Workload
from tests.powerloss.cluster import PowerCluster, check_disk

__all__ = ["PowerRun", "finish", "start_load"]

#: Longest a node may take to be ready again after a cut.
READY_BOUND = 45.0
#: Longest the leader may take to compact past a stopped follower under load.
COMPACT_BOUND = 30.0


@dataclass
class PowerRun:
    """One scenario's cluster, load and counts."""

    c: PowerCluster
    workload: Workload
    rng: random.Random
    cuts: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def restart(self, ids: list[int]) -> None:
        for i in ids:
            self.c.start(i, wait=False)
        for i in ids:
            self.c.wait_ready(i, timeout=READY_BOUND)

    def cut_one(self) -> None:
        """A random moment of the load; the leader half the time."""
        time.sleep(self.rng.uniform(0.05, 1.0))  # the moment is the point, not a sync
        leader = self.c.leader()
        if leader is not None and self.rng.random() < 0.5:
            victim = leader
        else:
            victim = self.rng.choice(sorted(self.c.nodes))
        kind = "leader" if victim == leader else "follower"
        self.c.power_cut([victim])
        self.cuts[f"one_{kind}"] += 1
        self.restart([victim])

    def cut_all(self) -> None:
        time.sleep(self.rng.uniform(0.05, 1.0))
        ids = sorted(self.c.nodes)
        self.c.power_cut(ids)
        self.cuts["all"] += 1
        self.restart(ids)

    def cut_at_snapshot(self, node_id: int) -> None:
        """Cut ``node_id`` as soon as its log reports a new snapshot."""
        marker = "took a snapshot at"
        seen = self.c.nodes[node_id].log_path.read_text(errors="replace").count(marker)
        poll(
            f"node {node_id} to take a snapshot",
            lambda: (
                True
                if self.c.nodes[node_id].log_path.read_text(errors="replace").count(marker) > seen
                else None
            ),
            COMPACT_BOUND,
            interval=0.01,
        )
        self.c.power_cut([node_id])
        self.cuts["snapshot"] += 1
        self.restart([node_id])

    def cut_during_install(self) -> None:
        """Stop a follower until the leader compacted past it, start it, and cut it when
        the leader's snapshot shows up in its ``snapshots-in`` directory."""
        c = self.c
        leader = c.wait_leader()
        follower = self.rng.choice(c.followers(leader))
        behind = c.status(follower)["applied_index"]
        c.kill(follower)

        def compacted() -> bool | None:
            leader_now = c.leader()
            if leader_now is None or leader_now == follower:
                return None
            return True if c.status(leader_now)["first_index"] > behind + 1 else None

        poll("the leader to compact past the stopped follower", compacted, COMPACT_BOUND)
        incoming = c.nodes[follower].data_dir / "snapshots-in"
        c.start(follower, wait=False)

        def arrived() -> str | None:
            if not incoming.is_dir():
                return None
            names = [p.name for p in incoming.iterdir()]
            return names[0] if names else None

        name = poll(f"a snapshot arriving at node {follower}", arrived, READY_BOUND, 0.005)
        c.power_cut([follower])
        self.cuts["install_arriving" if name.endswith(".part") else "install_arrived"] += 1
        self.restart([follower])


def start_load(c: PowerCluster, seed: int) -> PowerRun:
    """Start every node and six ledger writers."""
    c.start_all()
    c.wait_leader()
    urls = [c.nodes[i].api_url for i in sorted(c.nodes)]
    workload = Workload(lambda: urls, seed=seed, clients=0, ledgers=6)
    workload.start()
    return PowerRun(c, workload, random.Random(seed))


def finish(run: PowerRun, name: str, summary: Callable[[str], None]) -> None:
    """Stop the load and run every check; one summary line; fail on any problem."""
    c, workload = run.c, run.workload
    workload.stop()
    applied = converge(c)
    listings = {i: c.listing(i) for i in sorted(c.nodes)}
    assert all(listing == listings[1] for listing in listings.values()), "nodes diverged"
    state = {entry["key"]: entry for entry in listings[1]}
    problems = check_ledger(workload, state) + workload.errors
    for i in sorted(c.nodes):
        assert c.stop(i) in (0, -signal.SIGTERM), c.log_tail(i)
    problems += check_disk(c)
    ledger = workload.ledger_counts()
    kinds = " ".join(f"{k}={v}" for k, v in sorted(run.cuts.items()))
    plugins = ",".join("/".join(c.plugins(i)) for i in sorted(c.nodes))
    summary(
        f"powerloss {name} [{plugins}] {c.fs_mode} {time.monotonic() - run.started:.0f}s: "
        f"{sum(run.cuts.values())} power cuts ({kinds}); dropped "
        f"{c.dropped['bytes_dropped']} bytes and {c.dropped['names_reverted']} names; "
        f"{sum(ledger.values())} writes ({ledger['ok']} acknowledged, {ledger['unknown']} "
        f"unknown, {ledger['failed']} refused), acknowledged lost: "
        f"{sum(1 for p in problems if 'is lost' in p)}; converged at index {applied}: "
        f"{'PASS' if not problems else 'FAIL'}"
    )
    assert not problems, "\n".join(problems[:20])
    assert ledger["ok"] > 50
