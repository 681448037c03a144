"""Long answers that end when either side ends them: a watch's events, a backup's bytes.

Starlette's ``StreamingResponse`` reads the client's disconnect only between
two body parts, so an answer that waits long for its next part (a quiet watch,
a large chunk read from disk) would notice a gone client late and keep the
node's resources (a watcher, a state machine's point-in-time view) meanwhile.
:class:`StreamAnswer` listens for the disconnect while it waits, cancels
itself at once, and always closes its source before it returns, however it
ended; a failure once the answer has started can only be logged (the server
then cuts the connection, so the client sees a truncated body, never a
complete-looking one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from raftdb.http.errors import log_late_error

__all__ = ["StreamAnswer"]


class StreamAnswer(StreamingResponse):
    """An answer whose body :meth:`stream` writes and whose source :meth:`close`
    releases; ``head``: the headers only (a ``HEAD`` request)."""

    def __init__(
        self, *, headers: Mapping[str, str], media_type: str | None = None, head: bool = False
    ) -> None:
        super().__init__((), media_type=media_type, headers=headers)
        self.head = head

    async def stream(self, send: Send) -> None:
        """Send the body's parts (each with ``more_body``), until the source ends."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release the source (called once, however the answer ended)."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def listen() -> None:
            """Cancel the answer when the client disconnects."""
            nonlocal gone
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    task.cancel()
                    return

        listener = asyncio.ensure_future(listen())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if not self.head:
                await self.stream(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone or task.uncancel() > 0:
                raise  # cancelled from outside (the server stops): not ours to swallow
        except OSError:  # a server that reports a gone client by failing the write
            pass
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            try:
                await self.close()
            except Exception as exc:  # the answer has started: only the log can tell
                log_late_error(exc)
