"""Driving the ASGI app by hand, on the test's own event loop.

Starlette's ``TestClient`` runs the app on a loop of its own and returns an
answer only once it is complete, so it cannot follow a watch (which never
completes) nor make a change while a request waits. :class:`Call` runs one
request as a task on the running loop: the test reads what was sent so far,
changes the fake node in between, and disconnects when it wants to.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message

__all__ = ["DEADLINE_S", "Call", "eventually", "sse_events"]

#: The longest a test waits for something that should happen at once.
DEADLINE_S = 5.0


class Call:
    """One request to ``app``, running as a task until it ends or is disconnected."""

    def __init__(
        self,
        app: ASGIApp,
        method: str,
        path: str,
        *,
        query: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
    ) -> None:
        self.sent: list[Message] = []
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._incoming.put_nowait({"type": "http.request", "body": body, "more_body": False})
        self._changed = asyncio.Event()
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query,
            "headers": [(b"host", b"127.0.0.1"), *(headers or [])],
            "server": ("127.0.0.1", 12380),
            "client": ("127.0.0.1", 5000),
        }
        self.task = asyncio.ensure_future(app(scope, self._receive, self._send))

    async def _receive(self) -> Message:
        return await self._incoming.get()

    async def _send(self, message: Message) -> None:
        self.sent.append(message)
        self._changed.set()

    def disconnect(self) -> None:
        """The client goes away (the server's ``http.disconnect``)."""
        self._incoming.put_nowait({"type": "http.disconnect"})

    @property
    def status(self) -> int | None:
        for message in self.sent:
            if message["type"] == "http.response.start":
                return int(message["status"])
        return None

    @property
    def headers(self) -> dict[bytes, bytes]:
        for message in self.sent:
            if message["type"] == "http.response.start":
                return dict(message["headers"])
        return {}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def complete(self) -> bool:
        """The answer's last body message was sent."""
        return any(
            m["type"] == "http.response.body" and not m.get("more_body", False) for m in self.sent
        )

    async def until(self, what: str, condition: Callable[[], bool]) -> None:
        """Wait (at most :data:`DEADLINE_S`) until ``condition()`` holds.

        Polled every millisecond (a condition may be on the fake node's state,
        which nothing signals), and at once when the app sends something.
        """
        async with asyncio.timeout(DEADLINE_S):
            while not condition():
                if self.task.done():
                    self.task.result()  # raise what ended it
                    if not condition():
                        raise AssertionError(f"the request ended before {what}: {self.sent}")
                    return
                self._changed.clear()
                waiter = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait((waiter, self.task), timeout=0.001)
                waiter.cancel()

    async def events(self, count: int) -> list[dict[str, str]]:
        """Wait for at least ``count`` server-sent events; all of them so far."""
        await self.until(f"{count} events", lambda: len(sse_events(self.body)) >= count)
        return sse_events(self.body)

    async def finished(self) -> None:
        """Wait until the app has returned (its clean-up done)."""
        async with asyncio.timeout(DEADLINE_S):
            await self.task


async def eventually(what: str, condition: Callable[[], bool]) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail after :data:`DEADLINE_S`.

    For what nothing signals (a server's ``started`` flag, another task's clean-up).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    for _ in itertools.count():
        if condition():
            return
        if loop.time() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.01)


def sse_events(stream: bytes) -> list[dict[str, str]]:
    """The complete events of a ``text/event-stream`` body, each as field → value.

    Comments (``:``) are dropped; a partial last event is not returned.
    """
    events = []
    text = stream.decode("utf-8")
    *complete, _partial = text.split("\n\n")
    for block in complete:
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        events.append(fields)
    return events
