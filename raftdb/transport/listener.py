"""The inbound side of the peer transport: accepting peers' connections and reading them.

Theory of operation
-------------------
What a peer sends to this node arrives on the peer's own outbound connection
(:mod:`raftdb.transport.sender`), accepted here. The caller speaks first, and
the connection carries nothing but the handshake
(:class:`~raftdb.transport.handshake.Handshake`: HELLOs, and with a peer
secret the challenge–response, with peer TLS the certificates) until it has
proven which member the caller is, within a deadline. From then on the
listener only reads, except for the SNAPSHOT_ACK that ends a snapshot stream
(:mod:`raftdb.transport.snapshots`). Each MESSAGES frame is decoded and handed
to the handler's ``on_messages`` in one call, in the order received. Frames are
parsed, decoded and checked in the connection's data callback
(:class:`~raftdb.transport.frame_reader.FrameReader`), without waking the
connection's task, until a frame of another kind (a snapshot stream) hands the
connection back to the task; the handler gets them in a callback on the next
loop iteration, when a reading task would have (so that a leader's Ready still
takes the client requests that arrived with the acknowledgements).

Inbound, every connection is suspect: its first frame is read under the
handshake ceiling (4 KiB, whatever kind its header declares) and must be a
valid HELLO from a member; every message must come from the member the
handshake proved (so a member cannot speak for another, and with peer
authentication on a proposal or a configuration change only ever comes from
an authenticated member) and be addressed to this node. Anything else —
garbage, a truncated or oversized frame, a wrong token or proof, a stranger —
closes that one connection with one warning, and nothing of the offending
frame is delivered. At most ``max_inbound`` connections are open at once;
beyond that a new one is closed at once (one warning per ten seconds says how
many). No exception leaves a connection's task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Container
from functools import partial
from typing import TYPE_CHECKING, Any, Final, cast

from raftdb.raft.messages import Message, MessageType
from raftdb.transport.frame_reader import FrameReader
from raftdb.transport.frames import (
    FrameKind,
    WireError,
    decode_messages,
    decode_snapshot_begin,
)
from raftdb.transport.handshake import Handshake, ssl_reason
from raftdb.transport.stream import (
    STREAM_LIMIT,
    abort,
    describe_error,
    peer_address,
    read_frame,
    set_nodelay,
)

if TYPE_CHECKING:
    from raftdb.transport.snapshots import SnapshotTransfers
    from raftdb.transport.transport import TransportHandler

__all__ = ["DEFAULT_MAX_INBOUND", "Inbound", "Listener"]

#: Default cap on open inbound peer connections (a member holds at most two:
#: messages and a snapshot), so a stranger cannot exhaust file descriptors.
DEFAULT_MAX_INBOUND: Final = 64
#: At most one warning about refused connections per this many seconds.
_REFUSAL_WARNING_INTERVAL: Final = 10.0
#: After a failed accept (EMFILE...), wait this long before the next, so as not to spin.
_ACCEPT_RETRY_S: Final = 0.1


class Inbound:
    """One accepted connection; ``sender`` is known after its HELLO."""

    __slots__ = ("address", "closed", "sender", "started")

    def __init__(self, address: str) -> None:
        self.address = address
        self.sender: int | None = None
        #: Its task has begun to run (one cancelled before it ran never saw its socket).
        self.started = False
        #: Being closed (the transport stops, or the sender was removed): nothing
        #: more of it is delivered, even before its task has ended.
        self.closed = False


class Listener:
    """Accepts peers' connections and delivers what they send to the handler.

    Args:
        handshake: this node's side of the handshake; its node id is this
            node's, to which every message must be addressed.
        handler: receives the messages.
        members: the node ids allowed to connect (the transport's peers,
            read at each HELLO, so membership changes apply at once).
        snapshots: receives the snapshot streams that arrive.
        call: calls a handler method, logging its exception; True if it returned.
        max_message_frame: the largest MESSAGES or SNAPSHOT_BEGIN frame body accepted.
        allow_unknown_senders: accept node ids that are not in ``members``.
        handshake_timeout: how long an inbound connection may take to
            complete the handshake (TLS included).
        max_inbound: the most inbound connections open at once.
        logger: where connection events go.
    """

    def __init__(
        self,
        handshake: Handshake,
        handler: TransportHandler,
        members: Container[int],
        snapshots: SnapshotTransfers,
        call: Callable[..., bool],
        *,
        max_message_frame: int,
        allow_unknown_senders: bool,
        handshake_timeout: float,
        max_inbound: int = DEFAULT_MAX_INBOUND,
        logger: logging.Logger,
    ) -> None:
        self.node_id = handshake.node_id
        self._handshake = handshake
        self._handler = handler
        self._members = members
        self._snapshots = snapshots
        self._call = call
        self._max_frame = max_message_frame
        self._allow_unknown = allow_unknown_senders
        self._handshake_timeout = handshake_timeout
        self._max_inbound = max_inbound
        self._refused = 0
        self._next_refusal_warning = 0.0
        self._log = logger
        self._server: asyncio.Server | None = None
        # With peer TLS: the listening sockets and the tasks accepting on them.
        self._sockets: list[socket.socket] = []
        self._accept_loops: list[asyncio.Task[None]] = []
        self._accepting = False
        #: The task serving each accepted connection, while it lasts.
        self.connections: dict[asyncio.Task[Any], Inbound] = {}

    async def listen(self, host: str, port: int) -> None:
        """Bind ``host:port`` and start accepting.

        Without peer TLS this is ``asyncio.start_server``. With it, the
        listener accepts the sockets itself and starts TLS on each with
        ``connect_accepted_socket``, so that TLS owns the connection's first
        byte (uvloop starts reading a connection as soon as it is made,
        whatever the protocol asks, so a TLS layer added afterwards would miss
        the caller's ClientHello) and a failed handshake reaches this code,
        which logs why.

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        if self._handshake.auth.server_context is None:
            # asyncio.start_server, with a FrameReader for each connection.
            def connection() -> asyncio.StreamReaderProtocol:
                reader = FrameReader(STREAM_LIMIT, loop)
                return asyncio.StreamReaderProtocol(reader, self._accept, loop=loop)

            self._server = await loop.create_server(connection, host, port)
        else:
            self._sockets = await _bind(loop, host, port)
            self._accept_loops = [
                loop.create_task(self._accept_tls(sock)) for sock in self._sockets
            ]
        self._accepting = True

    def close(self) -> None:
        """Stop accepting; a connection accepted from now on is closed at once."""
        self._accepting = False
        if self._server is not None:
            self._server.close()
        for accept_loop in self._accept_loops:
            accept_loop.cancel()
        for sock in self._sockets:
            sock.close()

    async def wait_closed(self) -> None:
        """Wait until the listening socket is closed (after :meth:`close`)."""
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.gather(*self._accept_loops, return_exceptions=True)
        self._accept_loops = []
        self._sockets = []

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``, once listening."""
        if self._server is not None and self._server.sockets:
            name = self._server.sockets[0].getsockname()
        elif self._sockets:
            name = self._sockets[0].getsockname()
        else:
            raise RuntimeError("the transport is not listening")
        return str(name[0]), int(name[1])

    def close_connections_from(self, peer_id: int) -> None:
        """Close every connection whose HELLO said it is ``peer_id`` (a removed peer)."""
        for task, conn in self.connections.items():
            if conn.sender == peer_id:
                conn.closed = True
                task.cancel()

    def close_connections(self) -> None:
        """Deliver nothing more from any connection (the transport is stopping)."""
        for conn in self.connections.values():
            conn.closed = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The plain listener's callback: serve one inbound connection. Never raises."""
        address = peer_address(writer)
        if not self._admitted(address):
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        conn = self.connections[task] = Inbound(address)
        await self._run(conn, None, reader, writer)

    async def _accept_tls(self, listening: socket.socket) -> None:
        """Accept connections on ``listening``; serve each, TLS first, in a task of its own.

        A failed accept (out of file descriptors, a connection aborted before
        it was taken) is logged, at most once per ten seconds, and accepting
        goes on after a pause, as asyncio's own server does: one error must
        not leave the node deaf to its peers.
        """
        loop = asyncio.get_running_loop()
        next_warning = 0.0
        while True:
            try:
                sock, _ = await loop.sock_accept(listening)
            except OSError as exc:
                now = time.monotonic()
                if now >= next_warning:
                    next_warning = now + _REFUSAL_WARNING_INTERVAL
                    self._log.warning(
                        "node %d: accepting a peer connection failed: %s; still accepting",
                        self.node_id,
                        describe_error(exc),
                    )
                await asyncio.sleep(_ACCEPT_RETRY_S)
                continue
            address = _socket_address(sock)
            if not self._admitted(address):
                sock.close()
                continue
            conn = Inbound(address)
            # Registered before it runs, so stop() also cancels a TLS handshake in progress.
            task = loop.create_task(self._run(conn, sock, None, None))
            self.connections[task] = conn
            task.add_done_callback(partial(self._tls_task_done, conn, sock))

    def _tls_task_done(self, conn: Inbound, sock: socket.socket, task: asyncio.Task[None]) -> None:
        """Forget a TLS connection's task; close its socket if it was cancelled before it ran
        (a coroutine cancelled before its first step runs none of its ``finally``)."""
        self.connections.pop(task, None)
        if not conn.started:
            sock.close()

    def _admitted(self, address: str) -> bool:
        """Whether a new connection may be served (accepting, and under the cap)."""
        if not self._accepting:
            return False
        if len(self.connections) >= self._max_inbound:
            self._refuse(address)
            return False
        return True

    async def _run(
        self,
        conn: Inbound,
        sock: socket.socket | None,
        reader: asyncio.StreamReader | None,
        writer: asyncio.StreamWriter | None,
    ) -> None:
        """Serve one registered connection, TLS first if ``sock`` is given; log how it ended."""
        task = asyncio.current_task()
        assert task is not None
        conn.started = True
        try:
            if sock is not None:
                # From here on TLS's transport owns the socket, and closes it.
                reader, writer = await self._start_tls(sock)
            assert reader is not None
            assert writer is not None
            set_nodelay(writer)
            await self._serve(conn, reader, writer)
        except asyncio.CancelledError:
            # stop(), or the sender was removed. asyncio's callback for this
            # task calls task.exception(), which must not meet a cancellation.
            self._log.debug("node %d: closed connection from %s", self.node_id, conn.address)
        except (WireError, TimeoutError) as exc:
            self._log.warning(
                "node %d: closing peer connection from %s%s: %s",
                self.node_id,
                conn.address,
                f" (node {conn.sender})" if conn.sender is not None else "",
                describe_error(exc),
            )
        except (ConnectionError, EOFError) as exc:
            self._log.info(
                "node %d: peer connection from %s ended: %s",
                self.node_id,
                conn.address,
                describe_error(exc),
            )
        except OSError as exc:  # the disk, while receiving a snapshot
            self._log.warning(
                "node %d: peer connection from %s ended: %s",
                self.node_id,
                conn.address,
                describe_error(exc),
            )
        except Exception:
            self._log.exception(
                "node %d: peer connection from %s failed", self.node_id, conn.address
            )
        finally:
            self.connections.pop(task, None)
            if writer is not None:
                with contextlib.suppress(BaseException):
                    await abort(writer)

    async def _start_tls(
        self, sock: socket.socket
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The server side of TLS on an accepted socket, within the handshake deadline.

        Raises:
            WireError: the handshake failed, saying why (an expired or unknown
                certificate, a caller without TLS).
            TimeoutError: it did not finish within the deadline.
        """
        loop = asyncio.get_running_loop()
        context = self._handshake.auth.server_context
        reader = FrameReader(STREAM_LIMIT, loop)
        protocol = _TLSStreamProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=context,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except asyncio.CancelledError:
            # Cancelled (stop(), a removed peer) once TLS had finished but before
            # this task resumed, asyncio *closes* the TLS transport: a graceful
            # shutdown that holds the socket until the peer answers or
            # ssl_shutdown_timeout (30 s) passes. Abort it instead, as any other
            # connection is. (Cancelled during the handshake, asyncio aborts it.)
            if protocol.transport is not None:
                # uvloop's TLS transport is not an asyncio.Transport subclass, but has abort().
                cast(asyncio.Transport, protocol.transport).abort()
            raise
        except ssl.SSLError as exc:
            raise WireError(f"TLS handshake failed: {ssl_reason(exc)}") from None
        except ConnectionError:
            # asyncio reports some failed server-side handshakes as a lost
            # connection, without OpenSSL's reason.
            raise WireError(
                "TLS handshake failed: the connection was lost (a caller without "
                "peer TLS, or one that refused this node's certificate)"
            ) from None
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    def _refuse(self, address: str) -> None:
        """Count a connection refused over the cap; warn at most every ten seconds."""
        self._refused += 1
        now = time.monotonic()
        if now < self._next_refusal_warning:
            return
        self._next_refusal_warning = now + _REFUSAL_WARNING_INTERVAL
        self._log.warning(
            "node %d: refusing peer connections (%d, the last from %s): "
            "%d inbound connections are open, the limit",
            self.node_id,
            self._refused,
            address,
            len(self.connections),
        )
        self._refused = 0

    def _admit(self, sender: int) -> None:
        """Refuse a caller that is not a member (read now: membership changes apply at once)."""
        if sender not in self._members and not self._allow_unknown:
            raise WireError(f"node {sender} is not a member")

    async def _serve(
        self, conn: Inbound, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The handshake, then every frame the peer sends, until it closes."""
        try:
            async with asyncio.timeout(self._handshake_timeout):
                sender = await self._handshake.accept(reader, writer, self._admit)
        except EOFError:
            raise WireError("closed before HELLO") from None
        # From here on the connection speaks for ``sender`` and for nobody else.
        conn.sender = sender
        self._log.debug("node %d: accepted peer %d from %s", self.node_id, sender, conn.address)
        deliver = partial(self._deliver, conn, sender)
        me = self.node_id
        fast = isinstance(reader, FrameReader)
        while True:
            if fast:
                # MESSAGES frames from the data callback, until another kind.
                fast = False
                assert isinstance(reader, FrameReader)
                if not await reader.deliver_messages(deliver, self._max_frame):
                    return  # a clean close between frames
            try:
                kind, body = await read_frame(reader, self._max_frame)
            except EOFError:
                return  # a clean close between frames
            if kind is FrameKind.MESSAGES:
                deliver(body)
            elif kind is FrameKind.SNAPSHOT_BEGIN:
                m = decode_snapshot_begin(body)
                if m.frm != sender or m.to != me:
                    raise WireError(f"refusing a snapshot from {m.frm} to {m.to}")
                await self._snapshots.receive(m, reader, writer)
                fast = isinstance(reader, FrameReader)
            else:
                raise WireError(f"unexpected {kind.name} frame")

    def _deliver(self, conn: Inbound, sender: int, body: bytes) -> None:
        """A MESSAGES frame's body from ``sender``'s connection: checked, then to the handler.

        Raises:
            WireError: a bad message, or one not from ``sender`` to this node
                (nothing of the frame is delivered).
        """
        if conn.closed:
            return
        messages = decode_messages(body)
        me = self.node_id
        for m in messages:
            if m.frm != sender or m.to != me or m.type == MessageType.SNAP:
                raise WireError(
                    f"refusing {m.type.name} from {m.frm} to {m.to} on node {sender}'s connection"
                )
        # To the handler on the next loop iteration, in order (FIFO): what else
        # this iteration brought (client requests) is proposed before the
        # Ready that these messages start, as when a task read the frame.
        asyncio.get_running_loop().call_soon(self._hand_over, conn, messages)

    def _hand_over(self, conn: Inbound, messages: list[Message]) -> None:
        if not conn.closed and self._accepting:  # not after the transport stopped
            self._call(self._handler.on_messages, messages)


class _TLSStreamProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol that keeps the transport it is given (after TLS), so that
    :meth:`Listener._start_tls` can abort it if cancelled before it returns it."""

    transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        super().connection_made(transport)


async def _bind(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address of ``host`` (as ``create_server`` binds them).

    With port 0 the first address picks the port and the others use it too.
    """
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(100)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _socket_address(sock: socket.socket) -> str:
    """``host:port`` of the other end of an accepted socket, for logs."""
    try:
        name = sock.getpeername()
    except OSError:
        return "?"
    return f"{name[0]}:{name[1]}"
