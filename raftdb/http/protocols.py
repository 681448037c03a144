"""uvicorn's HTTP protocols with a deadline on request headers, against slowloris,
and (httptools) an answer's head and body sent in one write.

uvicorn bounds how long an idle keep-alive connection stays open
(``timeout_keep_alive``), but any byte received cancels that timer, and a
connection that opens and sends nothing, or one header byte a second, is
never closed: a few thousand such connections hold the server's file
descriptors and ``max_connections`` (``limit_concurrency``) slots for good.
Go's ``http.Server.ReadHeaderTimeout`` is the fix this copies: a connection
whose request headers are not complete ``header_timeout_s`` after it opened,
or after its previous answer ended, is closed.

:func:`header_deadline_protocol` subclasses the protocol uvicorn would use
(httptools when installed, else h11) and only adds the timer; parsing,
keep-alive, pipelining and ``limit_concurrency`` stay uvicorn's. The timer
is not armed while a request is being served (a long answer or a slow
handler is not a slow client), nor while a pipelined request waits.

uvicorn writes an answer's status line and headers to the socket when the
application sends ``http.response.start``, and its body at
``http.response.body``: two ``send`` calls and two TCP segments for every GET
that returns a value, each waking the client. The httptools protocol here
gives each request's cycle a :class:`_HeadWithBody` transport, which holds the
head until the body's first write (one ``send``) or, for an answer that
streams (a watch), until the loop's next turn, so that the head never waits
on the application.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["header_deadline_protocol"]

logger = logging.getLogger("raftdb.api")


class _HeaderDeadline:
    """The timer, mixed into a uvicorn protocol class (which provides the rest)."""

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    # Provided by the uvicorn protocol this is mixed into:
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def _waiting_for_headers(self) -> bool:
        """No request is being served or waiting: the next one's headers are due."""
        cycle = self.cycle
        return cycle is None or bool(cycle.response_complete)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        if self._waiting_for_headers() and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            logger.debug("closing a connection: no complete request headers in time")
            self.transport.close()


#: What uvicorn writes when the application reads the body of an ``Expect: 100-continue``.
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _HeadWithBody:
    """The transport of one request's uvicorn cycle: its first write (the
    answer's head) is held and sent with the second (the body), or alone at
    the loop's next turn when no body follows at once; every later write goes
    straight through.

    Only the cycle writes through it, and it writes nothing after the answer
    ends (uvicorn starts the next pipelined request's cycle only then), so the
    connection's bytes stay in order. A ``100 Continue``, which uvicorn writes
    before the head when the application first reads the body, goes straight
    through: the client waits for it before it sends the body.
    """

    __slots__ = ("_transport", "_loop", "_head", "_started")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if self._started:
            head = self._head
            if head is not None:
                self._head = None
                data = head + data
            self._transport.write(data)
            return
        if data == _CONTINUE:
            self._transport.write(data)
            return
        self._started = True
        self._head = bytes(data)
        self._loop.call_soon(self._send_head)

    def _send_head(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self._send_head()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _mixin_methods(base: type[asyncio.Protocol]) -> dict[str, Any]:
    """The overrides shared by both protocols: arm on open and after each answer, stop on close."""

    def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
        base.connection_made(self, transport)
        self._arm_header_timer()

    def connection_lost(self: Any, exc: Exception | None) -> None:
        self._cancel_header_timer()
        base.connection_lost(self, exc)

    def on_response_complete(self: Any) -> None:
        base.on_response_complete(self)  # type: ignore[attr-defined]
        # After it, a pipelined request may already be running: then there is nothing to time.
        self._arm_header_timer()

    return {
        "connection_made": connection_made,
        "connection_lost": connection_lost,
        "on_response_complete": on_response_complete,
    }


def _httptools_class(base: type[asyncio.Protocol]) -> dict[str, Any]:
    methods = _mixin_methods(base)

    def on_headers_complete(self: Any) -> None:
        base.on_headers_complete(self)  # type: ignore[attr-defined]
        self._cancel_header_timer()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:  # a new request's cycle
            cycle.transport = _HeadWithBody(self.transport, self.loop)

    methods["on_headers_complete"] = on_headers_complete
    return methods


def _h11_class(base: type[asyncio.Protocol]) -> dict[str, Any]:
    methods = _mixin_methods(base)

    def handle_events(self: Any) -> None:
        base.handle_events(self)  # type: ignore[attr-defined]
        if not self._waiting_for_headers():  # a request's headers came in: it is being served
            self._cancel_header_timer()

    methods["handle_events"] = handle_events
    return methods


def header_deadline_protocol(header_timeout: float, http: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class ``http`` with the header deadline, for ``Config(http=...)``.

    Args:
        header_timeout: seconds a connection has to complete a request's
            headers, from its opening or from the end of the previous answer.
        http: ``auto`` (httptools when installed, as uvicorn picks), ``httptools`` or ``h11``.

    Raises:
        ImportError: ``httptools`` asked for and not installed.
    """
    base: type[asyncio.Protocol]
    if http == "h11":
        base = H11Protocol
    else:
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:
            if http == "httptools":
                raise
            base = H11Protocol
        else:
            base = HttpToolsProtocol
    methods = _h11_class(base) if base is H11Protocol else _httptools_class(base)
    methods["header_timeout"] = header_timeout
    methods["__doc__"] = f"uvicorn's {base.__name__} with a {header_timeout:g} s header deadline."
    return type(f"HeaderDeadline{base.__name__}", (_HeaderDeadline, base), methods)
