"""``GET /v1/cluster/status`` over the fake node: the JSON contract and its schema.

The rules that fill the fields (what a leader knows, what a follower does
not) are the node's, tested against real nodes in tests/node; here the
route's side: every key always present, in the shape the OpenAPI document
declares, errors as JSON.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.http.openapi import openapi_schema
from raftdb.node.errors import NotReadyError
from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient, error_of

TOP_KEYS = {
    "id",
    "cluster_id",
    "role",
    "leader",
    "term",
    "commit_index",
    "applied_index",
    "first_index",
    "last_index",
    "view",
    "members",
    "leader_changes",
    "counters",
    "at",
}
MEMBER_KEYS = {
    "id",
    "peer_url",
    "learner",
    "role",
    "self",
    "match_index",
    "lag",
    "reachable",
    "last_contact_s",
}


def _check_schema(answer: Any) -> None:
    """``answer`` is valid against the document's ``ClusterStatus``."""
    document = openapi_schema()
    schema = {"$ref": "#/components/schemas/ClusterStatus", "components": document["components"]}
    validator = jsonschema_rs.validator_for(schema)
    errors = [str(e) for e in validator.iter_errors(answer)]
    assert errors == []


def test_a_leaders_answer(client: TestClient, node: FakeNode) -> None:
    client.put("/v1/kv/a", content=b"1")
    response = client.get("/v1/cluster/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert list(data) == [  # the order of the spec, as asdict writes it
        "id",
        "cluster_id",
        "role",
        "leader",
        "term",
        "commit_index",
        "applied_index",
        "first_index",
        "last_index",
        "view",
        "members",
        "leader_changes",
        "counters",
        "at",
    ]
    assert set(data) == TOP_KEYS
    assert data["view"] == "leader"
    assert data["leader"] == 1
    assert data["cluster_id"] == "0123456789abcdef"
    assert [m["id"] for m in data["members"]] == [1, 2, 3]
    for member in data["members"]:
        assert set(member) == MEMBER_KEYS
        assert isinstance(member["match_index"], int)
    assert data["members"][0]["self"] is True
    assert data["members"][0]["role"] == "leader"
    assert data["leader_changes"] == [{"term": 3, "leader": 1, "at": 1.7e9}]
    assert data["counters"] == {"writes": 1, "reads_linearizable": 0, "reads_stale": 0}
    assert isinstance(data["at"], float)
    _check_schema(data)


def test_a_followers_answer_has_nulls(client: TestClient, node: FakeNode) -> None:
    node.leader = 2
    data = client.get("/v1/cluster/status").json()
    assert data["view"] == "member"
    assert data["role"] == "follower"
    me, leader, other = data["members"]
    assert (me["self"], me["match_index"], me["reachable"], me["last_contact_s"]) == (
        True,
        None,
        True,
        None,
    )
    assert leader["role"] == "leader"
    assert leader["reachable"] is True
    assert (other["match_index"], other["lag"], other["reachable"]) == (None, None, None)
    _check_schema(data)


def test_no_leader_is_null(client: TestClient, node: FakeNode) -> None:
    node.leader = 0
    node.cluster_id = None
    data = client.get("/v1/cluster/status").json()
    assert data["leader"] is None
    assert data["cluster_id"] is None
    _check_schema(data)


@pytest.mark.parametrize("fast_path", [True, False])
def test_counters_follow_the_reads(node: FakeNode, config: NodeConfig, fast_path: bool) -> None:
    with TestClient(create_api(node, config, fast_path=fast_path)) as client:
        client.put("/v1/kv/k", content=b"v")
        client.get("/v1/kv/k")
        client.get("/v1/kv/k?consistency=stale")
        client.get("/k")
        client.get("/v1/kv?prefix=")
        client.get("/v1/kv?prefix=&consistency=stale")
        counters = client.get("/v1/cluster/status").json()["counters"]
    assert counters == {"writes": 1, "reads_linearizable": 3, "reads_stale": 2}


def test_a_starting_node_is_503(client: TestClient, node: FakeNode) -> None:
    node.fail = NotReadyError("the node is starting")
    response = client.get("/v1/cluster/status")
    assert error_of(response, 503) == "not_ready"


def test_the_document_describes_it(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/cluster/status"]["get"]
    assert operation["operationId"] == "cluster_status"
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ClusterStatus"}
    component = document["components"]["schemas"]["ClusterStatus"]
    assert set(component["required"]) == TOP_KEYS
    member = document["components"]["schemas"]["ClusterMember"]
    assert set(member["required"]) == MEMBER_KEYS
    assert member["properties"]["match_index"]["type"] == ["integer", "null"]
    assert member["properties"]["reachable"]["type"] == ["boolean", "null"]
    assert document["components"]["schemas"]["LeaderChange"]["properties"]["leader"]["type"] == [
        "integer",
        "null",
    ]
