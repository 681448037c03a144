"""An answer's head and body leave in one write (``raftdb.http.protocols``'s
``_HeadWithBody``), and holding the head never delays or reorders a byte.

uvicorn runs in this process with the httptools protocol ``raftdb serve``
uses, over a small ASGI app; the test's subclass of that protocol counts
the writes that reach each connection's real transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from raftdb.http.protocols import header_deadline_protocol
from tests.http.helpers import serving

#: Longest a test waits for something that should happen.
WAIT = 10.0

Scope = dict[str, Any]


class _App:
    """``/value``: 200 with a body; ``/empty``: 204; ``/stream``: the head, then
    the body once ``release`` is set; ``/echo``: the request's body, read first;
    ``/broken``: the head, then an exception."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        body = b"hello, world"
        if path == "/echo":
            body = b""
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
        status = 204 if path == "/empty" else 200
        headers = [] if status == 204 else [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if path == "/stream":
            await self.release.wait()
        if path == "/broken":
            raise RuntimeError("the application failed after the head")
        await send({"type": "http.response.body", "body": b"" if status == 204 else body})


@asynccontextmanager
async def _server(app: _App) -> AsyncIterator[tuple[int, list[list[bytes]]]]:
    """uvicorn on a free port; yields the port and, per connection, its writes."""
    writes: list[list[bytes]] = []
    base: Any = header_deadline_protocol(10.0, "httptools")

    class Counting(base):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            mine: list[bytes] = []
            writes.append(mine)
            real = transport.write

            def write(data: bytes | bytearray | memoryview) -> None:
                if data:
                    mine.append(bytes(data))
                real(data)

            transport.write = write  # type: ignore[method-assign]
            super().connection_made(transport)

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="critical", http=Counting
    )
    async with serving(config, WAIT) as port:
        yield port, writes


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """One answer with a content-length (or none, a 204), head and body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await asyncio.wait_for(reader.readexactly(length), WAIT)


def _request(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: x\r\n{extra}\r\n".encode()


def test_answers_leave_in_one_write_each() -> None:
    async def scenario() -> None:
        async with _server(_App()) as (port, writes):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answers = []
            for path in ("/value", "/empty", "/value"):  # one keep-alive connection
                writer.write(_request(path))
                answers.append(await _answer(reader))
            writer.close()
            assert answers[0].startswith(b"HTTP/1.1 200")
            assert answers[0].endswith(b"hello, world")
            assert answers[1].startswith(b"HTTP/1.1 204")
            assert writes == [answers]  # each answer, head and body, in one write

    asyncio.run(scenario())


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario() -> None:
        async with _server(_App()) as (port, writes):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_request("/empty") + _request("/value") + _request("/empty"))
            answers = [await _answer(reader) for _ in range(3)]
            writer.close()
            assert [a[:12] for a in answers] == [b"HTTP/1.1 204", b"HTTP/1.1 200", b"HTTP/1.1 204"]
            assert answers[1].endswith(b"hello, world")
            assert b"".join(writes[0]) == b"".join(answers)

    asyncio.run(scenario())


def test_a_streamed_head_is_not_held_for_its_body() -> None:
    async def scenario() -> None:
        app = _App()
        async with _server(app) as (port, writes):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_request("/stream"))
            # The body waits for release, which the test sets only once the head came.
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            assert head.startswith(b"HTTP/1.1 200")
            app.release.set()
            body = await asyncio.wait_for(reader.readexactly(len(b"hello, world")), WAIT)
            writer.close()
            assert body == b"hello, world"
            assert writes == [[head, body]]

    asyncio.run(scenario())


def test_100_continue_goes_before_the_head_and_body() -> None:
    async def scenario() -> None:
        async with _server(_App()) as (port, writes):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"PUT /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
                b"expect: 100-continue\r\n\r\n"
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"abcde")
            answer = await _answer(reader)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200")
            assert answer.endswith(b"abcde")
            assert writes == [[interim, answer]]

    asyncio.run(scenario())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_head_held_when_the_application_fails_still_goes_before_the_close() -> None:
    async def scenario() -> None:
        async with _server(_App()) as (port, writes):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_request("/broken"))
            received = await asyncio.wait_for(reader.read(), WAIT)  # until uvicorn closes
            writer.close()
            assert received.startswith(b"HTTP/1.1 200")
            assert received.endswith(b"\r\n\r\n")  # the head, whole, and no body
            assert writes == [[received]]

    asyncio.run(scenario())
