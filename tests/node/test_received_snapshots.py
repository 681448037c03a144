"""A received snapshot is checked whole before its message reaches the core.

Once the core takes a snapshot it must be installed; a stream that the
transport received intact (size and CRC-32 match what was sent) but that is
not a whole snapshot, or holds a state older than its message announces,
would stop the node at restore. The node checks it first and drops it with a
warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from raftdb.kv.snapshot import SnapshotInfo, encode_stream
from raftdb.raft import ConfState, Message, MessageType, Snapshot, SnapshotMetadata
from tests.node.cluster import LocalCluster, eventually


def _snap_message(leader: int, follower: int, term: int, index: int) -> Message:
    meta = SnapshotMetadata(index, term, ConfState((1, 2, 3)))
    return Message(MessageType.SNAP, to=follower, frm=leader, term=term, snapshot=Snapshot(meta))


def _stream(index: int, term: int, keys: int = 3) -> bytes:
    info = SnapshotInfo(index, term, ConfState((1, 2, 3)), {})
    kv = [(b"k%03d" % i, b"v", 1, 1) for i in range(keys)]
    return b"".join(encode_stream(info, kv, [], chunk_size=256))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:40] + bytes([data[40] ^ 0xFF]) + data[41:], "checksum"),
        (lambda data: b"garbage" * 10, "bad magic"),
        (lambda data: _stream(9_999, 1), "at index 9999, before 10000"),
    ],
    ids=["truncated", "flipped-byte", "garbage", "an-older-state"],
)
def test_a_damaged_received_snapshot_is_dropped_and_the_node_serves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object, why: str
) -> None:
    async def body(c: LocalCluster) -> None:
        leader = c.leader()
        assert leader is not None
        follower = next(n for n in c.nodes.values() if n is not leader)
        term = follower.status().term
        path = follower.data_dir / "snapshots-in" / "received.snap"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert callable(damage)
        path.write_bytes(damage(_stream(10_000, term)))
        with caplog.at_level(logging.WARNING, logger="raftdb.node"):
            follower.on_snapshot_received(_snap_message(leader.id, follower.id, term, 10_000), path)
            await eventually(lambda: not path.exists(), "the damaged snapshot to be dropped")
        assert follower.status().applied_index < 10_000  # never installed
        message = next(r.getMessage() for r in caplog.records if "dropped the snap" in r.message)
        assert "at index 10000" in message
        assert why in message
        # The node was not stopped: it still takes writes and serves them.
        result = await follower.put(b"after", b"ok")
        value, _ = await follower.get(b"after")
        assert value is not None
        assert value.value == b"ok"
        assert value.mod_index == result.index

    LocalCluster(tmp_path, 3, plugin="memory").run(body)
