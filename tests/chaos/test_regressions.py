"""Bugs the chaos runs found, each pinned by the smallest real-process test that shows it."""

from __future__ import annotations

import pytest

from tests.chaos.cluster import ChaosCluster, poll
from tests.chaos.conftest import ChaosFactory
from tests.chaos.proxy import LinkRule


@pytest.mark.deadline(60)
def test_a_node_whose_first_write_was_lost_can_write_again(chaos_cluster: ChaosFactory) -> None:
    """Found by the partition runs. A node's first write in its session (each
    start makes a new one) was lost with an isolated leader's term, and the
    node then proposed every later write with ``ack`` past it: to the state
    machine, a session it had never seen whose client claimed answers, so it
    answered SESSION_EXPIRED (a ``504``) to every write of that node until it
    restarted."""
    c = chaos_cluster(3, settings={"request_timeout_s": 1.5})
    c.start_all()
    old = c.wait_leader()
    others = [i for i in sorted(c.nodes) if i != old]
    c.partition([old], others)
    r = c.put(old, "lost", b"in the old term")
    assert r.status_code == 504, r.text  # no quorum: the outcome is unknown
    c.wait_leader(among=others, exclude=old)
    c.heal()
    poll(f"node {old} to follow", lambda: c.status(old)["leader"] in others or None, 20.0)

    for n in range(3):
        r = c.put(old, f"after-{n}", b"v")
        assert r.status_code == 204, r.text
    assert c.get_value(old, "lost") is None  # the lost write never took effect


@pytest.mark.deadline(60)
def test_a_write_pending_on_a_removed_node_is_not_answered_503(chaos_cluster: ChaosFactory) -> None:
    """Found by reading what the membership runs' ledger check guards. A write
    proposed through a node whose removal comes before it in the log still
    commits on the other members; the removed node failed it with ``503
    node_removed`` ("nothing was done"). Its outcome is unknown to that node:
    ``504``."""
    c = chaos_cluster(3, settings={"request_timeout_s": 5.0})
    c.start_all()
    leader = c.wait_leader()
    victim, other = (i for i in sorted(c.nodes) if i != leader)
    c.put_ok("before", b"x")
    c.wait_value(victim, "before", b"x", stale=True)
    # The victim hears from the leader a second late: it applies its removal
    # after it has forwarded the write, which lands after the removal.
    c.proxy.set_rules({(leader, victim): _delay(1.0)})
    r = c.client.delete(c.url(leader, f"/v1/cluster/members/{victim}"))
    assert r.status_code == 204, r.text
    r = c.put(victim, "pending", b"written")
    committed = poll("the other members to settle", lambda: _settled(c, leader, other), 20.0)
    if r.status_code == 503:
        assert "pending" not in committed, f"503 for a write that committed: {r.text}"
    assert r.status_code in (204, 503, 504), r.text


def _delay(seconds: float) -> LinkRule:
    return LinkRule("delay", seconds, 0.0)


def _settled(c: ChaosCluster, a: int, b: int) -> set[str] | None:
    sa, sb = c.status(a), c.status(b)
    if sa["applied_index"] != sb["applied_index"] or sa["commit_index"] != sa["applied_index"]:
        return None
    return {e["key"] for e in c.listing(a)}
