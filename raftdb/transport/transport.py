"""The peer transport: Raft messages between nodes over persistent TCP connections.

Theory of operation
-------------------
Every node keeps one outbound connection to each peer and uses it only to
send; what a peer sends to it arrives on the peer's own outbound connection.
A connection opens with a handshake (:mod:`raftdb.transport.handshake`): a
HELLO each way (protocol version, node id, cluster token, cluster identity),
so that the listener knows the caller is a member of its cluster and the
caller that it reached the node it meant to (a member of another cluster
with the same addresses, say a restored one, is refused:
:mod:`raftdb.transport.cluster_identity`); and, as the :class:`PeerAuth` given says, a
mutual challenge–response over a shared secret or mutual TLS with
certificates naming the members, so that neither end can be an impostor.
After that the caller only writes MESSAGES frames (see
:mod:`raftdb.transport.frames`), each message carrying the proven id as its
sender; the per-message path costs the same whatever the mode.

:class:`Transport` is the facade over three parts, as etcd's ``rafthttp``
splits its transport into peers, streams and a snapshot sender:

- :mod:`raftdb.transport.sender`: the outbound side. :meth:`Transport.send`
  never blocks: it appends each message to its recipient's bounded queue,
  and one callback per loop iteration writes everything queued for each
  peer touched as MESSAGES frames, or leaves it to that peer's writer task
  when the connection is busy or not up; lost connections are retried with
  backoff, and a message that cannot be queued is dropped and reported
  through ``on_unreachable``;
- :mod:`raftdb.transport.listener`: the inbound side, where every connection
  is suspect until its HELLO checks out and closes at the first bad frame;
- :mod:`raftdb.transport.snapshots`: a SNAP message goes to a per-peer
  snapshot task with a connection of its own, so a large snapshot never
  delays heartbeats and appends; the outcome goes to ``on_snapshot_sent``
  exactly once per SNAP (unless the transport is stopped).

The facade owns the membership (one :class:`~raftdb.transport.sender.Peer`
per peer), every task's lifetime, and the handler: reports are coalesced and
deferred to the next loop iteration, and a handler's exception is logged and
otherwise ignored. No exception leaves a task of this package.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from raftdb.raft.messages import LOCAL_MESSAGES, Message, MessageType
from raftdb.transport.address import parse_peer_url
from raftdb.transport.cluster_identity import Adopt, ClusterIdentity
from raftdb.transport.frames import DEFAULT_MAX_MESSAGE_FRAME, MAX_TOKEN_LENGTH
from raftdb.transport.handshake import Handshake, PeerAuth
from raftdb.transport.listener import DEFAULT_MAX_INBOUND, Listener
from raftdb.transport.sender import DOWN, Peer, Sender
from raftdb.transport.snapshots import (
    MAX_SNAPSHOT_BYTES,
    SNAPSHOT_DISK_RESERVE,
    SnapshotChunks,
    SnapshotTransfers,
    prepare_snapshot_dir,
)

__all__ = ["PeerAuth", "Transport", "TransportHandler"]


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


class Transport:
    """Sends Raft messages to peers and delivers theirs to a handler.

    Args:
        node_id: this node's id (at least 1).
        listen_url: where to accept peers, ``http://host:port`` (port 0: any).
        peers: ``{node id: peer URL}``; this node's own id may be included and
            is ignored.
        handler: receives messages and reports (:class:`TransportHandler`).
        cluster_token: nodes with different tokens refuse each other.
        auth: how peers prove who they are (:class:`PeerAuth`; default none,
            HELLO only, fit for loopback).
        cluster_id: the cluster identity this node's data records (None: it
            records none); peers of another cluster are refused.
        adopt_cluster_id: only for a node with no identity and no data (a
            member joining a running cluster): records the first identity a
            peer presents, before any message from it is taken, and returns
            False if this node may no longer adopt one
            (:mod:`raftdb.transport.cluster_identity`).
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
        handshake_timeout: how long an inbound connection may take to
            complete its handshake.
        max_inbound_connections: inbound connections open at once; beyond
            it a new one is closed at once (with a rate-limited warning).
        max_snapshot_bytes: the largest snapshot stream accepted.
        snapshot_disk_reserve: a snapshot stream is refused once writing it
            would leave less than this many bytes free in ``snapshot_dir``.
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
        auth: PeerAuth | None = None,
        cluster_id: str | None = None,
        adopt_cluster_id: Adopt | None = None,
        snapshot_dir: Path,
        max_queue: int = 4096,
        max_message_frame: int = DEFAULT_MAX_MESSAGE_FRAME,
        allow_unknown_senders: bool = False,
        rng: random.Random | None = None,
        connect_timeout: float = 2.0,
        handshake_timeout: float = 5.0,
        max_inbound_connections: int = DEFAULT_MAX_INBOUND,
        max_snapshot_bytes: int = MAX_SNAPSHOT_BYTES,
        snapshot_disk_reserve: int = SNAPSHOT_DISK_RESERVE,
        snapshot_timeout: float = 30.0,
        backoff_base: float = 0.05,
        backoff_cap: float = 1.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if type(node_id) is not int or node_id < 1:
            raise ValueError(f"node id must be an integer >= 1, not {node_id!r}")
        if len(cluster_token) > MAX_TOKEN_LENGTH:
            raise ValueError(f"cluster token is longer than {MAX_TOKEN_LENGTH} characters")
        if max_inbound_connections < 1:
            raise ValueError(f"max_inbound_connections must be >= 1, not {max_inbound_connections}")
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
        self._identity = ClusterIdentity(cluster_id, adopt=adopt_cluster_id)
        handshake = Handshake(
            node_id,
            cluster_token,
            auth if auth is not None else PeerAuth.none(),
            self._identity,
        )
        self._snapshot_dir = Path(snapshot_dir)
        self._max_queue = max_queue
        self._log = logger if logger is not None else logging.getLogger("raftdb.transport")

        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        # Shared with the listener as its members: changed in place, never rebound.
        self._peers: dict[int, Peer] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._unreachable: set[int] = set()
        self._snapshot_failures: list[int] = []
        self._report_scheduled = False
        #: Peers given messages since the last flush (:meth:`_flush`), in order.
        self._to_flush: dict[Peer, None] = {}

        self._sender = Sender(
            handshake,
            self._report_unreachable,
            max_message_frame=max_message_frame,
            connect_timeout=connect_timeout,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            rng=rng if rng is not None else random.Random(),
            logger=self._log,
        )
        self._snapshots = SnapshotTransfers(
            node_id,
            handler,
            self._sender,
            self._report_snapshot_sent,
            self._call,
            snapshot_dir=self._snapshot_dir,
            snapshot_timeout=snapshot_timeout,
            max_message_frame=max_message_frame,
            max_snapshot_bytes=max_snapshot_bytes,
            disk_reserve=snapshot_disk_reserve,
            logger=self._log,
        )
        self._listener = Listener(
            handshake,
            handler,
            self._peers,
            self._snapshots,
            self._call,
            max_message_frame=max_message_frame,
            allow_unknown_senders=allow_unknown_senders,
            handshake_timeout=handshake_timeout,
            max_inbound=max_inbound_connections,
            logger=self._log,
        )

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
            await self._listener.listen(self._listen_host, self._listen_port)
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
        self._listener.close()
        self._listener.close_connections()
        tasks: list[asyncio.Task[Any]] = list(self._retired)
        for peer in self._peers.values():
            tasks.extend(t for t in (peer.task, peer.snapshot_task) if t is not None)
        tasks.extend(self._listener.connections)
        self._peers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._listener.wait_closed()
        self._log.info("node %d: peer transport stopped", self.node_id)

    @property
    def cluster_id(self) -> str | None:
        """The cluster identity this node presents (adopted ones included), or None."""
        return self._identity.value

    @property
    def listen_address(self) -> tuple[str, int]:
        """The bound ``(host, port)``, once started (the real port if 0 was asked)."""
        return self._listener.address

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
        to_flush = self._to_flush
        for m in messages:
            peer = peers.get(m.to)
            if peer is None:
                self._log.debug("dropping %s to unknown peer %d", m.type.name, m.to)
                self._report_unreachable(m.to, snapshot=m.type == MessageType.SNAP)
            elif m.type == MessageType.SNAP:
                self._start_snapshot(peer, m)
            elif peer.state == DOWN or len(peer.queue) >= max_queue:
                self._report_unreachable(peer.id)
            elif m.type in LOCAL_MESSAGES:
                self._log.error("refusing to send local message %s to a peer", m.type.name)
            else:
                peer.queue.append(m)
                if peer not in to_flush:
                    if not to_flush:
                        # Once per loop iteration, after the caller's turn: a
                        # leader's Ready hands its save to the log thread
                        # before the sockets are written, and every send() of
                        # the iteration goes out in one write per peer.
                        assert self._loop is not None
                        self._loop.call_soon(self._flush)
                    to_flush[peer] = None

    def _flush(self) -> None:
        """Write what :meth:`send` queued, one peer after the other (:meth:`Sender.write_now`)."""
        to_flush, self._to_flush = self._to_flush, {}
        if not self._running:
            return
        write_now = self._sender.write_now
        for peer in to_flush:
            if peer.queue:
                try:
                    write_now(peer)
                except Exception:
                    # Not a network failure (those surface in the writer task,
                    # as a lost connection): say so, and leave the rest to the task.
                    self._log.exception("node %d: writing to peer %d failed", self.node_id, peer.id)
                    self._report_unreachable(peer.id)
                    peer.writer = None
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

    def _report_snapshot_sent(self, peer_id: int, ok: bool) -> None:
        """A snapshot task's outcome, passed on unless the transport was stopped."""
        if self._running:
            self._call(self._handler.on_snapshot_sent, peer_id, ok)

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
        peer = Peer(peer_id, url)
        peer.task = self._loop.create_task(self._sender.run(peer), name=f"raftdb-peer-{peer_id}")
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
        self._listener.close_connections_from(peer_id)

    def _retire(self, task: asyncio.Task[None]) -> None:
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def _backoff(self, failures: int) -> float:
        """The reconnection delay after ``failures`` failed attempts (:meth:`Sender.backoff`)."""
        return self._sender.backoff(failures)

    # -- sending snapshots -------------------------------------------------------------

    def _start_snapshot(self, peer: Peer, m: Message) -> None:
        if peer.snapshot_task is not None and not peer.snapshot_task.done():
            self._log.info(
                "node %d: a snapshot to peer %d is in flight; dropping another", self.node_id, m.to
            )
            return
        assert self._loop is not None
        peer.snapshot_task = self._loop.create_task(
            self._snapshots.send(peer, m), name=f"raftdb-snapshot-to-{peer.id}"
        )
