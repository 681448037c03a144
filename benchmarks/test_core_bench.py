"""Raft core throughput without I/O (issue 2): a 3-node in-process cluster on a
zero-latency network with MemoryStorage, 100-byte proposals.

- ``test_commit_batched``: 64 proposals per Ready; entries/s = 64 / mean.
- ``test_commit_one_at_a_time``: one proposal, then run the cluster until it is
  committed and applied everywhere; rounds/s = 1 / mean.

Targets on the 2-core reference machine: ≥ 150,000 entries/s batched and
≥ 10,000 one-at-a-time rounds/s. Figures go to ``docs/benchmarks.md``.
"""

from __future__ import annotations

from typing import Any

import pytest

from raftdb.testing.cluster import Cluster

VALUE = b"x" * 100


def _cluster() -> Cluster:
    cluster = Cluster(3)
    cluster.elect(1)
    return cluster


def _trim(cluster: Cluster) -> None:
    # Keep memory flat across rounds: the benchmark measures the core, not list growth.
    for applied in cluster.applied.values():
        applied.clear()


@pytest.mark.parametrize("batch", [64])
def test_commit_batched(benchmark: Any, batch: int) -> None:
    cluster = _cluster()
    leader = cluster.nodes[1]
    payload = [VALUE] * batch

    def round_trip() -> None:
        leader.propose_many(payload)
        cluster.stabilize()
        _trim(cluster)

    benchmark.pedantic(round_trip, rounds=300, iterations=1, warmup_rounds=20)
    benchmark.extra_info["entries_per_second"] = batch / benchmark.stats.stats.mean
    assert cluster.nodes[3].commit_index == leader.commit_index


def test_commit_one_at_a_time(benchmark: Any) -> None:
    cluster = _cluster()
    leader = cluster.nodes[1]

    def round_trip() -> None:
        leader.propose(VALUE)
        cluster.stabilize()
        _trim(cluster)

    benchmark.pedantic(round_trip, rounds=2000, iterations=1, warmup_rounds=50)
    benchmark.extra_info["rounds_per_second"] = 1 / benchmark.stats.stats.mean
    assert cluster.nodes[2].commit_index == leader.commit_index


@pytest.mark.parametrize("per_step", [1, 8])
def test_commit_under_steady_load(benchmark: Any, per_step: int) -> None:
    """Proposals keep arriving while earlier ones commit: each step proposes
    ``per_step`` entries, then handles one Ready of each node and delivers what
    they sent (one network hop). Records the peer messages per committed entry:
    a count, the same on any machine, beside the core's time per entry."""
    cluster = _cluster()
    leader = cluster.nodes[1]
    payload = [VALUE] * per_step
    steps = 200
    counts: dict[str, int] = {}

    def deliver() -> bool:
        for m in cluster.queue:
            counts[m.type.name] = counts.get(m.type.name, 0) + 1
        return cluster.deliver()

    def run() -> None:
        for _ in range(steps):
            leader.propose_many(payload)
            cluster.process_ready()
            deliver()
        while cluster.process_ready() or deliver():
            pass
        _trim(cluster)

    start = leader.commit_index
    benchmark.pedantic(run, rounds=20, iterations=1, warmup_rounds=2)
    committed = leader.commit_index - start
    assert committed == 22 * steps * per_step  # warm-up rounds included
    assert cluster.nodes[3].commit_index == leader.commit_index
    benchmark.extra_info["messages_per_entry"] = sum(counts.values()) / committed
    for kind, n in sorted(counts.items()):
        benchmark.extra_info[f"{kind.lower()}_per_entry"] = n / committed
    benchmark.extra_info["entries_per_second"] = steps * per_step / benchmark.stats.stats.mean
