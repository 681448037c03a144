"""Backups: a consistent snapshot of the state machine, streamed off the event loop.

``GET /v1/snapshot`` (:mod:`raftdb.http.snapshot`) and ``raftdb snapshot save``
need the whole state as of a point that includes every write acknowledged
before the request, without holding it in memory and without stalling the
node's loop (heartbeats, other requests) while a large database is read.

The point is chosen as a linearizable read's is: :meth:`Node.snapshot
<raftdb.node.node.Node.snapshot>` confirms a read index (ReadIndex) and waits
until this node has applied it, then :func:`open_backup` asks the state
machine for a snapshot. The state machine's snapshot is taken at its applied
index, which only grows, so it is at or after the read index: every write
acknowledged before the request started is in it. Its ``info`` (index, term,
conf state, members) is known at once, before the bulk is read.

The bulk, :meth:`StateMachine.snapshot`'s chunks, is read in a worker thread,
one chunk per hop (LevelDB iteration blocks): :class:`BackupStream` is the
async iterator the HTTP answer drains. However the answer ends (the client
went away, the server stops), :meth:`BackupStream.aclose` releases the state
machine's point-in-time view; it first waits for a chunk being read, since a
generator cannot be closed while another thread runs it.

A node streams at most :data:`MAX_BACKUPS` backups at a time (each holds a
LevelDB snapshot, which keeps LevelDB from freeing the files it reads, and a
worker thread while it reads): one more is ``429``, nothing done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Final

from raftdb.node.errors import TooManyRequestsError

if TYPE_CHECKING:
    from raftdb.kv.snapshot import SnapshotInfo, SnapshotStream
    from raftdb.kv.state_machine import StateMachine

__all__ = ["MAX_BACKUPS", "BackupGate", "BackupStream", "open_backup"]

log = logging.getLogger("raftdb.node")

#: Backups one node streams at the same time.
MAX_BACKUPS: Final = 2
#: Seconds a closing stream waits for the chunk a worker thread is reading.
_CLOSE_WAIT: Final = 30.0
_DONE: Final = object()


class BackupGate:
    """Counts the backups a node streams, and refuses one over :data:`MAX_BACKUPS`."""

    def __init__(self, limit: int = MAX_BACKUPS) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> Callable[[], None]:
        """Take a place; returns the function that gives it back (call it once).

        Raises:
            TooManyRequestsError: ``limit`` backups are being streamed.
        """
        if self.active >= self.limit:
            raise TooManyRequestsError(
                f"this node is streaming {self.active} backups already (at most "
                f"{self.limit} at a time); retry later, or from another member",
                retry_after=5,
            )
        self.active += 1
        left = False

        def leave() -> None:
            nonlocal left
            if not left:
                left = True
                self.active -= 1

        return leave


class BackupStream:
    """A snapshot being streamed: :attr:`info` at once, the chunks by ``async for``.

    Iterate it once; call :meth:`aclose` when done, however it ends (it is
    idempotent, and also called when the chunks run out).

    Args:
        stream: the state machine's snapshot (read in worker threads).
        on_close: called once when the stream is closed, with the bytes it
            delivered and whether it delivered them all.
    """

    def __init__(
        self,
        stream: SnapshotStream,
        on_close: Callable[[int, bool], None] | None = None,
    ) -> None:
        self._stream = stream
        self._chunks: Iterator[bytes] = iter(stream)
        self._on_close = on_close
        self._reading: asyncio.Future[object] | None = None
        self._closed = False
        self._finished = False
        self.bytes_sent = 0

    @property
    def info(self) -> SnapshotInfo:
        """The snapshot's index, term, conf state and members."""
        return self._stream.info

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called (or the chunks ran out)."""
        return self._closed

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, next, self._chunks, _DONE)
        self._reading = future
        try:
            chunk = await asyncio.shield(future)
        finally:
            if future.done():
                self._reading = None
        if chunk is _DONE:
            self._finished = True
            await self.aclose()
            raise StopAsyncIteration
        assert isinstance(chunk, bytes)
        self.bytes_sent += len(chunk)
        return chunk

    async def aclose(self) -> None:
        """Release the snapshot's view (waiting for a chunk being read first). Idempotent."""
        if self._closed:
            return
        self._closed = True
        reading = self._reading
        if reading is not None and not reading.done():
            await asyncio.wait([reading], timeout=_CLOSE_WAIT)
        if reading is None or reading.done():
            # Closing the generator runs the state machine's release: off the loop too.
            await asyncio.to_thread(self._stream.close)
        if self._on_close is not None:
            self._on_close(self.bytes_sent, self._finished)


async def open_backup(sm: StateMachine, gate: BackupGate, node_id: int) -> BackupStream:
    """A snapshot of ``sm`` now, to stream (the caller confirmed the read point first).

    Taken in a worker thread: the state machine's ``snapshot`` waits for an
    apply batch in progress, and may sync its database.

    Raises:
        TooManyRequestsError: the node streams :data:`MAX_BACKUPS` already.
    """
    leave = gate.enter()
    future = asyncio.get_running_loop().run_in_executor(None, sm.snapshot)
    try:
        stream = await asyncio.shield(future)
    except BaseException:
        leave()
        if not future.done():  # cancelled while it is taken: release it once it is
            future.add_done_callback(_close_unwanted)
        raise
    index = stream.info.index

    def closed(sent: int, whole: bool) -> None:
        leave()
        if whole:
            log.info("node %d: streamed a backup at index %d (%d bytes)", node_id, index, sent)
        else:
            log.info("node %d: a backup at index %d ended after %d bytes", node_id, index, sent)

    return BackupStream(stream, closed)


def _close_unwanted(future: asyncio.Future[SnapshotStream]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()
