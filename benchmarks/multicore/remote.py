"""A worker process's view of the node: the KV calls, over the local socket.

:class:`RemoteNode` has the three :class:`~raftdb.node.handle.NodeHandle`
methods that raftdb's KV fast path (:class:`~raftdb.http.fast_path.KVFastPath`)
calls, so that a worker runs exactly the single-process server's HTTP code for
those requests. One connection per worker process, opened on first use, many
requests in flight on it, told apart by their ``rid``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack

from benchmarks.multicore.wire import DELETE, GET, OK, PUT, Batcher, rebuild_error
from raftdb.kv.commands import KeyValue
from raftdb.node.errors import ServiceUnavailableError
from raftdb.node.handle import Consistency, WriteResult

__all__ = ["RemoteNode"]


class RemoteNode:
    """``put``, ``get`` and ``delete`` of the node behind the Unix socket at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: Batcher | None = None
        self._connecting: asyncio.Lock | None = None
        self._pending: dict[int, asyncio.Future[list[Any]]] = {}
        self._next = 0

    async def _call(self, op: int, key: bytes, arg: object) -> list[Any]:
        out = self._out or await self._connect()
        self._next += 1
        rid = self._next
        future = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        out.send([rid, op, key, arg])
        answer: list[Any] = await future
        if answer[1] != OK:
            raise rebuild_error(*answer[2:5])
        return answer

    async def _connect(self) -> Batcher:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._out is None:
                reader, writer = await asyncio.open_unix_connection(str(self.path))
                self._out = Batcher(writer)
                asyncio.ensure_future(self._read(reader))
            return self._out

    async def _read(self, reader: asyncio.StreamReader) -> None:
        unpacker = msgpack.Unpacker(use_list=True)
        pending = self._pending
        try:
            while data := await reader.read(1 << 16):
                unpacker.feed(data)
                for answer in unpacker:
                    future = pending.pop(answer[0], None)
                    if future is not None and not future.done():
                        future.set_result(answer)
        finally:
            self._out = None
            lost = ServiceUnavailableError("the connection to the Raft process was lost")
            for future in pending.values():
                if not future.done():
                    future.set_exception(lost)
            pending.clear()

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        if_match: int | None = None,
        if_none_match: bool = False,
        idempotency_key: bytes | None = None,
        lease: int = 0,
    ) -> WriteResult:
        # The fast path sends conditional, idempotent and leased writes to Starlette.
        answer = await self._call(PUT, key, value)
        return WriteResult(answer[2], answer[3])

    async def delete(
        self, key: bytes, *, if_match: int | None = None, idempotency_key: bytes | None = None
    ) -> WriteResult:
        answer = await self._call(DELETE, key, None)
        return WriteResult(answer[2], answer[3])

    async def get(
        self, key: bytes, consistency: Consistency = "linearizable"
    ) -> tuple[KeyValue | None, int]:
        answer = await self._call(GET, key, consistency)
        _, _, found, value, create_index, mod_index, index = answer
        return (KeyValue(key, value, create_index, mod_index) if found else None), index
