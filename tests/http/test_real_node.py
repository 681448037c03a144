"""The issue-12 routes over a real ``raftdb.node.Node`` (one member, memory plugins).

The rest of tests/http runs the API over the fake node; this checks that the
real one answers the routes as the fake does where it matters: the JSON
shapes, the errors, a watch's stream and its end, blocking reads, locks and
their fence. The requests run on the node's own loop (tests.http.asgi).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from raftdb.http.app import create_api
from raftdb.node import Node
from tests.http.asgi import Call, eventually
from tests.node.cluster import LocalCluster


def run(tmp_path: Path, body: Callable[[Node, Any], Awaitable[None]], **settings: Any) -> None:
    cluster = LocalCluster(tmp_path, 1, "memory", **settings)

    async def main(c: LocalCluster) -> None:
        node = c.nodes[1]
        await body(node, create_api(node, node.config))

    cluster.run(main)


async def request(app: Any, method: str, path: str, body: Any = None) -> Call:
    """One complete request; the answer's status, headers and body are on the call."""
    target, _, query = path.partition("?")
    data = b"" if body is None else json.dumps(body).encode()
    call = Call(app, method, target, query=query.encode(), body=data)
    await call.finished()
    return call


def json_of(call: Call) -> Any:
    return json.loads(call.body)


def test_txn_leases_and_a_watch(tmp_path: Path) -> None:
    async def body(node: Node, app: Any) -> None:
        start = await request(app, "GET", "/v1/kv?prefix=")
        since = int(start.headers[b"x-raftdb-index"])
        watch = Call(app, "GET", "/v1/watch", query=f"prefix=app/&since={since}".encode())
        await watch.until("the stream starts", lambda: watch.status is not None)
        assert watch.status == 200

        short = await request(app, "POST", "/v1/leases", {"ttl": 1})
        assert short.status == 400
        assert "the minimum lease TTL" in json_of(short)["message"]
        granted = await request(app, "POST", "/v1/leases", {"ttl": 30})
        assert granted.status == 201
        lease = json_of(granted)["id"]
        assert isinstance(lease, str)

        txn = await request(
            app,
            "POST",
            "/v1/txn",
            {
                "compare": [{"key": "app/a", "target": "exists", "op": "==", "value": False}],
                "success": [
                    {"op": "put", "key": "app/a", "value": "1", "lease": lease},
                    {"op": "put", "key": "app/b", "value_b64": "/w=="},
                    {"op": "get", "key": "app/a"},
                    {"op": "list", "prefix": "app/"},
                ],
            },
        )
        assert txn.status == 200, txn.body
        answer = json_of(txn)
        assert answer["succeeded"] is True
        index = answer["index"]
        put, _, got, listed = answer["results"]
        assert put == {"op": "put", "mod_index": index, "create_index": index, "prev_mod_index": 0}
        assert got["value"] == "1"
        assert [k.get("key") for k in listed["keys"]] == ["app/a", "app/b"]

        unknown = await request(
            app,
            "POST",
            "/v1/txn",
            {"success": [{"op": "put", "key": "x", "value": "", "lease": "999999"}]},
        )
        assert unknown.status == 404
        assert json_of(unknown)["error"] == "lease_not_found"

        info = await request(app, "GET", f"/v1/leases/{lease}")
        assert json_of(info)["keys"] == ["app/a"]
        assert 0 < json_of(info)["remaining"] <= 30
        assert (await request(app, "POST", f"/v1/leases/{lease}/keepalive")).status == 200
        assert (await request(app, "DELETE", f"/v1/leases/{lease}")).status == 204
        gone = await request(app, "GET", f"/v1/leases/{lease}")
        assert (gone.status, json_of(gone)["error"]) == (404, "lease_not_found")

        events = await watch.events(3)
        assert [(e["id"], e["event"]) for e in events] == [
            (str(index), "put"),
            (str(index), "put"),
            (events[2]["id"], "delete"),
        ]
        assert json.loads(events[1]["data"]) == {
            "key": "app/b",
            "value_b64": "/w==",
            "create_index": index,
            "mod_index": index,
        }
        assert json.loads(events[2]["data"])["key"] == "app/a"  # the lease's end
        watchers = node._hub.count
        watch.disconnect()
        await watch.finished()
        await eventually("the watcher is freed", lambda: node._hub.count == watchers - 1)

    run(tmp_path, body)


def test_watch_errors_before_the_stream(tmp_path: Path) -> None:
    async def body(node: Node, app: Any) -> None:
        for i in range(6):
            await node.put(b"k", str(i).encode())
        future = await request(app, "GET", "/v1/watch?since=100000")
        assert future.status == 400
        assert "since" in json_of(future)["message"]
        old = await request(app, "GET", "/v1/watch?since=0")
        assert old.status == 410, old.body
        assert json_of(old)["error"] == "compacted"
        floor = json_of(old)["oldest_index"]
        assert floor > 0
        bad = Call(app, "GET", "/v1/watch", headers=[(b"last-event-id", b"nope")])
        await bad.finished()
        assert bad.status == 400
        resumed = Call(app, "GET", "/v1/watch", headers=[(b"last-event-id", str(floor).encode())])
        events = await resumed.events(1)
        assert int(events[0]["id"]) > floor
        resumed.disconnect()
        await resumed.finished()

    run(tmp_path, body, watch_history=2)


