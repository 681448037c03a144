"""The apply thread and a state machine that defers durability (``make_durable``):
a write is answered before its batch is made durable, the next batch is applied only
after, and a failure to make a batch durable stops the node."""

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
