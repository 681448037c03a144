"""Crash safety of the storage path: ``kill -9`` at random moments of heavy writes.

Ledger writers (:mod:`tests.chaos.workload`) write unique keys as fast as the
cluster takes them. Again and again, at a random moment, one node (the leader
half the time; every node at once one time in five) is killed with SIGKILL and
started again at once. Every restart must succeed (no damaged log, hard state
or state machine) and the node must rejoin (ready within a bound). At the end:

- every node converges to the same state machine, and every acknowledged write
  is on it with its value at the index its ``204`` gave, while no write
  answered ``503`` is;
- offline, each node's log, hard state and state machine are consistent
  (:func:`check_disk`), and the committed prefixes of the logs of all nodes
  are the same entries.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from raftdb.plugins import open_state_machine, open_storage
from raftdb.raft.messages import Entry
from tests.chaos.cluster import ChaosCluster
from tests.chaos.conftest import ChaosFactory
from tests.chaos.runner import check_ledger, converge
from tests.chaos.workload import Workload

CI_KILLS = 12
LONG_KILLS = int(os.environ.get("CHAOS_KILLS", "100"))


def run_crashes(c: ChaosCluster, kills: int, seed: int) -> tuple[Counter[str], Workload]:
    rng = random.Random(seed)
    c.start_all()
    c.wait_leader()
    urls = [c.nodes[i].api_url for i in sorted(c.nodes)]
    workload = Workload(lambda: urls, seed=seed, clients=0, ledgers=6)
    counts: Counter[str] = Counter()
    workload.start()
    try:
        for _ in range(kills):
            # A random moment of the load: not synchronisation, the point of the test.
            time.sleep(rng.uniform(0.05, 1.0))
            leader = c.leader()
            if rng.random() < 0.2:
                victims = sorted(c.nodes)
                counts["kill_all"] += 1
            elif leader is not None and rng.random() < 0.5:
                victims = [leader]
                counts["kill_leader"] += 1
            else:
                victims = [rng.choice(sorted(c.nodes))]
                counts["kill_follower"] += 1
            for i in victims:
                c.kill(i)
            for i in victims:
                c.start(i, wait=False)
            for i in victims:
                c.wait_ready(i, timeout=45.0)
    finally:
        workload.stop()
    return counts, workload


def check_disk(
    data_dirs: dict[int, Path], plugins: Mapping[int, tuple[str, str]] | None = None
) -> list[str]:
    """Each node's log, hard state and state machine agree; committed prefixes match.

    ``plugins``: each node's (storage, state machine) names, LevelDB's by default. An
    in-memory state machine is rebuilt at every start: only the log is checked then.
    """
    problems: list[str] = []
    logs: dict[int, tuple[int, dict[int, Entry]]] = {}
    for node, data in sorted(data_dirs.items()):
        storage_name, sm_name = (plugins or {}).get(node, ("leveldb", "leveldb"))
        storage = open_storage(storage_name, data / "log")
        try:
            hs, _ = storage.initial_state()
            first, last = storage.first_index(), storage.last_index()
            snap = storage.snapshot().metadata
            entries = storage.entries(first, last + 1)
        finally:
            storage.close()
        applied = first - 1
        if sm_name != "memory":
            sm = open_state_machine(sm_name, data / "state")
            try:
                applied = sm.applied_index
            finally:
                sm.close()
        where = f"node {node} ({storage_name}/{sm_name})"
        if [e.index for e in entries] != list(range(first, last + 1)):
            problems.append(f"{where}: the log has gaps in [{first}, {last}]")
        terms = [e.term for e in entries]
        if terms != sorted(terms) or (terms and terms[-1] > hs.term):
            problems.append(f"{where}: entry terms {terms[:3]}..{terms[-3:]} vs term {hs.term}")
        if hs.commit > last:
            problems.append(f"{where}: commit {hs.commit} is beyond the last index {last}")
        if first - 1 > snap.index:
            problems.append(f"{where}: the log starts at {first}, after the snapshot {snap.index}")
        if applied < first - 1:
            problems.append(f"{where}: state machine at {applied}, the log starts at {first}")
        if applied > max(last, snap.index):
            problems.append(f"{where}: state machine at {applied}, ahead of the log ({last})")
        logs[node] = (hs.commit, {e.index: e for e in entries})
    for a in logs:
        for b in logs:
            if a >= b:
                continue
            commit = min(logs[a][0], logs[b][0])
            for index in range(1, commit + 1):
                ea, eb = logs[a][1].get(index), logs[b][1].get(index)
                if ea is not None and eb is not None and ea != eb:
                    problems.append(f"nodes {a} and {b} differ at committed index {index}")
                    break
    return problems


def crash_test(
    chaos_cluster: ChaosFactory, kills: int, seed: int, summary: Callable[[str], None]
) -> None:
    c = chaos_cluster(
        3,
        settings={"request_timeout_s": 2.0, "snapshot_entries": 400, "snapshot_keep_entries": 50},
    )
    started = time.monotonic()
    counts, workload = run_crashes(c, kills, seed)
    applied = converge(c)
    listings = {i: c.listing(i) for i in sorted(c.nodes)}
    assert all(listing == listings[1] for listing in listings.values()), "nodes diverged"
    state = {entry["key"]: entry for entry in listings[1]}
    problems = check_ledger(workload, state)
    problems += workload.errors
    for i in sorted(c.nodes):
        assert c.stop(i) in (0, -signal.SIGTERM), c.log_tail(i)
    problems += check_disk({i: n.data_dir for i, n in c.nodes.items()})
    ledger = workload.ledger_counts()
    kinds = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    summary(
        f"crash seed={seed} {time.monotonic() - started:.0f}s: {sum(counts.values())} kills "
        f"({kinds}); {sum(ledger.values())} writes ({ledger['ok']} acknowledged, "
        f"{ledger['unknown']} unknown, {ledger['failed']} refused); converged at index "
        f"{applied}: {'PASS' if not problems else 'FAIL'}"
    )
    assert not problems, "\n".join(problems[:20])
    assert ledger["ok"] > 100


@pytest.mark.deadline(180)
def test_kill_9_under_heavy_writes(
    chaos_cluster: ChaosFactory, summary: Callable[[str], None]
) -> None:
    crash_test(chaos_cluster, CI_KILLS, seed=11, summary=summary)


@pytest.mark.slow
@pytest.mark.deadline(60 + 8 * LONG_KILLS)
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_kill_9_under_heavy_writes_long(
    chaos_cluster: ChaosFactory, seed: int, summary: Callable[[str], None]
) -> None:
    crash_test(chaos_cluster, LONG_KILLS, seed=seed, summary=summary)
