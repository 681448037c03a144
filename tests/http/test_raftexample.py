"""etcd raftexample's API, verbatim, and the root paths it may not use."""

from __future__ import annotations

import pytest

from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient, error_of


def test_readme_walkthrough(client: TestClient, node: FakeNode) -> None:
    # curl -L http://127.0.0.1:12380/my-key -XPUT -d bar
    response = client.put(
        "/my-key", content=b"bar", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 204
    assert response.headers["etag"] == '"1"'
    # curl -L http://127.0.0.1:12380/my-key
    response = client.get("/my-key")
    assert response.status_code == 200
    assert response.content == b"bar"
    assert response.headers["x-raftdb-consistency"] == "linearizable"
    # curl -L http://127.0.0.1:12380/4 -XPOST -d http://127.0.0.1:42379
    response = client.post(
        "/4",
        content=b"http://127.0.0.1:42379",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 204
    assert node.last() == ("add_member", 4, "http://127.0.0.1:42379", False)
    # curl -L http://127.0.0.1:12380/3 -XDELETE
    assert client.delete("/3").status_code == 204
    assert node.last() == ("remove_member", 3)
    assert [m["id"] for m in client.get("/v1/cluster/members").json()] == [1, 2, 4]


def test_same_store_as_v1(client: TestClient) -> None:
    client.put("/shared", content=b"1")
    assert client.get("/v1/kv/shared").content == b"1"
    client.put("/v1/kv/nested/key", content=b"2")
    assert client.get("/nested/key").content == b"2"


def test_stale_read_and_conditions_work_on_raftexample_paths(client: TestClient) -> None:
    client.put("/k", content=b"1")
    assert client.get("/k?consistency=stale").headers["x-raftdb-consistency"] == "stale"
    assert error_of(client.put("/k", content=b"2", headers={"if-none-match": "*"}), 412) == (
        "condition_failed"
    )


def test_missing_key_is_404(client: TestClient) -> None:
    assert error_of(client.get("/missing"), 404) == "not_found"


def test_post_body_is_trimmed(client: TestClient, node: FakeNode) -> None:
    assert client.post("/4", content=b"  http://127.0.0.1:42379/\n").status_code == 204
    assert node.last() == ("add_member", 4, "http://127.0.0.1:42379", False)


@pytest.mark.parametrize("body", [b"", b"not a url", b"https://127.0.0.1:42379", b"\xff"])
def test_post_bad_peer_url_is_400(client: TestClient, node: FakeNode, body: bytes) -> None:
    response = client.post("/4", content=body)
    assert error_of(response, 400) == "bad_request"
    assert "peer URL" in response.json()["message"]
    assert node.calls == []


@pytest.mark.parametrize("method", ["POST", "DELETE"])
@pytest.mark.parametrize("path", ["/foo", "/0", "/-1", "/4/5"])
def test_member_paths_need_an_id(
    client: TestClient, node: FakeNode, method: str, path: str
) -> None:
    response = client.request(method, path, content=b"http://127.0.0.1:42379")
    assert error_of(response, 400) == "bad_request"
    assert "member id" in response.json()["message"]
    assert node.calls == []


def test_delete_of_a_key_path_explains_the_v1_route(client: TestClient) -> None:
    response = client.delete("/my-key")
    assert "DELETE /v1/kv/<key>" in response.json()["message"]


def test_remove_unknown_member_is_404(client: TestClient) -> None:
    assert error_of(client.delete("/9"), 404) == "member_not_found"


def test_post_over_the_request_limit_is_413(client: TestClient) -> None:
    assert error_of(client.post("/4", content=b"x" * 2001), 413) == "too_large"


def test_root_paths_put_is_reserved(client: TestClient, node: FakeNode) -> None:
    paths = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/ui", "/v1/status")
    for path in paths:
        response = client.put(path, content=b"v")
        assert error_of(response, 400) == "reserved_path", path
        message = response.json()["message"]
        assert "reserved" in message
        assert f"/v1/kv{path}" in message
    assert node.calls == []


@pytest.mark.parametrize(
    "path", ["/healthz/x", "/docs/a/b", "/openapi.json/x", "/metrics/", "/readyz/", "/ui/x"]
)
def test_keys_under_reserved_roots_are_400(client: TestClient, node: FakeNode, path: str) -> None:
    for method in ("GET", "PUT", "POST", "DELETE"):
        response = client.request(method, path, content=b"v")
        assert error_of(response, 400) == "reserved_path", (method, path)
    assert node.calls == []


@pytest.mark.parametrize("path", ["/v1", "/v1/", "/v1/nothing", "/v1/kv2/x", "/v1/cluster"])
def test_unknown_v1_endpoints_are_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert error_of(response, 404) == "not_found"
    assert "no endpoint" in response.json()["message"]


def test_reserved_lookalikes_are_keys(client: TestClient, node: FakeNode) -> None:
    for path in ("/v1x", "/healthzz", "/docs.txt", "/metrics2/a", "/ui.html"):
        assert client.put(path, content=b"v").status_code == 204, path
    assert sorted(node.data) == [b"docs.txt", b"healthzz", b"metrics2/a", b"ui.html", b"v1x"]


def test_unsupported_method_is_405(client: TestClient) -> None:
    response = client.patch("/my-key", content=b"v")
    assert error_of(response, 405) == "method_not_allowed"


def test_root_put_has_no_key(client: TestClient) -> None:
    assert error_of(client.put("/", content=b"v"), 400) == "bad_request"
