"""The Raft process's end of the local socket: requests from HTTP workers, run on the node.

Each request becomes a call of the node's own :class:`~raftdb.node.handle.NodeHandle`
(``put``, ``get``, ``delete``) in a task of its own, as an HTTP request does
in the single-process server; the answers go back batched per loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import msgpack

from benchmarks.multicore.wire import DELETE, FAILED, GET, OK, PUT, Batcher, error_fields
from raftdb.node.errors import NodeError
from raftdb.node.handle import NodeHandle

__all__ = ["IngestServer"]


class IngestServer:
    """A Unix-socket server at ``path`` that runs workers' requests on ``node``."""

    def __init__(self, node: NodeHandle, path: Path) -> None:
        self.node = node
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        out = Batcher(writer)
        unpacker = msgpack.Unpacker(use_list=True)
        try:
            while data := await reader.read(1 << 16):
                unpacker.feed(data)
                for request in unpacker:
                    task = asyncio.ensure_future(self._run(out, request))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            writer.close()

    async def _run(self, out: Batcher, request: list[Any]) -> None:
        rid, op, key, arg = request
        node = self.node
        try:
            if op == PUT:
                w = await node.put(key, arg)
                out.send([rid, OK, w.index, w.existed])
            elif op == GET:
                kv, index = await node.get(key, arg)
                if kv is None:
                    out.send([rid, OK, False, b"", 0, 0, index])
                else:
                    out.send([rid, OK, True, kv.value, kv.create_index, kv.mod_index, index])
            elif op == DELETE:
                w = await node.delete(key)
                out.send([rid, OK, w.index, w.existed])
            else:
                raise NodeError(f"unknown op {op!r}")
        except NodeError as exc:
            out.send([rid, FAILED, *error_fields(exc)])
