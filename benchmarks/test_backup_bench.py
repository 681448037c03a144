"""What streaming a backup off the event loop costs (raftdb.node.backup).

``GET /v1/snapshot`` drains the state machine's snapshot through
:class:`~raftdb.node.backup.BackupStream`, one worker-thread hop per chunk, so
that LevelDB's iteration never blocks the node's loop. ``test_backup_stream``
times that for 100,000 keys (100-byte values) in LevelDB; ``test_direct`` the
same snapshot iterated in the calling thread, the floor the hops add to.
``mb_per_second`` and ``keys_per_second`` are in ``extra_info``. The figure of
a whole ``raftdb snapshot save`` against a 3-node cluster is in docs/cli.md
("Backup").

Run: ``pytest benchmarks/test_backup_bench.py --benchmark-only``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from raftdb.kv.commands import Command
from raftdb.node.backup import BackupGate, open_backup
from raftdb.raft.messages import Entry, EntryType
from raftdb_leveldb import LevelDBStateMachine

KEYS = 100_000
VALUE = os.urandom(100)


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LevelDBStateMachine]:
    sm = LevelDBStateMachine(tmp_path_factory.mktemp("backup") / "sm", sync=False)
    for lo in range(1, KEYS + 1, 10_000):
        sm.apply(
            [
                Entry(1, i, EntryType.NORMAL, Command.put(b"user/%08d" % i, VALUE).encode())
                for i in range(lo, lo + 10_000)
            ]
        )
    yield sm
    sm.close()


def _rates(benchmark: Any, size: int) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["bytes"] = size
    benchmark.extra_info["mb_per_second"] = round(size / mean / 1e6, 1)
    benchmark.extra_info["keys_per_second"] = round(KEYS / mean)


def test_backup_stream(benchmark: Any, machine: LevelDBStateMachine) -> None:
    async def drain() -> int:
        backup = await open_backup(machine, BackupGate(), 1)
        try:
            return sum([len(chunk) async for chunk in backup])
        finally:
            await backup.aclose()

    size = benchmark.pedantic(lambda: asyncio.run(drain()), rounds=5, warmup_rounds=1)
    _rates(benchmark, size)


def test_direct(benchmark: Any, machine: LevelDBStateMachine) -> None:
    def drain() -> int:
        with machine.snapshot() as stream:
            return sum(len(chunk) for chunk in stream)

    size = benchmark.pedantic(drain, rounds=5, warmup_rounds=1)
    _rates(benchmark, size)
