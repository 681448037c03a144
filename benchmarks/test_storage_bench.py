"""Storage ``save`` throughput with sync on, beside the disk's raw fsync rate (issue 3).

100-byte entries, saved in batches of 1, 64 and 1024 (one save per Raft
Ready: group commit). For each plugin and batch size the extra info gives
``entries_per_second`` and ``saves_per_second``; ``test_raw_flush[fsync]``
and ``[fdatasync]`` give the physical limit of the same directory (one small
write plus one flush) and the CPU a flush costs (``cpu_us_per_flush``). A save
should cost close to one flush whatever its size: saves/s near the fsync rate
for small batches, entries/s growing with the batch until encoding and writing
the bytes dominates.

``test_save_cpu`` is the one-entry save of a Raft Ready at one client
connection (a hard state and one entry), and reports the CPU time the saving
thread spends per save (``cpu_us_per_save``: ``time.thread_time``, so the
fsync's system time counts and its wait does not) beside the wall time.

Run: ``pytest benchmarks/test_storage_bench.py --benchmark-only``.
Figures go to ``docs/benchmarks.md`` ("Storage and state machine").
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from raftdb.raft.messages import Entry, EntryType, HardState
from raftdb_leveldb import LevelDBStorage
from raftdb_sqlite import SQLiteStorage

PLUGINS: dict[str, Any] = {"leveldb": LevelDBStorage, "sqlite": SQLiteStorage}
ROUNDS = {1: 500, 64: 300, 1024: 60}
PAYLOAD = os.urandom(100)


@pytest.mark.parametrize("batch", [1, 64, 1024])
@pytest.mark.parametrize("plugin", ["leveldb", "sqlite"])
def test_save(benchmark: Any, tmp_path: Path, plugin: str, batch: int) -> None:
    storage = PLUGINS[plugin](tmp_path / plugin, sync=True)
    next_index = [1]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        lo = next_index[0]
        next_index[0] += batch
        entries = [Entry(1, i, EntryType.NORMAL, PAYLOAD) for i in range(lo, lo + batch)]
        return (HardState(1, 1, lo - 1), entries), {}

    try:
        benchmark.pedantic(storage.save, setup=setup, rounds=ROUNDS[batch], warmup_rounds=5)
        mean = benchmark.stats.stats.mean
        benchmark.extra_info["entries_per_second"] = round(batch / mean)
        benchmark.extra_info["saves_per_second"] = round(1 / mean)
        assert storage.last_index() == next_index[0] - 1
    finally:
        storage.close()


@pytest.mark.parametrize("plugin", ["leveldb", "sqlite"])
def test_save_cpu(benchmark: Any, tmp_path: Path, plugin: str) -> None:
    """One-entry saves, as a follower makes at one connection: wall and thread CPU."""
    storage = PLUGINS[plugin](tmp_path / plugin, sync=True)
    next_index = [1]
    cpu = [0.0]

    def save() -> None:
        index = next_index[0]
        next_index[0] += 1
        entries = [Entry(1, index, EntryType.NORMAL, PAYLOAD)]
        hard_state = HardState(1, 1, index - 1)
        start = time.thread_time()
        storage.save(hard_state, entries)
        cpu[0] += time.thread_time() - start

    try:
        benchmark.pedantic(save, rounds=1000, warmup_rounds=20)
        saves = next_index[0] - 1
        benchmark.extra_info["cpu_us_per_save"] = round(cpu[0] / saves * 1e6, 1)
        assert storage.last_index() == saves
    finally:
        storage.close()


@pytest.mark.parametrize("flush", ["fsync", "fdatasync"])
def test_raw_flush(benchmark: Any, tmp_path: Path, flush: str) -> None:
    """The physical limit: append 100 bytes to a file in the same directory, flush;
    and what a flush costs in CPU (``cpu_us_per_flush``: the kernel's work, which
    every fsync on a write's path pays, beside its wait)."""
    sync = getattr(os, flush)
    fd = os.open(tmp_path / "raw", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    cpu = [0.0, 0]

    def write_and_flush() -> None:
        start = time.thread_time()
        os.write(fd, PAYLOAD)
        sync(fd)
        cpu[0] += time.thread_time() - start
        cpu[1] += 1

    try:
        benchmark.pedantic(write_and_flush, rounds=500, warmup_rounds=5)
        benchmark.extra_info["flushes_per_second"] = round(1 / benchmark.stats.stats.mean)
        benchmark.extra_info["cpu_us_per_flush"] = round(cpu[0] / cpu[1] * 1e6, 1)
    finally:
        os.close(fd)
