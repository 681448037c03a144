"""Shared by the API tests: the TestClient import, error-answer checks, and
uvicorn served in the test's own event loop."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette warns, once at import, that it prefers httpx2 to the httpx installed here.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["TestClient", "error_of", "serving"]


def error_of(response: httpx.Response, status: int) -> str:
    """The ``error`` code of a JSON error answer, after checking its status and shape."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert set(data) >= {"error", "message"}, data
    message = data["message"]
    assert isinstance(message, str), data
    assert message, data
    assert "\n" not in message, message
    assert "Traceback" not in message, message
    return str(data["error"])


@asynccontextmanager
async def serving(config: uvicorn.Config, wait: float) -> AsyncIterator[int]:
    """Serve ``config`` (port 0: a free one) on the running loop; yields the port,
    and stops the server on leaving. Each step is bounded by ``wait`` seconds."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(wait):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, wait)
