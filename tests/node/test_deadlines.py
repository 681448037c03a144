"""Request time limits: the ``Deadlines`` heap and the node's answers when time is up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from raftdb.node import Node
from raftdb.node.deadlines import Deadlines
from raftdb.node.errors import OutcomeUnknownError, ServiceUnavailableError

from .cluster import LocalCluster


def test_sweep_fails_only_the_expired_futures_that_are_still_waiting() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines()
        expired: list[str] = []

        def expire(name: str) -> BaseException:
            expired.append(name)
            return TimeoutError(name)

        late, early, answered, cancelled = (loop.create_future() for _ in range(4))
        deadlines.add(20.0, late, lambda: expire("late"))
        deadlines.add(10.0, early, lambda: expire("early"))
        deadlines.add(5.0, answered, lambda: expire("answered"))
        discarded = deadlines.add(5.0, loop.create_future(), lambda: expire("discarded"))
        deadlines.add(5.0, cancelled, lambda: expire("cancelled"))
        answered.set_result(1)
        cancelled.cancel()
        deadlines.discard(discarded)  # its waiter stopped waiting: no longer held
        assert len(deadlines) == 4
        assert deadlines.sweep(4.9) == 0
        assert deadlines.sweep(10.0) == 1
        assert expired == ["early"]
        with pytest.raises(TimeoutError, match="early"):
            early.result()
        assert not late.done()
        assert answered.result() == 1
        assert len(deadlines) == 1
        deadlines.clear()
        assert deadlines.sweep(100.0) == 0
        assert not late.done()
        late.cancel()

    asyncio.run(body())


def test_a_write_and_a_read_without_a_quorum_time_out_and_are_forgotten(tmp_path: Path) -> None:
    """With both followers gone (and an election timeout far longer than the
    request timeout, so the leader does not step down first), a write is proposed
    but never commits: ``504`` after ``request_timeout_s``, and the node forgets it;
    a linearizable read cannot confirm leadership: ``503``. Once the followers are
    back, writes commit again."""
    timeout = 0.4

    async def body(c: LocalCluster) -> None:
        leader = c.leader()
        assert leader is not None
        followers = [i for i, n in c.nodes.items() if n is not leader]
        for node_id in followers:
            await c.stop(node_id)
        started = time.monotonic()
        with pytest.raises(OutcomeUnknownError, match="not applied within"):
            await leader.put(b"k", b"v")
        waited = time.monotonic() - started
        assert waited >= timeout  # never before its time (after it: one tick late at most)
        assert not leader._requests.writes
        assert not leader._requests.queued
        with pytest.raises(ServiceUnavailableError, match="confirm leadership"):
            await leader.get(b"k")
        assert not leader._requests.reads
        assert not leader._requests.unasked
        for node_id in followers:
            await c.start(node_id)
        result = await asyncio.wait_for(_put_until_ok(leader), 30)
        assert result > 0

    LocalCluster(tmp_path, 3, election_ticks=200, request_timeout_s=timeout).run(body)


async def _put_until_ok(node: Node) -> int:
    """Write until the write commits (the leader may have changed meanwhile: retried)."""
    while True:
        try:
            return (await node.put(b"k", b"after")).index
        except (OutcomeUnknownError, ServiceUnavailableError):
            await asyncio.sleep(0.05)
