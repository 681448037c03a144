"""The request path on one node, without I/O: waiting requests, their expiry, the HTTP layer.

What every client request pays before and after Raft, so that admission
control (``max_pending_requests``, the body deadline, the listing's byte bound)
can be shown to cost nothing measurable, and expiry to stay cheap however many
requests wait:

- ``test_write_cycle``: 256 concurrent writes through ``WaitingRequests``:
  queued, proposed in one batch (a stub core), applied, answered. Per write.
- ``test_expire[kind-n]``: with ``n`` writes (or linearizable reads) waiting,
  the 100 oldest time out: one ``expire`` call. Expiry must not scan the
  waiting requests, so 1k and 100k pending should cost about the same per
  expired request (an O(n) scan per expiry made 100k a hundred times dearer).
- ``test_fast_path[method]``: one ``PUT`` (a 100-byte body in one message) or
  ``GET`` through :class:`~raftdb.http.fast_path.KVFastPath` over a stub node.
- ``test_list[values]``: ``GET /v1/kv?limit=1000`` (1000 keys of 100-byte
  values) through the Starlette app, keys only or with values.

Run: ``pytest benchmarks/test_requests_bench.py --benchmark-only``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.kv.commands import Command, CommandStatus, KeyValue, KVResult, parse_command
from raftdb.node.handle import NodeHandle, WriteResult
from raftdb.node.metrics import NodeMetrics
from raftdb.node.requests import WaitingRequests
from raftdb.raft import RawNode

CLUSTER = ["http://127.0.0.1:12379"]


class _StubRaw:
    """The little of ``RawNode`` that ``WaitingRequests`` calls: a leader that takes everything."""

    lead = 1
    commit_index = 0

    def __init__(self) -> None:
        self.proposed: list[bytes] = []

    def propose_many(self, data: list[bytes]) -> None:
        self.proposed.extend(data)

    def read_index(self, ctx: bytes) -> None:
        pass


def _requests(**settings: Any) -> WaitingRequests:
    config = NodeConfig(id=1, cluster=CLUSTER, **settings)
    return WaitingRequests(config, NodeMetrics(1), wake=lambda: None, applied_index=lambda: 0)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_write_cycle(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    requests = _requests()
    raw = _StubRaw()
    core = cast(RawNode, raw)
    cmd = Command.put(b"key", b"value")
    ok = KVResult(1, CommandStatus.OK, 1, 1)

    async def cycle() -> None:
        tasks = [loop.create_task(requests.write(core, cmd, None)) for _ in range(256)]
        await asyncio.sleep(0)
        requests.propose_queued(core)
        for data in raw.proposed:  # as the node answers an applied batch's writes
            fields = parse_command(data)
            requests.resolve_write(ok, fields[5], fields[6])
        raw.proposed.clear()
        await asyncio.gather(*tasks)

    benchmark(lambda: loop.run_until_complete(cycle()))


@pytest.mark.parametrize("n", [1_000, 100_000])
@pytest.mark.parametrize("kind", ["write", "read"])
def test_expire(benchmark: Any, loop: asyncio.AbstractEventLoop, kind: str, n: int) -> None:
    expired = 100
    raw = _StubRaw()
    core = cast(RawNode, raw)
    cmd = Command.put(b"key", b"value")
    state: dict[str, Any] = {"tasks": [], "expired": []}

    def drain() -> None:
        tasks = state["tasks"]
        loop.run_until_complete(asyncio.sleep(0))  # the expired tasks end
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        state["expired"].append(sum(1 for t in tasks if not t.cancelled()))

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        if state["tasks"]:
            drain()
        requests = _requests(max_pending_requests=2 * n)

        async def fill() -> list[asyncio.Task[Any]]:
            tasks: list[asyncio.Task[Any]] = []
            # The first ``expired`` requests time out first (their deadline is earlier).
            for timeout, count in ((1.0, expired), (1000.0, n - expired)):
                requests._timeout = timeout
                for _ in range(count):
                    if kind == "write":
                        tasks.append(loop.create_task(requests.write(core, cmd, None)))
                    else:
                        tasks.append(loop.create_task(requests.read_index(core)))
                await asyncio.sleep(0)
            requests.propose_queued(core)
            requests.ask_reads(core)
            raw.proposed.clear()
            return tasks

        state["tasks"] = loop.run_until_complete(fill())
        state["requests"] = requests
        state["now"] = loop.time() + 500.0
        return (), {}

    def expire() -> None:
        state["requests"].expire(state["now"])

    benchmark.pedantic(expire, setup=setup, rounds=5, iterations=1)
    drain()
    assert state["expired"] == [expired] * 5


class _StubNode:
    """Answers at once: the HTTP layer's own cost is what is measured."""

    id = 1

    def __init__(self) -> None:
        self.kv = KeyValue(b"key", b"v" * 100, 1, 1)
        self.listing = [KeyValue(b"key/%05d" % i, b"v" * 100, i + 1, i + 1) for i in range(1001)]

    async def put(self, key: bytes, value: bytes, **_: Any) -> WriteResult:
        return WriteResult(7, True, False)

    async def get(self, key: bytes, consistency: str = "linearizable") -> tuple[KeyValue, int]:
        return self.kv, 7

    async def range(
        self, prefix: bytes = b"", *, limit: int | None = None, **_: Any
    ) -> tuple[list[KeyValue], int]:
        return self.listing[:limit], 7


async def _call(app: Any, scope: dict[str, Any], body: bytes) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(scope, receive, send)


def _scope(method: str, path: bytes, query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path.decode(),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 12380),
    }


def _app() -> Any:
    return create_api(cast(NodeHandle, _StubNode()), NodeConfig(id=1, cluster=CLUSTER))


@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_fast_path(benchmark: Any, loop: asyncio.AbstractEventLoop, method: str) -> None:
    app = _app()
    scope = _scope(method, b"/v1/kv/key")
    body = b"v" * 100

    async def hundred() -> None:
        for _ in range(100):
            await _call(app, scope, body)

    benchmark(lambda: loop.run_until_complete(hundred()))


@pytest.mark.parametrize("values", [False, True])
def test_list(benchmark: Any, loop: asyncio.AbstractEventLoop, values: bool) -> None:
    app = _app()
    scope = _scope("GET", b"/v1/kv", b"limit=1000" + (b"&values=true" if values else b""))
    benchmark(lambda: loop.run_until_complete(_call(app, scope, b"")))
