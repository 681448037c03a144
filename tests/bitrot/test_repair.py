"""Repairing a member refused for damage from its peers, with the documented
procedure (docs/operations.md, "Repairing a damaged member"), step by step with
the real ``raftdb`` command line:

1. the damaged node refuses to start (one line naming the damage);
2. ``raftdb member remove 3`` through a live member;
3. its data directory is deleted;
4. ``raftdb member add 3 URL --learner``;
5. ``raftdb serve --id 3 ... --join`` with the empty directory: it catches up
   through a snapshot (the others compacted their logs);
6. once it has applied the leader's commit index, ``raftdb member promote 3``.

Afterwards it is a voter and holds exactly what the others hold: every key,
value, create and mod index. (It found a bug: a member that caught up through
a snapshot reported ``role: follower`` while a learner, and the membership it
started with, until the next membership change: ``Node._on_restored``.)
"""

from __future__ import annotations

import os

import pytest

from tests.bitrot.cluster import cli, flip_in_place, listing
from tests.bitrot.conftest import ClusterFactory
from tests.integration.harness import wait_until

KEYS = 60


@pytest.mark.deadline(150)
def test_a_damaged_member_is_repaired_from_its_peers(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(
        3, tick_ms=20, settings={"snapshot_entries": 20, "snapshot_keep_entries": 5}
    )
    c.start_all()
    values = [os.urandom(32) for _ in range(KEYS)]  # random: stored as they are
    for n, value in enumerate(values):
        c.put_ok(f"k{n}", value)
    victim = 3
    c.stop(victim)
    flip_in_place(c.nodes[victim].data_dir / "log", "*.log", values[KEYS - 1])

    # 1. It refuses to start, with one line.
    c.start(victim, wait=False)
    proc = c.nodes[victim].proc
    assert proc is not None
    wait_until("the damaged node to refuse to start", lambda: proc.poll() is not None, 30)
    assert proc.returncode != 0
    refused = [line for line in c.log_tail(victim, 200).splitlines() if "cannot start" in line]
    assert len(refused) == 1, c.log_tail(victim, 60)
    assert "orrupt" in refused[0], refused[0]

    live = ",".join(c.nodes[i].api_url for i in (1, 2))
    cli("member", "remove", str(victim), "--endpoints", live)  # 2.
    c.wipe(victim)  # 3.
    for n in range(KEYS, KEYS + 30):  # the cluster goes on meanwhile
        c.put_ok(f"k{n}", f"v{n}")
    cli("member", "add", str(victim), c.nodes[victim].peer_url, "--learner", "--endpoints", live)
    c.start(victim, join=True)  # 5. (and ready)
    leader = c.wait_leader(among=[1, 2])
    commit = int(c.status(leader)["commit_index"])
    c.wait_applied(victim, commit)
    assert c.metric(victim, "raftdb_snapshots_restored_total") >= 1
    assert [m.get("learner") for m in c.members(leader) if int(m["id"]) == victim] == [True]
    # What the repaired node says of itself: the snapshot's membership (it said
    # "follower", with the membership it started with, until the next change).
    assert c.status(victim)["role"] == "learner"
    assert c.member_ids(victim) == [1, 2, 3]
    cli("member", "promote", str(victim), "--endpoints", live)  # 6.

    index = c.put_ok("after", "repair")
    for i in c.nodes:
        c.wait_applied(i, index)
    members = {int(m["id"]): m for m in c.members(1)}
    assert sorted(members) == [1, 2, 3]
    assert not members[victim].get("learner"), members[victim]
    expected = listing(c, 1)
    assert len(expected) == KEYS + 31
    for i in (2, victim):
        assert listing(c, i) == expected, f"node {i} differs"
