"""``raftdb serve``'s server settings: TLS, limits, and the header deadline against slowloris.

The deadline tests run uvicorn in this process over a FakeNode, with each of
the two protocols (httptools, h11), and talk to it over raw sockets.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvicorn

from raftdb.app import RaftdbApp
from raftdb.cli import build_parser, make_server
from raftdb.config import NodeConfig
from raftdb.http.protocols import header_deadline_protocol
from tests.http.fake_node import FakeNode
from tests.http.helpers import serving

CLUSTER = ["http://127.0.0.1:12379"]
DEADLINE = 0.5
#: Longest a test waits for something that should happen after DEADLINE.
WAIT = 10.0


def _args(*extra: str) -> object:
    return build_parser().parse_args(["serve", "--port", "0", "--id", "1", *extra])


def test_make_server_gives_uvicorn_the_node_settings(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    config = NodeConfig(
        id=1,
        cluster=CLUSTER,
        tls_cert_file=str(pem),
        tls_key_file=str(pem),
        tls_client_ca_file=str(pem),
        max_connections=77,
        header_timeout_s=3.5,
    )
    app = RaftdbApp(config, lambda config: FakeNode())
    server = make_server(app, _args())  # type: ignore[arg-type]
    uv = server.config
    assert (uv.ssl_certfile, uv.ssl_keyfile, uv.ssl_ca_certs) == (str(pem), str(pem), str(pem))
    assert uv.ssl_cert_reqs == ssl.CERT_REQUIRED
    assert uv.limit_concurrency == 77
    assert isinstance(uv.http, type)
    assert uv.http.header_timeout == 3.5  # type: ignore[attr-defined]
    assert app.tls_applied


def test_make_server_without_tls(tmp_path: Path) -> None:
    app = RaftdbApp(NodeConfig(id=1, cluster=CLUSTER), lambda config: FakeNode())
    uv = make_server(app, _args()).config  # type: ignore[arg-type]
    assert uv.ssl_certfile is None
    assert uv.ssl_cert_reqs == ssl.CERT_NONE
    assert uv.limit_concurrency == 1000
    assert not app.tls_applied


@asynccontextmanager
async def _server(http: str) -> AsyncIterator[int]:
    app = RaftdbApp(NodeConfig(id=1, cluster=CLUSTER), lambda config: FakeNode())
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_level="warning",
        http=header_deadline_protocol(DEADLINE, http),
    )
    async with serving(config, WAIT) as port:
        yield port


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded by WAIT)."""
    return await asyncio.wait_for(reader.read(), WAIT)


async def _get(port: int, path: str = "/healthz") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
    answer = await _closed(reader)
    writer.close()
    return answer


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_slow_headers_are_cut_while_others_are_served(http: str) -> None:
    async def scenario() -> None:
        async with _server(http) as port:
            # Half a request line, then nothing: closed after the deadline, no answer.
            slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
            slow_w.write(b"GET /heal")
            silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)
            # Meanwhile, normal requests are answered.
            for _ in range(5):
                assert (await _get(port)).startswith(b"HTTP/1.1 200")
            assert await _closed(slow_r) == b""
            assert await _closed(silent_r) == b""
            for w in (slow_w, silent_w):
                w.close()
            assert (await _get(port)).startswith(b"HTTP/1.1 200")

    asyncio.run(scenario())


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_the_deadline_restarts_after_each_answer_and_spares_a_slow_body(http: str) -> None:
    async def scenario() -> None:
        async with _server(http) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # Headers complete, body late (a slow client's body is not this deadline's).
            writer.write(b"PUT /v1/kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(DEADLINE * 3)  # the slowness under test, not a synchronisation
            writer.write(b"abc")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            assert head.startswith(b"HTTP/1.1 204")
            # Idle after the answer (keep-alive): the next request's headers are due.
            assert await _closed(reader) == b""
            writer.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_answers_move_the_deadline_of_a_busy_connection(http: str) -> None:
    """The connection's one timer, armed at its opening, fires while later answers
    have moved the deadline: it re-arms for the later one and closes nothing."""

    async def scenario() -> None:
        async with _server(http) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(6):  # 6 x 0.3 s: the first deadlines pass while it is busy
                writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
                assert head.startswith(b"HTTP/1.1 200")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await asyncio.wait_for(reader.readexactly(length), WAIT)
                await asyncio.sleep(DEADLINE * 0.6)  # the pace under test, not a synchronisation
            # Idle now: closed once the deadline after the last answer passes.
            assert await _closed(reader) == b""
            writer.close()

    asyncio.run(scenario())
