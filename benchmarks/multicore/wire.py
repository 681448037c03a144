"""The local socket between HTTP worker processes and the Raft process.

A stream of msgpack arrays in each direction, no other framing: msgpack's own
lengths delimit them, and ``msgpack.Unpacker`` takes whatever a ``recv``
brought, many requests at once.

- request: ``[rid, op, key, arg]``: ``op`` is one of :data:`PUT` (``arg``:
  the value), :data:`GET` (``arg``: the consistency, ``"linearizable"`` or
  ``"stale"``) or :data:`DELETE` (``arg``: ``None``);
- answer: ``[rid, OK, ...]``: a write's ``index, existed``; a read's
  ``found, value, create_index, mod_index, read_index``; or
  ``[rid, FAILED, class_name, message, attributes]``: a
  :class:`~raftdb.node.errors.NodeError` to raise again on the other side,
  the same class with the same attributes, so that the worker answers the
  same bytes the node would.

Both ends batch their writes: what a turn of the event loop produced goes out
in one ``write`` (:class:`Batcher`), as the peer transport does.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import msgpack

from raftdb.node import errors

__all__ = ["DELETE", "FAILED", "GET", "OK", "PUT", "Batcher", "error_fields", "rebuild_error"]

PUT: Final = 0
GET: Final = 1
DELETE: Final = 2

OK: Final = 0
FAILED: Final = 1


class Batcher:
    """Packs messages for one stream writer, written once per loop turn."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._packer = msgpack.Packer()
        self._buffer = bytearray()
        self._loop = asyncio.get_running_loop()
        self._scheduled = False

    def send(self, message: list[Any]) -> None:
        self._buffer += self._packer.pack(message)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._buffer and not self._writer.is_closing():
            self._writer.write(bytes(self._buffer))
        self._buffer.clear()


def error_fields(exc: errors.NodeError) -> list[Any]:
    """``[class_name, message, attributes]`` of a node error, for the wire."""
    attributes = {k: v for k, v in vars(exc).items() if k != "message"}
    return [type(exc).__name__, exc.message, attributes]


def rebuild_error(name: str, message: str, attributes: dict[str, Any]) -> errors.NodeError:
    """The node error :func:`error_fields` described: same class, same attributes."""
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.NodeError)):
        return errors.NodeError(f"{name}: {message}")
    exc: errors.NodeError = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.message = message
    vars(exc).update(attributes)
    return exc
