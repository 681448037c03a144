"""Stream-level I/O under :mod:`raftdb.transport`: frames in, snapshots in and out.

:mod:`raftdb.transport.frames` says what the bytes mean; this module moves them over
asyncio streams and files. The transport decides what to do about failures
(log, report, reconnect); everything here simply raises:

- ``EOFError``: the connection closed cleanly between two frames;
- :class:`~raftdb.transport.frames.WireError`: the peer sent something broken, or cut a
  frame or a snapshot stream short;
- ``OSError`` (``TimeoutError`` included): the network or the disk failed.

Blocking work (pulling a state machine snapshot's chunks, writing and
fsyncing the received file) runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol, TypeVar

from raftdb.raft.messages import Message
from raftdb.transport.frames import (
    FRAME_HEADER,
    FrameKind,
    SnapshotEnd,
    WireError,
    decode_ack,
    decode_snapshot_end,
    encode_snapshot_begin,
    encode_snapshot_end,
    parse_frame_header,
)

__all__ = [
    "SEND_CHUNK",
    "SnapshotChunks",
    "abort",
    "in_thread",
    "peer_address",
    "prepare_snapshot_dir",
    "read_frame",
    "receive_snapshot",
    "send_snapshot",
    "set_nodelay",
]

_T = TypeVar("_T")

#: Snapshot chunks are cut to at most this many bytes per frame: the unit of
#: flow control (the sender drains after each, so about one is in flight).
SEND_CHUNK: Final = 1 << 20
#: How long closing a socket, or waiting for a worker thread after a
#: cancellation, may take.
CLOSE_TIMEOUT: Final = 5.0
#: Received snapshots being written: ``<prefix><sender>-<index>-<random><suffix>``.
PART_PREFIX: Final = "incoming-"
PART_SUFFIX: Final = ".part"
#: A received snapshot once whole and durable (same name, this suffix).
SNAP_SUFFIX: Final = ".snap"


async def read_frame(
    reader: asyncio.StreamReader, max_message_frame: int
) -> tuple[FrameKind, bytes]:
    """The next frame's kind and body.

    Raises:
        EOFError: the connection closed cleanly before a new frame.
        WireError: a bad header, an oversized length, or a frame cut short.
        OSError: the connection failed.
    """
    try:
        header = await reader.readexactly(FRAME_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError("connection closed") from None
        raise WireError(f"truncated frame header ({len(exc.partial)} bytes)") from None
    kind, length = parse_frame_header(header, max_message_frame)
    if not length:
        return kind, b""
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise WireError(
            f"truncated {kind.name} frame ({len(exc.partial)} of {length} bytes)"
        ) from None
    return kind, body


async def in_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in a worker thread.

    If the caller is cancelled, it still waits (up to :data:`CLOSE_TIMEOUT`)
    for the thread to finish before the cancellation propagates, so that
    the caller's cleanup never races the thread over a file or an iterator.
    """
    future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future], timeout=CLOSE_TIMEOUT)
        raise


async def abort(writer: asyncio.StreamWriter) -> None:
    """Close a connection now, dropping unsent data, and wait until it is closed."""
    writer.transport.abort()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()


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


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Turn off Nagle's algorithm: frames are written whole, latency matters."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def peer_address(writer: asyncio.StreamWriter) -> str:
    """``host:port`` of the other end, for log lines."""
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


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


def _write_chunk(file: BinaryIO, chunk: bytes, crc: int) -> int:
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
) -> tuple[Path, int]:
    """Receive the chunks after a SNAPSHOT_BEGIN into a new file in ``directory``.

    The stream must end with a SNAPSHOT_END whose size and CRC-32 match what
    arrived. The file is then fsynced and renamed to its final ``.snap``
    name; on any failure (or cancellation) it is deleted instead.

    Returns:
        The final path and the snapshot's size in bytes.

    Raises:
        WireError: the stream was cut, damaged, or interleaved with other frames.
        OSError: the connection or the disk failed; ``TimeoutError`` if the
            sender stayed silent for ``idle_timeout`` seconds.
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
                crc = await in_thread(_write_chunk, file, body, crc)
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
