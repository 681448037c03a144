"""MESSAGES frames delivered from the connection's data callback, without a task wake-up.

An inbound peer connection is read as an asyncio stream for its handshake and
its snapshot streams (:mod:`raftdb.transport.stream`). Between them, nearly
every frame is a MESSAGES frame of a few hundred bytes, and reading each one
through the stream costs a future, a wake-up of the reading task and two
``readexactly`` calls. A :class:`FrameReader` is the connection's
``StreamReader``; once the handshake is done, :meth:`FrameReader.deliver_messages`
turns it into a frame parser fed straight from the protocol's
``data_received``: each complete MESSAGES frame's body is handed to a callback
in that same call, in the order received, and only a partial frame waits in
the buffer.

The first frame of any other kind (a SNAPSHOT_BEGIN, or one that has no
business here) hands the connection back to the stream: the bytes from that
frame's header on become the stream's buffer again, and the reading task
resumes with them, exactly where a stream reader would have been. The same
limits apply as on the stream: a header is judged (kind, length against the
kind's ceiling) before its body is buffered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Final, SupportsIndex

from raftdb.transport.frames import FRAME_HEADER, FrameKind, WireError, parse_frame_header

__all__ = ["FrameReader"]

_HEADER: Final = FRAME_HEADER.size
_MESSAGES: Final = int(FrameKind.MESSAGES)
_unpack_header = FRAME_HEADER.unpack_from


class FrameReader(asyncio.StreamReader):
    """A ``StreamReader`` that can parse MESSAGES frames as they arrive.

    Used as any ``StreamReader`` (through ``readexactly`` and ``read``, which
    it counts so that it knows what the stream still holds, with public calls
    only) until :meth:`deliver_messages`, and again after that call returns.
    """

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(limit, loop)
        self._fed = 0  # bytes given to the stream
        self._taken = 0  # bytes read from it
        self._deliver: Callable[[bytes], None] | None = None
        self._frames = bytearray()
        self._max_frame = 0
        self._outcome: asyncio.Future[bool] | None = None

    async def deliver_messages(self, deliver: Callable[[bytes], None], max_frame: int) -> bool:
        """Hand every MESSAGES frame's body to ``deliver`` as it arrives, until another kind.

        ``deliver`` is called from the protocol's ``data_received``, once per
        frame, in order. An exception from it (a :class:`WireError` for a bad
        message) stops the delivery and is raised here; nothing after that
        frame is delivered.

        Returns:
            True when the stream is to read on: a frame of another kind arrived
            (it is the next thing the stream reads), or the connection had
            already ended with bytes unread. False when the connection closed
            cleanly between frames.

        Raises:
            WireError: a bad header or length, or a frame cut short by the close.
            OSError: the connection failed.
            Exception: what ``deliver`` raised.
        """
        if self._outcome is not None:
            raise RuntimeError("deliver_messages is already running")
        unread = self._fed - self._taken
        if self.exception() is not None or (unread and self.at_eof()):
            return True  # over already: the stream's reads say how
        # What the stream holds (the end of the handshake may have come with
        # the first frames) is parsed first, as if it had just arrived. It is
        # all there: this read does not wait.
        pending = await super().readexactly(unread) if unread else b""
        self._taken += len(pending)
        outcome = self._outcome = asyncio.get_running_loop().create_future()
        self._max_frame = max_frame
        self._deliver = deliver
        try:
            if pending:
                self.feed_data(pending)
            if self.at_eof() or self.exception() is not None:
                self._finish_at_end()
            more: bool = await outcome
            return more
        finally:
            self._deliver = None
            self._outcome = None
            self._frames = bytearray()

    # -- the stream's reads, counted ------------------------------------------------------

    async def readexactly(self, n: int) -> bytes:
        """As ``StreamReader.readexactly``."""
        try:
            data = await super().readexactly(n)
        except asyncio.IncompleteReadError as exc:
            self._taken += len(exc.partial)
            raise
        self._taken += len(data)
        return data

    async def read(self, n: int = -1) -> bytes:
        """As ``StreamReader.read``."""
        data = await super().read(n)
        self._taken += len(data)
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:  # type: ignore[override]
        """Not used on peer connections (frames have lengths), and not counted: refused."""
        raise NotImplementedError("FrameReader reads frames: readexactly or read")

    # -- the protocol's calls -------------------------------------------------------------

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        """Bytes from the connection: parsed into frames while delivering, else buffered."""
        outcome = self._outcome
        if outcome is None:
            chunk = bytes(data)
            self._fed += len(chunk)
            super().feed_data(chunk)
            return
        if outcome.done():
            return  # stopped by an error (the connection is being closed)
        frames = self._frames
        frames += bytes(data)
        try:
            self._parse(frames)
        except Exception as exc:
            self._deliver = None
            if not outcome.done():
                outcome.set_exception(exc)

    def feed_eof(self) -> None:
        """The peer closed: a delivery ends (cleanly between frames)."""
        super().feed_eof()
        if self._outcome is not None:
            self._finish_at_end()

    def set_exception(self, exc: Exception) -> None:
        """The connection failed: a delivery ends with ``exc``."""
        super().set_exception(exc)
        if self._outcome is not None:
            self._finish_at_end()

    # -- parsing --------------------------------------------------------------------------

    def _parse(self, frames: bytearray) -> None:
        """Deliver every complete MESSAGES frame in ``frames``; keep the rest."""
        size = len(frames)
        pos = 0
        max_frame = self._max_frame
        try:
            while size - pos >= _HEADER:
                length, kind = _unpack_header(frames, pos)
                if kind != _MESSAGES:
                    self._hand_back(frames, pos)
                    pos = 0
                    return
                if length > max_frame:
                    parse_frame_header(bytes(frames[pos : pos + _HEADER]), max_frame)  # raises
                end = pos + _HEADER + length
                if end > size:
                    break
                body = bytes(frames[pos + _HEADER : end])
                pos = end
                deliver = self._deliver
                if deliver is None:
                    return  # stopped by an earlier frame's error
                deliver(body)
        finally:
            if pos:
                del frames[:pos]

    def _hand_back(self, frames: bytearray, pos: int) -> None:
        """A frame of another kind at ``pos``: the stream reads on from its header."""
        outcome = self._outcome
        assert outcome is not None
        rest = bytes(frames[pos:])
        frames.clear()
        self._outcome = None  # from here on feed_data buffers, as a StreamReader does
        self.feed_data(rest)
        if not outcome.done():
            outcome.set_result(True)

    def _finish_at_end(self) -> None:
        """The connection is over: say how (clean, cut short, failed)."""
        outcome = self._outcome
        if outcome is None or outcome.done():
            return
        error = self.exception()
        frames = self._frames
        if error is not None:
            outcome.set_exception(error)
        elif not frames:
            outcome.set_result(False)
        elif len(frames) < _HEADER:
            outcome.set_exception(WireError(f"truncated frame header ({len(frames)} bytes)"))
        else:
            length, _ = _unpack_header(frames, 0)
            outcome.set_exception(
                WireError(f"truncated MESSAGES frame ({len(frames) - _HEADER} of {length} bytes)")
            )
