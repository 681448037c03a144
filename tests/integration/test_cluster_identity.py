"""Cluster identities between real processes: members of different clusters refuse each other.

Two clusters bootstrapped separately (different peer lists, so different
identities, with the same default cluster token). Cluster A's member is then
started at the peer address of one of cluster B's members (a moved disk, a
misconfigured address): without identities, B's leader would replicate its
log over A's data and A's member would vote in B's elections. With them,
every handshake between the two is refused, each side's log says why naming
both identities, and each cluster goes on with its own data.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import ClusterFactory
from tests.integration.harness import wait_until


@pytest.mark.deadline(90)
def test_a_member_of_another_cluster_at_a_members_address_is_refused(
    cluster_factory: ClusterFactory,
) -> None:
    a = cluster_factory(1)
    a.start_all()
    a.put_ok("a-key", "from a")
    b = cluster_factory(3)
    b.start_all()
    b.put_ok("b-key", "from b")
    id_a = a.status(1)["cluster_id"]
    id_b = b.status(1)["cluster_id"]
    assert isinstance(id_a, str)
    assert isinstance(id_b, str)
    assert id_a != id_b
    assert {b.status(i)["cluster_id"] for i in (2, 3)} == {id_b}

    # A's only member comes up where B's member 1 was.
    b.stop(1)
    a.stop(1)
    a.start(1, cluster=b.peer_urls())
    term_a = a.status(1)["term"]

    def refused() -> bool:
        a_log = a.nodes[1].log_path.read_text()
        b_logs = b.nodes[2].log_path.read_text() + b.nodes[3].log_path.read_text()
        return (
            f"is in cluster id {id_b}, this node in cluster id {id_a}" in a_log
            and f"is in cluster id {id_a}, this node in cluster id {id_b}" in b_logs
        )

    wait_until("both clusters' refusals", refused, 30, interval=0.2, on_timeout=b.log_tails)
    b_log = b.nodes[2].log_path.read_text() + b.nodes[3].log_path.read_text()
    assert f"cannot reach peer 1 at {b.nodes[1].peer_url}: node 1 at" in b_log

    # B goes on with two of three, A with its own data; neither took the other's.
    b.put_ok("b-after", "still b")
    b.wait_value(2, "b-after", b"still b")
    assert b.get_value(2, "a-key") is None
    a.put_ok("a-after", "still a")
    assert a.get_value(1, "b-key") is None
    assert a.get_value(1, "a-key") == b"from a"
    status = a.status(1)
    assert status["role"] == "leader"
    assert status["term"] == term_a
    assert status["cluster_id"] == id_a
