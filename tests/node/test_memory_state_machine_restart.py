"""A node with the memory state machine over a disk log restarts after a snapshot point.

The core takes the entries up to the log's snapshot point as applied (a state
machine on disk restarts from its snapshot); the memory state machine restarts
empty. Before ``NodeDisk.open`` replayed the entries up to the point, the core
applied only those after it, to the empty state machine, and the node stopped
(``UsageError: entries start at 121, applied index is 0``). Found building the
bit-rot data directories (``tests/bitrot``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.node.cluster import LocalCluster


@pytest.mark.parametrize("storage", ["leveldb", "sqlite"])
def test_it_replays_the_log_up_to_the_snapshot_point(tmp_path: Path, storage: str) -> None:
    c = LocalCluster(
        tmp_path,
        1,
        storage,
        state_machine="memory",
        snapshot_entries=20,
        snapshot_keep_entries=1000,
    )

    async def write(c: LocalCluster) -> None:
        for n in range(50):
            await c.nodes[1].put(f"k{n}".encode(), str(n).encode())
        assert c.nodes[1]._disk.last_snapshot_index >= 40

    async def read(c: LocalCluster) -> None:
        node = c.nodes[1]
        for n in range(50):
            kv, _ = await node.get(f"k{n}".encode(), "stale")
            assert kv is not None
            assert kv.value == str(n).encode()
        assert (await node.put(b"after", b"1")).index > 50

    c.run(write)
    c.run(read)
