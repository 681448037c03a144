"""Admission control: the bound on waiting requests, the apply-lag rule, O(1) expiry."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import httpx
import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.kv.commands import ApplyResult, Command
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.node.deadlines import Deadlines
from raftdb.node.errors import OutcomeUnknownError, ServiceUnavailableError, TooManyRequestsError
from raftdb.node.metrics import NodeMetrics
from raftdb.node.requests import MAX_APPLY_LAG, WaitingRequests
from raftdb.raft import ConfChange, ConfChangeType, RawNode

from .cluster import LocalCluster, eventually

LIMIT = 50


class _GatedApply(MemoryStateMachine):
    """The memory state machine; ``apply`` waits while ``open`` is clear."""

    open = threading.Event()

    def apply(self, entries: Sequence[Any]) -> list[ApplyResult]:
        if not _GatedApply.open.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        return super().apply(entries)


def gated_memory(path: Path | None = None, *, sync: bool = True) -> MemoryStateMachine:
    return _GatedApply(path, sync=sync)


def test_a_flood_of_writes_beyond_the_limit_is_refused_429_and_the_rest_succeed(
    tmp_path: Path,
) -> None:
    """With nothing applied, ``LIMIT`` writes wait and exactly the excess is
    refused at once (``429``, ``Retry-After``), as is a linearizable read; a
    stale read is still answered. Once applying resumes, every admitted write
    succeeds and the node takes writes again."""
    _GatedApply.open.set()
    excess = 15

    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        requests = node._requests
        transport = httpx.ASGITransport(app=create_api(node, node.config))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            _GatedApply.open.clear()
            puts = [
                asyncio.create_task(client.put(f"/v1/kv/k{i}", content=b"v"))
                for i in range(LIMIT + excess)
            ]
            await eventually(
                lambda: sum(p.done() for p in puts) == excess and requests.pending == LIMIT,
                "the excess to be refused and the rest to wait",
            )
            refused = [p.result() for p in puts if p.done()]
            assert [r.status_code for r in refused] == [429] * excess
            for r in refused:
                assert r.json()["error"] == "too_many_requests"
                assert int(r.headers["retry-after"]) >= 1
            read = await client.get("/v1/kv/k0")
            assert read.status_code == 429
            assert "retry-after" in read.headers
            stale = await client.get("/v1/kv/k0?consistency=stale")
            assert stale.status_code == 404  # served: nothing is applied yet
            _GatedApply.open.set()
            answers = await asyncio.gather(*(p for p in puts if not p.done()))
            assert [a.status_code for a in answers] == [204] * LIMIT
            assert requests.pending == 0
            assert (await client.put("/v1/kv/after", content=b"1")).status_code == 204
            assert (await client.get("/v1/kv/after")).content == b"1"
            assert (await client.get("/readyz")).status_code == 200

    try:
        LocalCluster(
            tmp_path,
            1,
            "memory",
            state_machine=f"{__name__}:gated_memory",
            max_pending_requests=LIMIT,
        ).run(body)
    finally:
        _GatedApply.open.set()


class _StubRaw:
    """The little of ``RawNode`` that ``WaitingRequests`` calls."""

    lead = 1

    def __init__(self, commit_index: int = 0) -> None:
        self.commit_index = commit_index
        self.proposed: list[bytes] = []

    def propose_many(self, data: list[bytes]) -> None:
        self.proposed.extend(data)

    def read_index(self, ctx: bytes) -> None:
        pass

    def propose_conf_change(self, change: Any) -> None:
        pass


def _requests(applied: int = 0, **settings: Any) -> WaitingRequests:
    config = NodeConfig(id=1, cluster=["http://127.0.0.1:12379"], **settings)
    return WaitingRequests(config, NodeMetrics(1), wake=lambda: None, applied_index=lambda: applied)


def test_writes_are_refused_while_applying_lags_committing_by_more_than_the_gap() -> None:
    async def body() -> None:
        requests = _requests(applied=100)
        cmd = Command.put(b"k", b"v")
        far = cast(RawNode, _StubRaw(commit_index=100 + MAX_APPLY_LAG + 1))
        with pytest.raises(TooManyRequestsError, match="behind") as refused:
            await requests.write(far, cmd, None)
        assert refused.value.retry_after >= 1
        assert requests.pending == 0
        assert not requests.queued  # nothing was done
        # At the gap, the write is taken (it waits; it is never answered here).
        near = cast(RawNode, _StubRaw(commit_index=100 + MAX_APPLY_LAG))
        task = asyncio.create_task(requests.write(near, cmd, None))
        await asyncio.sleep(0)
        assert requests.pending == 1
        assert len(requests.queued) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert requests.pending == 0
        assert not requests.writes  # a cancelled write is forgotten

    asyncio.run(body())


def test_the_bound_counts_writes_reads_and_membership_changes_together() -> None:
    async def body() -> None:
        requests = _requests(max_pending_requests=3)
        raw = cast(RawNode, _StubRaw())
        tasks = [
            asyncio.create_task(requests.write(raw, Command.put(b"k", b"v"), None)),
            asyncio.create_task(requests.read_index(raw)),
            asyncio.create_task(requests.change(raw, ConfChange(ConfChangeType.ADD_VOTER, 4))),
        ]
        await asyncio.sleep(0)
        assert requests.pending == 3
        for refused in (
            requests.write(raw, Command.put(b"k", b"v"), None),
            requests.read_index(raw),
            requests.change(raw, ConfChange(ConfChangeType.REMOVE_NODE, 2)),
        ):
            with pytest.raises(TooManyRequestsError, match="max_pending_requests"):
                await refused
        tasks[1].cancel()  # a read leaves: one more fits
        await asyncio.gather(tasks[1], return_exceptions=True)
        assert requests.pending == 2
        assert not requests.unasked
        again = asyncio.create_task(requests.read_index(raw))
        await asyncio.sleep(0)
        assert requests.pending == 3
        for task in (*tasks, again):
            task.cancel()
        await asyncio.gather(*tasks, again, return_exceptions=True)
        assert requests.pending == 0

    asyncio.run(body())


class _NoScanDict(dict[Any, Any]):
    """A table that fails the test if anything walks it (lookups and pops are fine)."""

    def _scan(self, *_: object) -> NoReturn:
        raise AssertionError("a waiting-request table was scanned")

    __iter__ = keys = values = items = _scan


class _NoScanList(list[Any]):
    def _scan(self, *_: object) -> NoReturn:
        raise AssertionError("a waiting-request list was scanned")

    __iter__ = __contains__ = remove = index = _scan


@pytest.mark.parametrize("kind", ["write", "read", "unasked read", "change"])
def test_a_request_that_times_out_leaves_without_a_scan_of_the_others(kind: str) -> None:
    """``timeouts are swept in O(n) per expiry``: each expiry used to walk the
    waiting writes (``_forget``), the queue, the read batches or the membership
    changes. The tables here fail on any walk; expiry must not need one."""
    n, early = 2000, 10

    async def body() -> None:
        loop = asyncio.get_running_loop()
        requests = _requests(max_pending_requests=2 * n)
        raw = cast(RawNode, _StubRaw())

        def start(i: int) -> asyncio.Task[Any]:
            if kind == "write":
                return asyncio.create_task(requests.write(raw, Command.put(b"k", b"v"), None))
            if kind == "change":
                change = ConfChange(ConfChangeType.ADD_LEARNER, 10 + i)
                return asyncio.create_task(requests.change(raw, change))
            return asyncio.create_task(requests.read_index(raw))

        tasks: list[asyncio.Task[Any]] = []
        for timeout, count in ((1.0, early), (1000.0, n - early)):
            requests._timeout = timeout
            tasks += [start(len(tasks) + i) for i in range(count)]
            await asyncio.sleep(0)
        requests.propose_queued(raw)
        if kind != "unasked read":
            requests.ask_reads(raw)
        assert requests.pending == n
        requests.writes = _NoScanDict(requests.writes)
        requests._idem = _NoScanDict(requests._idem)
        requests.queued = _NoScanList(requests.queued)
        requests.reads = _NoScanDict(requests.reads)
        for batch in (requests.unasked, *dict.values(requests.reads)):
            batch.waiters = _NoScanDict(batch.waiters)
        requests._confs = _NoScanDict(
            {change: _NoScanDict(same) for change, same in dict.items(requests._confs)}
        )
        requests.expire(loop.time() + 500.0)
        await asyncio.sleep(0)
        failed = [t for t in tasks if t.done()]
        assert len(failed) == early
        expected = (ServiceUnavailableError if kind.endswith("read") else OutcomeUnknownError,)
        for task in failed:
            assert isinstance(task.exception(), expected)
        assert requests.pending == n - early
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(body())


def test_deadlines_rebuild_their_heap_once_discarded_entries_dominate_it() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines()
        futures = [loop.create_future() for _ in range(10_000)]
        tokens = [
            deadlines.add(100.0 + i, f, lambda: TimeoutError()) for i, f in enumerate(futures)
        ]
        for token in tokens[10:]:
            deadlines.discard(token)
        deadlines.add(50.0, loop.create_future(), lambda: TimeoutError("first"))
        assert len(deadlines) == 11
        assert len(deadlines._heap) < 2000  # the discarded entries went
        assert deadlines.sweep(50.0) == 1
        assert deadlines.sweep(200.0) == 10
        assert all(f.done() for f in futures[:10])
        assert not any(f.done() for f in futures[10:])

    asyncio.run(body())
