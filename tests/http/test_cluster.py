"""``/v1/cluster/members``, ``/v1/cluster/leader`` and ``/v1/status``."""

from __future__ import annotations

from typing import Any

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient, error_of

URL4 = "http://127.0.0.1:42379"


def test_list_members(client: TestClient) -> None:
    response = client.get("/v1/cluster/members")
    assert response.status_code == 200
    assert response.json() == [
        {"id": 1, "peer_url": "http://127.0.0.1:12379", "learner": False},
        {"id": 2, "peer_url": "http://127.0.0.1:22379", "learner": False},
        {"id": 3, "peer_url": "http://127.0.0.1:32379", "learner": False},
    ]


def test_add_voter(client: TestClient, node: FakeNode) -> None:
    response = client.post("/v1/cluster/members", json={"id": 4, "peer_url": URL4})
    assert response.status_code == 201
    assert response.json() == {"id": 4, "peer_url": URL4, "learner": False}
    assert response.headers["location"] == "/v1/cluster/members/4"
    assert node.last() == ("add_member", 4, URL4, False)
    assert {"id": 4, "peer_url": URL4, "learner": False} in client.get("/v1/cluster/members").json()


def test_add_learner_then_promote(client: TestClient, node: FakeNode) -> None:
    response = client.post(
        "/v1/cluster/members", json={"id": 4, "peer_url": URL4 + "/", "learner": True}
    )
    assert response.status_code == 201
    assert response.json()["learner"] is True
    assert node.last() == ("add_member", 4, URL4, True)
    response = client.post("/v1/cluster/members", json={"id": 4, "peer_url": URL4})
    assert response.json()["learner"] is False


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"peer_url": "http://a:1"}', "'id'"),
        (b'{"id": 4}', "'peer_url'"),
        (b'{"id": 0, "peer_url": "http://a:1"}', "'id'"),
        (b'{"id": true, "peer_url": "http://a:1"}', "'id'"),
        (b'{"id": "4", "peer_url": "http://a:1"}', "'id'"),
        (b'{"id": 4.5, "peer_url": "http://a:1"}', "'id'"),
        (b'{"id": 4, "peer_url": 5}', "'peer_url'"),
        (b'{"id": 4, "peer_url": "https://a:1"}', "'peer_url'"),
        (b'{"id": 4, "peer_url": "http://a"}', "'peer_url'"),
        (b'{"id": 4, "peer_url": "http://a:1/path"}', "'peer_url'"),
        (b'{"id": 4, "peer_url": "http://a:99999"}', "'peer_url'"),
        (b'{"id": 4, "peer_url": "http://a:1", "learner": "yes"}', "'learner'"),
        (b'{"id": 4, "peer_url": "http://a:1", "voter": true}', "'voter'"),
        (b"[" * 100_000 + b"]" * 100_000, "too_large"),
    ],
)
def test_add_member_bad_bodies_are_400(
    client: TestClient, node: FakeNode, body: bytes, needle: str
) -> None:
    response = client.post("/v1/cluster/members", content=body)
    if needle == "too_large":
        assert error_of(response, 413) == "too_large"
    else:
        assert error_of(response, 400) == "bad_request"
        assert needle in response.json()["message"]
    assert node.calls == []


def test_deeply_nested_json_is_400(node: FakeNode) -> None:
    # Under the default 1.5 MiB limit, nesting deep enough to exhaust the recursion limit.
    config = NodeConfig(id=1, cluster=["http://127.0.0.1:12379"])
    with TestClient(create_api(node, config)) as client:
        response = client.post("/v1/cluster/members", content=b"[" * 200_000 + b"]" * 200_000)
    assert error_of(response, 400) == "bad_request"


def test_add_member_conflict_from_node_is_400(client: TestClient) -> None:
    response = client.post("/v1/cluster/members", json={"id": 2, "peer_url": URL4})
    assert error_of(response, 400) == "bad_request"


def test_body_over_max_request_bytes_is_413(client: TestClient, node: FakeNode) -> None:
    body = b'{"id": 4, "peer_url": "http://a:1", "pad": "' + b"x" * 3000 + b'"}'
    assert error_of(client.post("/v1/cluster/members", content=body), 413) == "too_large"

    def chunks() -> Any:
        yield body

    assert error_of(client.post("/v1/cluster/members", content=chunks()), 413) == "too_large"
    assert node.calls == []


def test_remove_member(client: TestClient, node: FakeNode) -> None:
    assert client.delete("/v1/cluster/members/3").status_code == 204
    assert node.last() == ("remove_member", 3)
    assert [m["id"] for m in client.get("/v1/cluster/members").json()] == [1, 2]


def test_remove_unknown_member_is_404(client: TestClient) -> None:
    response = client.delete("/v1/cluster/members/9")
    assert error_of(response, 404) == "member_not_found"


@pytest.mark.parametrize("member", ["abc", "0", "-1", "1.5", "%C2%B2"])
def test_remove_bad_member_id_is_400(client: TestClient, node: FakeNode, member: str) -> None:
    assert error_of(client.delete(f"/v1/cluster/members/{member}"), 400) == "bad_request"
    assert node.calls == []


def test_transfer_leader(client: TestClient, node: FakeNode) -> None:
    response = client.post("/v1/cluster/leader", json={"id": 2})
    assert response.status_code == 200
    assert response.json() == {"leader": 2}
    assert node.leader == 2
    assert client.get("/v1/status").json()["role"] == "follower"


@pytest.mark.parametrize(
    "body", [b"{}", b'{"id": "2"}', b'{"id": 0}', b'{"id": 2, "force": true}', b"nope", b"2"]
)
def test_transfer_leader_bad_bodies_are_400(
    client: TestClient, node: FakeNode, body: bytes
) -> None:
    assert error_of(client.post("/v1/cluster/leader", content=body), 400) == "bad_request"
    assert node.calls == []


def test_transfer_to_unknown_member_is_404(client: TestClient) -> None:
    response = client.post("/v1/cluster/leader", json={"id": 9})
    assert error_of(response, 404) == "member_not_found"


def test_transfer_to_learner_is_400(client: TestClient) -> None:
    client.post("/v1/cluster/members", json={"id": 4, "peer_url": URL4, "learner": True})
    response = client.post("/v1/cluster/leader", json={"id": 4})
    assert error_of(response, 400) == "bad_request"


def test_status(client: TestClient) -> None:
    client.put("/v1/kv/k", content=b"v")
    response = client.get("/v1/status")
    assert response.status_code == 200
    assert response.json() == {
        "id": 1,
        "role": "leader",
        "leader": 1,
        "term": 3,
        "commit_index": 1,
        "applied_index": 1,
        "first_index": 1,
        "last_index": 1,
        "members": [
            {"id": 1, "peer_url": "http://127.0.0.1:12379", "learner": False},
            {"id": 2, "peer_url": "http://127.0.0.1:22379", "learner": False},
            {"id": 3, "peer_url": "http://127.0.0.1:32379", "learner": False},
        ],
        "alarms": [],
        "sync": True,
        "cluster_id": None,  # the fake node records no identity
    }
