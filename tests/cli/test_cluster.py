"""``raftdb status``, ``raftdb member …`` and ``raftdb leader transfer`` against real
clusters: the table's values are the members' own, membership changes really happen,
and a member that does not answer is shown as such."""

from __future__ import annotations

import json
from typing import Any

import pytest

from raftdb.testing.ports import free_ports
from tests.cli.conftest import Cli, ClusterFactory, Result, endpoints
from tests.integration.harness import ProcessCluster, wait_until


def _json(result: Result) -> Any:
    assert result.status == 0, result.err
    return json.loads(result.out)


def test_status_has_a_row_per_member_with_its_own_figures(cli: Cli, shared: ProcessCluster) -> None:
    leader = shared.wait_leader()
    rows = {row["id"]: row for row in _json(cli("status", "-w", "json"))}
    assert sorted(rows) == [1, 2, 3]
    for node_id, row in rows.items():
        own = shared.status(node_id)
        assert row["endpoint"] == shared.nodes[node_id].api_url
        assert row["peer_url"] == shared.nodes[node_id].peer_url
        assert row["reachable"] is True
        assert row["learner"] is False
        assert (row["role"], row["term"], row["leader"]) == (own["role"], own["term"], leader)
        assert row["applied_index"] <= own["applied_index"]
        assert row["commit_index"] <= own["commit_index"]
        assert row["lag"] >= 0
        assert row["errors"] == []
    table = cli("status")
    assert table.status == 0, table.err
    (header,) = [line for line in table.lines if "ENDPOINT" in line]
    lines = [line for line in table.lines if "http://" in line]
    assert len(lines) == 3
    for column in ("ID", "ENDPOINT", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "REACHABLE"):
        assert column in header
    assert sum("leader" in line for line in lines) == 1
    assert sum("follower" in line for line in lines) == 2


def test_status_with_no_member_answering_is_status_6(cli: Cli) -> None:
    (port,) = free_ports(1)
    result = cli("status", "--endpoints", f"http://127.0.0.1:{port}", "-w", "json")
    assert result.status == 6
    (row,) = json.loads(result.out)
    assert row["reachable"] is False
    assert row["errors"]
    assert "no endpoint answered" in result.err


def test_member_list_is_the_membership(cli: Cli, shared: ProcessCluster) -> None:
    members = _json(cli("member", "list", "-w", "json"))
    assert members == [
        {"id": i, "peer_url": shared.nodes[i].peer_url, "learner": False} for i in (1, 2, 3)
    ]
    table = cli("member", "list")
    assert table.status == 0
    assert sum("voter" in line for line in table.lines) == 3


def test_bad_member_ids_are_usage_errors(cli: Cli) -> None:
    for argv in (
        ("member", "remove", "0"),
        ("member", "promote", "x"),
        ("leader", "transfer", "-1"),
    ):
        assert cli(*argv).status == 2


@pytest.mark.deadline(90)
def test_learner_added_promoted_removed_and_leadership_moved(
    cluster_factory: ClusterFactory, offline_cli: Cli
) -> None:
    c: ProcessCluster = cluster_factory(3)
    c.start_all()
    c.wait_leader()
    ep = ("--endpoints", endpoints(c))
    four = c.add_node(4)

    added = offline_cli("member", "add", "4", four.peer_url, "--learner", *ep)
    assert added.status == 0, added.err
    assert added.text == f"member 4 added as a learner at {four.peer_url}\n"
    assert "raftdb serve --id 4 --join --cluster" in added.err
    c.start(4, join=True, cluster=c.peer_urls([1, 2, 3, 4]))
    listed = _json(offline_cli("member", "list", "-w", "json", *ep))
    assert {"id": 4, "peer_url": four.peer_url, "learner": True} in listed

    def promoted() -> Result | None:
        # 503 (exit 6) until the learner has caught up: nothing was done, try again.
        r = offline_cli("member", "promote", "4", *ep)
        return r if r.status != 6 else None

    result = wait_until("the learner to be promoted", promoted, 20.0, interval=0.2)
    assert result.status == 0, result.err
    assert result.text == "member 4 promoted to a voter\n"
    again = offline_cli("member", "promote", "4", *ep)
    assert (again.status, again.text) == (0, "member 4 is already a voter\n")
    assert not any(m["learner"] for m in _json(offline_cli("member", "list", "-w", "json", *ep)))

    leader = c.wait_leader()
    target = next(i for i in (1, 2, 3) if i != leader)
    moved = offline_cli("leader", "transfer", str(target), *ep, "-w", "json")
    assert _json(moved) == {"leader": target}
    assert c.status(target)["role"] == "leader"

    removed = offline_cli("member", "remove", "4", *ep)
    assert (removed.status, removed.text) == (0, "member 4 removed\n")
    assert [m["id"] for m in _json(offline_cli("member", "list", "-w", "json", *ep))] == [1, 2, 3]
    c.stop(4)
    missing = offline_cli("member", "remove", "4", *ep)
    assert missing.status == 3
    assert missing.err.startswith("raftdb: member_not_found")
    unknown = offline_cli("member", "promote", "9", *ep)
    assert unknown.status == 3

    # A member killed: still a row, not reachable, with the reason; the others answer.
    follower = next(i for i in (1, 2, 3) if i != c.wait_leader())
    c.kill(follower)
    rows = {r["id"]: r for r in _json(offline_cli("status", "-w", "json", *ep))}
    assert sorted(rows) == [1, 2, 3]
    dead = rows[follower]
    assert dead["reachable"] is False
    assert dead["endpoint"] == c.nodes[follower].api_url
    assert dead["role"] is None
    assert dead["errors"]
    assert all(rows[i]["reachable"] for i in rows if i != follower)
