"""The outbound side of the peer transport: one queue and one writer task per peer.

Theory of operation
-------------------
Every node keeps one outbound connection to each peer (a :class:`Peer`) and
uses it only to send. :meth:`Sender.connect` dials it and runs the handshake
(:class:`~raftdb.transport.handshake.Handshake`), checking that it reached the
node it meant to, and with peer authentication that the node proved it is
that member before this one sends it anything more; after that the writer task
(:meth:`Sender.run`) only writes MESSAGES frames
(see :mod:`raftdb.transport.frames`).

Sending never blocks. :meth:`~raftdb.transport.transport.Transport.send`
appends each message to its recipient's bounded queue, and once per loop
iteration the transport flushes the queues it touched (:meth:`Sender.write_now`):
*everything* queued for a peer is packed into as few frames as the frame limit
allows and written at once, from that callback, when the peer's connection is
up and its writer task idle (the common case: one ``write`` per peer per Raft
Ready, no task wake-up). Otherwise, and whenever a write leaves bytes in the
socket's buffer, the peer's writer task is woken: it writes what is queued and
awaits ``drain()``, and while it waits new messages pile up and go out together
in the next round: batching grows with load by itself, and the task's
``drain()`` is the back-pressure. Either way every message goes through the
queue and leaves it in order, so the order per peer is the order sent. A
message that cannot be queued (unknown recipient, queue full, peer known to be
down) is dropped and reported through ``on_unreachable``: Raft resends, so the
transport never has to, and memory stays bounded by ``max_queue``.

A lost connection is retried with exponential backoff (capped, with jitter
from an injected ``random.Random``). Until the handshake succeeds again the
peer is :data:`DOWN` and messages to it are dropped at once rather than queued.
The peer never writes on this connection after its handshake, so a watcher
reading it learns at once when the connection is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from raftdb.codec import pack
from raftdb.raft.messages import Message
from raftdb.transport.address import parse_peer_url
from raftdb.transport.frames import WireError, message_to_list, messages_frame
from raftdb.transport.handshake import Handshake
from raftdb.transport.stream import abort, describe_error

__all__ = ["CONNECTING", "DOWN", "UP", "Peer", "Sender"]

#: Room for the msgpack array header inside a MESSAGES frame.
_ARRAY_HEADER_ROOM: Final = 5
#: A connection that lived less than this counts as a failed attempt for backoff.
_STABLE_CONNECTION: Final = 1.0

# Peer states for sending.
CONNECTING: Final = 0  # first attempt in progress: queue
UP: Final = 1  # handshake done: queue
DOWN: Final = 2  # failed or lost, retrying: drop


class Peer:
    """Sending state for one peer: queue, writer task, snapshot task."""

    __slots__ = (
        "failures",
        "host",
        "last_failure",
        "id",
        "lost",
        "port",
        "queue",
        "snapshot_task",
        "state",
        "task",
        "url",
        "wake",
        "writer",
    )

    def __init__(self, peer_id: int, url: str) -> None:
        self.id = peer_id
        self.url = url
        address = parse_peer_url(url)
        self.host, self.port = address.host, address.port
        self.queue: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.state = CONNECTING
        self.lost = False
        self.failures = 0
        #: Why the last connection attempt failed ("" after a success).
        self.last_failure = ""
        self.task: asyncio.Task[None] | None = None
        self.snapshot_task: asyncio.Task[None] | None = None
        #: The connection, while it is up and the writer task idle (waiting for
        #: work, not draining): :meth:`Sender.write_now` may write to it then.
        self.writer: asyncio.StreamWriter | None = None


class Sender:
    """What every peer's writer task runs: dial, HELLO, write the queue, reconnect.

    The transport owns the peers and their tasks; this holds what the tasks
    share (limits, timeouts, backoff, the HELLO to send) and the code they run.

    Args:
        handshake: this node's side of the handshake (as the dialer).
        report_unreachable: called with a peer id when a message to it is dropped.
        max_message_frame: the largest MESSAGES frame body written.
        connect_timeout: for a TCP connect plus the HELLO exchange.
        backoff_base, backoff_cap: reconnection delays (see :meth:`backoff`).
        rng: jitter for the reconnection delays.
        logger: where connection events go.
    """

    def __init__(
        self,
        handshake: Handshake,
        report_unreachable: Callable[[int], None],
        *,
        max_message_frame: int,
        connect_timeout: float,
        backoff_base: float,
        backoff_cap: float,
        rng: random.Random,
        logger: logging.Logger,
    ) -> None:
        self.node_id = handshake.node_id
        self._handshake = handshake
        self._report_unreachable = report_unreachable
        self._max_frame = max_message_frame
        self._connect_timeout = connect_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._rng = rng
        self._log = logger

    def backoff(self, failures: int) -> float:
        """The delay before the next attempt after ``failures`` failed ones, seconds."""
        delay = min(self._backoff_cap, self._backoff_base * (1 << min(failures, 30)))
        return delay * (0.5 + 0.5 * self._rng.random())

    def _drop_queue(self, peer: Peer) -> None:
        if peer.queue:
            peer.queue.clear()
            self._report_unreachable(peer.id)

    async def run(self, peer: Peer) -> None:
        """Keep a connection to ``peer`` and write its queue to it, forever: its writer task."""
        while True:
            try:
                reader, writer = await self.connect(peer)
            except (OSError, EOFError, WireError) as exc:
                peer.state = DOWN
                self._drop_queue(peer)
                reason = describe_error(exc)
                # Once per outage, and again whenever the reason changes (a
                # peer that was down comes back, but refuses this node).
                new = peer.failures == 0 or reason != peer.last_failure
                peer.last_failure = reason
                log = self._log.warning if new else self._log.debug
                log(
                    "node %d: cannot reach peer %d at %s: %s; retrying",
                    self.node_id,
                    peer.id,
                    peer.url,
                    reason,
                )
                peer.failures += 1
                await asyncio.sleep(self.backoff(peer.failures))
                continue
            except Exception:
                # A bug, not a network failure: say so loudly, but keep trying.
                self._log.exception("node %d: connecting to peer %d failed", self.node_id, peer.id)
                peer.state = DOWN
                peer.failures += 1
                await asyncio.sleep(self.backoff(peer.failures))
                continue
            self._log.info("node %d: connected to peer %d at %s", self.node_id, peer.id, peer.url)
            peer.last_failure = ""
            peer.state = UP
            since = time.monotonic()
            try:
                await self._pump(peer, reader, writer)
                reason = "closed by the peer"
            except (OSError, EOFError, WireError) as exc:
                reason = describe_error(exc)
            except Exception as exc:
                self._log.exception("node %d: sending to peer %d failed", self.node_id, peer.id)
                reason = describe_error(exc)
            finally:
                peer.state = DOWN
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
                await asyncio.sleep(self.backoff(peer.failures))

    async def connect(self, peer: Peer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``peer`` after a successful handshake, within ``connect_timeout``.

        Raises:
            WireError, EOFError, OSError: see :meth:`Handshake.dial`.
        """
        async with asyncio.timeout(self._connect_timeout):
            return await self._handshake.dial(peer.host, peer.port, peer.id, peer.url)

    async def _pump(
        self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Write ``peer``'s queue to ``writer`` until the connection is lost."""
        peer.lost = False
        watch = asyncio.create_task(self._watch(peer, reader))
        try:
            while True:
                if not peer.queue:
                    peer.wake.clear()
                    peer.writer = writer  # idle: write_now may write for this task
                    try:
                        await peer.wake.wait()
                    finally:
                        peer.writer = None
                if peer.lost:
                    return
                self._write_queue(peer, writer)
                await writer.drain()
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _watch(self, peer: Peer, reader: asyncio.StreamReader) -> None:
        # The listener never writes after the handshake: any read returning means
        # the connection is over (EOF, reset, or a misbehaving peer).
        with contextlib.suppress(OSError):
            await reader.read(1)
        peer.lost = True
        peer.wake.set()

    def write_now(self, peer: Peer) -> None:
        """Write ``peer``'s queue from the caller (a loop callback), if its task is idle.

        With the connection up, the writer task waiting for work and the
        socket's buffer empty, the queue is written here, without a task
        wake-up. Otherwise, or if this write leaves bytes the kernel did not
        take, the writer task is woken: it writes what is still queued and
        awaits ``drain()`` (back-pressure), or, while connecting, finds the
        queue when the handshake is done. Order is kept either way: only the
        queue's owner at the time writes, and it writes the queue in order.
        """
        writer = peer.writer
        if writer is None or peer.lost:
            peer.wake.set()
            return
        transport = writer.transport
        if transport.is_closing() or transport.get_write_buffer_size():
            peer.writer = None  # the task owns the queue until it idles again
            peer.wake.set()
            return
        self._write_queue(peer, writer)
        if transport.get_write_buffer_size():
            peer.writer = None
            peer.wake.set()  # the task drains before the next write

    def _write_queue(self, peer: Peer, writer: asyncio.StreamWriter) -> None:
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
