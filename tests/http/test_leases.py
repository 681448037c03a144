"""Leases: grant, info, list, keep-alive, revoke, ``PUT ?lease=``, expiry, and every refusal."""

from __future__ import annotations

from typing import Any

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.kv.changes import MAX_LEASE_TTL
from raftdb.node.errors import ServiceUnavailableError
from tests.http.conftest import CLUSTER
from tests.http.fake_node import FakeNode, fail_with
from tests.http.helpers import TestClient, error_of


def grant(client: TestClient, ttl: Any = 10, **headers: str) -> str:
    response = client.post("/v1/leases", json={"ttl": ttl}, headers=headers)
    assert response.status_code == 201, response.text
    lease_id = response.json()["id"]
    assert isinstance(lease_id, str)
    return lease_id


class TestGrant:
    def test_grant_is_201_with_a_decimal_string_id(
        self, client: TestClient, node: FakeNode
    ) -> None:
        client.put("/v1/kv/x", content=b"1")
        response = client.post("/v1/leases", json={"ttl": 10})
        assert response.status_code == 201
        assert response.json() == {"id": "2", "ttl": 10}
        assert response.headers["location"] == "/v1/leases/2"
        assert node.last() == ("lease_grant", 10, None)

    def test_the_minimum_ttl_is_named(self, client: TestClient, node: FakeNode) -> None:
        assert grant(client, 2)
        response = client.post("/v1/leases", json={"ttl": 1})
        assert error_of(response, 400) == "bad_request"
        assert "from 2 (the minimum lease TTL" in response.json()["message"]
        assert len(node.lease_table) == 1  # the refused one was never asked for

    @pytest.mark.parametrize(
        ("tick_ms", "election_ticks", "minimum"), [(100, 10, 2), (100, 15, 3), (10, 10, 2)]
    )
    def test_the_minimum_follows_the_election_timeout(
        self, tick_ms: int, election_ticks: int, minimum: int
    ) -> None:
        config = NodeConfig(id=1, cluster=CLUSTER, tick_ms=tick_ms, election_ticks=election_ticks)
        assert config.min_lease_ttl == minimum
        with TestClient(create_api(FakeNode(), config)) as client:
            assert client.post("/v1/leases", json={"ttl": minimum}).status_code == 201
            response = client.post("/v1/leases", json={"ttl": minimum - 1})
            assert f"from {minimum} (the minimum" in response.json()["message"]

    @pytest.mark.parametrize(
        ("body", "words"),
        [
            ({}, "field 'ttl' is required"),
            ({"ttl": 10, "keys": []}, "unknown field 'keys'"),
            ({"ttl": "10"}, "whole number of seconds"),
            ({"ttl": 10.5}, "whole number of seconds"),
            ({"ttl": 10.0}, "whole number of seconds"),
            ({"ttl": True}, "whole number of seconds"),
            ({"ttl": None}, "whole number of seconds"),
            ({"ttl": 0}, "the minimum lease TTL"),
            ({"ttl": -5}, "the minimum lease TTL"),
            ({"ttl": MAX_LEASE_TTL + 1}, str(MAX_LEASE_TTL)),
        ],
    )
    def test_a_bad_body_is_400(
        self, client: TestClient, node: FakeNode, body: Any, words: str
    ) -> None:
        response = client.post("/v1/leases", json=body)
        assert error_of(response, 400) == "bad_request"
        assert words in response.json()["message"]
        assert node.calls == []

    @pytest.mark.parametrize("content", [b"{", b"[10]", b"ttl=10"])
    def test_bad_json_is_400(self, client: TestClient, content: bytes) -> None:
        assert error_of(client.post("/v1/leases", content=content), 400) == "bad_request"

    def test_an_idempotent_grant_answers_the_same_lease(
        self, client: TestClient, node: FakeNode
    ) -> None:
        first = grant(client, 10, **{"Idempotency-Key": "g-1"})
        assert grant(client, 10, **{"Idempotency-Key": "g-1"}) == first
        assert len(node.lease_table) == 1