def test_a_blocking_read_and_a_fenced_lock(tmp_path: Path) -> None:
    async def body(node: Node, app: Any) -> None:
        written = await node.put(b"cfg", b"old")
        read = Call(app, "GET", "/v1/kv/cfg", query=f"wait_index={written.index}&wait=20s".encode())
        await eventually("the read waits", lambda: node._hub.count == 1)
        assert not read.complete
        await node.put(b"cfg", b"new")
        await read.finished()
        assert (read.status, read.body) == (200, b"new")

        first = json_of(await request(app, "POST", "/v1/leases", {"ttl": 30}))["id"]
        second = json_of(await request(app, "POST", "/v1/leases", {"ttl": 30}))["id"]
        held = await request(app, "POST", "/v1/lock/locks/job?wait=5s", {"lease": first})
        assert held.status == 200, held.body
        fence = json_of(held)["fence"]
        lock_key = json_of(held)["key"]
        assert lock_key == f"locks/job/{int(first):016x}"
        waiting = Call(
            app,
            "POST",
            "/v1/lock/locks/job",
            query=b"wait=20s",
            body=json.dumps({"lease": second}).encode(),
        )
        await eventually("the second contender waits", lambda: node._hub.count == 1)
        timed_out = await request(
            app, "POST", "/v1/lock/locks/job?wait=10ms", {"lease": first + "0"}
        )
        assert timed_out.status in (404, 408)  # an unknown lease, or not in time

        guarded = {
            "compare": [{"key": lock_key, "target": "create_index", "op": "==", "value": fence}],
            "success": [{"op": "put", "key": "job/state", "value": "step 1"}],
        }
        assert json_of(await request(app, "POST", "/v1/txn", guarded))["succeeded"] is True
        released = await request(app, "DELETE", f"/v1/lock/locks/job?lease={first}")
        assert released.status == 204
        await waiting.finished()
        assert waiting.status == 200
        assert json_of(waiting)["fence"] > fence
        # The first holder, paused past its release, is fenced off.
        assert json_of(await request(app, "POST", "/v1/txn", guarded))["succeeded"] is False
        again = await request(app, "DELETE", f"/v1/lock/locks/job?lease={first}")
        assert (again.status, json_of(again)["error"]) == (404, "lock_not_held")

    run(tmp_path, body)


def test_client_gone_mid_wait(tmp_path: Path) -> None:
    async def body(node: Node, app: Any) -> None:
        read = Call(app, "GET", "/v1/kv", query=b"prefix=p/&wait_index=1000000&wait=1m")
        await eventually("the read waits", lambda: node._hub.count == 1)
        read.disconnect()
        await read.finished()
        assert node._hub.count == 0
        lease = (await node.lease_grant(30)).id
        other = (await node.lease_grant(30)).id
        await node.lock(b"l", lease, 5)
        waiting = Call(app, "POST", "/v1/lock/l", body=json.dumps({"lease": other}).encode())
        await eventually("it waits", lambda: node._hub.count == 1)
        waiting.disconnect()
        await waiting.finished()
        await eventually("its key is gone", lambda: f"l/{other:016x}".encode() not in _keys(node))
        assert node._hub.count == 0

    run(tmp_path, body)


def _keys(node: Node) -> list[bytes]:
    """The keys in the node's state machine now."""
    assert node._sm is not None
    return [kv.key for kv in node._sm.range(b"")]


def test_a_retried_delete_answers_the_first_attempts_etag(tmp_path: Path) -> None:
    """``DELETE`` with an ``Idempotency-Key``, retried after a later write: the
    retry is answered from the session with the first attempt's ``ETag`` (it
    used to be the retry entry's index), as a retried ``PUT`` is."""

    async def body(node: Node, app: Any) -> None:
        key = [(b"idempotency-key", b"del-7")]
        put = Call(app, "PUT", "/v1/kv/k", body=b"v")
        await put.finished()
        assert put.status == 204
        first = Call(app, "DELETE", "/v1/kv/k", headers=key)
        await first.finished()
        assert first.status == 204
        assert first.headers[b"x-raftdb-existed"] == b"true"
        assert b"x-raftdb-duplicate" not in first.headers
        later = await request(app, "PUT", "/v1/kv/other")
        assert later.status == 204
        retry = Call(app, "DELETE", "/v1/kv/k", headers=key)
        await retry.finished()
        assert retry.status == 204
        assert retry.headers[b"etag"] == first.headers[b"etag"]
        assert retry.headers[b"x-raftdb-index"] == first.headers[b"x-raftdb-index"]
        assert retry.headers[b"x-raftdb-existed"] == b"true"
        assert retry.headers[b"x-raftdb-duplicate"] == b"true"
        assert int(first.headers[b"x-raftdb-index"]) < int(later.headers[b"x-raftdb-index"])

    run(tmp_path, body)
