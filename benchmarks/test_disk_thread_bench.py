"""The hand-off of one disk job from the event loop to a thread and back.

A node hands two jobs per Ready to its disk threads (the log's save, the state
machine's apply), on every member, so at one client connection this fixed cost
is paid for every write, twice per node. Measured here with an empty job, so
that only the hand-off is timed (submit, the thread's wake-up, the result's way
back to the loop, the awaiting coroutine resumed):

- ``test_hand_off[executor]``: ``loop.run_in_executor(ThreadPoolExecutor(1), job)``,
  what ``raftdb.node.disk`` used before;
- ``test_hand_off[disk_thread]``: :class:`raftdb.node.disk_thread.DiskThread`
  (a ``queue.SimpleQueue`` and one ``call_soon_threadsafe`` per job).

Each round awaits 100 jobs one after another (as a Ready loop at one connection
does), so the figure is 100 round trips.

- ``test_pair[separate|shared_inbox]``: a save and an apply as a follower's Ready
  hands them over (both submitted, then both awaited), on two threads that each
  wake the loop (``separate``) or that share one :class:`~raftdb.node.disk_thread.Inbox`,
  whose outcomes are handed back in one ``call_soon_threadsafe`` when they come
  close together (``shared_inbox``). 100 pairs a round.

Run: ``pytest benchmarks/test_disk_thread_bench.py --benchmark-only``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from raftdb.node.disk_thread import DiskThread, Inbox

ROUND_TRIPS = 100


def _job() -> None:
    return None


def _executor_hand_off() -> tuple[Callable[[], Awaitable[None]], Callable[[], None]]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-executor")

    async def one() -> None:
        await asyncio.get_running_loop().run_in_executor(executor, _job)

    return one, lambda: executor.shutdown(wait=True)


def _disk_thread_hand_off() -> tuple[Callable[[], Awaitable[None]], Callable[[], None]]:
    worker = DiskThread("bench-disk-thread")

    async def one() -> None:
        await worker.submit(_job)

    return one, worker.shutdown


@pytest.mark.parametrize("kind", ["executor", "disk_thread"])
def test_hand_off(benchmark: Any, kind: str) -> None:
    one, close = {"executor": _executor_hand_off, "disk_thread": _disk_thread_hand_off}[kind]()
    loop = asyncio.new_event_loop()

    async def rounds() -> None:
        for _ in range(ROUND_TRIPS):
            await one()

    try:
        benchmark(lambda: loop.run_until_complete(rounds()))
    finally:
        close()
        loop.close()


@pytest.mark.parametrize("kind", ["separate", "shared_inbox"])
def test_pair(benchmark: Any, kind: str) -> None:
    inbox = Inbox() if kind == "shared_inbox" else None
    log = DiskThread("bench-log", inbox)
    apply = DiskThread("bench-apply", inbox)
    loop = asyncio.new_event_loop()

    async def rounds() -> None:
        for _ in range(ROUND_TRIPS):
            await asyncio.gather(apply.submit(_job), log.submit(_job))

    try:
        benchmark(lambda: loop.run_until_complete(rounds()))
    finally:
        log.shutdown()
        apply.shutdown()
        loop.close()
