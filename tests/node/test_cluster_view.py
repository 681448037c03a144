"""What a node observes of its cluster (raftdb.node.cluster_view, ``Node.cluster_status``).

First :class:`ClusterView` alone, on a fake clock: the leader-change ring,
the field rules of a leader's and a follower's answer. Then real nodes in
one process (real transports): a leader's view has every member's match and
lag, a follower's has its leader's row and nulls for the rest, a transfer of
leadership is recorded by every member, and reads are counted on both API
paths (fast path and Starlette) and exported in ``/metrics``.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import Any

from raftdb.http.app import create_api
from raftdb.node import Node
from raftdb.node.cluster_view import MAX_LEADER_CHANGES, ClusterView, counter_value
from raftdb.node.handle import ClusterStatus, Member, NodeStatus
from raftdb.raft.progress import ProgressState
from raftdb.raft.rawnode import PeerProgress
from tests.http.asgi import Call

from .cluster import LocalCluster, eventually

# -- ClusterView on its own ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _status(node_id: int, role: Any, leader: int, **changes: Any) -> NodeStatus:
    fields: dict[str, Any] = {
        "id": node_id,
        "role": role,
        "leader": leader,
        "term": 4,
        "commit_index": 50,
        "applied_index": 47,
        "first_index": 1,
        "last_index": 52,
        "members": [
            Member(1, "http://127.0.0.1:1", False),
            Member(2, "http://127.0.0.1:2", False),
            Member(3, "http://127.0.0.1:3", False),
            Member(4, "http://127.0.0.1:4", True),
        ],
        "cluster_id": "00000000000000aa",
    }
    fields.update(changes)
    return NodeStatus(**fields)


def _progress(match: int, active: bool, learner: bool = False) -> PeerProgress:
    return PeerProgress(match, match + 1, ProgressState.REPLICATE, learner, active)


def test_leader_changes_are_recorded_once_each_and_bounded() -> None:
    clock = Clock()
    view = ClusterView(1, 1.0, wall=clock)
    view.observe(1, 0)
    view.observe(1, 0)  # no change: not recorded
    clock.now = 101.5
    view.observe(2, 0)
    view.observe(2, 3)
    assert [(c.term, c.leader, c.at) for c in view.leader_changes] == [
        (1, None, 100.0),
        (2, None, 101.5),
        (2, 3, 101.5),
    ]
    for term in range(3, 40):
        view.observe(term, 1)
    changes = view.leader_changes
    assert len(changes) == MAX_LEADER_CHANGES
    assert [c.term for c in changes] == list(range(40 - MAX_LEADER_CHANGES, 40))  # oldest first


def test_a_leaders_rows() -> None:
    clock = Clock()
    view = ClusterView(1, 1.0, clock=clock, wall=lambda: 1_700_000_000.0)
    view.heard[2] = 99.9  # 0.1 s ago
    view.heard[3] = 95.0  # 5 s ago: longer than an election timeout
    progress = {
        1: _progress(52, True),
        2: _progress(50, False),  # recent_active cleared by a check-quorum round, yet heard
        3: _progress(40, False),  # neither: unreachable
        4: _progress(52, True, learner=True),
    }
    answer = view.build(_status(1, "leader", 1), progress, writes=7)
    assert answer.view == "leader"
    rows = {m.id: m for m in answer.members}
    me = rows[1]
    assert (me.self, me.role, me.match_index, me.lag, me.reachable, me.last_contact_s) == (
        True,
        "leader",
        52,  # its last index
        3,  # commit - applied
        True,
        None,
    )
    assert (rows[2].role, rows[2].match_index, rows[2].lag, rows[2].reachable) == (
        "follower",
        50,
        0,
        True,
    )
    assert rows[2].last_contact_s == 0.1
    assert (rows[3].match_index, rows[3].lag, rows[3].reachable) == (40, 10, False)
    assert rows[3].last_contact_s == 5.0
    assert (rows[4].role, rows[4].learner, rows[4].reachable, rows[4].last_contact_s) == (
        "learner",
        True,
        True,  # recent_active, never heard from here
        None,
    )
    assert answer.counters.writes == 7
    assert answer.at == 1_700_000_000.0


def test_a_followers_rows() -> None:
    clock = Clock()
    view = ClusterView(2, 1.0, clock=clock)
    view.heard[1] = 99.8
    view.heard[3] = 99.9  # a vote request once: still nothing to say about it
    answer = view.build(_status(2, "follower", 1), {}, writes=0)
    assert answer.view == "member"
    rows = {m.id: m for m in answer.members}
    assert (rows[1].role, rows[1].reachable, rows[1].match_index, rows[1].lag) == (
        "leader",
        True,
        None,
        None,
    )
    assert rows[1].last_contact_s == 0.2
    me = rows[2]
    assert (me.self, me.role, me.match_index, me.lag, me.reachable) == (
        True,
        "follower",
        None,
        3,
        True,
    )
    assert (rows[3].match_index, rows[3].lag, rows[3].reachable) == (None, None, None)
    assert rows[3].last_contact_s == 0.1  # what it heard is still shown
    assert (rows[4].role, rows[4].reachable) == ("learner", None)
    clock.now = 105.0  # the leader silent for longer than an election timeout
    assert view.build(_status(2, "follower", 1), {}, writes=0).members[0].reachable is False
    candidate = view.build(_status(2, "candidate", 0), {}, writes=0)
    assert candidate.leader is None
    assert [m.reachable for m in candidate.members] == [None, True, None, None]


def test_reads_are_counted_by_consistency() -> None:
    view = ClusterView(1, 1.0)
    for consistency in ("linearizable", "stale", "stale", "linearizable", "linearizable"):
        view.count_read(consistency)
    assert (view.reads_linearizable, view.reads_stale) == (3, 2)


# -- real nodes --------------------------------------------------------------------------


def _rows(answer: ClusterStatus) -> dict[int, Any]:
    return {m.id: m for m in answer.members}


def test_the_leaders_view_has_every_members_progress(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        leader = c.leader()
        assert leader is not None
        for i in range(5):
            await leader.put(f"k{i}".encode(), b"v")

        def caught_up() -> bool:
            answer = leader.cluster_status()
            return all(m.match_index == answer.last_index and m.reachable for m in answer.members)

        await eventually(caught_up, "every member caught up and reachable")
        answer = leader.cluster_status()
        assert answer.view == "leader"
        assert answer.role == "leader"
        assert answer.leader == leader.id
        assert sorted(_rows(answer)) == [1, 2, 3]
        for member in answer.members:
            assert isinstance(member.match_index, int)
            assert isinstance(member.lag, int)
            assert member.lag >= 0
            if member.self:
                assert member.id == leader.id
                assert member.role == "leader"
                assert member.last_contact_s is None
            else:
                assert member.role == "follower"
                assert member.last_contact_s is not None
                assert member.last_contact_s >= 0
        assert answer.cluster_id is not None

    LocalCluster(tmp_path, 3, "memory").run(body)


def test_a_followers_view_knows_its_leader_only(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        leader = c.leader()
        assert leader is not None
        follower = next(n for n in c.nodes.values() if n is not leader)
        other = next(i for i in c.nodes if i not in (leader.id, follower.id))
        await leader.put(b"k", b"v")

        def hears_its_leader() -> bool:
            row = _rows(follower.cluster_status())[leader.id]
            return row.reachable is True and row.last_contact_s is not None

        await eventually(hears_its_leader, "the follower to hear from its leader")
        answer = follower.cluster_status()
        assert answer.view == "member"
        assert answer.role == "follower"
        assert answer.leader == leader.id
        rows = _rows(answer)
        assert rows[leader.id].role == "leader"
        assert (rows[leader.id].match_index, rows[leader.id].lag) == (None, None)
        me = rows[follower.id]
        assert (me.self, me.role, me.match_index, me.reachable, me.last_contact_s) == (
            True,
            "follower",
            None,
            True,
            None,
        )
        assert me.lag == max(0, answer.commit_index - answer.applied_index)
        assert (rows[other].match_index, rows[other].lag, rows[other].reachable) == (
            None,
            None,
            None,
        )

    LocalCluster(tmp_path, 3, "memory").run(body)


def test_every_member_records_a_transfer_of_leadership(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        old = c.leader()
        assert old is not None
        target = next(i for i in c.nodes if i != old.id)
        await old.transfer_leader(target)

        def recorded(node: Node) -> bool:
            changes = node.cluster_status().leader_changes
            return bool(changes) and changes[-1].leader == target

        for node in c.nodes.values():
            await eventually(partial(recorded, node), f"node {node.id} to see {target}")
            answer = node.cluster_status()
            changes = answer.leader_changes
            assert changes[-1].term == answer.term
            assert any(change.leader == old.id for change in changes)
            terms = [change.term for change in changes]
            assert terms == sorted(terms)
            assert len(changes) <= MAX_LEADER_CHANGES
            ats = [change.at for change in changes]
            assert ats == sorted(ats)

    LocalCluster(tmp_path, 3, "memory").run(body)


async def _get(app: Any, path: str) -> Call:
    target, _, query = path.partition("?")
    call = Call(app, "GET", target, query=query.encode())
    await call.finished()
    return call


def test_reads_are_counted_on_both_paths_and_exported(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        fast = create_api(node, node.config)
        starlette = create_api(node, node.config, fast_path=False)
        assert (await _get(fast, "/v1/kv/missing")).status == 404
        await node.put(b"k", b"v")
        before = node.cluster_status().counters
        for app in (fast, starlette):
            for path in (
                "/v1/kv/k",  # the fast path takes these on the fast app
                "/v1/kv/k?consistency=stale",
                "/k",
                "/v1/kv?prefix=",  # listings are always Starlette's
                "/v1/kv?prefix=&consistency=stale",
                "/v1/kv/k?consistency=linearizable&wait_index=0",  # a blocking read: one read
            ):
                call = await _get(app, path)
                assert call.status == 200, (path, call.body)
        after = node.cluster_status().counters
        assert after.reads_linearizable - before.reads_linearizable == 2 * 4
        assert after.reads_stale - before.reads_stale == 2 * 2
        assert after.writes == counter_value(node.metrics.proposals) == 1

        # The lock recipe's own listings are not a client's reads.
        lease = (await node.lease_grant(30)).id
        await node.lock(b"job", lease, timeout=5)
        await node.unlock(b"job", lease)
        assert node.cluster_status().counters.reads_linearizable == after.reads_linearizable

        metrics = (await _get(fast, "/metrics")).body.decode()
        found = dict(
            re.findall(r'^raftdb_reads_total\{consistency="(\w+)"\} (\S+)$', metrics, re.M)
        )
        assert float(found["linearizable"]) == after.reads_linearizable
        assert float(found["stale"]) == after.reads_stale

        status = await _get(fast, "/v1/cluster/status")
        answer = json.loads(status.body)
        assert answer["counters"]["reads_stale"] == after.reads_stale
        assert answer["members"][0]["self"] is True

    LocalCluster(tmp_path, 1, "memory").run(body)
