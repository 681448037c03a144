"""Helpers for the transport tests: a recording handler, a loop runner that fails
on any exception reaching the event loop, and deadline-bounded polling."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvloop

from raftdb.kv.snapshot import SnapshotInfo, SnapshotStream
from raftdb.raft.messages import ConfState, Message, MessageType
from raftdb.transport.transport import Transport

DEADLINE = 10.0


class Recorder:
    """A TransportHandler that records everything it is told."""

    def __init__(self, chunks: Callable[[Message], Iterator[bytes]] | None = None) -> None:
        self.batches: list[list[Message]] = []
        self.unreachable: list[int] = []
        self.sent: list[tuple[int, bool]] = []
        self.received: list[tuple[Message, Path, bytes]] = []
        self.opened: list[Message] = []
        self.chunk_threads: set[int] = set()
        self.chunks = chunks
        self.fail_on_messages = False

    @property
    def messages(self) -> list[Message]:
        return [m for batch in self.batches for m in batch]

    def on_messages(self, messages: list[Message]) -> None:
        self.batches.append(messages)
        if self.fail_on_messages:
            raise RuntimeError("handler bug")

    def on_unreachable(self, peer_id: int) -> None:
        self.unreachable.append(peer_id)

    def open_snapshot(self, message: Message) -> SnapshotStream:
        self.opened.append(message)
        assert self.chunks is not None
        source = self.chunks(message)

        def chunks() -> Iterator[bytes]:
            for chunk in source:
                self.chunk_threads.add(threading.get_ident())
                yield chunk

        info = SnapshotInfo(7, 2, ConfState((1, 2)), {})
        return SnapshotStream(info, chunks())

    def on_snapshot_sent(self, peer_id: int, ok: bool) -> None:
        self.sent.append((peer_id, ok))

    def on_snapshot_received(self, message: Message, path: Path) -> None:
        data = path.read_bytes()
        path.unlink()
        self.received.append((message, path, data))


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]


def make_logger(name: str) -> tuple[logging.Logger, ListHandler]:
    logger = logging.getLogger(f"test.transport.{name}.{random.random()}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = ListHandler()
    logger.addHandler(handler)
    return logger, handler


class Node:
    """One transport with its recorder and log."""

    def __init__(self, node_id: int, tmp: Path, **options: Any) -> None:
        self.id = node_id
        self.recorder = Recorder(options.pop("chunks", None))
        self.logger, self.log = make_logger(str(node_id))
        self.dir = tmp / f"snap-{node_id}"
        port = options.pop("port", 0)
        self.transport = Transport(
            node_id,
            f"http://127.0.0.1:{port}",
            options.pop("peers", {}),
            self.recorder,
            snapshot_dir=self.dir,
            rng=random.Random(node_id),
            logger=self.logger,
            **options,
        )

    @property
    def url(self) -> str:
        host, port = self.transport.listen_address
        return f"http://{host}:{port}"


async def connect_all(nodes: Sequence[Node]) -> None:
    """Start every node, then give each the others as peers."""
    for node in nodes:
        await node.transport.start()
    urls = {node.id: node.url for node in nodes}
    for node in nodes:
        node.transport.set_peers(urls)


async def stop_all(nodes: Sequence[Node]) -> None:
    for node in nodes:
        await node.transport.stop()


async def eventually(
    condition: Callable[[], bool],
    what: str = "condition",
    within: float = DEADLINE,
    action: Callable[[], object] | None = None,
) -> None:
    """Poll ``condition`` until true; fail after ``within`` seconds. ``action`` runs each round."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if action is not None:
            action()
        if condition():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


#: The event loops a node may run on: asyncio's, and uvloop's (raftdb serve's default).
LOOPS = ["asyncio", "uvloop"]


def run(body: Callable[[], Awaitable[None]], timeout: float = 20.0, loop: str = "asyncio") -> None:
    """Run ``body`` on a fresh loop (``loop``: one of :data:`LOOPS`). Fails if any
    exception reaches the loop's exception handler, or if a task or file
    descriptor outlives ``body``."""
    problems: list[dict[str, Any]] = []

    async def main() -> None:
        running = asyncio.get_running_loop()
        running.set_exception_handler(lambda _loop, context: problems.append(context))
        fds = open_fds()
        await asyncio.wait_for(body(), timeout)
        # Let closing transports run their last callbacks.
        for _ in range(3):
            await asyncio.sleep(0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, f"tasks left running: {leftover}"
        if loop == "asyncio":
            assert open_fds() == fds, "file descriptors leaked"

    if loop == "uvloop":
        # libuv opens descriptors of its own while its loop lives (io_uring, one
        # kept in reserve for EMFILE), and its first loop in a process keeps some
        # for good (signal pipes, epoll): count around a loop, after a first one.
        uvloop.run(asyncio.sleep(0))
        gc.collect()
        fds = open_fds()
        uvloop.run(main())
        gc.collect()  # a uvloop loop frees its descriptors when it is collected
        assert open_fds() == fds, "file descriptors leaked"
    else:
        asyncio.run(main())
    assert not problems, f"exceptions reached the event loop: {problems}"


def heartbeat(frm: int, to: int, term: int = 1, context: bytes = b"") -> Message:
    return Message(MessageType.HEARTBEAT, to=to, frm=frm, term=term, context=context)
