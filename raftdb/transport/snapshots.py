"""Snapshots between peers: streaming a state machine snapshot out, and one in to a file.

Theory of operation
-------------------
A SNAP message goes to a per-peer snapshot task with a connection of its own
(see :class:`~raftdb.transport.transport.Transport`), so a large snapshot never
delays heartbeats and appends. The task (:meth:`SnapshotTransfers.send`) asks
the handler for the state machine's snapshot (:class:`SnapshotChunks`), pulls its
chunks in a worker thread (never on the event loop), sends SNAPSHOT_BEGIN,
SNAPSHOT_CHUNK frames with ``drain()`` after each (flow control: about one
chunk in memory), SNAPSHOT_END with the size and CRC-32, and waits for the
receiver's SNAPSHOT_ACK, which comes only once the receiver has written the
stream to a file, fsynced it and handed it to its handler. The result goes to
``on_snapshot_sent`` exactly once per SNAP (unless the transport is stopped).

On the receiving side the listener (:mod:`raftdb.transport.listener`) hands a
SNAPSHOT_BEGIN to :meth:`SnapshotTransfers.receive`, which writes the chunks to
a partial file in the snapshot directory, checks size and CRC-32, fsyncs and
renames it, and acknowledges once the handler has taken it. A crash leaves at
most partial files, removed at the next start (:func:`prepare_snapshot_dir`).

What a peer may make this node store is bounded: one stream at a time per
sender (a second while one is in flight is refused), at most
``max_snapshot_bytes`` per stream (:data:`MAX_SNAPSHOT_BYTES` by default; the
sender streams the state machine without knowing the total in advance, so the
cap is the receiver's), and never so much that the disk would keep less than
``disk_reserve`` bytes free (checked before each chunk is written). A stream
over either bound is cut and its partial file deleted; the sender reports the
failure and Raft tries again later.

The stream-level functions (:func:`send_snapshot`, :func:`receive_snapshot`)
only raise, as :mod:`raftdb.transport.stream` does; :class:`SnapshotTransfers`
logs and reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, Protocol

from raftdb.raft.messages import Message
from raftdb.transport.frames import (
    FRAME_HEADER,
    FrameKind,
    SnapshotAck,
    SnapshotEnd,
    WireError,
    decode_ack,
    decode_snapshot_end,
    encode_ack,
    encode_snapshot_begin,
    encode_snapshot_end,
)
from raftdb.transport.sender import Peer, Sender
from raftdb.transport.stream import abort, describe_error, in_thread, read_frame

if TYPE_CHECKING:
    from raftdb.transport.transport import TransportHandler

__all__ = [
    "MAX_SNAPSHOT_BYTES",
    "SEND_CHUNK",
    "SNAPSHOT_DISK_RESERVE",
    "SnapshotChunks",
    "SnapshotTransfers",
    "prepare_snapshot_dir",
    "receive_snapshot",
    "send_snapshot",
]

#: Snapshot chunks are cut to at most this many bytes per frame: the unit of
#: flow control (the sender drains after each, so about one is in flight).
SEND_CHUNK: Final = 1 << 20
#: Default ceiling on one received snapshot stream, bytes.
MAX_SNAPSHOT_BYTES: Final = 64 << 30
#: Default free space a received snapshot must leave on its disk, bytes.
SNAPSHOT_DISK_RESERVE: Final = 256 << 20
#: Received snapshots being written: ``<prefix><sender>-<index>-<random><suffix>``.
PART_PREFIX: Final = "incoming-"
PART_SUFFIX: Final = ".part"
#: A received snapshot once whole and durable (same name, this suffix).
SNAP_SUFFIX: Final = ".snap"


class SnapshotChunks(Protocol):
    """A snapshot as the transport sends it: bytes in chunks, and a way to let go early.

    The transport does not know what the bytes mean (the state machine's
    snapshot stream, :class:`raftdb.kv.snapshot.SnapshotStream`, satisfies
    this); it only moves them and checks that they arrive whole.
    """

    def __iter__(self) -> Iterator[bytes]:
        """The chunks, pulled once, in a worker thread (the pulls may block)."""
        ...

    def close(self) -> None:
        """Release what the chunks are read from. Idempotent; called whatever happens."""
        ...


# -- sending a snapshot ---------------------------------------------------------------


def _next_chunk(chunks: Iterator[bytes], crc: int) -> tuple[bytes | None, int]:
    """The next non-empty chunk (None at the end) and the running CRC-32. Worker thread."""
    for chunk in chunks:
        if chunk:
            return chunk, zlib.crc32(chunk, crc)
    return None, crc


async def send_snapshot(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    message: Message,
    stream: SnapshotChunks,
    *,
    ack_timeout: float,
    max_message_frame: int,
) -> tuple[bool, int]:
    """Send SNAPSHOT_BEGIN, the stream's chunks, SNAPSHOT_END; await SNAPSHOT_ACK.

    The chunks are pulled from ``stream`` in a worker thread, one at a time,
    and each frame is drained before the next is pulled. ``stream`` is closed
    on return, whatever happens.

    Returns:
        The receiver's verdict and the number of snapshot bytes sent.

    Raises:
        WireError, EOFError, OSError: the connection or the receiver failed.
        Exception: whatever iterating ``stream`` raised.
    """
    try:
        chunks = iter(stream)
        writer.write(encode_snapshot_begin(message))
        size = crc = 0
        while True:
            chunk, crc = await in_thread(_next_chunk, chunks, crc)
            if chunk is None:
                break
            for start in range(0, len(chunk), SEND_CHUNK):
                piece = chunk[start : start + SEND_CHUNK]
                writer.write(FRAME_HEADER.pack(len(piece), FrameKind.SNAPSHOT_CHUNK))
                writer.write(piece)
                await writer.drain()
            size += len(chunk)
        writer.write(encode_snapshot_end(SnapshotEnd(size, crc)))
        await writer.drain()
        try:
            async with asyncio.timeout(ack_timeout):
                kind, body = await read_frame(reader, max_message_frame)
        except EOFError:
            raise WireError("the receiver closed the connection without an answer") from None
        if kind is not FrameKind.SNAPSHOT_ACK:
            raise WireError(f"expected SNAPSHOT_ACK, got a {kind.name} frame")
        return decode_ack(body).ok, size
    finally:
        with contextlib.suppress(Exception):
            await in_thread(stream.close)


# -- receiving a snapshot ------------------------------------------------------------


def prepare_snapshot_dir(directory: Path) -> None:
    """Create ``directory`` if needed; remove partial files a crash left behind."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f"{PART_PREFIX}*{PART_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _create_part(directory: Path, sender: int, index: int) -> tuple[BinaryIO, Path]:
    fd, name = tempfile.mkstemp(
        prefix=f"{PART_PREFIX}{sender}-{index}-", suffix=PART_SUFFIX, dir=directory
    )
    return os.fdopen(fd, "wb"), Path(name)


def _write_chunk(file: BinaryIO, directory: Path, chunk: bytes, crc: int, reserve: int) -> int:
    """Write one chunk unless it would leave less than ``reserve`` bytes free. Worker thread."""
    stat = os.statvfs(directory)
    if stat.f_bavail * stat.f_frsize - len(chunk) < reserve:
        raise OSError(
            errno.ENOSPC,
            f"refusing the rest of the snapshot: it would leave less than {reserve} bytes "
            f"free in {directory}",
        )
    file.write(chunk)
    return zlib.crc32(chunk, crc)


def _store(file: BinaryIO, part: Path, final: Path) -> None:
    """fsync the file, rename it into place, fsync the directory."""
    file.flush()
    os.fsync(file.fileno())
    file.close()
    os.replace(part, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(file: BinaryIO, *paths: Path) -> None:
    with contextlib.suppress(OSError):
        file.close()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def receive_snapshot(
    reader: asyncio.StreamReader,
    directory: Path,
    message: Message,
    *,
    idle_timeout: float,
    max_message_frame: int,
    max_bytes: int = MAX_SNAPSHOT_BYTES,
    disk_reserve: int = 0,
) -> tuple[Path, int]:
    """Receive the chunks after a SNAPSHOT_BEGIN into a new file in ``directory``.

    The stream must end with a SNAPSHOT_END whose size and CRC-32 match what
    arrived. The file is then fsynced and renamed to its final ``.snap``
    name; on any failure (or cancellation) it is deleted instead.

    Returns:
        The final path and the snapshot's size in bytes.

    Raises:
        WireError: the stream was cut, damaged, interleaved with other frames,
            or longer than ``max_bytes``.
        OSError: the connection or the disk failed, or the disk would keep
            less than ``disk_reserve`` bytes free (``ENOSPC``); ``TimeoutError``
            if the sender stayed silent for ``idle_timeout`` seconds.
    """
    assert message.snapshot is not None
    # Created on the loop (one quick syscall), so that a cancellation cannot
    # fall between creating the file and owning it.
    file, part = _create_part(directory, message.frm, message.snapshot.metadata.index)
    final = part.with_suffix(SNAP_SUFFIX)
    stored = False
    try:
        size = crc = 0
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    kind, body = await read_frame(reader, max_message_frame)
            except EOFError:
                raise WireError(f"snapshot stream cut after {size} bytes") from None
            if kind is FrameKind.SNAPSHOT_CHUNK:
                if size + len(body) > max_bytes:
                    raise WireError(f"snapshot stream is over the limit of {max_bytes} bytes")
                crc = await in_thread(_write_chunk, file, directory, body, crc, disk_reserve)
                size += len(body)
            elif kind is FrameKind.SNAPSHOT_END:
                end = decode_snapshot_end(body)
                if (end.size, end.crc32) != (size, crc):
                    raise WireError(
                        f"snapshot stream damaged: received {size} bytes (crc {crc:#x}), "
                        f"sent {end.size} (crc {end.crc32:#x})"
                    )
                break
            else:
                raise WireError(f"unexpected {kind.name} frame in a snapshot stream")
        await in_thread(_store, file, part, final)
        stored = True
    finally:
        if not stored:
            await in_thread(_discard, file, part, final)
    return final, size


# -- the transfers, as the transport runs them -----------------------------------------


class SnapshotTransfers:
    """Sends snapshots to peers and receives theirs: connections, logs, handler calls.

    Args:
        node_id: this node's id, for log lines.
        handler: opens the snapshots to send and takes the received ones.
        sender: dials peers (:meth:`Sender.connect`, HELLO included).
        report_sent: ``(peer id, ok)`` once per snapshot sent; the transport
            passes it on to ``on_snapshot_sent`` unless it was stopped.
        call: calls a handler method, logging its exception; True if it returned.
        snapshot_dir: where received snapshots are written.
        snapshot_timeout: the longest silence inside a snapshot stream, and
            the longest wait for the receiver's acknowledgement.
        max_message_frame: the largest SNAPSHOT_BEGIN frame body sent or accepted.
        max_snapshot_bytes: the largest snapshot stream accepted.
        disk_reserve: the free bytes a received snapshot must leave on its disk.
        logger: where transfers are logged.
    """

    def __init__(
        self,
        node_id: int,
        handler: TransportHandler,
        sender: Sender,
        report_sent: Callable[[int, bool], None],
        call: Callable[..., bool],
        *,
        snapshot_dir: Path,
        snapshot_timeout: float,
        max_message_frame: int,
        max_snapshot_bytes: int = MAX_SNAPSHOT_BYTES,
        disk_reserve: int = SNAPSHOT_DISK_RESERVE,
        logger: logging.Logger,
    ) -> None:
        self.node_id = node_id
        self._handler = handler
        self._sender = sender
        self._report_sent = report_sent
        self._call = call
        self._snapshot_dir = snapshot_dir
        self._snapshot_timeout = snapshot_timeout
        self._max_frame = max_message_frame
        self._max_bytes = max_snapshot_bytes
        self._disk_reserve = disk_reserve
        #: Senders whose snapshot stream is being received: one at a time each.
        self._receiving: set[int] = set()
        self._log = logger

    async def send(self, peer: Peer, m: Message) -> None:
        """Send the SNAP ``m`` to ``peer`` on a connection of its own; report the outcome.

        The body of a peer's snapshot task. Whatever happens, the outcome goes
        to ``on_snapshot_sent`` once (unless the transport was stopped).
        """
        ok = False
        index = m.snapshot.metadata.index if m.snapshot is not None else 0
        writer: asyncio.StreamWriter | None = None
        try:
            stream = self._handler.open_snapshot(m)
            try:
                reader, writer = await self._sender.connect(peer)
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
                describe_error(exc),
            )
        finally:
            if writer is not None:
                await abort(writer)
            self._report_sent(peer.id, ok)

    async def receive(
        self, m: Message, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Receive one snapshot stream into a file, hand it over, acknowledge.

        Called by the listener after a SNAPSHOT_BEGIN carrying the SNAP ``m``
        (from the connection's proven sender); raises as :func:`receive_snapshot`
        does, and :class:`WireError` if a stream from that sender is already
        being received (each would otherwise hold a file and a disk's worth).
        """
        if m.frm in self._receiving:
            raise WireError(f"a snapshot from node {m.frm} is already arriving; refusing another")
        self._receiving.add(m.frm)
        try:
            path, size = await receive_snapshot(
                reader,
                self._snapshot_dir,
                m,
                idle_timeout=self._snapshot_timeout,
                max_message_frame=self._max_frame,
                max_bytes=self._max_bytes,
                disk_reserve=self._disk_reserve,
            )
        finally:
            self._receiving.discard(m.frm)
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
