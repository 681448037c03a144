"""The apply thread and a state machine that defers durability (``make_durable``):
a write is answered before its batch is made durable, the next batch is applied only
after, and a failure to make a batch durable stops the node. A state machine durable
at ``make_durable`` only gets one call for the batches of ``state_sync_interval_ms``,
and one at close."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from raftdb.config import NodeConfig
from raftdb.kv.commands import ApplyResult
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.node.errors import OutcomeUnknownError, ServiceUnavailableError
from raftdb.raft import Entry

from .cluster import LocalCluster, eventually


class Deferring(MemoryStateMachine):
    """The memory state machine with a ``make_durable`` that waits for ``gate``
    (or raises ``fail``), recording the order of applies and make_durable calls."""

    gate = threading.Event()
    entered = threading.Event()
    fail: OSError | None = None
    calls: list[str] = []
    durable: list[int] = []  # the applied index each make_durable returned at

    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        Deferring.calls.append(f"apply {entries[-1].index}")
        return super().apply(entries)

    def make_durable(self) -> None:
        Deferring.calls.append(f"durable {self.applied_index}")
        if Deferring.fail is not None:
            raise Deferring.fail
        if not Deferring.gate.is_set():
            Deferring.entered.set()
            if not Deferring.gate.wait(timeout=30):
                raise TimeoutError("the test never opened the gate")
        Deferring.durable.append(self.applied_index)


def deferring(path: Path | None = None, *, sync: bool = True) -> MemoryStateMachine:
    return Deferring(path, sync=sync)


class _Cluster(LocalCluster):
    def config(self, node_id: int, join: bool = False) -> NodeConfig:
        config = super().config(node_id, join)
        return dataclasses.replace(config, state_machine=f"{__name__}:deferring")


def _reset() -> None:
    Deferring.gate.set()
    Deferring.entered.clear()
    Deferring.fail = None
    Deferring.calls.clear()
    Deferring.durable.clear()


def test_a_write_is_answered_before_its_batch_is_durable_and_the_next_waits(
    tmp_path: Path,
) -> None:
    _reset()

    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        zero = await node.put(b"k", b"0")
        await eventually(
            lambda: bool(Deferring.durable) and Deferring.durable[-1] >= zero.index,
            "the first write's batch to be made durable",
            10,
        )
        Deferring.gate.clear()
        first = await asyncio.wait_for(node.put(b"k", b"1"), 10)  # answered, not durable
        await eventually(Deferring.entered.is_set, "make_durable to hold the batch", 10)
        kv, _ = await node.get(b"k")  # a read sees what was answered
        assert kv is not None
        assert kv.value == b"1"
        second = asyncio.create_task(node.put(b"k", b"2"))
        await eventually(
            lambda: node.status().commit_index > first.index, "the next write committed", 10
        )
        assert not second.done()  # not applied while the batch before it is not durable
        assert f"apply {first.index + 1}" not in Deferring.calls
        Deferring.gate.set()
        assert (await asyncio.wait_for(second, 10)).index > first.index
        at = Deferring.calls.index(f"durable {first.index}")
        assert Deferring.calls[at + 1].startswith("apply ")

    try:
        _Cluster(tmp_path, 1, "memory").run(body)
    finally:
        Deferring.gate.set()


def test_a_batch_that_cannot_be_made_durable_stops_the_node(tmp_path: Path) -> None:
    _reset()

    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        zero = await node.put(b"k", b"0")
        await eventually(
            lambda: bool(Deferring.durable) and Deferring.durable[-1] >= zero.index,
            "the first write's batch to be made durable",
            10,
        )
        Deferring.fail = OSError(errno.EIO, "input/output error")
        # Answered, or not if the node stops first (a batch before the put's, its
        # session's say, fails to be made durable): the entry is in the log either way.
        with contextlib.suppress(OutcomeUnknownError):
            await node.put(b"k", b"1")
        await eventually(node._has_failed, "the node to stop", 10)
        with pytest.raises(ServiceUnavailableError, match="input/output error"):
            await node.put(b"k", b"2")

    try:
        _Cluster(tmp_path, 1, "memory").run(body)
    finally:
        _reset()


# -- durable at make_durable only: many batches, one make_durable ------------------------


class Batching(MemoryStateMachine):
    """The memory state machine promising *durable at make_durable* only, recording
    the order of applies and make_durable calls."""

    calls: list[str] = []
    interval_ms = 50

    def __init__(self, path: Path | None = None, *, sync: bool = True) -> None:
        super().__init__(path, sync=sync)
        self._durable = self.applied_index

    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        Batching.calls.append(f"apply {entries[-1].index}")
        return super().apply(entries)

    def make_durable(self) -> None:
        Batching.calls.append(f"durable {self.applied_index}")
        self._durable = self.applied_index

    @property
    def durable_index(self) -> int:
        return self._durable


def batching(path: Path | None = None, *, sync: bool = True) -> MemoryStateMachine:
    return Batching(path, sync=sync)


class _BatchingCluster(LocalCluster):
    def config(self, node_id: int, join: bool = False) -> NodeConfig:
        config = super().config(node_id, join)
        return dataclasses.replace(
            config,
            state_machine=f"{__name__}:batching",
            state_sync_interval_ms=Batching.interval_ms,
        )


def _durable_calls() -> list[int]:
    return [int(c.split()[1]) for c in Batching.calls if c.startswith("durable ")]


def test_batches_share_one_make_durable_and_close_makes_them_durable(tmp_path: Path) -> None:
    """An hour between calls: none while the node writes; closing makes all durable."""
    Batching.calls.clear()
    Batching.interval_ms = 3_600_000
    last = 0

    async def body(c: LocalCluster) -> None:
        nonlocal last
        node = c.nodes[1]
        for i in range(20):
            last = (await node.put(b"k%d" % i, b"v")).index
        assert _durable_calls() == []  # 20 batches, none made durable yet
        assert sum(c.startswith("apply ") for c in Batching.calls) >= 20

    try:
        _BatchingCluster(tmp_path, 1, "memory").run(body)
    finally:
        Batching.interval_ms = 50
    assert _durable_calls()
    assert _durable_calls()[-1] >= last
    assert Batching.calls[-1].startswith("durable ")  # after the last apply


def test_the_batches_are_made_durable_an_interval_after_the_writes(tmp_path: Path) -> None:
    Batching.calls.clear()

    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        first = await node.put(b"k", b"1")
        await eventually(
            lambda: any(i >= first.index for i in _durable_calls()),
            "the first write's batch to be made durable",
            10,
        )
        second = await node.put(b"k", b"2")  # and again after a quiet spell
        await eventually(
            lambda: any(i >= second.index for i in _durable_calls()),
            "the second write's batch to be made durable",
            10,
        )

    _BatchingCluster(tmp_path, 1, "memory").run(body)