class TestLease:
    def test_info_has_remaining_and_keys(self, client: TestClient, node: FakeNode) -> None:
        lease = grant(client, 10)
        assert client.put(f"/v1/kv/b?lease={lease}", content=b"1").status_code == 204
        assert client.put(f"/v1/kv/a?lease={lease}", content=b"2").status_code == 204
        assert client.put(f"/v1/kv/%FF?lease={lease}", content=b"3").status_code == 204
        node.advance(2.5)
        response = client.get(f"/v1/leases/{lease}")
        assert response.status_code == 200
        assert response.json() == {
            "id": lease,
            "ttl": 10,
            "remaining": 7.5,
            "keys": ["a", "b"],
            "keys_b64": ["/w=="],
        }
        assert node.last() == ("lease_info", int(lease), "linearizable")
        client.get(f"/v1/leases/{lease}?consistency=stale")
        assert node.last() == ("lease_info", int(lease), "stale")

    def test_a_plain_put_takes_the_key_off_its_lease(
        self, client: TestClient, node: FakeNode
    ) -> None:
        lease = grant(client)
        client.put(f"/v1/kv/a?lease={lease}", content=b"1")
        client.put("/v1/kv/a", content=b"2")
        assert client.get(f"/v1/leases/{lease}").json()["keys"] == []
        assert node.calls[-2][-1] == 0  # the put carried no lease

    def test_listing_is_by_id_without_keys(self, client: TestClient) -> None:
        first, second = grant(client, 5), grant(client, 20)
        client.put(f"/v1/kv/a?lease={first}", content=b"1")
        response = client.get("/v1/leases")
        assert response.json() == {
            "leases": [
                {"id": first, "ttl": 5, "remaining": 5.0},
                {"id": second, "ttl": 20, "remaining": 20.0},
            ]
        }
        assert client.get("/v1/leases?consistency=stale").status_code == 200
        assert error_of(client.get("/v1/leases?consistency=x"), 400) == "bad_request"

    def test_keepalive_renews(self, client: TestClient, node: FakeNode) -> None:
        lease = grant(client, 10)
        node.advance(9)
        response = client.post(f"/v1/leases/{lease}/keepalive")
        assert response.status_code == 200
        assert response.json() == {"id": lease, "ttl": 10}
        node.advance(9)  # 18 s after the grant, 9 after the renewal
        assert client.get(f"/v1/leases/{lease}").json()["remaining"] == 1.0

    def test_revoke_deletes_the_keys(self, client: TestClient, node: FakeNode) -> None:
        lease = grant(client)
        client.put(f"/v1/kv/a?lease={lease}", content=b"1")
        client.put("/v1/kv/other", content=b"2")
        assert client.delete(f"/v1/leases/{lease}").status_code == 204
        assert sorted(node.data) == [b"other"]
        assert error_of(client.get(f"/v1/leases/{lease}"), 404) == "lease_not_found"
        assert error_of(client.delete(f"/v1/leases/{lease}"), 404) == "lease_not_found"

    def test_an_expired_lease_is_404_and_its_keys_are_gone(
        self, client: TestClient, node: FakeNode
    ) -> None:
        lease = grant(client, 3)
        client.put(f"/v1/kv/a?lease={lease}", content=b"1")
        assert node.advance(3) == [int(lease)]
        assert error_of(client.get("/v1/kv/a"), 404) == "not_found"
        for response in (
            client.get(f"/v1/leases/{lease}"),
            client.post(f"/v1/leases/{lease}/keepalive"),
            client.delete(f"/v1/leases/{lease}"),
            client.put(f"/v1/kv/b?lease={lease}", content=b"1"),
        ):
            assert error_of(response, 404) == "lease_not_found"
        assert b"b" not in node.data

    def test_an_unknown_lease_on_put_is_404(self, client: TestClient, node: FakeNode) -> None:
        response = client.put("/v1/kv/a?lease=42", content=b"1")
        assert error_of(response, 404) == "lease_not_found"
        assert node.data == {}

    @pytest.mark.parametrize("lease", ["x", "0", "-1", "1.5", "", "99999999999999999999"])
    def test_a_bad_lease_id_is_400(self, client: TestClient, node: FakeNode, lease: str) -> None:
        for response in (
            client.put(f"/v1/kv/a?lease={lease}", content=b"1"),
            client.put(f"/a?lease={lease}", content=b"1"),
            client.get(f"/v1/leases/{lease}") if lease else client.get("/v1/leases/%20"),
            client.post(f"/v1/leases/{lease or '%20'}/keepalive"),
            client.delete(f"/v1/leases/{lease or '%20'}"),
        ):
            assert error_of(response, 400) == "bad_request"
            assert "lease id" in response.json()["message"]
        assert node.calls == []

    def test_query_parameters_the_routes_do_not_take_are_400(self, client: TestClient) -> None:
        lease = grant(client)
        assert error_of(client.post("/v1/leases?ttl=5", json={"ttl": 5}), 400) == "bad_request"
        assert error_of(client.post(f"/v1/leases/{lease}/keepalive?x"), 400) == "bad_request"
        assert error_of(client.delete(f"/v1/leases/{lease}?x"), 400) == "bad_request"
        assert error_of(client.get(f"/v1/leases/{lease}?x"), 400) == "bad_request"
        assert error_of(client.put("/v1/kv/a?lease=1&lease=1", content=b""), 400) == "bad_request"

    def test_node_errors_pass_through(self, client: TestClient, node: FakeNode) -> None:
        fail_with(node, ServiceUnavailableError("no leader", leader=2))
        response = client.post("/v1/leases", json={"ttl": 5})
        assert error_of(response, 503) == "unavailable"
        assert response.json()["leader"] == 2


def test_a_raftexample_put_takes_a_lease(node: FakeNode, config: NodeConfig) -> None:
    with TestClient(create_api(node, config)) as client:
        lease = grant(client)
        assert client.put(f"/k?lease={lease}", content=b"v").status_code == 204
        assert node.lease_table[int(lease)].keys == {b"k"}
