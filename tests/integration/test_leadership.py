"""Leadership transfer (``POST /v1/cluster/leader``) against real processes."""

from __future__ import annotations

import pytest

from tests.integration.harness import ProcessCluster, wait_until


def _transfer(c: ProcessCluster, via: int, target: int) -> None:
    r = c.client.post(c.url(via, "/v1/cluster/leader"), json={"id": target})
    assert r.status_code == 200, r.text
    assert c.wait_leader(among=[1, 2, 3]) == target
    for i in (1, 2, 3):
        wait_until(
            f"node {i} to follow {target}",
            lambda i=i: c.status(i)["leader"] == target,  # type: ignore[misc]
            10.0,
        )
    c.put_ok("after-transfer", f"to-{target}", node_id=via)


def test_transfer_asked_of_the_leader(cluster: ProcessCluster) -> None:
    leader = cluster.wait_leader()
    target = cluster.followers(leader)[0]
    _transfer(cluster, leader, target)


@pytest.mark.xfail(
    strict=True,
    reason="a follower forwards TRANSFER_LEADER with frm = the transferee (etcd semantics); "
    "the peer transport refuses a message whose frm is not the connection's node and "
    "closes the connection, so the transfer never reaches the leader and the API "
    "answers 503 'leadership did not move' after request_timeout_s",
)
def test_transfer_asked_of_a_follower_for_another_follower(cluster: ProcessCluster) -> None:
    leader = cluster.wait_leader()
    via, target = cluster.followers(leader)
    _transfer(cluster, via, target)


def test_transfer_asked_of_a_follower_for_itself(cluster: ProcessCluster) -> None:
    leader = cluster.wait_leader()
    target = cluster.followers(leader)[0]
    _transfer(cluster, target, target)
