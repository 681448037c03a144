"""The inbound side of the peer transport: accepting peers' connections and reading them.

Theory of operation
-------------------
What a peer sends to this node arrives on the peer's own outbound connection
(:mod:`raftdb.transport.sender`), accepted here. The caller speaks first: its
HELLO must be valid, arrive within a deadline and come from a member
(:class:`Handshake`, which the caller applies to this node's HELLO in turn);
the listener answers with its own HELLO and from then on only reads, except
for the SNAPSHOT_ACK that ends a snapshot stream
(:mod:`raftdb.transport.snapshots`). Each MESSAGES frame is decoded and handed
to the handler's ``on_messages`` in one call, in the order received.

Inbound, every connection is suspect: the first frame must be a valid HELLO
within a deadline, from a member; every message must come from the node that
said HELLO and be addressed to this node. Anything else — garbage, a
truncated or oversized frame, a wrong token, a stranger — closes that one
connection with one warning, and nothing of the offending frame is delivered.
No exception leaves a connection's task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any

from raftdb.raft.messages import MessageType
from raftdb.transport.frames import (
    PROTOCOL_VERSION,
    FrameKind,
    Hello,
    WireError,
    decode_hello,
    decode_messages,
    decode_snapshot_begin,
    encode_hello,
)
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

__all__ = ["Handshake", "Inbound", "Listener"]


class Handshake:
    """This node's side of the HELLO exchange, the same at both ends of a connection.

    The caller writes :attr:`hello` and reads the listener's answer; the
    listener reads the caller's HELLO and answers with :attr:`hello`. Each end
    refuses a peer of another protocol version or another cluster.
    """

    __slots__ = ("cluster_token", "hello", "node_id")

    def __init__(self, node_id: int, cluster_token: str) -> None:
        self.node_id = node_id
        self.cluster_token = cluster_token
        #: This node's HELLO frame, encoded once.
        self.hello = encode_hello(Hello(PROTOCOL_VERSION, node_id, cluster_token))

    async def read(self, reader: asyncio.StreamReader, max_message_frame: int) -> Hello:
        """The other end's HELLO: the next frame, of this protocol version and cluster.

        Raises:
            EOFError: the connection closed before a frame.
            WireError: another frame, a bad HELLO, or one of another version or
                cluster (saying which, in words for the log).
            OSError: the connection failed.
        """
        kind, body = await read_frame(reader, max_message_frame)
        if kind is not FrameKind.HELLO:
            raise WireError(f"expected HELLO, got a {kind.name} frame")
        hello = decode_hello(body)
        if hello.version != PROTOCOL_VERSION:
            raise WireError(
                f"node {hello.node_id} speaks protocol version {hello.version}, "
                f"this node version {PROTOCOL_VERSION}"
            )
        if hello.cluster_token != self.cluster_token:
            raise WireError(
                f"node {hello.node_id} is in cluster {hello.cluster_token!r}, "
                f"not {self.cluster_token!r}"
            )
        return hello


class Inbound:
    """One accepted connection; ``sender`` is known after its HELLO."""

    __slots__ = ("address", "sender")

    def __init__(self, address: str) -> None:
        self.address = address
        self.sender: int | None = None


class Listener:
    """Accepts peers' connections and delivers what they send to the handler.

    Args:
        handshake: this node's HELLO, and the checks of a caller's; its node
            id is this node's, to which every message must be addressed.
        handler: receives the messages.
        members: the node ids allowed to connect (the transport's peers,
            read at each HELLO, so membership changes apply at once).
        snapshots: receives the snapshot streams that arrive.
        call: calls a handler method, logging its exception; True if it returned.
        max_message_frame: the largest MESSAGES or SNAPSHOT_BEGIN frame body accepted.
        allow_unknown_senders: accept node ids that are not in ``members``.
        handshake_timeout: how long an inbound connection may take to HELLO.
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
        self._log = logger
        self._server: asyncio.Server | None = None
        self._accepting = False
        #: The task serving each accepted connection, while it lasts.
        self.connections: dict[asyncio.Task[Any], Inbound] = {}

    async def listen(self, host: str, port: int) -> None:
        """Bind ``host:port`` and start accepting.

        Raises:
            OSError: the address cannot be bound.
        """
        self._server = await asyncio.start_server(self._accept, host, port, limit=STREAM_LIMIT)
        self._accepting = True

    def close(self) -> None:
        """Stop accepting; a connection accepted from now on is closed at once."""
        self._accepting = False
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        """Wait until the listening socket is closed (after :meth:`close`)."""
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``, once listening."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the transport is not listening")
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    def close_connections_from(self, peer_id: int) -> None:
        """Close every connection whose HELLO said it is ``peer_id`` (a removed peer)."""
        for task, conn in self.connections.items():
            if conn.sender == peer_id:
                task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The listener's callback: serve one inbound connection. Never raises."""
        if not self._accepting:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        conn = Inbound(peer_address(writer))
        self.connections[task] = conn
        try:
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
            del self.connections[task]
            with contextlib.suppress(BaseException):
                await abort(writer)

    async def _serve(
        self, conn: Inbound, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The HELLO exchange, then every frame the peer sends, until it closes."""
        try:
            async with asyncio.timeout(self._handshake_timeout):
                hello = await self._handshake.read(reader, self._max_frame)
        except EOFError:
            raise WireError("closed before HELLO") from None
        sender = hello.node_id
        if sender == self.node_id:
            raise WireError(f"the caller claims to be this node ({sender})")
        if sender not in self._members and not self._allow_unknown:
            raise WireError(f"node {sender} is not a member")
        conn.sender = sender
        writer.write(self._handshake.hello)
        self._log.debug("node %d: accepted peer %d from %s", self.node_id, sender, conn.address)
        me = self.node_id
        while True:
            try:
                kind, body = await read_frame(reader, self._max_frame)
            except EOFError:
                return  # a clean close between frames
            if kind is FrameKind.MESSAGES:
                messages = decode_messages(body)
                for m in messages:
                    if m.frm != sender or m.to != me or m.type == MessageType.SNAP:
                        raise WireError(
                            f"refusing {m.type.name} from {m.frm} to {m.to} "
                            f"on node {sender}'s connection"
                        )
                self._call(self._handler.on_messages, messages)
            elif kind is FrameKind.SNAPSHOT_BEGIN:
                m = decode_snapshot_begin(body)
                if m.frm != sender or m.to != me:
                    raise WireError(f"refusing a snapshot from {m.frm} to {m.to}")
                await self._snapshots.receive(m, reader, writer)
            else:
                raise WireError(f"unexpected {kind.name} frame")
