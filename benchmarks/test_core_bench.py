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
