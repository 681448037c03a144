"""The HTTP worker's app: ``uvicorn benchmarks.multicore.front:app --workers N``.

raftdb's own KV fast path (:class:`~raftdb.http.fast_path.KVFastPath`, the code
that answers ``PUT``/``GET``/``DELETE /v1/kv/<key>`` in the single-process
server) over a :class:`~benchmarks.multicore.remote.RemoteNode`: the same HTTP
work per request, done in this process instead of the Raft process. The node's
settings (for the key and value limits) come from ``RAFTDB_*`` as the node's
do; ``RAFTDB_INGEST_SOCKET`` names the Raft process's socket. Anything the
fast path does not answer gets ``501``: the evaluation covers the KV requests
only.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from benchmarks.multicore.remote import RemoteNode
from raftdb.config import load_config
from raftdb.http.fast_path import KVFastPath

__all__ = ["app"]


async def _not_here(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    answer = JSONResponse(
        {"error": "not_implemented", "message": "the HTTP front answers the KV requests only"},
        status_code=501,
    )
    await answer(scope, receive, send)


app = KVFastPath(
    _not_here,
    RemoteNode(Path(os.environ["RAFTDB_INGEST_SOCKET"])),  # type: ignore[arg-type]
    load_config(environ=os.environ, check_plugins=False),
)
