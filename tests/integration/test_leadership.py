"""Leadership against real processes: transfer (``POST /v1/cluster/leader``), and
removing the leader."""

from __future__ import annotations

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


def test_transfer_asked_of_a_follower_for_another_follower(cluster: ProcessCluster) -> None:
    leader = cluster.wait_leader()
    via, target = cluster.followers(leader)
    _transfer(cluster, via, target)


def test_transfer_asked_of_a_follower_for_itself(cluster: ProcessCluster) -> None:
    leader = cluster.wait_leader()
    target = cluster.followers(leader)[0]
    _transfer(cluster, target, target)


def test_removing_the_leader(cluster: ProcessCluster) -> None:
    c = cluster
    leader = c.wait_leader()
    via = c.followers(leader)[0]
    r = c.client.delete(c.url(via, f"/v1/cluster/members/{leader}"))
    assert r.status_code == 204, r.text
    others = c.followers(leader)
    c.wait_leader(among=others, exclude=leader)
    c.put_ok("after-leader-removal", b"ok", node_id=via)
    for i in others:
        assert c.member_ids(i) == sorted(others)
        assert c.get_value(i, "after-leader-removal") == b"ok"

    def says_removed() -> bool:
        r = c.get(leader, "after-leader-removal")
        return r.status_code == 503 and r.json().get("error") == "node_removed"

    wait_until("the old leader to say it was removed", says_removed, 10.0)
