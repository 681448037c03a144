"""Stream-level I/O under :mod:`raftdb.transport`: frames in, connections closed.

:mod:`raftdb.transport.frames` says what the bytes mean; this module moves them over
asyncio streams (:mod:`raftdb.transport.snapshots` moves snapshot streams on top of it).
The transport decides what to do about failures (log, report, reconnect); everything
here simply raises:

- ``EOFError``: the connection closed cleanly between two frames;
- :class:`~raftdb.transport.frames.WireError`: the peer sent something broken, or cut a
  frame or a snapshot stream short;
- ``OSError`` (``TimeoutError`` included): the network or the disk failed.

:func:`describe_error` turns those into the short text the transport logs.
Blocking work runs in worker threads (:func:`in_thread`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any, Final, TypeVar

from raftdb.transport.frames import (
    FRAME_HEADER,
    MAX_CONTROL_FRAME,
    FrameKind,
    WireError,
    parse_frame_header,
)

__all__ = [
    "CLOSE_TIMEOUT",
    "STREAM_LIMIT",
    "abort",
    "describe_error",
    "in_thread",
    "peer_address",
    "read_control_frame",
    "read_frame",
    "set_nodelay",
]

_T = TypeVar("_T")

#: StreamReader buffer limit, for both ends of a peer connection: frames are
#: read with readexactly, so this only sets how much is buffered before the
#: socket is paused.
STREAM_LIMIT: Final = 1 << 20
#: How long closing a socket, or waiting for a worker thread after a
#: cancellation, may take.
CLOSE_TIMEOUT: Final = 5.0


async def _read_header(reader: asyncio.StreamReader) -> bytes:
    """A frame's five header bytes; ``EOFError`` if the connection closed before them."""
    try:
        return await reader.readexactly(FRAME_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError("connection closed") from None
        raise WireError(f"truncated frame header ({len(exc.partial)} bytes)") from None


async def read_frame(
    reader: asyncio.StreamReader, max_message_frame: int
) -> tuple[FrameKind, bytes]:
    """The next frame's kind and body.

    Raises:
        EOFError: the connection closed cleanly before a new frame.
        WireError: a bad header, an oversized length, or a frame cut short.
        OSError: the connection failed.
    """
    header = await _read_header(reader)
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


async def read_control_frame(reader: asyncio.StreamReader, kind: FrameKind) -> bytes:
    """The body of the next frame, which must be a ``kind`` frame of at most 4 KiB.

    For the handshake, where the other end is not yet trusted: the header is
    judged before anything else is read, by the handshake ceiling
    (:data:`~raftdb.transport.frames.MAX_CONTROL_FRAME`) and not by the ceiling
    of the kind it declares, so a stranger's first frame costs at most 4 KiB
    of memory whatever it claims to be.

    Raises:
        EOFError: the connection closed cleanly before a new frame.
        WireError: another kind, a longer frame, or a frame cut short.
        OSError: the connection failed.
    """
    header = await _read_header(reader)
    length, raw_kind = FRAME_HEADER.unpack(header)
    if header[:2] == b"\x16\x03":  # a TLS handshake record
        raise WireError(f"expected {kind.name}, got TLS: the other end uses peer TLS, this one not")
    if raw_kind != kind:
        known = raw_kind in FrameKind._value2member_map_
        what = f"a {FrameKind(raw_kind).name} frame" if known else f"a frame of kind {raw_kind}"
        raise WireError(f"expected {kind.name}, got {what}")
    if length > MAX_CONTROL_FRAME:
        raise WireError(
            f"{kind.name} frame of {length} bytes is over the handshake limit "
            f"of {MAX_CONTROL_FRAME}"
        )
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise WireError(
            f"truncated {kind.name} frame ({len(exc.partial)} of {length} bytes)"
        ) from None


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


def describe_error(exc: BaseException) -> str:
    """One log line's worth of ``exc``: the text of a :class:`WireError`, else its type too."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    if isinstance(exc, WireError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
