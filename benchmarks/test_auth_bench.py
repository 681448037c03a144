"""The cost of the token check on the fast path: a GET through the app, with and without tokens.

Each round sends :data:`REQUESTS` ``GET /v1/kv/k`` (stale: no ReadIndex) straight
to the ASGI app of :func:`raftdb.http.app.create_api` over a stub node
that holds one key, the way uvicorn calls it, without a socket: what is measured is the
app's own CPU per request. Variants: ``open`` (no tokens_file: the Authorizer
is not built), ``token`` (a valid token with every key), ``prefix-token``
(limited to prefixes: the key is read and checked too), each with 3 and with 20
tokens in the file (the hash is compared with every one of them: ≈ 60 ns each).

Run: ``pytest benchmarks/test_auth_bench.py --benchmark-only``; the ratio of
``token`` to ``open`` is the check's cost.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.http.tokens import hash_token
from raftdb.kv.commands import KeyValue
from raftdb.node.handle import Consistency, NodeHandle

REQUESTS = 1000


class _Node:
    """What the API asks of a node for this request: its id and one stored key."""

    id = 1
    value = KeyValue(b"app/k", b"value", 1, 1)

    async def get(self, key: bytes, consistency: Consistency) -> tuple[KeyValue | None, int]:
        return (self.value if key == self.value.key else None), 1


def _tokens_file(tmp_path: Path, count: int) -> Path:
    lines = []
    for i in range(count):
        lines += ["[[token]]", f'name = "t{i}"', f'sha256 = "{hash_token(f"token-{i}")}"']
        lines.append('role = "read"')
        if i == 1:
            lines.append('prefixes = ["other/", "app/"]')
    path = tmp_path / "tokens.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _scope(token: str | None) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:12380"), (b"user-agent", b"bench")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/kv/app/k",
        "raw_path": b"/v1/kv/app/k",
        "root_path": "",
        "query_string": b"consistency=stale",
        "headers": headers,
        "server": ("127.0.0.1", 12380),
        "client": ("127.0.0.1", 50000),
    }


@pytest.mark.parametrize("tokens_in_file", [3, 20])
@pytest.mark.parametrize("variant", ["open", "token", "prefix-token"])
def test_get_through_the_app(
    benchmark: Any, tmp_path: Path, variant: str, tokens_in_file: int
) -> None:
    if variant == "open" and tokens_in_file != 3:
        pytest.skip("no tokens file: nothing to vary")
    node = cast(NodeHandle, _Node())
    tokens = None if variant == "open" else str(_tokens_file(tmp_path, tokens_in_file))
    config = NodeConfig(id=1, cluster=["http://127.0.0.1:12379"], tokens_file=tokens or "")
    app = create_api(node, config)
    # t0 has every key; t1 is limited to prefixes. Either is compared with every token.
    scope = _scope({"open": None, "token": "token-0", "prefix-token": "token-1"}[variant])
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def batch() -> None:
        for _ in range(REQUESTS):
            await app(dict(scope), receive, send)

    loop = asyncio.new_event_loop()
    try:
        benchmark(lambda: loop.run_until_complete(batch()))
    finally:
        loop.close()
    assert set(statuses) == {200}
    benchmark.extra_info["per_request_us"] = benchmark.stats.stats.mean / REQUESTS * 1e6
