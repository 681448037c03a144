"""Keys are any bytes, in every position of the path: found by schemathesis."""

from __future__ import annotations

import pytest

from tests.http.helpers import TestClient

# Before the fix, a key holding a newline (%0A) matched no route: 404 "no endpoint".
KEYS = ["a%0Ab", "%0A", "x%0D%0Ay", "tab%09", "%00nul", "end%0A"]


@pytest.mark.parametrize("key", KEYS)
def test_a_key_with_control_bytes_is_a_key(client: TestClient, key: str) -> None:
    assert client.put(f"/v1/kv/{key}", content=b"v").status_code == 204
    r = client.get(f"/v1/kv/{key}")
    assert (r.status_code, r.content) == (200, b"v")
    assert client.delete(f"/v1/kv/{key}").status_code == 204
    assert client.get(f"/v1/kv/{key}").status_code == 404


@pytest.mark.parametrize("key", KEYS)
def test_a_raftexample_key_with_control_bytes_is_a_key(client: TestClient, key: str) -> None:
    assert client.put(f"/{key}", content=b"v").status_code == 204
    r = client.get(f"/{key}")
    assert (r.status_code, r.content) == (200, b"v")
    assert client.get(f"/v1/kv/{key}").content == b"v"


def test_a_trailing_newline_does_not_reach_a_fixed_route(client: TestClient) -> None:
    """Python's ``$`` matches before a final newline: ``/healthz%0A`` was the health
    check and ``/%0A`` the index, instead of the raftexample keys they are."""
    assert client.put("/healthz%0A", content=b"h").status_code == 204
    assert client.get("/healthz%0A").content == b"h"
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.get("/v1/status%0A")
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "not_found"
