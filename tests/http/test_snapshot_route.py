"""``GET /v1/snapshot``: the node's snapshot stream as the body, its facts as headers,
errors before the stream as JSON, and the stream closed however the answer ends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.kv.snapshot import SnapshotAbortedError, SnapshotReader, check_stream
from raftdb.node.errors import ServiceUnavailableError, TooManyRequestsError
from tests.http.asgi import Call
from tests.http.conftest import CLUSTER
from tests.http.fake_node import FakeNode, fail_with, seed_changes
from tests.http.helpers import TestClient, error_of
from tests.http.test_auth import TOKENS, bearer, tokens_toml


def _seed(node: FakeNode, count: int) -> None:
    seed_changes(node, [(f"k{i:04d}".encode(), b"v" * 40 + bytes([i % 256])) for i in range(count)])


def test_the_body_is_the_snapshot_stream_and_the_headers_say_what_it_is(
    client: TestClient, node: FakeNode
) -> None:
    _seed(node, 300)  # several chunks of the fake's 4 KiB
    r = client.get("/v1/snapshot")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert "content-length" not in r.headers  # streamed: the size is not known beforehand
    assert r.headers["x-raftdb-snapshot-index"] == str(node.index)
    assert r.headers["x-raftdb-snapshot-term"] == str(node.term)
    assert r.headers["x-raftdb-snapshot-members"] == ",".join(
        f"{n}={url}" for n, url in enumerate(CLUSTER, start=1)
    )
    assert "x-raftdb-snapshot-learners" not in r.headers
    assert r.headers["content-disposition"] == f'attachment; filename="raftdb-{node.index}.snap"'
    info = check_stream([r.content])
    assert (info.index, info.term) == (node.index, node.term)
    reader = SnapshotReader([r.content])
    keys = [record for batch in reader.kv_batches() for record in batch]
    assert [k for k, *_ in keys] == sorted(node.data)
    assert all(node.data[k].value == v for k, v, *_ in keys)
    assert node.backups[-1].closed
    assert node.last() == ("snapshot",)


def test_learners_are_named(client: TestClient, node: FakeNode) -> None:
    client.post("/v1/cluster/members", json={"id": 4, "peer_url": "http://h:4", "learner": True})
    r = client.get("/v1/snapshot")
    assert r.headers["x-raftdb-snapshot-learners"] == "4"
    assert r.headers["x-raftdb-snapshot-members"].endswith(",4=http://h:4")


def test_an_empty_state_is_a_whole_snapshot(client: TestClient, node: FakeNode) -> None:
    r = client.get("/v1/snapshot")
    assert r.status_code == 200
    assert check_stream([r.content]).index == 0


def test_head_answers_the_headers_without_the_stream(client: TestClient, node: FakeNode) -> None:
    _seed(node, 5)
    r = client.head("/v1/snapshot")
    assert r.status_code == 200
    assert r.headers["x-raftdb-snapshot-index"] == str(node.index)
    assert r.content == b""
    assert node.backups[-1].closed


def test_a_query_parameter_is_refused(client: TestClient, node: FakeNode) -> None:
    r = client.get("/v1/snapshot?consistency=stale")
    assert error_of(r, 400) == "bad_request"
    assert node.backups == []


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (ServiceUnavailableError("no leader", retry_after=1), 503, "unavailable"),
        (TooManyRequestsError("2 backups already", retry_after=5), 429, "too_many_requests"),
    ],
)
def test_errors_before_the_stream_are_json(
    client: TestClient, node: FakeNode, exc: Exception, status: int, code: str
) -> None:
    fail_with(node, exc)
    r = client.get("/v1/snapshot")
    assert error_of(r, status) == code
    assert "retry-after" in r.headers


def test_a_stream_that_fails_midway_is_cut_short_and_closed(node: FakeNode) -> None:
    """The answer has started: no error answer is possible, so the error goes on to the
    server (which cuts the connection) and the body lacks its end."""
    _seed(node, 300)
    node.snapshot_break_after = 2
    app = create_api(node, NodeConfig(id=1, cluster=CLUSTER))

    async def scenario() -> None:
        call = Call(app, "GET", "/v1/snapshot")
        with pytest.raises(SnapshotAbortedError):
            await call.finished()
        assert call.status == 200
        assert not call.complete
        assert len(call.body) == 2 * node.snapshot_chunk_size
        assert node.backups[-1].closed

    asyncio.run(scenario())


def test_a_client_that_goes_away_closes_the_stream(node: FakeNode) -> None:
    _seed(node, 300)
    app = create_api(node, NodeConfig(id=1, cluster=CLUSTER))

    async def scenario() -> None:
        call = Call(app, "GET", "/v1/snapshot")
        await call.until("the first chunk", lambda: len(call.body) > 0)
        call.disconnect()
        await call.finished()  # quietly: nobody is left to tell
        assert node.backups[-1].closed

    asyncio.run(scenario())


@pytest.fixture
def secured(node: FakeNode, tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "tokens.toml"
    path.write_text(tokens_toml(TOKENS))
    config = NodeConfig(id=1, cluster=CLUSTER, tokens_file=str(path))
    with TestClient(create_api(node, config)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, 401), ("reader", 403), ("writer", 403), ("app-writer", 403), ("admin", 200)],
)
def test_a_snapshot_needs_the_admin_role(
    secured: TestClient, node: FakeNode, token: str | None, status: int
) -> None:
    r = secured.get("/v1/snapshot", headers=bearer(token) if token else {})
    assert r.status_code == status
    assert len(node.backups) == (1 if status == 200 else 0)


def test_the_openapi_document_describes_it(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/snapshot"]["get"]
    assert operation["operationId"] == "snapshot"
    ok = operation["responses"]["200"]
    assert "application/octet-stream" in ok["content"]
    assert {"X-Raftdb-Snapshot-Index", "X-Raftdb-Snapshot-Term"} <= set(ok["headers"])
