"""``GET /v1/kv``: prefix listings, values, pagination, parameters."""

from __future__ import annotations

import base64

import pytest

from raftdb.http.kv import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT
from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient, error_of


def _fill(client: TestClient, *keys: str) -> None:
    for key in keys:
        assert client.put(f"/v1/kv/{key}", content=f"value of {key}".encode()).status_code == 204


def test_lists_keys_sorted_without_values(client: TestClient, node: FakeNode) -> None:
    _fill(client, "b", "a", "c")
    response = client.get("/v1/kv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-raftdb-consistency"] == "linearizable"
    assert "link" not in response.headers
    assert response.json() == [
        {"key": "a", "create_index": 2, "mod_index": 2},
        {"key": "b", "create_index": 1, "mod_index": 1},
        {"key": "c", "create_index": 3, "mod_index": 3},
    ]
    assert node.last() == ("range", b"", None, DEFAULT_LIST_LIMIT + 1, "linearizable")


def test_prefix_and_values(client: TestClient) -> None:
    _fill(client, "app/1", "app/2", "apple", "b")
    response = client.get("/v1/kv?prefix=app/&values=true")
    assert response.json() == [
        {"key": "app/1", "create_index": 1, "mod_index": 1, "value": "value of app/1"},
        {"key": "app/2", "create_index": 2, "mod_index": 2, "value": "value of app/2"},
    ]


def test_empty_listing(client: TestClient) -> None:
    assert client.get("/v1/kv?prefix=none").json() == []


def test_undecodable_keys_and_values_are_base64_and_flagged(client: TestClient) -> None:
    client.put("/v1/kv/%FFkey", content=b"\x80\x81")
    client.put("/v1/kv/text", content="naïve".encode())
    entries = client.get("/v1/kv?values=1").json()
    assert entries[0] == {"key": "text", "create_index": 2, "mod_index": 2, "value": "naïve"}
    raw = entries[1]
    assert raw["key_encoding"] == "base64"
    assert base64.b64decode(raw["key"]) == b"\xffkey"
    assert raw["value_encoding"] == "base64"
    assert base64.b64decode(raw["value"]) == b"\x80\x81"


def test_percent_encoded_prefix_is_bytes(client: TestClient, node: FakeNode) -> None:
    client.put("/v1/kv/%FFa", content=b"1")
    client.get("/v1/kv?prefix=%FF")
    assert node.last()[1] == b"\xff"


def test_pagination_with_limit_start_and_link(client: TestClient, node: FakeNode) -> None:
    _fill(client, "k1", "k2", "k3", "k4", "k5")
    first = client.get("/v1/kv?prefix=k&limit=2&values=true&consistency=stale")
    assert [entry["key"] for entry in first.json()] == ["k1", "k2"]
    assert first.headers["x-raftdb-consistency"] == "stale"
    link = first.headers["link"]
    assert link.endswith('>; rel="next"')
    url = link[1 : link.index(">")]
    assert "start=k2%00" in url
    assert "limit=2" in url
    assert "values=true" in url
    seen = []
    while True:
        page = client.get(url)
        assert page.status_code == 200
        seen += [entry["key"] for entry in page.json()]
        if "link" not in page.headers:
            break
        url = page.headers["link"][1 : page.headers["link"].index(">")]
    assert seen == ["k3", "k4", "k5"]
    assert node.last()[4] == "stale"


def test_start_is_inclusive(client: TestClient) -> None:
    _fill(client, "a", "b", "c")
    assert [entry["key"] for entry in client.get("/v1/kv?start=b").json()] == ["b", "c"]


def test_exact_limit_has_no_next_link(client: TestClient) -> None:
    _fill(client, "a", "b")
    response = client.get("/v1/kv?limit=2")
    assert len(response.json()) == 2
    assert "link" not in response.headers


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=",
        f"limit={MAX_LIST_LIMIT + 1}",
        "limit=1.5",
        "values=maybe",
        "consistency=serializable",
        "prefx=a",
        "prefix=a&prefix=b",
    ],
)
def test_bad_parameters_are_400(client: TestClient, node: FakeNode, query: str) -> None:
    response = client.get(f"/v1/kv?{query}")
    assert error_of(response, 400) == "bad_request"
    assert node.calls == []


def test_max_limit_is_accepted(client: TestClient) -> None:
    assert client.get(f"/v1/kv?limit={MAX_LIST_LIMIT}").status_code == 200
