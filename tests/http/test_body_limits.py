"""Request bodies under a time limit (``body_timeout_s``: ``408``) and a size limit
(``413`` before the rest is read), through a real uvicorn server on raw sockets,
for the fast path and the Starlette routes alike."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from raftdb.config import NodeConfig
from raftdb.http import params
from raftdb.http.app import create_api
from raftdb.http.params import receive_body
from raftdb.node.errors import RequestTimeoutError, TooLargeError
from tests.http.conftest import CLUSTER
from tests.http.fake_node import FakeNode

BODY_TIMEOUT = 0.5
MAX_VALUE = 1000
WITHIN = 20.0  # seconds any one exchange may take before the test fails

# (request line and headers, without the body's framing), by the route that reads it
REQUESTS = {
    "fast path PUT": "PUT /v1/kv/k HTTP/1.1",
    "Starlette PUT": "PUT /v1/kv/k HTTP/1.1\r\nIf-None-Match: *",
    "raftexample POST": "POST /4 HTTP/1.1",
    "members POST": "POST /v1/cluster/members HTTP/1.1\r\nContent-Type: application/json",
}


def _config() -> NodeConfig:
    return NodeConfig(
        id=1,
        cluster=CLUSTER,
        max_key_bytes=64,
        max_value_bytes=MAX_VALUE,
        max_request_bytes=2 * MAX_VALUE,
        body_timeout_s=BODY_TIMEOUT,
    )


@asynccontextmanager
async def _server(http: str) -> AsyncIterator[int]:
    """A uvicorn server of the API over a FakeNode on 127.0.0.1; yields its port."""
    config = uvicorn.Config(
        create_api(FakeNode(), _config()), http=http, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, WITHIN)
        sock.close()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The response on ``reader``; then the server must close the connection
    (``wait_for`` fails the test otherwise). The close may come as a reset: the
    client was still sending, and the server does not read what it sent."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)
    status_line, *lines = head.decode("latin-1").strip().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WITHIN)
    try:
        rest = await asyncio.wait_for(reader.read(), WITHIN)  # to EOF: closed
    except ConnectionResetError:
        rest = b""
    assert rest == b""
    return int(status_line.split()[1]), headers, json.loads(body)


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 3 * WITHIN))


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize("route", list(REQUESTS))
def test_a_body_that_stops_coming_is_refused_408_and_the_connection_closed(
    route: str, http: str
) -> None:
    """Half the body, then nothing: ``408`` after ``body_timeout_s``, and the
    connection closed. (That the time counts in total, not per pause, is
    shown by ``test_receive_body_counts_the_time_in_total_not_per_pause``.)"""

    async def test() -> None:
        async with _server(http) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = f"{REQUESTS[route]}\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
            writer.write(head.encode() + b"x" * 50)  # and never the rest
            status, headers, body = await _answer(reader)
            assert (status, body["error"]) == (408, "request_timeout")
            assert "body_timeout_s" in body["message"]
            assert headers["connection"] == "close"
            writer.close()

    _run(test)


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize("route", ["fast path PUT", "Starlette PUT"])
def test_a_trickled_body_is_refused_408(route: str, http: str) -> None:
    """A byte every 20 ms of a 600-byte body (12 s to send it): ``408``.

    The client trickles for the first 60% of ``body_timeout_s`` only, then
    waits: bytes still arriving after the server closed would make it reset
    the connection, which can drop the answer before the client reads it.
    """

    async def test() -> None:
        async with _server(http) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = f"{REQUESTS[route]}\r\nHost: x\r\nContent-Length: 600\r\n\r\n"
            writer.write(head.encode())
            loop = asyncio.get_running_loop()
            stop = loop.time() + 0.6 * BODY_TIMEOUT
            sent = 0
            while loop.time() < stop:
                writer.write(b"x")
                sent += 1
                await asyncio.sleep(0.02)  # the client's pace, not a synchronisation
            status, headers, body = await _answer(reader)
            assert sent < 600
            assert (status, body["error"], headers["connection"]) == (
                408,
                "request_timeout",
                "close",
            )
            writer.close()

    _run(test)


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize("route", list(REQUESTS))
def test_a_huge_declared_body_is_refused_413_without_reading_it(route: str, http: str) -> None:
    """Content-Length says 10 GiB; 16 KiB follow and then nothing: the answer
    comes from the header alone, and the connection is closed."""

    async def test() -> None:
        async with _server(http) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = f"{REQUESTS[route]}\r\nHost: x\r\nContent-Length: {10 << 30}\r\n\r\n"
            writer.write(head.encode() + b"x" * (16 << 10))
            status, headers, body = await _answer(reader)
            assert (status, body["error"], headers["connection"]) == (413, "too_large", "close")
            assert str(10 << 30) in body["message"]
            writer.close()

    _run(test)


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize("route", ["fast path PUT", "Starlette PUT", "members POST"])
def test_a_chunked_body_is_refused_413_once_its_bytes_pass_the_limit(route: str, http: str) -> None:
    """No Content-Length: the bytes are counted as they come, and the answer
    comes as soon as they pass the limit, though the body never ends."""
    limit = 2 * MAX_VALUE if route == "members POST" else MAX_VALUE

    async def test() -> None:
        async with _server(http) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = f"{REQUESTS[route]}\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            chunk = b"x" * 100
            writer.write(head.encode() + (b"64\r\n" + chunk + b"\r\n") * (limit // 100 + 1))
            status, headers, body = await _answer(reader)  # no last chunk was sent
            assert (status, body["error"], headers["connection"]) == (413, "too_large", "close")
            writer.close()

    _run(test)


# -- receive_body on its own -----------------------------------------------------------


def test_receive_body_stops_at_the_chunk_that_passes_the_limit() -> None:
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": b"x" * 600, "more_body": True}

    async def test() -> None:
        with pytest.raises(TooLargeError, match="1200 bytes were sent"):
            await receive_body(receive, 1000, "value", "max_value_bytes", time_limit=30)
        assert calls == 2  # nothing more was asked for

    asyncio.run(test())


def test_receive_body_counts_the_time_in_total_not_per_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chunk every 20 ms, never the last: no pause is near the limit, the
    whole is over it.

    The deadline's clock is the test's: each chunk moves it 20 ms on, so the
    limit is passed after exactly 15 pauses however the machine schedules the
    test (on the wall clock, a loaded machine stretched the pauses, and fewer
    chunks than expected came in before the deadline)."""
    now = [1000.0]
    monkeypatch.setattr(params, "monotonic", lambda: now[0])
    chunks = 0

    async def trickle() -> dict[str, Any]:
        nonlocal chunks
        await asyncio.sleep(0.02)  # the client's pace, not a synchronisation
        now[0] += 0.02
        chunks += 1
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def test() -> None:
        with pytest.raises(RequestTimeoutError, match="did not arrive within 0.3s"):
            await receive_body(trickle, 10_000, "value", "max_value_bytes", time_limit=0.3)
        assert chunks >= 15  # 15 pauses of 20 ms: it was never idle for long

    asyncio.run(asyncio.wait_for(test(), 3 * WITHIN))


def test_receive_body_times_out_and_an_outside_cancel_stays_a_cancel() -> None:
    async def never() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def test() -> None:
        with pytest.raises(RequestTimeoutError, match="within 0.2s"):
            await receive_body(never, 1000, "value", "max_value_bytes", time_limit=0.2)
        reading = asyncio.create_task(
            receive_body(never, 1000, "value", "max_value_bytes", time_limit=30)
        )
        await asyncio.sleep(0)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading

        # A whole body in time is read, however long the limit.
        async def whole() -> dict[str, Any]:
            return {"type": "http.request", "body": b"abc", "more_body": False}

        assert await receive_body(whole, 10, "value", "max_value_bytes", time_limit=0.2) == b"abc"

    asyncio.run(test())
