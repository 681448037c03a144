"""Peer transport throughput over loopback between two transports (issue 4).

Messages are APP messages carrying one 100-byte entry, node 1 to node 2, on
one event loop (both transports share it, as two nodes on one 2-core machine
share the CPU; the figure is therefore a lower bound for one node's side).

- ``test_burst[n]``: one ``send()`` of ``n`` messages, then wait until all
  are delivered; ``messages_per_second`` = n / mean. Batch 1 measures the
  round trip of a single message through both event loops' wake-ups.
- ``test_stream``: 20,000 messages in ``send()`` calls of 64, with the loop
  yielding between calls, as a driver would between Readies: the writer
  batches whatever accumulated. ``messages_per_second`` and the mean number
  of messages per frame (``messages_per_frame``) are reported.

Run: ``pytest benchmarks/test_transport_bench.py --benchmark-only``.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftdb.kv.snapshot import SnapshotStream
from raftdb.raft.messages import Entry, EntryType, Message, MessageType
from raftdb.transport.transport import Transport

PAYLOAD = os.urandom(100)


class Counter:
    """A handler that counts what arrives."""

    def __init__(self) -> None:
        self.count = 0
        self.frames = 0
        self.waiter: asyncio.Future[None] | None = None
        self.target = 0

    def on_messages(self, messages: list[Message]) -> None:
        self.count += len(messages)
        self.frames += 1
        if self.waiter is not None and self.count >= self.target and not self.waiter.done():
            self.waiter.set_result(None)

    def on_unreachable(self, peer_id: int) -> None:
        raise AssertionError(f"peer {peer_id} unreachable")

    def open_snapshot(self, message: Message) -> SnapshotStream:
        raise NotImplementedError

    def on_snapshot_sent(self, peer_id: int, ok: bool) -> None:
        raise NotImplementedError

    def on_snapshot_received(self, message: Message, path: Path) -> None:
        raise NotImplementedError

    async def wait_for(self, target: int) -> None:
        self.target = target
        if self.count >= target:
            return
        self.waiter = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(30):
            await self.waiter
        self.waiter = None


def messages(n: int, start: int = 0) -> list[Message]:
    return [
        Message(
            MessageType.APP,
            to=2,
            frm=1,
            term=2,
            log_term=2,
            index=i,
            entries=(Entry(2, i + 1, EntryType.NORMAL, PAYLOAD),),
            commit=i,
        )
        for i in range(start, start + n)
    ]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, Transport, Counter]]:
    loop = asyncio.new_event_loop()
    receiver = Counter()
    a = Transport(
        1, "http://127.0.0.1:0", {}, Counter(), snapshot_dir=tmp_path / "a",
        rng=random.Random(1), max_queue=1 << 20,
    )  # fmt: skip
    b = Transport(
        2, "http://127.0.0.1:0", {}, receiver, snapshot_dir=tmp_path / "b", rng=random.Random(2)
    )

    async def setup() -> None:
        await a.start()
        await b.start()
        host, port = b.listen_address
        a.set_peers({2: f"http://{host}:{port}"})
        host, port = a.listen_address
        b.set_peers({1: f"http://{host}:{port}"})
        a.send(messages(1))
        await receiver.wait_for(1)

    loop.run_until_complete(setup())
    try:
        yield loop, a, receiver
    finally:
        loop.run_until_complete(a.stop())
        loop.run_until_complete(b.stop())
        loop.close()


@pytest.mark.parametrize("n", [1, 64, 1024])
def test_burst(
    benchmark: Any, pair: tuple[asyncio.AbstractEventLoop, Transport, Counter], n: int
) -> None:
    loop, sender, receiver = pair
    batch = messages(n)

    async def burst() -> None:
        sender.send(batch)
        await receiver.wait_for(receiver.count + n)

    rounds = {1: 2000, 64: 500, 1024: 60}[n]
    benchmark.pedantic(lambda: loop.run_until_complete(burst()), rounds=rounds, warmup_rounds=10)
    benchmark.extra_info["messages_per_second"] = round(n / benchmark.stats.stats.mean)


def test_stream(benchmark: Any, pair: tuple[asyncio.AbstractEventLoop, Transport, Counter]) -> None:
    loop, sender, receiver = pair
    total, per_send = 20_000, 64
    sends = [messages(per_send, i) for i in range(0, total, per_send)]
    frames_before: list[int] = []

    async def stream() -> None:
        target = receiver.count + len(sends) * per_send
        frames_before.append(receiver.frames)
        for batch in sends:
            sender.send(batch)
            await asyncio.sleep(0)
        await receiver.wait_for(target)

    benchmark.pedantic(lambda: loop.run_until_complete(stream()), rounds=5, warmup_rounds=1)
    benchmark.extra_info["messages_per_second"] = round(
        len(sends) * per_send / benchmark.stats.stats.mean
    )
    benchmark.extra_info["messages_per_frame"] = round(
        len(sends) * per_send * len(frames_before) / (receiver.frames - frames_before[0]), 1
    )
