"""The peer transport: Raft messages between nodes over persistent TCP connections.

Theory of operation
-------------------
Every node keeps one outbound connection to each peer and uses it only to
send; what a peer sends to it arrives on the peer's own outbound connection.
A connection opens with a HELLO each way (protocol version, node id, cluster
token): the listener checks that the caller is a member of its cluster, the
caller checks that it reached the node it meant to. After that the caller
only writes MESSAGES frames (see :mod:`raftdb.transport.frames`).

Sending never blocks. :meth:`Transport.send` appends each message to its
recipient's bounded queue and wakes that peer's writer task, which takes
*everything* queued, packs it into as few frames as the frame limit allows,
writes them and awaits ``drain()``. While it waits, new messages pile up and
go out together in the next round: batching grows with load by itself. A
message that cannot be queued (unknown recipient, queue full, peer known to be
down) is dropped and reported through ``on_unreachable``: Raft resends, so
the transport never has to, and memory stays bounded by ``max_queue``.

A lost connection is retried with exponential backoff (capped, with jitter
from an injected ``random.Random``). Until the handshake succeeds again the
peer is "down" and messages to it are dropped at once rather than queued.

Snapshots: a SNAP message goes to a per-peer snapshot task with a connection
of its own, so a large snapshot never delays heartbeats and appends. The task
asks the handler for the state machine's snapshot (:class:`SnapshotChunks`), pulls its
chunks in a worker thread (never on the event loop), sends SNAPSHOT_BEGIN,
SNAPSHOT_CHUNK frames with ``drain()`` after each (flow control: about one
chunk in memory), SNAPSHOT_END with the size and CRC-32, and waits for the
receiver's SNAPSHOT_ACK, which comes only once the receiver has written the
stream to a file, fsynced it and handed it to its handler. The result goes to
``on_snapshot_sent`` exactly once per SNAP (unless the transport is stopped).

Inbound, every connection is suspect: the first frame must be a valid HELLO
within a deadline, from a member; every message must come from the node that
said HELLO and be addressed to this node. Anything else — garbage, a
truncated or oversized frame, a wrong token, a stranger — closes that one
connection with one warning, and nothing of the offending frame is delivered.
No exception leaves a task of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from raftdb.codec import pack
from raftdb.raft.messages import LOCAL_MESSAGES, Message, MessageType
from raftdb.transport.address import parse_peer_url
from raftdb.transport.frames import (
    DEFAULT_MAX_MESSAGE_FRAME,
    MAX_TOKEN_LENGTH,
    PROTOCOL_VERSION,
    FrameKind,
    Hello,
    SnapshotAck,
    WireError,
    decode_hello,
    decode_messages,
    decode_snapshot_begin,
    encode_ack,
    encode_hello,
    message_to_list,
    messages_frame,
)
from raftdb.transport.stream import (
    SnapshotChunks,
    abort,
    in_thread,
    peer_address,
    prepare_snapshot_dir,
    read_frame,
    receive_snapshot,
    send_snapshot,
    set_nodelay,
)

__all__ = ["Transport", "TransportHandler"]

_T = TypeVar("_T")

#: StreamReader buffer limit: frames are read with readexactly, so this only
#: sets how much is buffered before the socket is paused.
_STREAM_LIMIT: Final = 1 << 20
#: The sender cuts snapshot chunks to at most this (flow control granularity).
_SEND_CHUNK: Final = 1 << 20
#: Room for the msgpack array header inside a MESSAGES frame.
_ARRAY_HEADER_ROOM: Final = 5
#: How long closing a socket or finishing a worker thread may take at shutdown.
_CLOSE_TIMEOUT: Final = 5.0
#: A connection that lived less than this counts as a failed attempt for backoff.
_STABLE_CONNECTION: Final = 1.0
#: Temporary files of snapshots being received: ``<prefix><sender>-<index>-*<suffix>``.
_PART_PREFIX: Final = "incoming-"
_PART_SUFFIX: Final = ".part"
_SNAP_SUFFIX: Final = ".snap"

# Peer states for sending.
_CONNECTING: Final = 0  # first attempt in progress: queue
_UP: Final = 1  # handshake done: queue
_DOWN: Final = 2  # failed or lost, retrying: drop


class TransportHandler(Protocol):
    """What the transport calls back. Every method is called on the event loop
    and must not block it; none may expect to be called from inside
    :meth:`Transport.send` (reports are deferred to the next loop iteration).
    An exception from a handler method is logged and otherwise ignored.
    """

    def on_messages(self, messages: list[Message]) -> None:
        """Messages arrived from one peer, validated and in the order sent.

        Args:
            messages: one frame's worth, all from the same sender, addressed
                to this node, never SNAP (see :meth:`on_snapshot_received`).
        """
        ...

    def on_unreachable(self, peer_id: int) -> None:
        """A message to ``peer_id`` was dropped (unknown peer, queue full, peer
        down, or lost with a broken connection). Several drops in one loop
        iteration are reported once. Raft: ``report_unreachable``."""
        ...

    def open_snapshot(self, message: Message) -> SnapshotChunks:
        """The state machine snapshot to send with the SNAP ``message``.

        The transport iterates the stream in a worker thread and closes it
        when done or failed. Raising here fails the send
        (``on_snapshot_sent(peer, False)``).
        """
        ...

    def on_snapshot_sent(self, peer_id: int, ok: bool) -> None:
        """The snapshot to ``peer_id`` was received and stored (``ok``) or
        failed. Called once per SNAP passed to :meth:`Transport.send`, except
        a SNAP dropped because another is in flight to the same peer, and
        except after :meth:`Transport.stop`. Raft: ``report_snapshot``."""
        ...

    def on_snapshot_received(self, message: Message, path: Path) -> None:
        """A whole snapshot stream arrived, was checked (size, CRC-32) and
        fsynced into ``path`` (in ``snapshot_dir``).

        The handler owns the file from now on. ``message`` is the SNAP to step
        once the state machine is restored from the file; its snapshot
        ``data`` is empty. Returning normally acknowledges the snapshot to
        the sender; raising makes the sender report a failure.
        """
        ...


class _Peer:
    """Sending state for one peer: queue, writer task, snapshot task."""

    __slots__ = (
        "failures",
        "host",
        "id",
        "lost",
        "port",
        "queue",
        "snapshot_task",
        "state",
        "task",
        "url",
        "wake",
    )

    def __init__(self, peer_id: int, url: str) -> None:
        self.id = peer_id
        self.url = url
        address = parse_peer_url(url)
        self.host, self.port = address.host, address.port
        self.queue: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.state = _CONNECTING
        self.lost = False
        self.failures = 0
        self.task: asyncio.Task[None] | None = None
        self.snapshot_task: asyncio.Task[None] | None = None


class _Inbound:
    """One accepted connection; ``sender`` is known after its HELLO."""

    __slots__ = ("address", "sender")

    def __init__(self, address: str) -> None:
        self.address = address
        self.sender: int | None = None


class Transport:
    """Sends Raft messages to peers and delivers theirs to a handler.

    Args:
        node_id: this node's id (at least 1).
        listen_url: where to accept peers, ``http://host:port`` (port 0: any).
        peers: ``{node id: peer URL}``; this node's own id may be included and
            is ignored.
        handler: receives messages and reports (:class:`TransportHandler`).
        cluster_token: nodes with different tokens refuse each other.
        snapshot_dir: where received snapshots are written (created if needed;
            leftover partial files from a crash are removed at start).
        max_queue: messages queued per peer before dropping.
        max_message_frame: the largest MESSAGES or SNAPSHOT_BEGIN frame body
            sent or accepted. A single message larger than this is dropped.
        allow_unknown_senders: accept connections from node ids that are not
            in ``peers`` (by default they are refused; a joining node is added
            to the leader's peers before it is sent anything).
        rng: jitter for reconnection backoff.
        connect_timeout: for a TCP connect plus the HELLO exchange.
        handshake_timeout: how long an inbound connection may take to HELLO.
        snapshot_timeout: the longest silence inside a snapshot stream, and
            the longest wait for the receiver's acknowledgement.
        backoff_base, backoff_cap: reconnection delays, seconds: ``base * 2**n``
            capped at ``cap``, each scaled by a random factor in [0.5, 1).
        logger: where connection events go (default ``raftdb.transport``).

    Raises:
        ValueError: a bad id, URL, token or limit.
    """

    def __init__(
        self,
        node_id: int,
        listen_url: str,
        peers: Mapping[int, str],
        handler: TransportHandler,
        *,
        cluster_token: str = "raftdb",
        snapshot_dir: Path,
        max_queue: int = 4096,
        max_message_frame: int = DEFAULT_MAX_MESSAGE_FRAME,
        allow_unknown_senders: bool = False,
        rng: random.Random | None = None,
        connect_timeout: float = 2.0,
        handshake_timeout: float = 5.0,
        snapshot_timeout: float = 30.0,
        backoff_base: float = 0.05,
        backoff_cap: float = 1.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if type(node_id) is not int or node_id < 1:
            raise ValueError(f"node id must be an integer >= 1, not {node_id!r}")
        if len(cluster_token) > MAX_TOKEN_LENGTH:
            raise ValueError(f"cluster token is longer than {MAX_TOKEN_LENGTH} characters")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, not {max_queue}")
        if not 1024 <= max_message_frame <= 0xFFFFFFFF:
            raise ValueError(f"max_message_frame must be in [1024, 2**32), not {max_message_frame}")
        self.node_id = node_id
        self._listen_url = listen_url
        listen = parse_peer_url(listen_url, listen=True)
        self._listen_host, self._listen_port = listen.host, listen.port
        self._peer_urls = self._check_peers(peers)
        self._handler = handler
        self._token = cluster_token
        self._hello = encode_hello(Hello(PROTOCOL_VERSION, node_id, cluster_token))
        self._snapshot_dir = Path(snapshot_dir)
        self._max_queue = max_queue
        self._max_frame = max_message_frame
        self._allow_unknown = allow_unknown_senders
        self._rng = rng if rng is not None else random.Random()
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._snapshot_timeout = snapshot_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._log = logger if logger is not None else logging.getLogger("raftdb.transport")

        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._running = False
        self._peers: dict[int, _Peer] = {}
        self._inbound: dict[asyncio.Task[Any], _Inbound] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._unreachable: set[int] = set()
        self._snapshot_failures: list[int] = []
        self._report_scheduled = False

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Listen for peers and start connecting to them.

        Raises:
            OSError: the listen address cannot be bound (the message names it).
            RuntimeError: already started.
        """
        if self._loop is not None:
            raise RuntimeError("the transport was already started")
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(prepare_snapshot_dir, self._snapshot_dir)
        try:
            self._server = await asyncio.start_server(
                self._accept, self._listen_host, self._listen_port, limit=_STREAM_LIMIT
            )
        except OSError as exc:
            self._loop = None
            raise OSError(
                exc.errno,
                f"cannot listen for peers on {self._listen_url} "
                f"({self._listen_host}:{self._listen_port}): {exc.strerror or exc}",
            ) from exc
        self._running = True
        host, port = self.listen_address
        self._log.info("node %d listening for peers on %s:%d", self.node_id, host, port)
        for peer_id, url in self._peer_urls.items():
            self._add_peer(peer_id, url)

    async def stop(self) -> None:
        """Close the listener and every connection, end every task. Idempotent.

        Nothing is reported to the handler after this returns (or during it).
        """
        if not self._running:
            return
        self._running = False
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task[Any]] = list(self._retired)
        for peer in self._peers.values():
            tasks.extend(t for t in (peer.task, peer.snapshot_task) if t is not None)
        tasks.extend(self._inbound)
        self._peers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._log.info("node %d: peer transport stopped", self.node_id)

    @property
    def listen_address(self) -> tuple[str, int]:
        """The bound ``(host, port)``, once started (the real port if 0 was asked)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the transport is not listening")
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Change the membership: connect to new peers, drop removed ones.

        A peer whose URL changed is reconnected. Removing a peer drops its
        queue, fails its snapshot in flight (``on_snapshot_sent(id, False)``)
        and closes its inbound connections.

        Raises:
            ValueError: a URL is bad (nothing is changed then).
        """
        urls = self._check_peers(peers)
        old = self._peer_urls
        self._peer_urls = urls
        if not self._running:
            return
        for peer_id, url in old.items():
            if urls.get(peer_id) != url:
                self._remove_peer(peer_id)
        for peer_id, url in urls.items():
            if peer_id not in self._peers:
                self._add_peer(peer_id, url)

    def queue_lengths(self) -> dict[int, int]:
        """Messages waiting to be written, by peer id."""
        return {peer_id: len(peer.queue) for peer_id, peer in self._peers.items()}

    # -- sending ---------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        """Queue ``messages`` for their recipients (``Message.to``); never blocks.

        A message that cannot be queued is dropped and its recipient reported
        to ``on_unreachable`` soon after (not from inside this call). SNAP
        messages start a snapshot transfer, at most one per peer at a time.
        After :meth:`stop`, messages are silently dropped.

        Raises:
            RuntimeError: called before :meth:`start`.
        """
        if not self._running:
            if self._loop is None:
                raise RuntimeError("Transport.send() called before start()")
            return
        peers = self._peers
        max_queue = self._max_queue
        for m in messages:
            peer = peers.get(m.to)
            if peer is None:
                self._log.debug("dropping %s to unknown peer %d", m.type.name, m.to)
                self._report_unreachable(m.to, snapshot=m.type == MessageType.SNAP)
            elif m.type == MessageType.SNAP:
                self._start_snapshot(peer, m)
            elif peer.state == _DOWN or len(peer.queue) >= max_queue:
                self._report_unreachable(peer.id)
            elif m.type in LOCAL_MESSAGES:
                self._log.error("refusing to send local message %s to a peer", m.type.name)
            else:
                peer.queue.append(m)
                peer.wake.set()

    def _report_unreachable(self, peer_id: int, *, snapshot: bool = False) -> None:
        self._unreachable.add(peer_id)
        if snapshot:
            self._snapshot_failures.append(peer_id)
        if not self._report_scheduled and self._loop is not None:
            self._report_scheduled = True
            self._loop.call_soon(self._flush_reports)

    def _flush_reports(self) -> None:
        self._report_scheduled = False
        unreachable, self._unreachable = self._unreachable, set()
        failures, self._snapshot_failures = self._snapshot_failures, []
        if not self._running:
            return
        for peer_id in sorted(unreachable):
            self._call(self._handler.on_unreachable, peer_id)
        for peer_id in failures:
            self._call(self._handler.on_snapshot_sent, peer_id, False)

    def _call(self, fn: Callable[..., object], *args: Any) -> bool:
        """Call a handler method; log and swallow its exception. True if it returned."""
        try:
            fn(*args)
        except Exception:
            self._log.exception("the transport handler's %s failed", fn.__name__)
            return False
        return True

    # -- peers --------------------------------------------------------------------------

    def _check_peers(self, peers: Mapping[int, str]) -> dict[int, str]:
        urls: dict[int, str] = {}
        for peer_id, url in peers.items():
            if type(peer_id) is not int or peer_id < 1:
                raise ValueError(f"peer id must be an integer >= 1, not {peer_id!r}")
            parse_peer_url(url)
            if peer_id != self.node_id:
                urls[peer_id] = url
        return urls

    def _add_peer(self, peer_id: int, url: str) -> None:
        assert self._loop is not None
        peer = _Peer(peer_id, url)
        peer.task = self._loop.create_task(self._run_peer(peer), name=f"raftdb-peer-{peer_id}")
        self._peers[peer_id] = peer

    def _remove_peer(self, peer_id: int) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return
        self._log.info("node %d: peer %d removed", self.node_id, peer_id)
        peer.queue.clear()
        for task in (peer.task, peer.snapshot_task):
            if task is not None and not task.done():
                task.cancel()
                self._retire(task)
        for task, conn in self._inbound.items():
            if conn.sender == peer_id:
                task.cancel()

    def _retire(self, task: asyncio.Task[None]) -> None:
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def _backoff(self, failures: int) -> float:
        delay = min(self._backoff_cap, self._backoff_base * (1 << min(failures, 30)))
        return delay * (0.5 + 0.5 * self._rng.random())

    def _drop_queue(self, peer: _Peer) -> None:
        if peer.queue:
            peer.queue.clear()
            self._report_unreachable(peer.id)

    async def _run_peer(self, peer: _Peer) -> None:
        """Keep a connection to ``peer`` and write its queue to it, forever."""
        while True:
            try:
                reader, writer = await self._connect(peer)
            except (OSError, EOFError, WireError) as exc:
                peer.state = _DOWN
                self._drop_queue(peer)
                log = self._log.warning if peer.failures == 0 else self._log.debug
                log(
                    "node %d: cannot reach peer %d at %s: %s; retrying",
                    self.node_id,
                    peer.id,
                    peer.url,
                    _describe(exc),
                )
                peer.failures += 1
                await asyncio.sleep(self._backoff(peer.failures))
                continue
            except Exception:
                # A bug, not a network failure: say so loudly, but keep trying.
                self._log.exception("node %d: connecting to peer %d failed", self.node_id, peer.id)
                peer.state = _DOWN
                peer.failures += 1
                await asyncio.sleep(self._backoff(peer.failures))
                continue
            self._log.info("node %d: connected to peer %d at %s", self.node_id, peer.id, peer.url)
            peer.state = _UP
            since = time.monotonic()
            try:
                await self._pump(peer, reader, writer)
                reason = "closed by the peer"
            except (OSError, EOFError, WireError) as exc:
                reason = _describe(exc)
            except Exception as exc:
                self._log.exception("node %d: sending to peer %d failed", self.node_id, peer.id)
                reason = _describe(exc)
            finally:
                peer.state = _DOWN
                await abort(writer)
            self._drop_queue(peer)
            stable = time.monotonic() - since >= _STABLE_CONNECTION
            peer.failures = 0 if stable else peer.failures + 1
            self._log.warning(
                "node %d: lost connection to peer %d: %s; reconnecting",
                self.node_id,
                peer.id,
                reason,
            )
            if not stable:
                await asyncio.sleep(self._backoff(peer.failures))

    async def _connect(self, peer: _Peer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``peer`` after a successful HELLO exchange."""
        async with asyncio.timeout(self._connect_timeout):
            reader, writer = await asyncio.open_connection(
                peer.host, peer.port, limit=_STREAM_LIMIT
            )
            try:
                set_nodelay(writer)
                writer.write(self._hello)
                kind, body = await read_frame(reader, self._max_frame)
                if kind is not FrameKind.HELLO:
                    raise WireError(f"expected HELLO, got a {kind.name} frame")
                hello = decode_hello(body)
                self._check_hello(hello)
                if hello.node_id != peer.id:
                    raise WireError(f"{peer.url} is node {hello.node_id}, not node {peer.id}")
            except BaseException:
                await abort(writer)
                raise
        return reader, writer

    def _check_hello(self, hello: Hello) -> None:
        if hello.version != PROTOCOL_VERSION:
            raise WireError(
                f"node {hello.node_id} speaks protocol version {hello.version}, "
                f"this node version {PROTOCOL_VERSION}"
            )
        if hello.cluster_token != self._token:
            raise WireError(
                f"node {hello.node_id} is in cluster {hello.cluster_token!r}, not {self._token!r}"
            )

    async def _pump(
        self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Write ``peer``'s queue to ``writer`` until the connection is lost."""
        assert self._loop is not None
        peer.lost = False
        watch = self._loop.create_task(self._watch(peer, reader))
        try:
            while True:
                if not peer.queue:
                    peer.wake.clear()
                    await peer.wake.wait()
                if peer.lost:
                    return
                self._write_queue(peer, writer)
                await writer.drain()
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _watch(self, peer: _Peer, reader: asyncio.StreamReader) -> None:
        # The listener never writes after its HELLO: any read returning means
        # the connection is over (EOF, reset, or a misbehaving peer).
        with contextlib.suppress(OSError):
            await reader.read(1)
        peer.lost = True
        peer.wake.set()

    def _write_queue(self, peer: _Peer, writer: asyncio.StreamWriter) -> None:
        """Everything queued for ``peer``, packed into as few frames as allowed."""
        queue = peer.queue
        room = self._max_frame - _ARRAY_HEADER_ROOM
        parts: list[bytes] = []
        size = 0
        while queue:
            m = queue.popleft()
            try:
                packed = pack(message_to_list(m))
            except Exception as exc:
                self._log.error("cannot encode %s to peer %d (dropped): %s", m.type.name, m.to, exc)
                self._report_unreachable(peer.id)
                continue
            if len(packed) > room:
                self._log.warning(
                    "dropping a %d-byte %s to peer %d: over the frame limit of %d bytes",
                    len(packed),
                    m.type.name,
                    peer.id,
                    self._max_frame,
                )
                self._report_unreachable(peer.id)
                continue
            if size + len(packed) > room:
                writer.write(messages_frame(parts))
                parts, size = [], 0
            parts.append(packed)
            size += len(packed)
        if parts:
            writer.write(messages_frame(parts))

    # -- sending snapshots -------------------------------------------------------------

    def _start_snapshot(self, peer: _Peer, m: Message) -> None:
        if peer.snapshot_task is not None and not peer.snapshot_task.done():
            self._log.info(
                "node %d: a snapshot to peer %d is in flight; dropping another", self.node_id, m.to
            )
            return
        assert self._loop is not None
        peer.snapshot_task = self._loop.create_task(
            self._send_snapshot(peer, m), name=f"raftdb-snapshot-to-{peer.id}"
        )

    async def _send_snapshot(self, peer: _Peer, m: Message) -> None:
        ok = False
        index = m.snapshot.metadata.index if m.snapshot is not None else 0
        writer: asyncio.StreamWriter | None = None
        try:
            stream = self._handler.open_snapshot(m)
            try:
                reader, writer = await self._connect(peer)
            except BaseException:
                with contextlib.suppress(Exception):
                    await in_thread(stream.close)
                raise
            ok, size = await send_snapshot(
                reader,
                writer,
                m,
                stream,
                ack_timeout=self._snapshot_timeout,
                max_message_frame=self._max_frame,
            )
            if ok:
                self._log.info(
                    "node %d: sent snapshot at index %d to peer %d (%d bytes)",
                    self.node_id,
                    index,
                    peer.id,
                    size,
                )
            else:
                self._log.warning(
                    "node %d: peer %d refused the snapshot at index %d",
                    self.node_id,
                    peer.id,
                    index,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log.warning(
                "node %d: sending snapshot at index %d to peer %d failed: %s",
                self.node_id,
                index,
                peer.id,
                _describe(exc),
            )
        finally:
            if writer is not None:
                await abort(writer)
            if self._running:
                self._call(self._handler.on_snapshot_sent, peer.id, ok)

    # -- receiving -----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The listener's callback: serve one inbound connection. Never raises."""
        if not self._running:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        conn = _Inbound(peer_address(writer))
        self._inbound[task] = conn
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
                _describe(exc),
            )
        except (ConnectionError, EOFError) as exc:
            self._log.info(
                "node %d: peer connection from %s ended: %s",
                self.node_id,
                conn.address,
                _describe(exc),
            )
        except OSError as exc:  # the disk, while receiving a snapshot
            self._log.warning(
                "node %d: peer connection from %s ended: %s",
                self.node_id,
                conn.address,
                _describe(exc),
            )
        except Exception:
            self._log.exception(
                "node %d: peer connection from %s failed", self.node_id, conn.address
            )
        finally:
            del self._inbound[task]
            with contextlib.suppress(BaseException):
                await abort(writer)

    async def _serve(
        self, conn: _Inbound, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            async with asyncio.timeout(self._handshake_timeout):
                kind, body = await read_frame(reader, self._max_frame)
        except EOFError:
            raise WireError("closed before HELLO") from None
        if kind is not FrameKind.HELLO:
            raise WireError(f"expected HELLO, got a {kind.name} frame")
        hello = decode_hello(body)
        self._check_hello(hello)
        sender = hello.node_id
        if sender == self.node_id:
            raise WireError(f"the caller claims to be this node ({sender})")
        if sender not in self._peers and not self._allow_unknown:
            raise WireError(f"node {sender} is not a member")
        conn.sender = sender
        writer.write(self._hello)
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
                await self._receive_snapshot(m, reader, writer)
            else:
                raise WireError(f"unexpected {kind.name} frame")

    async def _receive_snapshot(
        self, m: Message, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Receive one snapshot stream into a file, hand it over, acknowledge."""
        path, size = await receive_snapshot(
            reader,
            self._snapshot_dir,
            m,
            idle_timeout=self._snapshot_timeout,
            max_message_frame=self._max_frame,
        )
        self._log.info(
            "node %d: received snapshot at index %d from peer %d (%d bytes)",
            self.node_id,
            m.snapshot.metadata.index if m.snapshot is not None else 0,
            m.frm,
            size,
        )
        ok = self._call(self._handler.on_snapshot_received, m, path)
        writer.write(encode_ack(SnapshotAck(ok)))
        await writer.drain()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    if isinstance(exc, WireError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
