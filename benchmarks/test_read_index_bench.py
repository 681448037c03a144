"""ReadIndex batching in the Raft core, without I/O: what a linearizable read costs.

The leader confirms reads in heartbeat *rounds* (``raftdb/raft/read_only.py``):
every ``read_index`` that arrives before the next Ready joins one round, and one
quorum of heartbeat answers confirms them all. This suite measures that
sharing on the core alone, so a regression in it (a round per read, a costlier
round) shows here and not only as fewer reads/s under the cluster benchmark.

A 3-node in-process cluster (``raftdb.testing.cluster.Cluster``, the one
``test_core_bench.py`` drives) on a zero-latency network with MemoryStorage;
node 1 is elected, and its empty entry of the term is committed, so reads are
served at once rather than held until then (thesis §6.4 step 1). No ticks: the
only heartbeats are the read rounds'. Each benchmark round calls
``read_index`` ``n`` times on the leader with unique contexts, then runs the
cluster to a fixed point: the leader's Ready starts the round and sends the
heartbeats, the followers answer, and the leader's next Ready carries the
confirmed ReadStates.

- ``test_read_index[1]``: one read per round trip; 2000 rounds.
- ``test_read_index[64]``: 64 reads sharing one round trip; 500 rounds.

``reads_per_second`` = n / mean, counting confirmed ReadStates. The ratio of
the two is the batching gain: 64 reads should cost far less than 64 rounds.
Correctness is checked between rounds (in the untimed setup) and after the
last: every read got exactly one ReadState, on the leader, with its context
and the commit index, and each round used exactly one heartbeat round.

Run: ``pytest benchmarks/test_read_index_bench.py --benchmark-only``.
Figures go to ``docs/benchmarks.md`` ("Raft core (no I/O)").
"""

from __future__ import annotations

from typing import Any

import pytest

from raftdb.raft import ReadState
from raftdb.testing.cluster import Cluster

ROUNDS = {1: 2000, 64: 500}


def _cluster() -> Cluster:
    # test_core_bench's _cluster(), plus the precondition this suite relies on.
    # Not imported: benchmarks/ is not a package, so pytest can import it only
    # as a top-level test_core_bench, a name mypy (which sees
    # benchmarks.test_core_bench) cannot resolve.
    cluster = Cluster(3)
    cluster.elect(1)
    leader = cluster.nodes[1]
    assert leader._raft.committed_entry_in_current_term()
    assert all(node.commit_index == leader.last_index for node in cluster.nodes.values())
    return cluster


@pytest.mark.parametrize("n", [1, 64])
def test_read_index(benchmark: Any, n: int) -> None:
    cluster = _cluster()
    leader = cluster.nodes[1]
    index = leader.commit_index
    read_only = leader._raft.read_only
    issued: list[bytes] = []
    # Reads checked so far, the heartbeat round last seen, rounds set up (= run).
    done = [0, read_only.last_round, 0]

    def check() -> None:
        """The previous round's reads were all confirmed at ``index``, in one round."""
        assert cluster.read_states[1] == [ReadState(index, c) for c in issued]
        assert not cluster.read_states[2]
        assert not cluster.read_states[3]
        assert read_only.pending_count() == 0
        if issued:
            assert read_only.last_round == done[1] + 1
        done[0] += len(issued)
        done[1] = read_only.last_round
        cluster.read_states[1].clear()

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        check()
        done[2] += 1
        first = done[0]
        issued[:] = [b"read-%d" % i for i in range(first, first + n)]
        return (issued,), {}

    def round_trip(contexts: list[bytes]) -> None:
        for context in contexts:
            leader.read_index(context)
        cluster.stabilize()

    benchmark.pedantic(round_trip, setup=setup, rounds=ROUNDS[n], warmup_rounds=20)
    check()
    assert done[0] == n * done[2]
    assert leader.commit_index == index
    benchmark.extra_info["reads_per_second"] = round(n / benchmark.stats.stats.mean)
    benchmark.extra_info["round_trips_per_second"] = round(1 / benchmark.stats.stats.mean)
