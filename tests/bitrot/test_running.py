"""Flips in a running follower's files are caught no later than the next read of them.

A LevelDB state machine reads its keys from disk when asked (they may be
gigabytes, so start reads only its metadata), and every read verifies the
block's checksum. A byte damaged under a running follower is therefore found
by the first read of that block: the read answers ``503``, the node stops
with one line, and no read through it ever answers a wrong value. The rest
of the cluster goes on serving the right one.

Its log is read whole at start and kept in memory as far as the core needs
it; damage to the log's files under a running node is found at the next
read of those files, which is its next start (``test_node_start``, and the
last part here).
"""

from __future__ import annotations

import os

import pytest

from tests.bitrot.cluster import flip_in_place
from tests.bitrot.conftest import ClusterFactory
from tests.integration.harness import ProcessCluster, wait_until

KEYS = 40


def _written_and_restarted(
    cluster_factory: ClusterFactory, values: list[bytes]
) -> tuple[ProcessCluster, int, int]:
    """A 3-node cluster holding ``k<n>`` = ``values[n]``, one of whose followers was
    restarted after applying them (LevelDB moved its write-ahead logs into tables);
    returns the cluster, the leader and that follower."""
    c = cluster_factory(3, tick_ms=20)
    c.start_all()
    leader = c.wait_leader()
    index = 0
    for n, value in enumerate(values):
        index = c.put_ok(f"k{n}", value, node_id=leader)
    follower = c.followers(leader)[0]
    c.wait_applied(follower, index)
    c.stop(follower)
    c.start(follower)
    c.wait_applied(follower, index)
    return c, leader, follower


@pytest.mark.deadline(120)
def test_a_running_follower_stops_at_the_first_read_of_a_damaged_table(
    cluster_factory: ClusterFactory,
) -> None:
    # 2 KiB random values: a LevelDB block then holds a record or two, and the
    # damaged one holds keys only (the watch history's copies are elsewhere).
    # The restart moves the state machine's write-ahead log into tables, not yet read.
    values = [os.urandom(2048) for _ in range(KEYS)]
    c, leader, follower = _written_and_restarted(cluster_factory, values)
    damaged = flip_in_place(c.nodes[follower].data_dir / "state", "*.ldb", values[KEYS // 2])

    # Reads of other keys may be served (their blocks are whole); the damaged
    # one is never served: 503, and the node stops.
    r = c.get(follower, f"k{KEYS // 2}", stale=True)
    assert r.status_code == 503, (r.status_code, r.content[:100])
    assert "orruption" in r.json()["message"], r.text
    node = c.nodes[follower]
    assert node.proc is not None
    proc = node.proc
    wait_until("the follower to exit", lambda: proc.poll() is not None, 30)
    assert proc.returncode != 0  # the failed node stops its own server (SIGTERM)
    failed = [line for line in c.log_tail(follower, 400).splitlines() if "the node failed" in line]
    assert len(failed) == 1, c.log_tail(follower, 60)
    assert str(damaged.parent.parent) in failed[0], failed[0]

    # The others serve the right value, and the damaged node refuses to start.
    others = [i for i in c.nodes if i != follower]
    for i in others:
        assert c.get_value(i, f"k{KEYS // 2}") == values[KEYS // 2]
    for n in range(KEYS):
        assert c.get_value(others[0], f"k{n}", stale=True) == values[n]


@pytest.mark.deadline(120)
def test_damage_to_a_running_followers_log_is_found_at_its_next_start(
    cluster_factory: ClusterFactory,
) -> None:
    # The restart makes its log's write-ahead log a table, read whole at start.
    values = [os.urandom(256) for _ in range(KEYS)]
    c, leader, follower = _written_and_restarted(cluster_factory, values)
    damaged = flip_in_place(c.nodes[follower].data_dir / "log", "*.ldb", values[KEYS // 2])
    # Running, it serves what it verified at start and goes on taking entries.
    index = c.put_ok("after", b"1", node_id=leader)
    c.wait_applied(follower, index)
    for n in range(KEYS):
        assert c.get_value(follower, f"k{n}", stale=True) == values[n]
    c.stop(follower)
    c.start(follower, wait=False)
    proc = c.nodes[follower].proc
    assert proc is not None
    wait_until("the damaged follower to refuse to start", lambda: proc.poll() is not None, 30)
    assert proc.returncode != 0
    tail = c.log_tail(follower, 400).split("===== start #3")[-1]
    lines = [line for line in tail.splitlines() if "cannot start" in line]
    assert len(lines) == 1, tail
    assert str(damaged.parent) in lines[0], lines[0]
