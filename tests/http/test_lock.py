"""``POST``/``DELETE /v1/lock/{name}``: acquire, fence, wait, release, and the refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from tests.http.asgi import Call
from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient, error_of


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def lease(client: TestClient) -> str:
    lease_id = client.post("/v1/leases", json={"ttl": 10}).json()["id"]
    assert isinstance(lease_id, str)
    return lease_id


class TestAcquire:
    def test_the_first_contender_holds_it_with_a_fence(
        self, client: TestClient, node: FakeNode
    ) -> None:
        mine = lease(client)
        response = client.post("/v1/lock/jobs/nightly?wait=5s", json={"lease": mine})
        assert response.status_code == 200
        assert response.json() == {"key": "jobs/nightly/0000000000000001", "fence": 2}
        assert node.calls[-1] == ("lock", b"jobs/nightly", 1, 5.0)
        assert node.data[b"jobs/nightly/0000000000000001"].create_index == 2
        # The same lease asking again holds it already (its key is reused).
        again = client.post("/v1/lock/jobs/nightly", json={"lease": int(mine)})
        assert again.json()["fence"] == 2

    def test_the_next_holder_waits_and_gets_a_larger_fence(
        self, node: FakeNode, config: NodeConfig
    ) -> None:
        async def scenario() -> None:
            app = create_api(node, config)
            first = (await node.lease_grant(10)).id
            second = (await node.lease_grant(10)).id
            held = await node.lock(b"l", first, 1.0)
            call = Call(app, "POST", "/v1/lock/l", body=json.dumps({"lease": str(second)}).encode())
            await call.until("it waits", lambda: bool(node.waiters))
            assert not call.task.done()
            await node.unlock(b"l", first)
            await call.finished()
            assert call.status == 200
            answer = json.loads(call.body)
            assert answer["fence"] > held.fence
            assert answer["key"] == f"l/{second:016x}"

        run(scenario)

    def test_a_lease_that_ends_releases_it(self, node: FakeNode, config: NodeConfig) -> None:
        async def scenario() -> None:
            app = create_api(node, config)
            first = (await node.lease_grant(3)).id
            second = (await node.lease_grant(10)).id
            await node.lock(b"l", first, 1.0)
            call = Call(app, "POST", "/v1/lock/l", body=json.dumps({"lease": second}).encode())
            await call.until("it waits", lambda: bool(node.waiters))
            node.advance(3)  # the first holder stopped renewing
            await call.finished()
            assert call.status == 200

        run(scenario)

    def test_not_acquired_in_time_is_408_and_the_key_is_gone(
        self, client: TestClient, node: FakeNode
    ) -> None:
        holder, waiter = lease(client), lease(client)
        assert client.post("/v1/lock/l", json={"lease": holder}).status_code == 200
        response = client.post("/v1/lock/l?wait=10ms", json={"lease": waiter})
        assert error_of(response, 408) == "request_timeout"
        assert "not acquired within" in response.json()["message"]
        assert sorted(node.data) == [f"l/{int(holder):016x}".encode()]

    def test_a_client_that_leaves_withdraws(self, node: FakeNode, config: NodeConfig) -> None:
        async def scenario() -> None:
            app = create_api(node, config)
            holder = (await node.lease_grant(10)).id
            waiter = (await node.lease_grant(10)).id
            await node.lock(b"l", holder, 1.0)
            call = Call(app, "POST", "/v1/lock/l", body=json.dumps({"lease": waiter}).encode())
            await call.until("it waits", lambda: f"l/{waiter:016x}".encode() in node.data)
            call.disconnect()
            await call.finished()
            assert sorted(node.data) == [f"l/{holder:016x}".encode()]
            assert node.waiters == []

        run(scenario)


class TestRelease:
    def test_unlock_is_204_then_404(self, client: TestClient, node: FakeNode) -> None:
        mine = lease(client)
        client.post("/v1/lock/l", json={"lease": mine})
        assert client.delete(f"/v1/lock/l?lease={mine}").status_code == 204
        assert node.data == {}
        response = client.delete(f"/v1/lock/l?lease={mine}")
        assert error_of(response, 404) == "lock_not_held"


class TestRefusals:
    @pytest.mark.parametrize(
        ("body", "words"),
        [
            (b"{}", "field 'lease' is required"),
            (b'{"lease": "1", "ttl": 5}', "unknown field 'ttl'"),
            (b'{"lease": "one"}', "must be a lease id"),
            (b'{"lease": 0}', "must be a lease id"),
            (b'{"lease": null}', "must be a lease id"),
            (b"{", "not valid JSON"),
            (b"[1]", "must be a JSON object"),
        ],
    )
    def test_a_bad_body_is_400(
        self, client: TestClient, node: FakeNode, body: bytes, words: str
    ) -> None:
        response = client.post("/v1/lock/l", content=body)
        assert error_of(response, 400) == "bad_request"
        assert words in response.json()["message"]
        assert node.calls == []

    @pytest.mark.parametrize(
        ("method", "path", "words"),
        [
            ("POST", "/v1/lock/l?wait=forever", "wait must be a duration"),
            ("POST", "/v1/lock/l?lease=1", "unknown query parameter 'lease'"),
            ("DELETE", "/v1/lock/l", "query parameter 'lease' is required"),
            ("DELETE", "/v1/lock/l?lease=x", "must be a lease id"),
            ("DELETE", "/v1/lock/l?lease=1&wait=1s", "unknown query parameter 'wait'"),
            ("POST", "/v1/lock/", "the lock name is empty"),
        ],
    )
    def test_bad_parameters_are_400(
        self, client: TestClient, node: FakeNode, method: str, path: str, words: str
    ) -> None:
        response = client.request(method, path, content=b'{"lease": "1"}')
        assert error_of(response, 400) == "bad_request"
        assert words in response.json()["message"]
        assert node.calls == []

    def test_a_name_too_long_for_its_keys_is_413(self, client: TestClient) -> None:
        # conftest: max_key_bytes 64; a contender's key adds 17 bytes to the name
        assert client.post("/v1/lock/" + "n" * 47, json={"lease": "1"}).status_code == 404
        response = client.post("/v1/lock/" + "n" * 48, json={"lease": "1"})
        assert error_of(response, 413) == "too_large"
        assert "max_key_bytes" in response.json()["message"]

    def test_an_unknown_lease_is_404(self, client: TestClient, node: FakeNode) -> None:
        response = client.post("/v1/lock/l", json={"lease": "9"})
        assert error_of(response, 404) == "lease_not_found"
        assert node.data == {}

    def test_names_are_bytes(self, client: TestClient, node: FakeNode) -> None:
        mine = lease(client)
        response = client.post("/v1/lock/a%2Fb%FF", json={"lease": mine})
        assert response.json()["key_b64"]
        assert node.calls[-1][1] == b"a/b\xff"
