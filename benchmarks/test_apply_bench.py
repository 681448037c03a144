"""State machine apply throughput and the cost of a 1,000,000-key snapshot (issue 3).

- ``test_apply``: batches of 1000 puts of new keys with 100-byte values;
  ``puts_per_second`` = 1000 / mean. Target for ``leveldb`` (sync on, one
  fsync per batch): at least 150,000 puts/s on the 2-core reference machine.
- ``test_apply_session``: what a node's writes are, batches of 26 puts that
  carry the node's session with 64 writes in flight (each put's ``ack`` 64
  below its ``seq``); ``us_per_put`` is the mean per put. A session's answers
  are copied once a batch, so this stays near ``test_apply``'s cost per put
  whatever the number in flight.
- ``test_snapshot_1m``: stream a snapshot of 1,000,000 keys (100-byte values)
  to the end, chunks discarded, as a transport would send them;
  ``peak_rss_growth_mib`` is the process's peak resident memory during the
  snapshot above what it was before (target for leveldb: at most 64 MiB).
- ``test_restore_1m``: restore that stream into a fresh state machine.

Run: ``pytest benchmarks/test_apply_bench.py --benchmark-only``.
Figures go to ``docs/benchmarks.md`` ("Storage and state machine").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from raftdb.kv.commands import Command
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.raft.messages import Entry, EntryType
from raftdb_leveldb import LevelDBStateMachine

VALUE = os.urandom(100)
KEYS = 1_000_000


def _key(i: int) -> bytes:
    # A bijection of [0, 10**9): keys arrive in no particular order, as users write them.
    return b"user/%09d" % (i * 7_919 % 1_000_000_007 % 1_000_000_000)


def _entries(lo: int, count: int) -> list[Entry]:
    return [
        Entry(1, i, EntryType.NORMAL, Command.put(_key(i), VALUE).encode())
        for i in range(lo, lo + count)
    ]


def _make(kind: str, path: Path) -> Any:
    if kind == "memory":
        return MemoryStateMachine()
    return LevelDBStateMachine(path, sync=kind == "leveldb")


@pytest.mark.parametrize("kind", ["leveldb", "leveldb-nosync", "memory"])
def test_apply(benchmark: Any, tmp_path: Path, kind: str) -> None:
    machine = _make(kind, tmp_path / kind)
    next_index = [1]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        lo = next_index[0]
        next_index[0] += 1000
        return (_entries(lo, 1000),), {}

    try:
        benchmark.pedantic(machine.apply, setup=setup, rounds=200, warmup_rounds=3)
        benchmark.extra_info["puts_per_second"] = round(1000 / benchmark.stats.stats.mean)
        assert machine.applied_index == next_index[0] - 1
    finally:
        machine.close()


IN_FLIGHT = 64
SESSION_BATCH = 26


@pytest.mark.parametrize("kind", ["leveldb-nosync", "memory"])
def test_apply_session(benchmark: Any, tmp_path: Path, kind: str) -> None:
    machine = _make(kind, tmp_path / kind)
    next_index = [1]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        lo = next_index[0]
        next_index[0] += SESSION_BATCH
        batch = [
            Entry(
                1,
                i,
                EntryType.NORMAL,
                Command.put(_key(i), VALUE)
                .with_session(b"node-1", i, max(1, i - IN_FLIGHT))
                .encode(),
            )
            for i in range(lo, lo + SESSION_BATCH)
        ]
        return (batch,), {}

    try:
        benchmark.pedantic(machine.apply, setup=setup, rounds=2000, warmup_rounds=20)
        benchmark.extra_info["us_per_put"] = round(
            benchmark.stats.stats.mean / SESSION_BATCH * 1e6, 2
        )
        assert machine.applied_index == next_index[0] - 1
    finally:
        machine.close()


# -- 1,000,000 keys ---------------------------------------------------------------------


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakRSS:
    """Peak resident memory over a block, above the level at its start.

    Uses the kernel's high-water mark, reset through ``/proc/self/clear_refs``;
    where that cannot be written, samples VmRSS from a thread instead.
    """

    def __enter__(self) -> PeakRSS:
        self.start = _status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._sampler = None
        except OSError:
            self._stop = threading.Event()
            self._samples = [self.start]
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._samples.append(_status("VmRSS"))

    def __exit__(self, *exc: object) -> None:
        if self._sampler is None:
            self.peak = _status("VmHWM")
        else:
            self._stop.set()
            self._sampler.join()
            self.peak = max(self._samples)
        self.growth_mib = (self.peak - self.start) / (1 << 20)


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A LevelDB and a memory state machine holding the same 1,000,000 keys."""
    path = tmp_path_factory.mktemp("million")
    machines: dict[str, Any] = {
        "leveldb": LevelDBStateMachine(path / "leveldb", sync=False),
        "memory": MemoryStateMachine(),
    }
    for lo in range(1, KEYS + 1, 10_000):
        batch = _entries(lo, 10_000)
        for machine in machines.values():
            machine.apply(batch)
    yield machines
    for machine in machines.values():
        machine.close()


def _measure(benchmark: Any, work: Callable[[], Any]) -> Any:
    with PeakRSS() as rss:
        result = benchmark.pedantic(work, rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_growth_mib"] = round(rss.growth_mib, 1)
    return result


@pytest.mark.parametrize("kind", ["leveldb", "memory"])
def test_snapshot_1m(benchmark: Any, million: dict[str, Any], kind: str) -> None:
    machine = million[kind]

    def stream() -> int:
        total = 0
        for chunk in machine.snapshot():
            total += len(chunk)
        return total

    size = _measure(benchmark, stream)
    benchmark.extra_info["stream_mib"] = round(size / (1 << 20), 1)
    assert size > KEYS * 100


def test_restore_1m(benchmark: Any, million: dict[str, Any], tmp_path: Path) -> None:
    chunks_source = million["leveldb"]
    target = LevelDBStateMachine(tmp_path / "restored")
    try:
        info = _measure(benchmark, lambda: target.restore(chunks_source.snapshot()))
        assert info.index == KEYS
        assert target.get(_key(KEYS)) is not None
    finally:
        target.close()
